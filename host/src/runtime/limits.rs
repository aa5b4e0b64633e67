//! What an instance may use: its linear memory, and its log lines.

use crate::memory::MemoryBudget;
use crate::names::ObjectIdentity;
use crate::scheduling::Heavy;
use crate::tail::Tail;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::ResourceLimiter;

/// Log lines an instance may write at once; then [`LOG_LINES_PER_SEC`] more each second. Lines
/// over the budget are dropped and counted, and the count is reported in one warning when the
/// next line gets through (or the instance ends). The host's log cannot be flooded by a guest.
pub const LOG_BURST: f64 = 100.0;

/// Log lines per second an instance may write once its burst is spent.
pub const LOG_LINES_PER_SEC: f64 = 10.0;

/// Longest log line, in bytes; a longer message is cut there and marked as truncated.
pub const MAX_LOG_LINE: usize = 16 << 10;

/// Caps an instance's linear memory, remembering that it did so to name the cause of the trap
/// that usually follows (a Rust guest aborts when allocation fails). It also sees the memory grow
/// big, which makes the instance's code heavy (see [`Heavy`]).
pub(super) struct MemoryCap {
    max_bytes: usize,
    /// Whether the cap refused a growth in the running event.
    pub(super) hit: bool,
    /// The host's budget for all instances' memories, which this one's is counted in.
    budget: Arc<MemoryBudget>,
    /// Whether the budget refused a growth: the host, not the object, is out of memory.
    pub(super) over_budget: bool,
    /// The linear memory's size now.
    pub(super) bytes: usize,
    /// The instance's; kept here because the limiter is all the store hands the growth hook (the
    /// epoch callback marks it too).
    pub(super) heavy: Heavy,
}

impl MemoryCap {
    pub(super) fn new(max_bytes: usize, budget: Arc<MemoryBudget>, heavy: Heavy) -> Self {
        MemoryCap {
            max_bytes,
            hit: false,
            budget,
            over_budget: false,
            bytes: 0,
            heavy,
        }
    }

    /// Forgets what refused a growth in an earlier event: it names no cause of the next one's
    /// failure.
    pub(super) fn new_event(&mut self) {
        self.hit = false;
        self.over_budget = false;
    }

    /// Whether the memory is big enough that one fill, copy or teardown of it does not yield for
    /// a while.
    pub(super) fn is_big(&self) -> bool {
        self.bytes >= HEAVY_MEMORY_BYTES
    }
}

/// Linear memory from which an instance's code takes the long time slice: see [`Heavy`]. A
/// `memory.fill` or a copy of this much takes about a millisecond.
const HEAVY_MEMORY_BYTES: usize = 16 << 20;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.max_bytes;
        self.hit |= !ok;
        if !ok {
            return Ok(false);
        }
        if !self.budget.grow(desired.saturating_sub(self.bytes)) {
            self.over_budget = true;
            return Ok(false);
        }
        self.bytes = desired;
        if self.is_big() {
            self.heavy.mark();
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

impl Drop for MemoryCap {
    /// The instance is gone, and its memory back in the pool.
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// The token bucket of an instance's log lines: see [`LOG_BURST`].
pub(super) struct LogBucket {
    tokens: f64,
    refilled: Instant,
    /// Lines dropped since the last one written.
    dropped: u64,
    /// Who logs, for the warning about dropped lines.
    namespace: String,
    id: String,
    /// Where the lines go besides the host's log, for watchers.
    pub(super) tail: Tail,
}

impl LogBucket {
    /// Names `identity` in the warnings from now on (a shared instance serving another object).
    pub(super) fn relabel(&mut self, identity: &ObjectIdentity) {
        self.namespace.clone_from(&identity.namespace);
        self.id = identity.id.to_hex()[..16].to_owned();
    }

    pub(super) fn new(identity: &ObjectIdentity, tail: Tail) -> Self {
        let mut bucket = LogBucket {
            tokens: LOG_BURST,
            refilled: Instant::now(),
            dropped: 0,
            namespace: String::new(),
            id: String::new(),
            tail,
        };
        bucket.relabel(identity);
        bucket
    }

    /// Whether one more line may be written at `now`; if so, reports the lines dropped before it.
    pub(super) fn admit(&mut self, now: Instant) -> bool {
        let earned = now.duration_since(self.refilled).as_secs_f64() * LOG_LINES_PER_SEC;
        self.tokens = (self.tokens + earned).min(LOG_BURST);
        self.refilled = now;
        if self.tokens < 1.0 {
            self.dropped += 1;
            return false;
        }
        self.tokens -= 1.0;
        self.report_dropped();
        true
    }

    fn report_dropped(&mut self) {
        if self.dropped > 0 {
            let (ns, id) = (self.namespace.as_str(), self.id.as_str());
            tracing::warn!(
                ns,
                id,
                "{} log lines dropped (an object may log {LOG_BURST} lines at once, then \
                 {LOG_LINES_PER_SEC} a second)",
                self.dropped
            );
            self.dropped = 0;
        }
    }
}

impl Drop for LogBucket {
    fn drop(&mut self) {
        self.report_dropped();
    }
}

/// `message` cut to [`MAX_LOG_LINE`] bytes (at a character boundary), saying so.
pub(super) fn truncate_line(mut message: String) -> String {
    let size = message.len();
    if size > MAX_LOG_LINE {
        let mut end = MAX_LOG_LINE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(&format!("... [truncated, {size} bytes]"));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::ObjectId;
    use std::time::Duration;

    #[test]
    fn a_long_log_line_is_cut_at_a_character_boundary() {
        let short = "short".to_owned();
        assert_eq!(truncate_line(short.clone()), short);
        // 'é' is two bytes: the cut must not split it.
        let long = format!("x{}", "é".repeat(MAX_LOG_LINE));
        let cut = truncate_line(long.clone());
        assert!(cut.len() <= MAX_LOG_LINE + 64, "{}", cut.len());
        assert!(cut.ends_with(&format!("... [truncated, {} bytes]", long.len())));
        assert!(long.starts_with(cut.split("... [truncated").next().unwrap()));
    }

    #[test]
    fn the_log_bucket_admits_a_burst_then_drops_and_counts() {
        let identity = ObjectIdentity {
            namespace: "ns".into(),
            name: "o".into(),
            id: ObjectId::new("ns", "o"),
        };
        let mut bucket = LogBucket::new(&identity, crate::tail::Tail::default());
        let start = bucket.refilled;
        let admitted = (0..1000).filter(|_| bucket.admit(start)).count();
        assert_eq!((admitted, bucket.dropped), (100, 900));
        // A second later ten more get through; the first reports and resets the count.
        let later = start + Duration::from_secs(1);
        assert!(bucket.admit(later));
        assert_eq!(bucket.dropped, 0);
        let more = (0..100).filter(|_| bucket.admit(later)).count();
        assert_eq!((more, bucket.dropped), (9, 91));
        // Never more than the burst, however long the quiet.
        let much_later = later + Duration::from_secs(3600);
        let burst = (0..1000).filter(|_| bucket.admit(much_later)).count();
        assert_eq!(burst, 100);
    }
}
