//! The pooling allocator: instance slots reserved at start, and the memory mappings they hold.

use crate::memory::MEMORIES_PER_INSTANCE as MEMORIES_PER_COMPONENT;
use wasmtime::component::Component;
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Address space the pool of linear memories may reserve, in all (16 TiB of the 128 TiB a 64-bit
/// process has): with many instances, each gets a smaller share.
const MEMORY_POOL_BYTES: u64 = 16 << 40;

/// Core instances and tables one component may have: a Rust component has a few core instances
/// (its module plus adapter shims); these leave room for others.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const TABLES_PER_COMPONENT: u32 = 8;

/// Most instance teardowns whose memory is given back to the kernel in one call. Each call makes
/// the kernel flush the other cores' TLBs, and one per teardown was the largest cost of objects
/// churning past the live-instance cap; batches of four took most of it away.
const MAX_DECOMMIT_BATCH: usize = 4;

/// The decommit batch for instances of at most `memory_bytes` under a host budget of
/// `budget_bytes`. Until its batch is full an ended instance's pages stay resident, uncounted by
/// the budget: wasmtime keeps a batch per core (at most 16), so what may wait is held to a
/// sixteenth of the budget, and a small budget gets no batching (batching regardless of it, the
/// 1 GiB budget test in `tests/overload.rs` sees the host grow past 2 GiB).
fn decommit_batch(memory_bytes: usize, budget_bytes: usize, cores: usize) -> usize {
    let shards = cores.clamp(1, 16);
    let waiting = (budget_bytes / 16) / shards.saturating_mul(memory_bytes).max(1);
    (1 + waiting).min(MAX_DECOMMIT_BATCH)
}

/// Refuses a component with more linear memories than an instance slot holds: the pool, and the
/// mapping budget behind the live-instance cap, hold one each.
pub fn check_memories(component: &Component) -> Result<(), String> {
    let memories = component.resources_required().map_or(0, |r| r.num_memories);
    if memories > MEMORIES_PER_COMPONENT {
        return Err(format!(
            "it defines {memories} linear memories; dohost runs components with at most \
             {MEMORIES_PER_COMPONENT}"
        ));
    }
    Ok(())
}

/// The pooling allocator, sized for `max_instances` live instances of at most `memory_bytes`
/// within a host budget of `budget_bytes` for all their memories.
///
/// Instances come from slots reserved once at start-up: creating one is a copy-on-write mapping
/// of the component's memory image instead of fresh mappings per instance (which also run into
/// the kernel's limit on mappings well before 10,000 live instances).
pub(super) fn configure(
    config: &mut Config,
    max_instances: u32,
    memory_bytes: usize,
    budget_bytes: usize,
) {
    let memories = max_instances.saturating_mul(MEMORIES_PER_COMPONENT);
    // Each memory slot reserves its share of the pool, at least the memory limit itself; the
    // full 4 GiB (no bounds checks at all) when the pool is small enough.
    let share = (MEMORY_POOL_BYTES / u64::from(memories.max(1))).min(4 << 30);
    let reservation = share
        .max(memory_bytes as u64)
        .next_power_of_two()
        .min(4 << 30);
    config.memory_reservation(reservation);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(max_instances)
        .total_core_instances(max_instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(memories)
        .total_tables(max_instances.saturating_mul(TABLES_PER_COMPONENT))
        .total_stacks(max_instances)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_unused_warm_slots(0)
        .decommit_batch_size(decommit_batch(
            memory_bytes,
            budget_bytes,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        ))
        .max_memory_size(memory_bytes.min(reservation as usize));
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teardowns_are_batched_only_as_far_as_a_sixteenth_of_the_budget_allows() {
        const MIB: usize = 1 << 20;
        // 2 cores, 128 MiB instances: a 12 GiB budget lets 3 wait per core, a batch of 4.
        assert_eq!(decommit_batch(128 * MIB, 12 << 30, 2), 4);
        assert_eq!(decommit_batch(128 * MIB, 6 << 30, 2), 2);
        // A small budget: none may wait.
        assert_eq!(decommit_batch(128 * MIB, 1 << 30, 2), 1);
        assert_eq!(decommit_batch(128 * MIB, 1 << 30, 64), 1);
        // Never more than the batch that measured best.
        assert_eq!(decommit_batch(MIB, 64 << 30, 2), MAX_DECOMMIT_BATCH);
    }
}
