//! Workers: an app's stateless front. A worker has no identity and no queue: each request runs on
//! an instance of its own, concurrently with the others, under the same limits as an object's
//! event.
//!
//! An instance that answered is kept for a later request of the same app version, and dropped
//! once idle for the host's idle timeout, as objects hibernate; one that failed is dropped at
//! once. Reuse is what makes the hop cheap: a fresh instance per request made increments through
//! a worker 4× slower (BENCHMARKS.md). Workers and objects share the host's instance slots and
//! memory budget, which objects can reclaim from idle objects but not from idle workers, so the
//! idle workers are bounded three ways: per app, in number, and in memory ([`IdleLimits`]).
//!
//! A worker of the world `worker` answers with whole bodies ([`Workers::fetch`]); an
//! http-worker's bodies stream (`streaming`, [`Workers::serve`]).

mod streaming;

pub use streaming::StreamingError;

use crate::names::ObjectIdentity;
use crate::objects::{Fetched, ObjectError, Objects};
use crate::registry::App;
use crate::runtime::{Guest, Instance, Pre, Request};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;

/// How many idle instances of one app's worker the host keeps: one for each request in flight at
/// 64 concurrent requests, since requests through a worker mostly wait on objects.
const MAX_IDLE_PER_APP: usize = 64;
/// A worker instance whose linear memory grew past this is dropped after its request, not kept:
/// far more than a worker that routes requests needs.
const MAX_IDLE_INSTANCE_MEMORY: usize = 16 << 20;

/// How much the idle workers of all apps may hold together.
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

/// An idle instance, the app version it runs, and its slot.
struct Idle {
    instance: Instance,
    version: u64,
    since: Instant,
    /// Its linear memory when it was kept.
    memory: usize,
    _permit: OwnedSemaphorePermit,
}

/// The idle instances of every app, and what they hold together.
#[derive(Default)]
struct Pools {
    by_app: HashMap<String, Vec<Idle>>,
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

/// The workers of every app.
pub struct Workers {
    objects: Objects,
    idle: Mutex<Pools>,
    idle_timeout: Duration,
    limits: IdleLimits,
}

impl Workers {
    /// The workers of a host whose idle instances are dropped after `idle_timeout`, and held
    /// within `limits`.
    pub fn start(objects: Objects, idle_timeout: Duration, limits: IdleLimits) -> Arc<Self> {
        let workers = Arc::new(Workers {
            objects,
            idle: Mutex::new(Pools::default()),
            idle_timeout,
            limits,
        });
        tokio::spawn(drop_idle(Arc::downgrade(&workers)));
        workers
    }

    /// Runs a request on the app's worker. `upgrade`: the request asks for a WebSocket, which the
    /// worker may hand to an object through a stub.
    pub async fn fetch(
        &self,
        app: &App,
        request: Request,
        upgrade: bool,
    ) -> Result<Fetched, ObjectError> {
        let Some(worker) = &app.worker else {
            return Err(ObjectError::UnknownNamespace(app.name.clone()));
        };
        let (mut instance, permit) = self.instance(app, worker).await?;
        let result = instance.fetch(request, upgrade, None).await;
        instance.count_fuel();
        let io = instance.take_socket_io();
        match result {
            Ok(response) => {
                self.keep_idle(&app.name, app.version, instance, permit);
                Ok(Fetched {
                    response,
                    accepted: io.accepted,
                })
            }
            Err(e) => {
                tracing::warn!(app = %app.name, "worker request failed: {e}");
                Err(e.into())
            }
        }
    }

    /// The idle instances of all apps' workers, kept for later requests.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().instances
    }

    /// An idle instance of the app's worker, or a new one, with its slot.
    async fn instance(
        &self,
        app: &App,
        worker: &Pre,
    ) -> Result<(Instance, OwnedSemaphorePermit), ObjectError> {
        if let Some(idle) = self.take_idle(&app.name, app.version) {
            return Ok((idle.instance, idle._permit));
        }
        let permit = self.objects.instance_permit().await?;
        let guest = Guest {
            identity: ObjectIdentity::new(&app.name, ""),
            storage: None,
            env: app.env.clone(),
            calls: self.objects.calls(),
        };
        let runtime = self.objects.runtime();
        let sockets = self.objects.sockets().clone();
        let instance = runtime
            .instantiate(worker, guest, sockets, self.objects.meter(&app.name))
            .await
            .map_err(|(e, _)| {
                tracing::warn!(app = %app.name, "worker: {e}");
                e
            })?;
        Ok((instance, permit))
    }

    fn take_idle(&self, app: &str, version: u64) -> Option<Idle> {
        let mut pools = self.idle.lock().unwrap();
        let mut stale = Vec::new();
        let mut found = None;
        if let Some(pool) = pools.by_app.get_mut(app) {
            // Instances of an older version are dropped as they are found.
            while let Some(candidate) = pool.pop() {
                if candidate.version == version {
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
        found
    }

    fn keep_idle(&self, app: &str, version: u64, instance: Instance, permit: OwnedSemaphorePermit) {
        let memory = instance.memory_bytes();
        if memory > MAX_IDLE_INSTANCE_MEMORY {
            return;
        }
        let mut pools = self.idle.lock().unwrap();
        let full = pools.instances + 1 > self.limits.instances
            || pools.memory + memory > self.limits.memory
            || pools
                .by_app
                .get(app)
                .is_some_and(|p| p.len() >= MAX_IDLE_PER_APP);
        if full {
            return;
        }
        pools.instances += 1;
        pools.memory += memory;
        pools.by_app.entry(app.to_owned()).or_default().push(Idle {
            instance,
            version,
            since: Instant::now(),
            memory,
            _permit: permit,
        });
    }

    /// Drops the idle instances of versions of `app` older than `version`: a redeploy frees
    /// their slots at once rather than when they are next found.
    pub fn forget_older(&self, app: &str, version: u64) {
        self.drop_idle_where(|name, idle| name == app && idle.version < version);
    }

    /// Drops the idle instances `stale` picks, outside the lock.
    fn drop_idle_where(&self, stale: impl Fn(&str, &Idle) -> bool) {
        let dropped: Vec<Idle> = {
            let mut pools = self.idle.lock().unwrap();
            let mut dropped = Vec::new();
            for (app, pool) in &mut pools.by_app {
                let (old, keep): (Vec<Idle>, Vec<Idle>) = std::mem::take(pool)
                    .into_iter()
                    .partition(|i| stale(app, i));
                *pool = keep;
                dropped.extend(old);
            }
            pools.by_app.retain(|_, pool| !pool.is_empty());
            for idle in &dropped {
                pools.forget(idle);
            }
            dropped
        };
        drop(dropped);
    }
}

/// Drops the instances idle for longer than the idle timeout, until the host is gone.
async fn drop_idle(workers: Weak<Workers>) {
    loop {
        let every = match workers.upgrade() {
            Some(w) => (w.idle_timeout / 2).max(Duration::from_millis(100)),
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(workers) = workers.upgrade() else {
            return;
        };
        workers.drop_idle_where(|_, idle| idle.since.elapsed() >= workers.idle_timeout);
    }
}
