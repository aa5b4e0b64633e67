//! Deploys reach every node: the admin's changes to the registry (code, apps, secrets, deletes)
//! form one log in the database, and every node applies it, in order.
//!
//! The node that takes a change holds the log's lock row, catches up with the log, applies the
//! change to its own registry (which checks it and answers the admin), and appends it, all in one
//! transaction: the log's order is the order in which changes were applied. The other nodes
//! apply new entries within a second; a node that starts, or joins, applies the whole log first.
//! Each node keeps how far it has applied in its data dir, beside its copy of the registry. An
//! entry that a later one replaces whole (a namespace's code, an app) leaves the log.

use super::Cluster;
use crate::storage::{DbError, db_error};
use postgres::Client;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a node looks for changes made on the others.
const POLL: Duration = Duration::from_secs(1);

/// One change to the registry, as the log keeps it.
#[derive(Debug, Clone)]
pub struct Change {
    /// `deploy` (a namespace's code), `app` (an app upload, as the admin API takes it), `secret`
    /// (an app's secret, JSON `{name, value}`) or `forget` (a deleted namespace).
    pub kind: String,
    /// The namespace or app.
    pub name: String,
    pub body: Vec<u8>,
}

/// Applies a change made on another node to this node's registry.
pub type Apply = Box<dyn Fn(&Change) -> Result<(), String> + Send + Sync>;

/// This node's place in the log, and how it applies what it finds there.
pub(super) struct Deploys {
    /// The last entry applied here; held while applying, so that entries apply once, in order.
    applied: Mutex<i64>,
    apply: Apply,
    /// Where `applied` is kept across restarts.
    local: Arc<crate::storage::Db>,
}

impl Deploys {
    pub(super) fn new(local: Arc<crate::storage::Db>, apply: Apply) -> Result<Deploys, DbError> {
        let applied = local.cluster_log_applied()?;
        Ok(Deploys {
            applied: Mutex::new(applied),
            apply,
            local,
        })
    }

    /// Applies the log's entries after `applied`, in order, within `c` (a transaction that holds
    /// the lock, or a plain connection).
    fn catch_up(
        &self,
        c: &mut impl postgres::GenericClient,
        applied: &mut i64,
    ) -> Result<(), DbError> {
        let rows = c
            .query(
                "SELECT seq, kind, name, body FROM dohost_deploys WHERE seq > $1 ORDER BY seq",
                &[&*applied],
            )
            .map_err(db_error)?;
        for row in rows {
            let change = Change {
                kind: row.get(1),
                name: row.get(2),
                body: row.get(3),
            };
            if let Err(e) = (self.apply)(&change) {
                // The node that took it applied it; here it can only fail the same way or for a
                // local reason, which the log shows.
                tracing::warn!(
                    kind = change.kind,
                    name = change.name,
                    "applying a change made on another node: {e}"
                );
            }
            *applied = row.get(0);
            self.local.set_cluster_log_applied(*applied)?;
        }
        Ok(())
    }
}

impl Cluster {
    /// Makes `change` on this node through `op` (the registry's own call, which checks it) and
    /// appends it to the log, for the other nodes. Blocking.
    pub fn change<T, E: From<DbError>>(
        &self,
        change: &Change,
        op: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let deploys = self
            .deploys
            .get()
            .ok_or_else(|| DbError::new("the cluster has not started"))?;
        let mut applied = deploys.applied.lock().unwrap();
        let mut c = self.store.connect()?;
        let mut tx = c.transaction().map_err(db_error)?;
        // The change is compiled while the transaction waits (seconds for a large app): not the
        // idle transaction of a paused node, which the connection's settings end after half a
        // lease.
        tx.batch_execute("SET LOCAL idle_in_transaction_session_timeout = 0")
            .map_err(db_error)?;
        tx.query(
            "SELECT id FROM dohost_deploy_lock WHERE id = 1 FOR UPDATE",
            &[],
        )
        .map_err(db_error)?;
        deploys.catch_up(&mut tx, &mut applied)?;
        let done = op()?;
        let seq: i64 = tx
            .query_one(
                "INSERT INTO dohost_deploys (kind, name, body) VALUES ($1, $2, $3) RETURNING seq",
                &[&change.kind, &change.name, &change.body],
            )
            .map_err(db_error)?
            .get(0);
        // What this change replaces whole is dropped from the log, so that it holds about one
        // entry per namespace and app, not every upload ever made.
        let superseded: &[&str] = match change.kind.as_str() {
            "deploy" | "forget" => &["deploy", "forget"],
            "app" => &["app"],
            _ => &[],
        };
        if !superseded.is_empty() {
            tx.execute(
                "DELETE FROM dohost_deploys WHERE seq < $1 AND name = $2 AND kind = ANY($3)",
                &[&seq, &change.name, &superseded],
            )
            .map_err(db_error)?;
        }
        tx.commit().map_err(db_error)?;
        *applied = seq;
        deploys.local.set_cluster_log_applied(seq)?;
        Ok(done)
    }

    /// Applies the log up to its end (at start), then keeps applying what the other nodes add.
    pub fn follow_deploys(
        self: &Arc<Self>,
        apply: Apply,
        local: Arc<crate::storage::Db>,
    ) -> Result<(), DbError> {
        let deploys = Deploys::new(local, apply)?;
        let mut c = self.store.connect()?;
        deploys.catch_up(&mut c, &mut deploys.applied.lock().unwrap())?;
        if self.deploys.set(deploys).is_err() {
            return Err(DbError::new("the cluster's deploys were started twice"));
        }
        let cluster = self.clone();
        std::thread::Builder::new()
            .name("dohost-deploys".into())
            .spawn(move || {
                let deploys = cluster.deploys.get().expect("set above");
                let mut client: Option<Client> = Some(c);
                loop {
                    std::thread::sleep(POLL);
                    if client.as_ref().is_none_or(Client::is_closed) {
                        client = cluster.store.connect().ok();
                    }
                    let Some(c) = client.as_mut() else { continue };
                    let mut applied = deploys.applied.lock().unwrap();
                    if let Err(e) = deploys.catch_up(c, &mut applied) {
                        tracing::warn!("following the cluster's deploys: {e}");
                        client = None;
                    }
                }
            })
            .map_err(|e| DbError::new(format!("starting the deploys thread: {e}")))?;
        Ok(())
    }
}
