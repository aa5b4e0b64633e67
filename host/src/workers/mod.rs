//! Workers: an app's stateless front. A worker has no identity and no queue: each request runs on
//! an instance of its own, concurrently with the others, under the same limits as an object's
//! event.
//!
//! An instance that answered is kept for a later request of the same app version (see
//! [`IdlePool`]); one that failed is dropped at once.
//!
//! A worker of the world `worker` answers with whole bodies ([`Workers::fetch`]); an
//! http-worker's bodies stream (`streaming`, [`Workers::serve`]).

mod streaming;

pub use streaming::StreamingError;

use crate::names::ObjectIdentity;
use crate::objects::{Fetched, ObjectError, Objects};
use crate::registry::App;
use crate::runtime::{Guest, IdleLimits, IdlePool, Instance, Pre, Request};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;

/// The workers of every app.
pub struct Workers {
    objects: Objects,
    idle: Arc<IdlePool>,
}

impl Workers {
    /// The workers of a host whose idle instances are dropped after `idle_timeout`, and held
    /// within `limits`.
    pub fn start(objects: Objects, idle_timeout: Duration, limits: IdleLimits) -> Arc<Self> {
        Arc::new(Workers {
            objects,
            idle: IdlePool::start(idle_timeout, limits),
        })
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
                self.idle.keep(&app.name, app.version, instance, permit);
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
        self.idle.count()
    }

    /// An idle instance of the app's worker, or a new one, with its slot.
    async fn instance(
        &self,
        app: &App,
        worker: &Pre,
    ) -> Result<(Instance, OwnedSemaphorePermit), ObjectError> {
        if let Some(idle) = self.idle.take(&app.name, app.version) {
            return Ok(idle);
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

    /// Drops the idle instances of versions of `app` older than `version`: a redeploy frees
    /// their slots at once rather than when they are next found.
    pub fn forget_older(&self, app: &str, version: u64) {
        self.idle.forget_older(app, version);
    }
}
