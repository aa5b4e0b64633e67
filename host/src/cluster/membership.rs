//! The membership loop: this node's heartbeat, and the shards it takes or gives up.
//!
//! Every quarter of a lease, on a thread of its own with its own connection:
//! 1. renew this node's lease (its row in `dohost_nodes`, timed by the database's clock);
//! 2. read the live nodes and the shards' owners;
//! 3. take shards that have no live owner, up to an equal share (`ceil(shards / live nodes)`);
//!    give up shards beyond that share when no shard is free for a node below its share (a node
//!    that joined); each takeover raises the shard's epoch, which fences its old owner;
//! 4. for shards lost or given up: end their objects here and close their sockets with 1012
//!    (service restart), so that their clients reconnect to the new owner; for shards taken:
//!    schedule their alarms (those that came due meanwhile fire at once).
//!
//! A node stopped cleanly gives up all of its shards at once ([`Cluster::leave`]).

use super::{Cluster, Owners, View};
use crate::alarms::Alarms;
use crate::names::ObjectId;
use crate::objects::Objects;
use crate::storage::{DbError, SHARDS, db_error, shard_of};
use postgres::Client;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The database's clock in ms since the epoch: leases are timed by one clock for all nodes.
const NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// A node, as `dohost cluster status` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub advertise: String,
    /// Whether its lease is fresh.
    pub live: bool,
    /// Ms until its lease ends (negative: ended that long ago).
    pub lease_left_ms: i64,
    pub shards: u32,
}

/// The cluster as its database sees it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub nodes: Vec<NodeStatus>,
    /// Shards that no live node owns.
    pub unowned_shards: u32,
}

impl Cluster {
    /// Starts the membership loop, and waits (at most a lease) until this node has taken its
    /// first share of the shards or knows their owners, so that it serves from its first request.
    pub fn start(self: &Arc<Self>, objects: Objects, alarms: Arc<Alarms>) -> Result<(), DbError> {
        let mut client = self.store.connect()?;
        // Shards still recorded as this node's (it restarted within its lease) get a new epoch:
        // an earlier process under the same name, if it still runs (paused, not dead), is fenced.
        client
            .execute(
                "UPDATE dohost_shards SET epoch = epoch + 1 WHERE owner = $1",
                &[&self.config.node],
            )
            .map_err(db_error)?;
        let runtime = tokio::runtime::Handle::current();
        let cluster = self.clone();
        let mut round = Round {
            cluster: cluster.clone(),
            objects,
            alarms,
            runtime,
        };
        round.run(&mut client)?;
        std::thread::Builder::new()
            .name("dohost-cluster".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(cluster.config.lease / 4);
                    if round.run(&mut client).is_err() || client.is_closed() {
                        // The database is away: the lease runs out here too, and this node stops
                        // serving until it can renew it.
                        if let Ok(c) = round.cluster.store.connect() {
                            client = c;
                        }
                    }
                }
            })
            .map_err(|e| DbError::new(format!("starting the cluster thread: {e}")))?;
        Ok(())
    }

    /// Gives up every shard this node owns and its lease, for a clean stop: the other nodes take
    /// them at their next round instead of after the lease.
    pub async fn leave(self: &Arc<Self>, objects: &Objects) {
        self.leaving.store(true, Ordering::Relaxed);
        let mine: HashSet<u32> = {
            let view = self.view.read().unwrap();
            owned(&view, &self.config.node).into_keys().collect()
        };
        *self.fresh_until.lock().unwrap() = None;
        close_shards(objects, &mine, self.config.lease).await;
        let count = mine.len();
        let cluster = self.clone();
        let result =
            tokio::task::spawn_blocking(move || {
                let this = &cluster;
                this.store.connect().and_then(|mut c| {
                    let shards: Vec<i32> = mine.iter().map(|&s| s as i32).collect();
                    c.execute(
                "UPDATE dohost_shards SET owner = NULL WHERE shard = ANY($1) AND owner = $2",
                &[&shards, &this.config.node],
            )
            .and_then(|_| {
                c.execute("DELETE FROM dohost_nodes WHERE name = $1", &[&this.config.node])
            })
            .map_err(db_error)
                })
            })
            .await
            .unwrap_or_else(|e| Err(DbError::new(format!("leaving the cluster panicked: {e}"))));
        match result {
            Ok(_) => tracing::info!(shards = count, "left the cluster"),
            Err(e) => tracing::warn!("leaving the cluster: {e}; its shards move after the lease"),
        }
    }

    /// The cluster as the database sees it, for `dohost cluster status`. Blocking.
    pub fn status(&self) -> Result<Status, DbError> {
        let mut c = self.store.connect()?;
        let rows = c
            .query(
                &format!(
                    "SELECT n.name, n.advertise, n.lease_until_ms - {NOW_MS},
                       (SELECT count(*) FROM dohost_shards s WHERE s.owner = n.name)
                     FROM dohost_nodes n ORDER BY n.name"
                ),
                &[],
            )
            .map_err(db_error)?;
        let nodes: Vec<NodeStatus> = rows
            .iter()
            .map(|r| {
                let left: i64 = r.get(2);
                NodeStatus {
                    name: r.get(0),
                    advertise: r.get(1),
                    live: left > 0,
                    lease_left_ms: left,
                    shards: u32::try_from(r.get::<_, i64>(3)).unwrap_or(0),
                }
            })
            .collect();
        let live: u32 = nodes.iter().filter(|n| n.live).map(|n| n.shards).sum();
        Ok(Status {
            nodes,
            unowned_shards: SHARDS.saturating_sub(live),
        })
    }
}

