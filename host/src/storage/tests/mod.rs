//! Tests of the storage layer: a model test of [`ObjectStorage`] over random events (against a
//! plain `BTreeMap`, through pending commits, failed events, transactions and restarts), and unit
//! tests of the limits and of the corners the model reaches only rarely.

use super::{Committer, Db, ListOptions, ObjectStorage, StorageError, StorageLimits};
use crate::names::ObjectId;
use futures::executor::block_on;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A database with its commit thread, as the host runs them.
struct Host {
    db: Arc<Db>,
    committer: Committer,
    thread: JoinHandle<()>,
}

impl Host {
    fn start(path: &Path) -> Host {
        let db = Arc::new(Db::open(path).expect("open the database"));
        let (committer, thread) =
            Committer::start(db.clone(), Box::new(|_, _| {})).expect("start the commit thread");
        Host {
            db,
            committer,
            thread,
        }
    }

    fn object(&self, id: ObjectId, limits: StorageLimits) -> ObjectStorage {
        ObjectStorage::open(id, self.db.clone(), limits).expect("open object storage")
    }

    /// Ends the commit thread and closes the database. Every `ObjectStorage` must be gone.
    fn stop(self) {
        drop(self.committer);
        self.thread.join().expect("the commit thread panicked");
        let db = Arc::try_unwrap(self.db)
            .ok()
            .expect("nothing else holds the database");
        drop(db);
    }
}

/// Reopens the database at `path` and checks that object `id` holds exactly `expected`, of
/// `size` bytes: what survived is what was committed.
fn assert_reopened(path: &Path, id: ObjectId, expected: &[(String, Vec<u8>)], size: u64) {
    let host = Host::start(path);
    let s = host.object(id, StorageLimits::default());
    assert_eq!(all(&s), expected);
    assert_eq!(s.size(), size);
    drop(s);
    host.stop();
}

/// A database file in a fresh temporary directory.
fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("dohost.redb");
    (dir, path)
}

fn object_id(name: &str) -> ObjectId {
    ObjectId::new("storage-tests", name)
}

/// Ends the event successfully and waits until its writes are durable.
fn finish_durably(s: &mut ObjectStorage, host: &Host) {
    if let Some(outcome) = s.finish_event(&host.committer) {
        block_on(outcome).expect("the commit succeeds");
    }
    s.prune().expect("no commit failed");
    assert!(s.last_commit().is_none(), "every awaited commit is pruned");
}

/// Every entry of the object, ascending.
fn all(s: &ObjectStorage) -> Vec<(String, Vec<u8>)> {
    s.list(&ListOptions::default()).expect("list everything")
}

fn entries(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect()
}

fn strings(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

fn is_limit<T>(r: Result<T, StorageError>) -> bool {
    matches!(r, Err(StorageError::LimitExceeded(_)))
}

fn is_invalid<T>(r: Result<T, StorageError>) -> bool {
    matches!(r, Err(StorageError::InvalidArgument(_)))
}

mod isolation;
mod layers;
mod limits;
mod model;
mod transactions;
