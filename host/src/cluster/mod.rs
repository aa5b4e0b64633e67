//! Several dohost nodes as one (`dohost serve --cluster postgres://...`): objects' state in
//! PostgreSQL, one owner per object, fenced.
//!
//! Objects map to [`SHARDS`] shards by their id; each shard has at most one owner node and an
//! epoch, both in the database beside a table of nodes and their leases, as Orleans keeps its
//! membership in SQL. `membership` keeps this node's lease fresh and takes or gives up shards;
//! the view it reads decides where each request goes ([`Cluster::route`]): served here, forwarded
//! to its owner (`forward`), or refused with 503 while its shard has no owner.
//!
//! **Fencing.** An object started here carries its shard's epoch, and every commit checks, in its
//! own transaction, that this node still owns the shard at that epoch (see
//! [`Postgres`](crate::storage::Postgres)). A node that lost its lease — paused, cut off, slow —
//! can therefore never write again, even before it learns so; the output gate holds every
//! response behind its commit, so nothing it answers depends on a write that was refused.

mod calls;
mod deploys;
mod forward;
mod membership;
mod namespaces;

pub use crate::config::ClusterConfig;
pub use crate::storage::{SHARDS, shard_of};
pub use calls::{
    CALL_HEADER, CALL_PATH, FAILED_HEADER, ForwardedCall, STREAM_HEADER, failed_header,
};
pub use deploys::{Apply, Change};
pub use forward::{FORWARDED, SECRET_HEADER, forward, forward_upgrade};
pub use membership::Status;
pub use namespaces::FORGET_PATH;

use crate::names::ObjectId;
use crate::storage::{DbError, Postgres};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

/// Where a request for an object goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node owns the object's shard, at this epoch.
    Here { epoch: u64 },
    /// The node at this URL owns it.
    There(String),
    /// Nobody serves it now (its shard is moving, or this node's lease is stale): retry soon.
    Nowhere,
}

/// Per shard: its live owner and epoch, if it has one.
type Owners = Vec<Option<(Arc<str>, u64)>>;

/// Who owns each shard, as last read from the database.
#[derive(Default)]
struct View {
    owners: Owners,
    /// Live nodes' advertised URLs.
    nodes: HashMap<Arc<str>, String>,
}

/// This node's membership of a cluster.
pub struct Cluster {
    config: ClusterConfig,
    store: Arc<Postgres>,
    view: RwLock<View>,
    /// Counts the view's changes, for those waiting on one (see [`Cluster::until_moved`]).
    view_changed: tokio::sync::watch::Sender<u64>,
    /// Until when this node's lease surely holds: its last heartbeat's start plus the lease,
    /// less a margin. Past it the node serves nothing until it has read the view again.
    fresh_until: Mutex<Option<Instant>>,
    /// This node's place in the log of deploys, once following it.
    deploys: OnceLock<deploys::Deploys>,
    /// Requests and upgrades forwarded, and stub calls made to other nodes, since start.
    forwarded_requests: AtomicU64,
    forwarded_calls: AtomicU64,
    /// Set when the node stops cleanly: it takes no more shards, and its answers close their
    /// connections, so that clients reconnect before it goes.
    leaving: AtomicBool,
}

impl Cluster {
    /// Joins the cluster's database: its store of objects' state, and the membership tables.
    /// Serving starts once [`Cluster::start`] has taken this node's first shards.
    pub fn open(config: ClusterConfig) -> Result<Arc<Cluster>, DbError> {
        let store = Postgres::open(&config.url, &config.node, config.lease)?;
        Ok(Arc::new(Cluster {
            config,
            store,
            view: RwLock::new(View::default()),
            view_changed: tokio::sync::watch::Sender::new(0),
            fresh_until: Mutex::new(None),
            deploys: OnceLock::new(),
            leaving: AtomicBool::new(false),
            forwarded_requests: AtomicU64::new(0),
            forwarded_calls: AtomicU64::new(0),
        }))
    }

    /// The store of objects' state.
    pub fn store(&self) -> &Arc<Postgres> {
        &self.store
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Where a request for the object `id` goes now.
    pub fn route(&self, id: &ObjectId) -> Route {
        let view = self.view.read().unwrap();
        let Some(Some((owner, epoch))) = view.owners.get(shard_of(id) as usize) else {
            return Route::Nowhere;
        };
        if **owner == *self.config.node {
            let fresh = self
                .fresh_until
                .lock()
                .unwrap()
                .is_some_and(|until| Instant::now() < until);
            return if fresh {
                Route::Here { epoch: *epoch }
            } else {
                Route::Nowhere
            };
        }
        match view.nodes.get(owner) {
            Some(url) => Route::There(url.clone()),
            None => Route::Nowhere,
        }
    }

    /// What the metrics show of this node.
    pub fn now(&self) -> crate::metrics::ClusterNow {
        let shards = {
            let view = self.view.read().unwrap();
            let me: &str = &self.config.node;
            view.owners
                .iter()
                .flatten()
                .filter(|(owner, _)| **owner == *me)
                .count() as u64
        };
        crate::metrics::ClusterNow {
            shards,
            lease_fresh: self
                .fresh_until
                .lock()
                .unwrap()
                .is_some_and(|until| Instant::now() < until),
            forwarded_requests: self.forwarded_requests.load(Ordering::Relaxed),
            forwarded_calls: self.forwarded_calls.load(Ordering::Relaxed),
        }
    }

    /// Counts a request (or upgrade) forwarded to another node.
    pub fn count_forwarded(&self) {
        self.forwarded_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether this node is leaving the cluster (stopping cleanly).
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Relaxed)
    }

    /// Resolves once this node no longer sees the object `id` as served by the node at
    /// `node_url`: that node's lease ended (paused, cut off, dead) and its shard moves. What was
    /// forwarded there and is not answered yet is then given up: if it ever runs there, that node
    /// refuses it (its lease is stale) or the fence refuses its commit.
    pub async fn until_moved(&self, id: &ObjectId, node_url: &str) {
        let mut changes = self.view_changed.subscribe();
        loop {
            if !matches!(self.route(id), Route::There(url) if url == node_url) {
                return;
            }
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Replaces the view, and wakes those waiting on a change of it.
    fn set_view(&self, view: View) {
        *self.view.write().unwrap() = view;
        self.view_changed.send_modify(|n| *n += 1);
    }

    /// Whether a request carries this cluster's secret: only nodes may send forwarded requests.
    pub fn is_node(&self, secret: Option<&str>) -> bool {
        secret.is_some_and(|s| crate::names::same_secret(s, &self.config.secret))
    }
}