/// One node's membership rounds.
struct Round {
    cluster: Arc<Cluster>,
    objects: Objects,
    alarms: Arc<Alarms>,
    runtime: tokio::runtime::Handle,
}

impl Round {
    fn run(&mut self, c: &mut Client) -> Result<(), DbError> {
        let cluster = &self.cluster;
        if cluster.is_leaving() {
            // Its shards are handed over; it only learns where they went, to forward to them.
            let nodes = live_nodes(c)?;
            let owners = read_owners(c, &nodes)?;
            cluster.set_view(View { owners, nodes });
            return Ok(());
        }
        let config = &cluster.config;
        let started = Instant::now();
        let lease_ms = i64::try_from(config.lease.as_millis()).unwrap_or(i64::MAX);
        c.execute(
            &format!(
                "INSERT INTO dohost_nodes (name, advertise, incarnation, lease_until_ms)
                 VALUES ($1, $2, 0, {NOW_MS} + $3)
                 ON CONFLICT (name) DO UPDATE SET advertise = excluded.advertise,
                   lease_until_ms = excluded.lease_until_ms"
            ),
            &[&config.node, &config.advertise, &lease_ms],
        )
        .map_err(db_error)?;
        let nodes = live_nodes(c)?;
        let mut owners = read_owners(c, &nodes)?;
        let share = SHARDS.div_ceil(nodes.len().max(1) as u32) as usize;
        let me: &str = &config.node;
        let mine = owners
            .iter()
            .filter(|o| matches!(o, Some((n, _)) if **n == *me))
            .count();
        let free: Vec<i32> = (0..SHARDS as usize)
            .filter(|&s| owners[s].is_none())
            .map(|s| s as i32)
            .collect();
        if mine < share && !free.is_empty() {
            // Start at a place of our own in the free list, so that nodes starting together do
            // not all reach for the same shards.
            let start = rand::random_range(0..free.len());
            let want: Vec<i32> = free
                .iter()
                .cycle()
                .skip(start)
                .take((share - mine).min(free.len()))
                .copied()
                .collect();
            c.query(
                &format!(
                    "UPDATE dohost_shards SET owner = $1, epoch = epoch + 1
                     WHERE shard = ANY($2) AND (owner IS NULL OR owner NOT IN
                       (SELECT name FROM dohost_nodes WHERE lease_until_ms > {NOW_MS}))"
                ),
                &[&config.node, &want],
            )
            .map_err(db_error)?;
            owners = read_owners(c, &nodes)?;
        } else if mine > share && free.is_empty() && some_below_share(&owners, &nodes, share) {
            let give: HashSet<u32> = owned_in(&owners, me)
                .into_keys()
                .take(mine - share)
                .collect();
            self.give_up(c, &give)?;
            owners = read_owners(c, &nodes)?;
        }
        let new = View { owners, nodes };
        let before = owned(&cluster.view.read().unwrap(), me);
        let after = owned(&new, me);
        let lost: HashSet<u32> = before
            .iter()
            .filter(|(s, e)| after.get(s) != Some(e))
            .map(|(s, _)| *s)
            .collect();
        let gained: Vec<u32> = after
            .iter()
            .filter(|(s, e)| before.get(s) != Some(e))
            .map(|(s, _)| *s)
            .collect();
        cluster.set_view(new);
        if !lost.is_empty() {
            tracing::info!(shards = lost.len(), "shards moved to other nodes");
            let within = config.lease / 4;
            self.runtime
                .block_on(close_shards(&self.objects, &lost, within));
            self.alarms.forget_where(|id| lost.contains(&shard_of(id)));
        }
        if !gained.is_empty() {
            tracing::info!(shards = gained.len(), "took shards");
            self.alarms.load(cluster.store.alarms_of(&gained)?);
        }
        // Served only within the lease as renewed at this round's start, less a margin for the
        // clocks' drift: by then the database may hand the shards to another node.
        let margin = config.lease / 10 + Duration::from_millis(50);
        *cluster.fresh_until.lock().unwrap() = Some(started + config.lease.saturating_sub(margin));
        Ok(())
    }

