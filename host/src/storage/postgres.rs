//! Objects' state in PostgreSQL: the store of a cluster (`dohost serve --cluster`), where every
//! node reads and writes the same database and the fence of each commit is checked in the
//! commit's own transaction.
//!
//! The SQL is plain (tables, primary keys, `unnest`, `ON CONFLICT`), so that the databases that
//! speak PostgreSQL's protocol, distributed ones included, can serve it too. The client is
//! synchronous: the committer's thread holds one connection, and reads go to a few threads of
//! their own, each with a connection, so that no call blocks inside the async runtime's threads
//! (the client runs a runtime of its own, which may not start inside another).

use super::changes::{Alarm, Changeset};
use super::store::{Commit, DbError, InventoryOrder, ObjectRow, ObjectStore, object_key};
use crate::names::ObjectId;
use ::postgres::{Client, NoTls};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// Objects map to this many shards, by the first 12 bits of their id; a shard is what a node owns.
pub const SHARDS: u32 = 4096;

/// The shard of an object.
pub fn shard_of(id: &ObjectId) -> u32 {
    let b = id.as_bytes();
    (u32::from(b[0]) << 4) | (u32::from(b[1]) >> 4)
}

/// Set to 1, commits are not fenced: only for the negative control of the cluster tests.
const NO_FENCE: &str = "DOHOST_UNSAFE_NO_FENCE";

/// Threads (each with a connection) that serve reads.
const READERS: usize = 4;

/// Rows fetched per round trip of a scan.
const SCAN_PAGE: i64 = 256;

/// The tables, created by the first node to start. Names carry a prefix so that the database can
/// be shared with other software.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dohost_entries (
    object BYTEA NOT NULL, key BYTEA NOT NULL, value BYTEA NOT NULL, PRIMARY KEY (object, key));
