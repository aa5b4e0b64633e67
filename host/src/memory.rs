//! The host's memory budget: what the linear memories of all live instances may add up to.
//!
//! Each instance's memory is counted as it grows (its initial size included) and uncounted when
//! the instance is dropped. Instances that sit idle between events can be dropped at any time
//! (hibernation), so growth is allowed while what the busy ones hold fits the budget; the
//! least recently used idle instances are then evicted to make room. Growth that even evicting
//! every idle instance could not make room for is refused, and its event fails as `overloaded`.

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

pub struct MemoryBudget {
    /// Most bytes of linear memory all live instances may hold.
    pub limit: usize,
    /// What they hold now.
    used: AtomicUsize,
    /// What the instances on the idle list hold: what eviction can give back.
    idle: AtomicUsize,
    /// Wakes the evictor when the budget is passed.
    over: Notify,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Self {
        MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            over: Notify::new(),
        }
    }

    /// Counts `bytes` more for a growing instance; false if even evicting every idle instance
    /// would not make room (nothing is counted then).
    pub fn grow(&self, bytes: usize) -> bool {
        let used = self.used.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if used <= self.limit {
            return true;
        }
        if used.saturating_sub(self.idle.load(Ordering::Acquire)) > self.limit {
            self.used.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        self.over.notify_one();
        true
    }

    /// An instance holding `bytes` was dropped.
    pub fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// An instance holding `bytes` joined (or, with `false`, left) the idle list.
    pub fn set_idle(&self, bytes: usize, idle: bool) {
        if idle {
            self.idle.fetch_add(bytes, Ordering::AcqRel);
        } else {
            self.idle.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    /// Bytes of linear memory live instances hold.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Waits until growth passes the budget.
    pub async fn passed(&self) {
        self.over.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_allowed_while_idle_instances_could_make_room() {
        let budget = MemoryBudget::new(100);
        assert!(budget.grow(60));
        // 60 busy + 60 = 120: over, and nothing idle to evict.
        assert!(!budget.grow(60));
        assert_eq!(budget.used(), 60, "a refused growth counts nothing");
        budget.set_idle(60, true);
        // Evicting the idle 60 would make room: allowed, the evictor will do it.
        assert!(budget.grow(60));
        assert_eq!(budget.used(), 120);
        budget.set_idle(60, false);
        budget.release(60);
        assert_eq!(budget.used(), 60);
    }
}
