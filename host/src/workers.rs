//! Workers: an app's stateless front. A worker has no identity and no queue: each request runs on
//! an instance of its own, concurrently with the others, under the same limits as an object's
//! event.
//!
//! An instance that answered is kept for a later request of the same app version (instantiating
//! costs more than the whole worker hop otherwise would), up to [`MAX_IDLE_PER_APP`], and dropped
//! once idle for the host's idle timeout, as objects hibernate; one that failed is dropped at
//! once. Workers and objects share the host's instance slots.

use crate::names::ObjectIdentity;
use crate::objects::{Fetched, ObjectError, Objects};
use crate::registry::App;
use crate::runtime::{Guest, Instance, Request};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;

/// How many idle instances of one app's worker the host keeps. Enough for the concurrency two
/// cores sustain; each holds an instance slot, so the bound keeps objects' slots free.
pub const MAX_IDLE_PER_APP: usize = 8;

/// An idle instance, the app version it runs, and its slot.
struct Idle {
    instance: Instance,
    version: u64,
    since: Instant,
    _permit: OwnedSemaphorePermit,
}

/// The workers of every app.
pub struct Workers {
    objects: Objects,
    idle: Mutex<HashMap<String, Vec<Idle>>>,
    idle_timeout: Duration,
}

impl Workers {
    /// The workers of a host whose idle instances are dropped after `idle_timeout`.
    pub fn start(objects: Objects, idle_timeout: Duration) -> Arc<Self> {
        let workers = Arc::new(Workers {
            objects,
            idle: Mutex::new(HashMap::new()),
            idle_timeout,
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
        let (mut instance, permit) = match self.take_idle(&app.name, app.version) {
            Some(idle) => (idle.instance, idle._permit),
            None => {
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
                (instance, permit)
            }
        };
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

    fn take_idle(&self, app: &str, version: u64) -> Option<Idle> {
        let mut idle = self.idle.lock().unwrap();
        let pool = idle.get_mut(app)?;
        // Instances of an older version are dropped as they are found.
        while let Some(candidate) = pool.pop() {
            if candidate.version == version {
                return Some(candidate);
            }
        }
        None
    }

    fn keep_idle(&self, app: &str, version: u64, instance: Instance, permit: OwnedSemaphorePermit) {
        let mut idle = self.idle.lock().unwrap();
        let pool = idle.entry(app.to_owned()).or_default();
        pool.retain(|i| i.version == version);
        if pool.len() < MAX_IDLE_PER_APP {
            pool.push(Idle {
                instance,
                version,
                since: Instant::now(),
                _permit: permit,
            });
        }
    }

    /// Drops the idle instances of versions of `app` older than `version`: a redeploy frees
    /// their slots at once rather than when they are next found.
    pub fn forget_older(&self, app: &str, version: u64) {
        let stale: Vec<Idle> = {
            let mut idle = self.idle.lock().unwrap();
            let Some(pool) = idle.get_mut(app) else {
                return;
            };
            let (keep, stale) = std::mem::take(pool)
                .into_iter()
                .partition(|i| i.version >= version);
            *pool = keep;
            stale
        };
        drop(stale);
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
        let stale: Vec<Idle> = {
            let mut idle = workers.idle.lock().unwrap();
            let mut stale = Vec::new();
            for pool in idle.values_mut() {
                let (keep, old): (Vec<Idle>, Vec<Idle>) = std::mem::take(pool)
                    .into_iter()
                    .partition(|i| i.since.elapsed() < workers.idle_timeout);
                *pool = keep;
                stale.extend(old);
            }
            idle.retain(|_, pool| !pool.is_empty());
            stale
        };
        // Torn down outside the lock.
        drop(stale);
    }
}
