//! What stub calls cost beyond their callees' events, counted with atomics (no lock on the call
//! path) for `/_admin/stats`.
//!
//! A call's overhead is the caller's time in `stubs.fetch` less the callee's event, from its loop
//! taking it up to its release (the guest done and its output gate open): what is left is the
//! call itself (queueing, waking, copying, returning). Its hand-back, from the release until the
//! answer is back with the caller, is counted apart: mostly the wake-up of the caller's thread
//! after the callee's commit, which a response to a client waits for just as well.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the overhead histogram's buckets, µs; one more bucket takes the rest. Fine
/// around tens of µs, so that a median read from them is good to a µs or two.
pub const OVERHEAD_BUCKETS_US: [u64; 30] = [
    1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 18, 20, 22, 25, 30, 35, 40, 50, 60, 80, 100, 150, 200,
    300, 500, 1_000, 2_000, 5_000, 10_000,
];

/// Who made a call: an object's event, or a worker's request.
#[derive(Clone, Copy)]
pub enum Caller {
    Object,
    Worker,
}

/// The answered calls since start (a call that failed is not counted), by who made them.
#[derive(Default)]
pub struct CallStats {
    from_objects: Counts,
    from_workers: Counts,
}

struct Counts {
    calls: AtomicU64,
    overhead_ns: AtomicU64,
    callee_ns: AtomicU64,
    handback_ns: AtomicU64,
    /// One per bound of [`OVERHEAD_BUCKETS_US`], then the rest.
    buckets: [AtomicU64; OVERHEAD_BUCKETS_US.len() + 1],
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            calls: AtomicU64::new(0),
            overhead_ns: AtomicU64::new(0),
            callee_ns: AtomicU64::new(0),
            handback_ns: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The counts of one kind of caller as `/_admin/stats` shows them. Read field by field while
/// calls go on, so a snapshot taken under load may be off by the calls in flight.
#[derive(Serialize)]
pub struct CallCounts {
    pub calls: u64,
    pub overhead_ns_total: u64,
    pub callee_ns_total: u64,
    pub handback_ns_total: u64,
    pub overhead_histogram: Vec<Bucket>,
}

/// Calls whose overhead was at most `le_us` (and above the previous bucket's); `None`: above
/// every bound.
#[derive(Serialize)]
pub struct Bucket {
    pub le_us: Option<u64>,
    pub calls: u64,
}

impl CallStats {
    /// Counts an answered call: `took`, the caller's time in it; `callee`, the callee's event;
    /// `handback`, the part of the overhead from the callee's release to the answer's return.
    pub fn record(&self, caller: Caller, took: Duration, callee: Duration, handback: Duration) {
        let counts = match caller {
            Caller::Object => &self.from_objects,
            Caller::Worker => &self.from_workers,
        };
        let overhead = took.saturating_sub(callee);
        let bucket =
            OVERHEAD_BUCKETS_US.partition_point(|&le| u128::from(le) * 1000 < overhead.as_nanos());
        counts.calls.fetch_add(1, Ordering::Relaxed);
        counts
            .overhead_ns
            .fetch_add(nanos(overhead), Ordering::Relaxed);
        counts.callee_ns.fetch_add(nanos(callee), Ordering::Relaxed);
        counts
            .handback_ns
            .fetch_add(nanos(handback), Ordering::Relaxed);
        counts.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn from_objects(&self) -> CallCounts {
        self.from_objects.snapshot()
    }

    pub fn from_workers(&self) -> CallCounts {
        self.from_workers.snapshot()
    }
}

impl Counts {
    fn snapshot(&self) -> CallCounts {
        let bounds = OVERHEAD_BUCKETS_US.iter().map(|&le| Some(le)).chain([None]);
        CallCounts {
            calls: self.calls.load(Ordering::Relaxed),
            overhead_ns_total: self.overhead_ns.load(Ordering::Relaxed),
            callee_ns_total: self.callee_ns.load(Ordering::Relaxed),
            handback_ns_total: self.handback_ns.load(Ordering::Relaxed),
            overhead_histogram: bounds
                .zip(&self.buckets)
                .map(|(le_us, calls)| Bucket {
                    le_us,
                    calls: calls.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overhead_falls_in_the_first_bucket_whose_bound_it_does_not_pass() {
        let stats = CallStats::default();
        let us = Duration::from_micros;
        stats.record(Caller::Object, us(120), us(100), us(15)); // 20 µs: the bucket of 20
        stats.record(Caller::Object, us(121), us(100), us(15)); // 21 µs: the bucket of 22
        stats.record(Caller::Object, us(50_000), us(0), us(0)); // past every bound
        stats.record(Caller::Worker, us(5), us(9), us(0)); // a callee longer than the call: 0
        let objects = stats.from_objects();
        assert_eq!(objects.calls, 3);
        assert_eq!(objects.overhead_ns_total, 50_041_000);
        assert_eq!(objects.callee_ns_total, 200_000);
        assert_eq!(objects.handback_ns_total, 30_000);
        let count = |le: Option<u64>| {
            let bucket = objects.overhead_histogram.iter().find(|b| b.le_us == le);
            bucket.unwrap().calls
        };
        assert_eq!((count(Some(20)), count(Some(22)), count(None)), (1, 1, 1));
        let workers = stats.from_workers();
        assert_eq!((workers.calls, workers.overhead_ns_total), (1, 0));
        assert_eq!(workers.overhead_histogram[0].calls, 1);
    }
}