    /// Hands shards to the nodes below their share: their objects end here first.
    fn give_up(&self, c: &mut Client, shards: &HashSet<u32>) -> Result<(), DbError> {
        {
            // Stop routing them here first, then end what runs.
            let mut view = self.cluster.view.write().unwrap();
            for &s in shards {
                view.owners[s as usize] = None;
            }
        }
        self.cluster.view_changed.send_modify(|n| *n += 1);
        let within = self.cluster.config.lease / 4;
        self.runtime
            .block_on(close_shards(&self.objects, shards, within));
        self.alarms
            .forget_where(|id| shards.contains(&shard_of(id)));
        let list: Vec<i32> = shards.iter().map(|&s| s as i32).collect();
        c.execute(
            "UPDATE dohost_shards SET owner = NULL WHERE shard = ANY($1) AND owner = $2",
            &[&list, &self.cluster.config.node],
        )
        .map_err(db_error)?;
        tracing::info!(shards = shards.len(), "gave shards to a node that joined");
        Ok(())
    }
}

/// The live nodes and the URLs they advertise.
fn live_nodes(c: &mut Client) -> Result<HashMap<Arc<str>, String>, DbError> {
    Ok(c.query(
        &format!("SELECT name, advertise FROM dohost_nodes WHERE lease_until_ms > {NOW_MS}"),
        &[],
    )
    .map_err(db_error)?
    .iter()
    .map(|r| (Arc::<str>::from(r.get::<_, String>(0)), r.get(1)))
    .collect())
}

/// Every shard's live owner and epoch.
fn read_owners(c: &mut Client, nodes: &HashMap<Arc<str>, String>) -> Result<Owners, DbError> {
    let mut owners = vec![None; SHARDS as usize];
    let rows = c
        .query(
            "SELECT shard, owner, epoch FROM dohost_shards WHERE owner IS NOT NULL",
            &[],
        )
        .map_err(db_error)?;
    for r in rows {
        let (shard, owner, epoch): (i32, String, i64) = (r.get(0), r.get(1), r.get(2));
        // A shard whose owner's lease ended is free to take, and routes nowhere meanwhile.
        if let (Some(slot), Some((name, _))) = (
            owners.get_mut(shard as usize),
            nodes.get_key_value(owner.as_str()),
        ) {
            *slot = Some((name.clone(), epoch as u64));
        }
    }
    Ok(owners)
}

fn owned_in(owners: &[Option<(Arc<str>, u64)>], me: &str) -> HashMap<u32, u64> {
    owners
        .iter()
        .enumerate()
        .filter_map(|(s, o)| match o {
            Some((n, e)) if **n == *me => Some((s as u32, *e)),
            _ => None,
        })
        .collect()
}

fn owned(view: &View, me: &str) -> HashMap<u32, u64> {
    owned_in(&view.owners, me)
}

fn some_below_share(
    owners: &[Option<(Arc<str>, u64)>],
    nodes: &HashMap<Arc<str>, String>,
    share: usize,
) -> bool {
    let mut counts: HashMap<&str, usize> = nodes.keys().map(|n| (&**n, 0)).collect();
    for (n, _) in owners.iter().flatten() {
        *counts.entry(n).or_default() += 1;
    }
    // Below by more than one: shares differ by one when the shards do not divide evenly.
    counts.values().any(|&c| c + 1 < share)
}

/// Ends this node's objects of `shards` and closes their sockets with 1012, so that their
/// clients reconnect and reach the new owner. Waits at most `within` for them: the membership
/// round that waits must still renew the lease in time, and an object that stays busy has its
/// commits refused by the fence anyway.
async fn close_shards(objects: &Objects, shards: &HashSet<u32>, within: Duration) {
    let moved = |id: &ObjectId| shards.contains(&shard_of(id));
    objects
        .sockets()
        .close_where(moved, 1012, "the object moved to another node; reconnect");
    // Commits in flight settle (or are fenced); the objects start again on their new owner.
    let ids = objects.awake_where(moved);
    objects.settle(&ids, within).await;
}
