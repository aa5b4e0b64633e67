//! The host's memory budget: what the linear memories of all live instances may add up to.
//!
//! Each instance's memory is counted as it grows (its initial size included) and uncounted when
//! the instance is dropped. Instances that sit idle between events can be dropped at any time
//! (hibernation), so growth is allowed while what the busy ones hold fits the budget; the
//! least recently used idle instances are then evicted to make room. Growth that even evicting
//! every idle instance could not make room for is refused, and its event fails as `overloaded`.
//!
//! It also holds the arithmetic of memory mappings: the kernel limits how many a process may
//! have, and each instance slot holds a few, so the live-instance cap must fit under that limit.

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

/// Linear memories one instance may have. A Rust component has one; the pool, and the mapping
/// budget behind the live-instance cap, hold one per instance slot.
pub const MEMORIES_PER_INSTANCE: u32 = 1;

/// Memory mappings the pool holds per live instance, at most: its stack slot is two (the stack
/// and its guard page, from start-up), and a memory slot once used keeps four (the image mapped
/// copy-on-write, the accessible heap, the reservation around them) until the process ends. With
/// no warm slots kept aside, slots are reused before fresh ones are taken, so the memory slots
/// ever used are at most the live instances at the busiest moment.
const MAPS_PER_INSTANCE: u64 = 2 + 4 * MEMORIES_PER_INSTANCE as u64;

/// Mappings left for everything else: threads' stacks, libraries, compiled code, the allocator's
/// arenas. The host at start holds about a hundred.
const MAPS_RESERVED: u64 = 4096;

/// The kernel's limit on a process's memory mappings (`vm.max_map_count`), where it can be read.
pub fn map_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The memory mappings `instances` live instances and the rest of the process need at most.
pub fn maps_needed(instances: usize) -> u64 {
    (instances as u64)
        .saturating_mul(MAPS_PER_INSTANCE)
        .saturating_add(MAPS_RESERVED)
}

/// The most live instances whose mappings fit under `map_limit`: past the kernel's limit a
/// mapping fails, and the allocator aborts the process when its own does.
pub fn max_instances_for_maps(map_limit: u64) -> usize {
    usize::try_from(map_limit.saturating_sub(MAPS_RESERVED) / MAPS_PER_INSTANCE)
        .unwrap_or(usize::MAX)
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
