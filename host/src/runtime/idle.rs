//! Idle instances kept for reuse: an app's worker instances, and a shared object class's (world
//! `shared-object`). Reuse is what makes them cheap: a fresh instance per request made increments
//! through a worker 4× slower (BENCHMARKS.md).
//!
//! An instance is kept for a later event of the same name (app or namespace) and code (a version
//! number that only grows), and dropped once idle for the host's idle timeout. Objects' eviction reclaims memory and slots
//! from idle objects, never from these, so what they hold is bounded three ways: per name, in
//! number, and in memory ([`IdleLimits`]).

use super::instance::Instance;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;

/// How many idle instances of one name are kept: one for each event in flight at 64
/// concurrent requests.
const MAX_IDLE_PER_NAME: usize = 64;
/// An instance whose linear memory grew past this is dropped after its event, not kept: far more
/// than a worker that routes requests, or a shared object that keeps its state in storage, needs.
const MAX_IDLE_INSTANCE_MEMORY: usize = 16 << 20;

/// How much the idle instances of one pool may hold together.
#[derive(Debug, Clone, Copy)]
pub struct IdleLimits {
    /// Idle instances.
    pub instances: usize,
    /// Bytes of their linear memory.
    pub memory: usize,
}

impl IdleLimits {
    /// A sixteenth of the host's instance slots and of its memory budget.
    pub fn share_of(max_live_objects: usize, max_memory: usize) -> Self {
        IdleLimits {
            instances: max_live_objects / 16,
            memory: max_memory / 16,
        }
    }
}

/// An idle instance, the code it runs, and its slot.
struct Idle {
    instance: Instance,
    code: u64,
    since: Instant,
    /// Its linear memory when it was kept.
    memory: usize,
    permit: OwnedSemaphorePermit,
}

/// The idle instances by name, and what they hold together.
#[derive(Default)]
struct Pools {
    by_name: HashMap<String, Vec<Idle>>,
    instances: usize,
    memory: usize,
}

impl Pools {
    /// Takes `idle` out of the totals; the caller drops it.
    fn forget(&mut self, idle: &Idle) {
        self.instances -= 1;
        self.memory -= idle.memory;
    }
}

/// Idle instances of many names (apps or namespaces), kept for reuse.
pub struct IdlePool {
    pools: Mutex<Pools>,
    idle_timeout: Duration,
    limits: IdleLimits,
}

impl IdlePool {
    /// A pool whose instances are dropped after `idle_timeout`, and held within `limits`.
    pub fn start(idle_timeout: Duration, limits: IdleLimits) -> Arc<Self> {
        let pool = Arc::new(IdlePool {
            pools: Mutex::new(Pools::default()),
            idle_timeout,
            limits,
        });
        tokio::spawn(drop_idle(Arc::downgrade(&pool)));
        pool
    }

    /// The idle instances kept.
    pub fn count(&self) -> usize {
        self.pools.lock().unwrap().instances
    }

    /// An idle instance of `code` of `name`, with its slot; other code's instances are dropped as
    /// they are found.
    pub fn take(&self, name: &str, code: u64) -> Option<(Instance, OwnedSemaphorePermit)> {
        let mut pools = self.pools.lock().unwrap();
        let mut stale = Vec::new();
        let mut found = None;
        if let Some(pool) = pools.by_name.get_mut(name) {
            while let Some(candidate) = pool.pop() {
                if candidate.code == code {
                    found = Some(candidate);
                    break;
                }
                stale.push(candidate);
            }
        }
        for idle in stale.iter().chain(&found) {
            pools.forget(idle);
        }
        drop(pools);
        // Torn down outside the lock.
        drop(stale);
        found.map(|idle| (idle.instance, idle.permit))
    }

    /// Keeps `instance` for a later event of `code` of `name`, unless the pool is full or the
    /// instance grew too big; then it is dropped.
    pub fn keep(&self, name: &str, code: u64, instance: Instance, permit: OwnedSemaphorePermit) {
        let memory = instance.memory_bytes();
        if memory > MAX_IDLE_INSTANCE_MEMORY {
            instance.discard();
            return;
        }
        let mut pools = self.pools.lock().unwrap();
        let full = pools.instances + 1 > self.limits.instances
            || pools.memory + memory > self.limits.memory
            || pools
                .by_name
                .get(name)
                .is_some_and(|p| p.len() >= MAX_IDLE_PER_NAME);
        if full {
            drop(pools);
            return;
        }
        pools.instances += 1;
        pools.memory += memory;
        pools
            .by_name
            .entry(name.to_owned())
            .or_default()
            .push(Idle {
                instance,
                code,
                since: Instant::now(),
                memory,
                permit,
            });
    }

    /// Drops the idle instances of `name` older than `code` (every one, with `u64::MAX`): a
    /// redeploy or a delete frees their slots at once rather than when they are next found.
    pub fn forget_older(&self, name: &str, code: u64) {
        self.drop_idle_where(|n, idle| n == name && idle.code < code);
    }

    /// Drops the idle instances `stale` picks, outside the lock.
    fn drop_idle_where(&self, stale: impl Fn(&str, &Idle) -> bool) {
        let dropped: Vec<Idle> = {
            let mut pools = self.pools.lock().unwrap();
            let mut dropped = Vec::new();
            for (name, pool) in &mut pools.by_name {
                let (old, keep): (Vec<Idle>, Vec<Idle>) = std::mem::take(pool)
                    .into_iter()
                    .partition(|i| stale(name, i));
                *pool = keep;
                dropped.extend(old);
            }
            pools.by_name.retain(|_, pool| !pool.is_empty());
            for idle in &dropped {
                pools.forget(idle);
            }
            dropped
        };
        drop(dropped);
    }
}

/// Drops the instances idle for longer than the idle timeout, until the pool is gone.
async fn drop_idle(pool: Weak<IdlePool>) {
    loop {
        let every = match pool.upgrade() {
            Some(p) => (p.idle_timeout / 2).max(Duration::from_millis(100)),
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.drop_idle_where(|_, idle| idle.since.elapsed() >= pool.idle_timeout);
    }
}