CREATE TABLE IF NOT EXISTS dohost_objects (
    object BYTEA PRIMARY KEY, namespace TEXT NOT NULL, name TEXT NOT NULL, id BYTEA NOT NULL,
    bytes BIGINT NOT NULL, last_write_ms BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS dohost_objects_namespace ON dohost_objects (namespace, object);
CREATE TABLE IF NOT EXISTS dohost_alarms (
    id BYTEA PRIMARY KEY, shard INT NOT NULL, at_ms BIGINT NOT NULL, namespace TEXT NOT NULL,
    name TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS dohost_alarms_shard ON dohost_alarms (shard);
CREATE TABLE IF NOT EXISTS dohost_namespaces (namespace TEXT PRIMARY KEY, bytes BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS dohost_nodes (
    name TEXT PRIMARY KEY, advertise TEXT NOT NULL, incarnation BIGINT NOT NULL,
    lease_until_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS dohost_shards (shard INT PRIMARY KEY, owner TEXT, epoch BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS dohost_deploys (
    seq BIGSERIAL PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, body BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS dohost_deploy_lock (id INT PRIMARY KEY);
";

/// What a reader thread runs: a read on its connection (or the news that there is none), told
/// whether it is the last try; answers false to be tried again on a new connection (the one it
/// had was closed: the database restarted since it was last used).
type ReadJob = Box<dyn FnMut(Result<&mut Client, DbError>, bool) -> bool + Send>;

/// Objects' state in a PostgreSQL database.
pub struct Postgres {
    config: ::postgres::Config,
    /// The fence: the node whose ownership of each commit's shard is checked.
    node: String,
    /// Whether commits are fenced: always, but for the cluster tests' negative control
    /// (`DOHOST_UNSAFE_NO_FENCE=1`), which shows what the fence prevents.
    fence: bool,
    /// The committer's connection (only its thread commits), made again after a failure.
    writer: Mutex<Option<Client>>,
    reads: Mutex<mpsc::Sender<ReadJob>>,
}

impl Postgres {
    /// Connects to the database at `url`, creates the tables if they are missing, and starts the
    /// reader threads. `node` is the name this host's commits are fenced by; `lease`, how long a
    /// node's heartbeat holds its shards.
    pub fn open(url: &str, node: &str, lease: Duration) -> Result<Arc<Postgres>, DbError> {
        let mut config: ::postgres::Config = url
            .parse()
            .map_err(|e| DbError::new(format!("--cluster {url:?}: {e}")))?;
        // A database that went away must fail calls in bounded time, not hang them; and a node
        // paused in the middle of a transaction must not hold its locks (which a takeover waits
        // for) much past its lease: the database ends such a transaction after half a lease.
        let lease_ms = lease.as_millis().max(2);
        config
            .connect_timeout(Duration::from_secs(3))
            .options(&format!(
                "-c statement_timeout=10000 -c lock_timeout={lease_ms} \
             -c idle_in_transaction_session_timeout={}",
                lease_ms / 2
            ));
        let mut client = connect(&config)?;
        create_schema(&mut client)?;
        let (reads, rx) = mpsc::channel::<ReadJob>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..READERS {
            let (rx, config) = (rx.clone(), config.clone());
            std::thread::Builder::new()
                .name(format!("dohost-pg-read-{i}"))
                .spawn(move || read_loop(&config, &rx))
                .map_err(|e| DbError::new(format!("starting a reader thread: {e}")))?;
        }
        let fence = std::env::var_os(NO_FENCE).is_none_or(|v| v != "1");
        if !fence {
            tracing::warn!(
                "{NO_FENCE}=1: commits are NOT fenced; a node that lost its lease can overwrite its successor's writes"
            );
        }
        Ok(Arc::new(Postgres {
            config,
            node: node.to_owned(),
            fence,
            writer: Mutex::new(Some(client)),
            reads: Mutex::new(reads),
        }))
    }

    /// A new connection to the database, for the cluster's membership.
    pub fn connect(&self) -> Result<Client, DbError> {
        connect(&self.config)
    }

    /// Runs `op` on a reader thread's connection and waits for its result. Blocking, but off the
    /// async runtime's own machinery, so it may be called from anywhere.
    fn read<T: Send + 'static>(
        &self,
        op: impl Fn(&mut Client) -> Result<T, ::postgres::Error> + Send + 'static,
    ) -> Result<T, DbError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: ReadJob = Box::new(move |client, last| {
            let result = match client {
                Ok(c) => match op(c) {
                    Err(e) if e.is_closed() && !last => return false,
                    result => result.map_err(db_error),
                },
                Err(e) => Err(e),
            };
            let _ = tx.send(result);
            true
        });
        let sent = self.reads.lock().unwrap().send(job);
        if sent.is_err() {
            return Err(DbError::new("the database's reader threads have stopped"));
        }
        rx.recv()
            .unwrap_or_else(|_| Err(DbError::new("a database reader thread stopped")))
    }

    /// The alarms of the given shards, to schedule them when this node takes the shards.
    pub fn alarms_of(&self, shards: &[u32]) -> Result<Vec<(ObjectId, Alarm)>, DbError> {
        let shards: Vec<i32> = shards.iter().map(|&s| s as i32).collect();
        self.read(move |c| {
            let rows = c.query(
                "SELECT id, at_ms, namespace, name FROM dohost_alarms WHERE shard = ANY($1)",
                &[&shards],
            )?;
            Ok(rows.iter().filter_map(alarm_row).collect())
        })
    }
}

fn connect(config: &::postgres::Config) -> Result<Client, DbError> {
    config
        .connect(NoTls)
        .map_err(|e| DbError::new(format!("connecting to PostgreSQL: {e}")))
}

/// Creates the tables; nodes starting together may race on it, so a failure is tried again.
fn create_schema(client: &mut Client) -> Result<(), DbError> {
    let mut tries = 0;
    loop {
        match client.batch_execute(SCHEMA) {
            Ok(()) => break,
            Err(e) if tries < 5 => {
                tracing::debug!("creating the tables, again: {e}");
                tries += 1;
                std::thread::sleep(Duration::from_millis(100 * tries));
            }
            Err(e) => return Err(db_error(e)),
        }
    }
    let mut tx = client.transaction().map_err(db_error)?;
    tx.execute(
        "INSERT INTO dohost_shards (shard, owner, epoch)
         SELECT s, NULL, 0 FROM generate_series(0, $1::INT - 1) AS s ON CONFLICT DO NOTHING",
        &[&(SHARDS as i32)],
    )
    .map_err(db_error)?;
    tx.execute(
        "INSERT INTO dohost_deploy_lock (id) VALUES (1) ON CONFLICT DO NOTHING",
        &[],
    )
    .map_err(db_error)?;
    tx.commit().map_err(db_error)
}

fn read_loop(config: &::postgres::Config, jobs: &Mutex<mpsc::Receiver<ReadJob>>) {
    let mut client: Option<Client> = None;
    loop {
        let Ok(mut job) = jobs.lock().unwrap().recv() else {
            return;
        };
        for last in [false, true] {
            if client.as_ref().is_none_or(Client::is_closed) {
                client = None;
                match connect(config) {
                    Ok(c) => client = Some(c),
                    Err(e) => {
                        job(Err(e), true);
                        break;
                    }
                }
            }
            if job(Ok(client.as_mut().expect("connected above")), last) {
                break;
            }
            client = None;
        }
    }
}

/// The error, with the server's own message when it sent one (the client's says only "db error").
pub fn db_error(e: ::postgres::Error) -> DbError {
    match e.as_db_error() {
        Some(server) => DbError::new(format!(
            "PostgreSQL: {} ({})",
            server.message(),
            server.code().code()
        )),
        None => DbError::new(format!("PostgreSQL: {e}")),
    }
}

fn alarm_row(row: &::postgres::Row) -> Option<(ObjectId, Alarm)> {
    let id: Vec<u8> = row.get(0);
    let id = ObjectId::from_bytes(id.try_into().ok()?);
    let at: i64 = row.get(1);
    let (namespace, name): (String, String) = (row.get(2), row.get(3));
    Some((
        id,
        Alarm {
            at: u64::try_from(at).ok()?,
            namespace: namespace.into(),
            name: name.into(),
        },
    ))
}

/// A bound on a full key as SQL sees it: a comparison and its value, or nothing.
fn sql_bound(
    bound: Bound<Vec<u8>>,
    inclusive: &'static str,
    exclusive: &'static str,
) -> Option<(&'static str, Vec<u8>)> {
    match bound {
        Bound::Included(k) => Some((inclusive, k)),
        Bound::Excluded(k) => Some((exclusive, k)),
        Bound::Unbounded => None,
    }
}

impl ObjectStore for Postgres {
    fn get(&self, id: &ObjectId, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        let (object, key) = (id.as_bytes().to_vec(), key.to_vec());
        self.read(move |c| {
            let row = c.query_opt(
                "SELECT value FROM dohost_entries WHERE object = $1 AND key = $2",
                &[&object, &key],
            )?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn scan(
        &self,
        id: &ObjectId,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), DbError> {
        // Keys compare as bytes, as in redb. Rows come a page at a time, each page resuming
        // after the last key seen.
        let mut lo = sql_bound(lower.map(<[u8]>::to_vec), ">=", ">");
        let mut hi = sql_bound(upper.map(<[u8]>::to_vec), "<=", "<");
        loop {
            let (lo_q, hi_q) = (lo.clone(), hi.clone());
            let object = id.as_bytes().to_vec();
            let rows: Vec<(Vec<u8>, Vec<u8>)> = self.read(move |c| {
                let sql = format!(
                    "SELECT key, value FROM dohost_entries WHERE object = $1
                     AND ($2::BYTEA IS NULL OR key {} $2) AND ($3::BYTEA IS NULL OR key {} $3)
                     ORDER BY key {} LIMIT $4",
                    lo_q.as_ref().map_or(">=", |b| b.0),
                    hi_q.as_ref().map_or("<", |b| b.0),
                    if reverse { "DESC" } else { "ASC" }
                );
                let (l, h) = (lo_q.as_ref().map(|b| &b.1), hi_q.as_ref().map(|b| &b.1));
                let rows = c.query(&sql, &[&object, &l, &h, &SCAN_PAGE])?;
                Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            })?;
            let full = rows.len() as i64 == SCAN_PAGE;
            for (key, value) in &rows {
                if !visit(key, value) {
                    return Ok(());
                }
            }
            let Some((last, _)) = rows.last().filter(|_| full) else {
                return Ok(());
            };
            if reverse {
                hi = Some(("<", last.clone()));
            } else {
                lo = Some((">", last.clone()));
            }
        }
    }

    fn alarm(&self, id: &ObjectId) -> Result<Option<u64>, DbError> {
        let id = id.as_bytes().to_vec();
        self.read(move |c| {
            let row = c.query_opt("SELECT at_ms FROM dohost_alarms WHERE id = $1", &[&id])?;
            Ok(row.and_then(|r| u64::try_from(r.get::<_, i64>(0)).ok()))
        })
    }

    fn object_sizes(&self, key: &[u8], _id: &ObjectId) -> Result<(u64, u64), DbError> {
        let key = key.to_vec();
        self.read(move |c| {
            let row = c.query_opt(
                "SELECT bytes FROM dohost_objects WHERE object = $1",
                &[&key],
            )?;
            let size = row.map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0));
            Ok((size, size))
        })
    }

    fn inventory(
        &self,
        namespace: &str,
        order: InventoryOrder,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectRow>, DbError> {
        let namespace = namespace.to_owned();
        let after = after.map(|a| object_key(&namespace, a));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let order_by = match order {
                InventoryOrder::Name => "o.object",
                InventoryOrder::Size => "o.bytes DESC, o.object",
                InventoryOrder::LastWrite => "o.last_write_ms DESC, o.object",
            };
            let sql = format!(
                "SELECT o.name, o.id, o.bytes, o.last_write_ms, a.at_ms,
                   (SELECT count(*) FROM dohost_entries e WHERE e.object = o.id)
                 FROM dohost_objects o LEFT JOIN dohost_alarms a ON a.id = o.id
                 WHERE o.namespace = $1 AND ($2::BYTEA IS NULL OR o.object > $2)
                 ORDER BY {order_by} LIMIT $3"
            );
            let rows = c.query(&sql, &[&namespace, &after, &limit])?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let id: Vec<u8> = r.get(1);
                    let at: Option<i64> = r.get(4);
                    Some(ObjectRow {
                        name: r.get(0),
                        id: ObjectId::from_bytes(id.try_into().ok()?),
                        bytes: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
                        last_write_ms: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
                        keys: u64::try_from(r.get::<_, i64>(5)).unwrap_or(0),
                        alarm: at.and_then(|at| u64::try_from(at).ok()),
                    })
                })
                .collect())
        })
    }

    fn drop_objects(&self, namespace: &str) -> Result<Vec<ObjectId>, DbError> {
        let namespace = namespace.to_owned();
        self.read(move |c| {
            let mut tx = c.transaction()?;
            let rows = tx.query(
                "DELETE FROM dohost_objects WHERE namespace = $1 RETURNING id",
                &[&namespace],
            )?;
            let ids: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
            tx.execute("DELETE FROM dohost_entries WHERE object = ANY($1)", &[&ids])?;
            tx.execute("DELETE FROM dohost_alarms WHERE id = ANY($1)", &[&ids])?;
            tx.execute(
                "DELETE FROM dohost_namespaces WHERE namespace = $1",
                &[&namespace],
            )?;
            tx.commit()?;
            Ok(ids
                .into_iter()
                .filter_map(|id| Some(ObjectId::from_bytes(id.try_into().ok()?)))
                .collect())
        })
    }

    fn namespace_sizes(&self) -> Result<Vec<(String, u64)>, DbError> {
        self.read(|c| {
            let rows = c.query("SELECT namespace, bytes FROM dohost_namespaces", &[])?;
            Ok(rows
                .iter()
                .map(|r| (r.get(0), u64::try_from(r.get::<_, i64>(1)).unwrap_or(0)))
                .collect())
        })
    }

    fn commit(&self, batch: &[Commit<'_>]) -> Result<Vec<bool>, DbError> {
        let mut writer = self.writer.lock().unwrap();
        if writer.as_ref().is_none_or(Client::is_closed) {
            *writer = None;
            *writer = Some(connect(&self.config)?);
        }
        let fence = self.fence.then_some(&*self.node);
        let mut result = write_batch(writer.as_mut().expect("connected above"), fence, batch);
        if matches!(&result, Err(Failed::Unsent(_))) {
            // The connection was closed before anything was sent (the database restarted since
            // the last batch): the same batch on a new one.
            *writer = Some(connect(&self.config)?);
            result = write_batch(writer.as_mut().expect("connected above"), fence, batch);
        }
        let result = result.map_err(Failed::into_db);
        if result.is_err() {
            // The connection may be in any state after a failure: start the next on a new one.
            *writer = None;
        }
        result
    }
}

/// Which commits of the batch the fence refuses: each commit's shard must still be this node's,
/// at the epoch the object started under. The rows stay share-locked until the transaction ends,
/// so no takeover can slip in between the check and the writes.
fn check_fence(
    tx: &mut ::postgres::Transaction<'_>,
    node: &str,
    batch: &[Commit<'_>],
) -> Result<Vec<bool>, DbError> {
    let shards: Vec<i32> = batch
        .iter()
        .map(|c| shard_of(c.id) as i32)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let owned: HashMap<i32, i64> = tx
        .query(
            "SELECT shard, epoch FROM dohost_shards WHERE shard = ANY($1) AND owner = $2 FOR SHARE",
            &[&shards, &node],
        )
        .map_err(db_error)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(batch
        .iter()
        .map(|c| owned.get(&(shard_of(c.id) as i32)) != Some(&(c.epoch as i64)))
        .collect())
}

/// What a batch leaves of each object, in order: later commits of an object override earlier
/// ones, and a clear drops what came before it.
#[derive(Default)]
struct Net<'a> {
    cleared: HashSet<&'a ObjectId>,
    writes: BTreeMap<(&'a ObjectId, &'a [u8]), Option<&'a [u8]>>,
    alarms: HashMap<&'a ObjectId, Option<&'a Alarm>>,
    /// Per object: its key, namespace, name, and size after its last commit.
    objects: HashMap<&'a ObjectId, (&'a [u8], u64)>,
}

impl<'a> Net<'a> {
    fn add(&mut self, id: &'a ObjectId, object: &'a [u8], changes: &'a Changeset, size: u64) {
        if changes.clear {
            self.cleared.insert(id);
            self.writes.retain(|(o, _), _| *o != id);
        }
        for (key, value) in &changes.writes {
            self.writes.insert((id, key), value.as_deref());
        }
        if let Some(alarm) = &changes.alarm {
            self.alarms.insert(id, alarm.as_ref());
        }
        self.objects.insert(id, (object, size));
    }
}

/// One transaction: the fence, then the net effect of the commits that passed it.
/// Why a batch was not written: before anything reached the database, or after.
enum Failed {
    Unsent(::postgres::Error),
    Failed(DbError),
}

impl Failed {
    fn into_db(self) -> DbError {
        match self {
            Failed::Unsent(e) => db_error(e),
            Failed::Failed(e) => e,
        }
    }
}

impl From<DbError> for Failed {
    fn from(e: DbError) -> Self {
        Failed::Failed(e)
    }
}

fn write_batch(
    client: &mut Client,
    fence: Option<&str>,
    batch: &[Commit<'_>],
) -> Result<Vec<bool>, Failed> {
    let mut tx = match client.transaction() {
        Ok(tx) => tx,
        Err(e) if e.is_closed() => return Err(Failed::Unsent(e)),
        Err(e) => return Err(Failed::Failed(db_error(e))),
    };
    let fenced = match fence {
        Some(node) => check_fence(&mut tx, node, batch)?,
        None => vec![false; batch.len()],
    };
    let mut net = Net::default();
    for (commit, _) in batch.iter().zip(&fenced).filter(|(_, f)| !**f) {
        net.add(commit.id, commit.object, commit.changes, commit.size);
    }
    if net.objects.is_empty() {
        tx.commit().map_err(db_error)?;
        return Ok(fenced);
    }
    let q = |tx: &mut ::postgres::Transaction<'_>,
             sql: &str,
             params: &[&(dyn ::postgres::types::ToSql + Sync)]| {
        tx.execute(sql, params).map_err(db_error)
    };
    let cleared: Vec<&[u8]> = net
        .cleared
        .iter()
        .map(|id| id.as_bytes().as_slice())
        .collect();
    if !cleared.is_empty() {
        q(
            &mut tx,
            "DELETE FROM dohost_entries WHERE object = ANY($1)",
            &[&cleared],
        )?;
    }
    let (mut put_o, mut put_k, mut put_v, mut del_o, mut del_k) =
        (vec![], vec![], vec![], vec![], vec![]);
    for ((id, key), value) in &net.writes {
        match value {
            Some(v) => {
                put_o.push(id.as_bytes().as_slice());
                put_k.push(*key);
                put_v.push(*v);
            }
            None => {
                del_o.push(id.as_bytes().as_slice());
                del_k.push(*key);
            }
        }
    }
    if !del_o.is_empty() {
        q(
            &mut tx,
            "DELETE FROM dohost_entries WHERE (object, key) IN
             (SELECT * FROM unnest($1::BYTEA[], $2::BYTEA[]))",
            &[&del_o, &del_k],
        )?;
    }
    if !put_o.is_empty() {
        q(
            &mut tx,
            "INSERT INTO dohost_entries (object, key, value)
             SELECT * FROM unnest($1::BYTEA[], $2::BYTEA[], $3::BYTEA[])
             ON CONFLICT (object, key) DO UPDATE SET value = excluded.value",
            &[&put_o, &put_k, &put_v],
        )?;
    }
    let (mut set_id, mut set_shard, mut set_at, mut set_ns, mut set_name, mut unset) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (id, alarm) in &net.alarms {
        match alarm {
            Some(a) => {
                set_id.push(id.as_bytes().as_slice());
                set_shard.push(shard_of(id) as i32);
                set_at.push(i64::try_from(a.at).unwrap_or(i64::MAX));
                set_ns.push(&*a.namespace);
                set_name.push(&*a.name);
            }
            None => unset.push(id.as_bytes().as_slice()),
        }
    }
    if !unset.is_empty() {
        q(
            &mut tx,
            "DELETE FROM dohost_alarms WHERE id = ANY($1)",
            &[&unset],
        )?;
    }
    if !set_id.is_empty() {
        q(
            &mut tx,
            "INSERT INTO dohost_alarms (id, shard, at_ms, namespace, name)
             SELECT * FROM unnest($1::BYTEA[], $2::INT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[])
             ON CONFLICT (id) DO UPDATE SET at_ms = excluded.at_ms",
            &[&set_id, &set_shard, &set_at, &set_ns, &set_name],
        )?;
    }
    // Sizes: what each object counted before, for its namespace's total.
    let keys: Vec<&[u8]> = net.objects.values().map(|(k, _)| *k).collect();
    let before: HashMap<Vec<u8>, i64> = tx
        .query(
            "SELECT object, bytes FROM dohost_objects WHERE object = ANY($1)",
            &[&keys],
        )
        .map_err(db_error)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let with_alarm: HashSet<Vec<u8>> = {
        let ids: Vec<&[u8]> = net
            .objects
            .keys()
            .map(|id| id.as_bytes().as_slice())
            .collect();
        tx.query("SELECT id FROM dohost_alarms WHERE id = ANY($1)", &[&ids])
            .map_err(db_error)?
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let written_at = i64::try_from(crate::clock::now_ms()).unwrap_or(i64::MAX);
    let mut grown: HashMap<&str, i64> = HashMap::new();
    let (mut keep_key, mut keep_ns, mut keep_name, mut keep_id, mut keep_bytes, mut gone) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (id, (key, size)) in &net.objects {
        let size = i64::try_from(*size).unwrap_or(i64::MAX);
        let mut parts = key.splitn(2, |&b| b == 0);
        let namespace = std::str::from_utf8(parts.next().unwrap_or_default()).unwrap_or_default();
        let name = std::str::from_utf8(parts.next().unwrap_or_default()).unwrap_or_default();
        let counted = before.get(*key).copied().unwrap_or(0);
        if size != counted {
            *grown.entry(namespace).or_default() += size - counted;
        }
        // An object that stores nothing and has no alarm leaves the inventory.
        if size > 0 || with_alarm.contains(id.as_bytes().as_slice()) {
            keep_key.push(*key);
            keep_ns.push(namespace);
            keep_name.push(name);
            keep_id.push(id.as_bytes().as_slice());
            keep_bytes.push(size);
        } else {
            gone.push(*key);
        }
    }
    if !gone.is_empty() {
        q(
            &mut tx,
            "DELETE FROM dohost_objects WHERE object = ANY($1)",
            &[&gone],
        )?;
    }
    if !keep_key.is_empty() {
        q(
            &mut tx,
            "INSERT INTO dohost_objects (object, namespace, name, id, bytes, last_write_ms)
             SELECT o, ns, n, i, b, $6 FROM
               unnest($1::BYTEA[], $2::TEXT[], $3::TEXT[], $4::BYTEA[], $5::BIGINT[])
               AS t(o, ns, n, i, b)
             ON CONFLICT (object) DO UPDATE SET bytes = excluded.bytes,
               last_write_ms = excluded.last_write_ms",
            &[
                &keep_key,
                &keep_ns,
                &keep_name,
                &keep_id,
                &keep_bytes,
                &written_at,
            ],
        )?;
    }
    if !grown.is_empty() {
        let (names, deltas): (Vec<&str>, Vec<i64>) = grown.into_iter().unzip();
        q(
            &mut tx,
            "INSERT INTO dohost_namespaces (namespace, bytes)
             SELECT * FROM unnest($1::TEXT[], $2::BIGINT[])
             ON CONFLICT (namespace) DO UPDATE
               SET bytes = GREATEST(dohost_namespaces.bytes + excluded.bytes, 0)",
            &[&names, &deltas],
        )?;
    }
    tx.commit().map_err(db_error)?;
    Ok(fenced)
}
