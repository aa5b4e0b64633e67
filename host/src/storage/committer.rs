//! Group commit: one thread writes the commits of every object, many per redb transaction and
//! fsync.
//!
//! A durable commit costs an fsync (≈ 0.1 ms here); one per event would cap the host at a few
//! thousand writes a second. While the thread is flushing one batch, new commits queue up, and
//! the next transaction takes all of them: under load the batches grow, so throughput scales with
//! the load instead of with the disk's latency. redb's calls block, which is why this is a thread
//! and not a task.

use super::changes::{Alarm, Changeset};
use super::store::{Commit, ObjectStore};
use crate::metrics::seconds_histogram;
use crate::names::ObjectId;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use prometheus_client::metrics::histogram::Histogram;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most commits in one redb transaction, so one huge batch cannot delay everyone's responses.
const MAX_BATCH: usize = 4096;

/// How long after a commit failed for want of space the next one is tried. Those in between are
/// refused at once: each failure costs a reopening of the database, which reads the whole file
/// while readers wait (see [`Db`]).
pub const FULL_RETRY: Duration = Duration::from_millis(250);

/// A commit that did not reach the disk.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitFailed {
    /// The disk had no space for it.
    #[error("storage is full: {0}")]
    Full(String),
    #[error("storage commit failed: {0}")]
    Failed(String),
    /// The object's shard has another owner now (see `cluster`): the commit was not written.
    #[error("this node no longer owns the object: it moved to another node")]
    Fenced,
}

/// Resolves when a commit is durable, to when it became so (what a stub call's caller waited on
/// is measured up to it), or failed. Cloneable: every response that depends on the commit waits
/// for it.
pub type CommitOutcome = Shared<BoxFuture<'static, Result<Instant, CommitFailed>>>;

enum Job {
    Commit {
        id: ObjectId,
        /// The object's key in the objects table ([`super::store::object_key`]).
        object: Arc<[u8]>,
        changes: Arc<Changeset>,
        size: u64,
        /// Its shard's epoch when the object started (see [`Commit::epoch`]).
        epoch: u64,
        done: oneshot::Sender<Result<Instant, CommitFailed>>,
    },
    Forgive(ObjectId),
}

/// The handle to the commit thread. The thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct Committer {
    jobs: mpsc::Sender<Job>,
    health: Arc<Health>,
}

/// How the commits have been going, for the admin API and the metrics.
struct Health {
    /// Whether the last commit tried failed for want of space.
    full: AtomicBool,
    /// Commits not made durable since start, failed or refused.
    failed: AtomicU64,
    /// Commits made durable since start.
    committed: AtomicU64,
    /// Commits the cluster's fence refused since start (counted in `failed` too).
    fenced: AtomicU64,
    /// How long each batch's transaction took, its fsync included.
    batch_seconds: Histogram,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            full: AtomicBool::default(),
            failed: AtomicU64::default(),
            committed: AtomicU64::default(),
            fenced: AtomicU64::default(),
            batch_seconds: seconds_histogram(),
        }
    }
}

/// Told of every alarm change once it is durable: the alarm scheduler.
pub type AlarmSink = Box<dyn Fn(ObjectId, Option<Alarm>) + Send>;

impl Committer {
    /// Starts the commit thread. `alarms` hears of each alarm set or deleted, once durable.
    pub fn start(
        store: Arc<dyn ObjectStore>,
        alarms: AlarmSink,
    ) -> std::io::Result<(Committer, std::thread::JoinHandle<()>)> {
        let (jobs, rx) = mpsc::channel();
        let health = Arc::new(Health::default());
        let shared = health.clone();
        let thread = std::thread::Builder::new()
            .name("dohost-commit".into())
            .spawn(move || run(&*store, &rx, &alarms, &shared))?;
        Ok((Committer { jobs, health }, thread))
    }

    /// Queues an object's changes and its size after them; `object` is its key in the objects
    /// table, which counts its size toward its namespace's; `epoch` its shard's when it started.
    pub fn submit(
        &self,
        id: ObjectId,
        object: Arc<[u8]>,
        changes: Arc<Changeset>,
        size: u64,
        epoch: u64,
    ) -> CommitOutcome {
        let (done, rx) = oneshot::channel();
        let sent = self.jobs.send(Job::Commit {
            id,
            object,
            changes,
            size,
            epoch,
            done,
        });
        let stopped = || CommitFailed::Failed("the commit thread has stopped".into());
        if sent.is_err() {
            return futures::future::ready(Err(stopped())).boxed().shared();
        }
        rx.map(move |r| r.unwrap_or_else(|_| Err(stopped())))
            .boxed()
            .shared()
    }

    /// After a failed commit the thread refuses the object's later commits, which may build on
    /// the lost one, until the object has started again from durable state and says so here.
    pub fn forgive(&self, id: ObjectId) {
        let _ = self.jobs.send(Job::Forgive(id));
    }

    /// Whether the last commit tried failed for want of space on the disk.
    pub fn storage_full(&self) -> bool {
        self.health.full.load(Ordering::Relaxed)
    }

    /// How many commits could not be made durable since start (each event that wrote has one).
    pub fn failed_commits(&self) -> u64 {
        self.health.failed.load(Ordering::Relaxed)
    }

    /// How many commits the cluster's fence refused since start: their object had moved.
    pub fn fenced_commits(&self) -> u64 {
        self.health.fenced.load(Ordering::Relaxed)
    }

    /// How many commits were made durable since start.
    pub fn commits(&self) -> u64 {
        self.health.committed.load(Ordering::Relaxed)
    }

    /// The time of each batch's transaction, fsync included, in seconds (a shared handle).
    pub fn batch_seconds(&self) -> Histogram {
        self.health.batch_seconds.clone()
    }
}

fn run(store: &dyn ObjectStore, rx: &mpsc::Receiver<Job>, alarms: &AlarmSink, health: &Health) {
    // Objects whose commit failed, and why: their later commits are refused the same way.
    let mut refused: HashMap<ObjectId, CommitFailed> = HashMap::new();
    // When the last commit failed for want of space, while it is the last.
    let mut full_at: Option<Instant> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut job = Some(first);
        while let Some(j) = job.take() {
            match j {
                Job::Forgive(id) => {
                    refused.remove(&id);
                }
                Job::Commit { id, done, .. } if refused.contains_key(&id) => {
                    health.failed.fetch_add(1, Ordering::Relaxed);
                    let _ = done.send(Err(refused[&id].clone()));
                }
                commit => batch.push(commit),
            }
            if batch.len() < MAX_BATCH {
                job = rx.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        let waiting = full_at.filter(|at| at.elapsed() < FULL_RETRY);
        let result = match waiting {
            Some(at) => Err(CommitFailed::Full(format!(
                "no space was left {} ms ago; the next commit tried is {} ms after that",
                at.elapsed().as_millis(),
                FULL_RETRY.as_millis()
            ))),
            None => {
                let started = Instant::now();
                let written = write(store, &batch);
                health
                    .batch_seconds
                    .observe(started.elapsed().as_secs_f64());
                written
            }
            .map(|fenced| {
                let refused = fenced.iter().filter(|&&f| f).count();
                health
                    .committed
                    .fetch_add((batch.len() - refused) as u64, Ordering::Relaxed);
                (Instant::now(), fenced)
            })
            .map_err(|e| {
                tracing::error!("{e}");
                if e.is_full() {
                    CommitFailed::Full(e.to_string())
                } else {
                    CommitFailed::Failed(e.to_string())
                }
            }),
        };
        match (&result, waiting) {
            (Ok(_), _) => full_at = None,
            (Err(CommitFailed::Full(_)), None) => full_at = Some(Instant::now()),
            _ => {}
        }
        health.full.store(full_at.is_some(), Ordering::Relaxed);
        for (i, job) in batch.into_iter().enumerate() {
            if let Job::Commit {
                id, done, changes, ..
            } = job
            {
                let outcome = match &result {
                    Ok((_, fenced)) if fenced[i] => {
                        health.fenced.fetch_add(1, Ordering::Relaxed);
                        Err(CommitFailed::Fenced)
                    }
                    Ok((at, _)) => Ok(*at),
                    Err(e) => Err(e.clone()),
                };
                match (&outcome, &changes.alarm) {
                    (Err(e), _) => {
                        health.failed.fetch_add(1, Ordering::Relaxed);
                        refused.insert(id, e.clone());
                    }
                    (Ok(_), Some(alarm)) => alarms(id, alarm.clone()),
                    (Ok(_), None) => {}
                }
                let _ = done.send(outcome);
            }
        }
    }
}

/// Applies a batch of commits in one durable transaction of the store.
fn write(store: &dyn ObjectStore, batch: &[Job]) -> Result<Vec<bool>, super::DbError> {
    let commits: Vec<Commit<'_>> = batch
        .iter()
        .filter_map(|job| match job {
            Job::Commit {
                id,
                object,
                changes,
                size,
                epoch,
                ..
            } => Some(Commit {
                id,
                object,
                changes,
                size: *size,
                epoch: *epoch,
            }),
            Job::Forgive(_) => None,
        })
        .collect();
    store.commit(&commits)
}
