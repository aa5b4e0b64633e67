//! Tests of the storage layer: a model test of [`ObjectStorage`] over random events (against a
//! plain `BTreeMap`, through pending commits, failed events, transactions and restarts), and unit
//! tests of the limits and of the corners the model reaches only rarely.

use super::{
    Committer, Db, ListOptions, ObjectStorage, SimulatedDisk, Storage, StorageError, StorageLimits,
};
use crate::names::ObjectIdentity;
use futures::executor::block_on;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use tempfile::TempDir;

mod io_failures;
mod isolation;
mod layers;
mod limits;
mod model;
mod transactions;

/// A database in a temporary directory of its own (or on a simulated disk), with its commit
/// thread, as the host runs them. Dropping it stops the thread and closes the database: every
/// `ObjectStorage` must be gone by then, as those opened after the host are (locals drop in
/// reverse order).
struct Host {
    running: Option<Running>,
    store: Store,
}

enum Store {
    Dir(TempDir),
    Disk(SimulatedDisk),
}

struct Running {
    storage: Storage,
    committer: Committer,
    thread: JoinHandle<()>,
}

impl Host {
    /// Starts on a fresh, empty database.
    fn new() -> Host {
        let store = Store::Dir(tempfile::tempdir().expect("temporary directory"));
        Host {
            running: Some(Running::start(&store)),
            store,
        }
    }

    /// Starts on an empty simulated disk, whose power can be cut.
    fn simulated() -> Host {
        let store = Store::Disk(SimulatedDisk::new());
        Host {
            running: Some(Running::start(&store)),
            store,
        }
    }

    /// The simulated disk the host runs on.
    fn disk(&self) -> &SimulatedDisk {
        match &self.store {
            Store::Disk(disk) => disk,
            Store::Dir(_) => panic!("the host runs on a real disk"),
        }
    }

    fn running(&self) -> &Running {
        self.running.as_ref().expect("the host is running")
    }

    fn committer(&self) -> &Committer {
        &self.running().committer
    }

    /// Object `name`'s storage, with the default limits.
    fn object(&self, name: &str) -> ObjectStorage {
        self.object_with(name, StorageLimits::default())
    }

    fn object_with(&self, name: &str, limits: StorageLimits) -> ObjectStorage {
        let object = ObjectIdentity::new("storage-tests", name);
        ObjectStorage::open(&object, &self.running().storage, 0, limits)
            .expect("open object storage")
    }

    /// Stops and starts again on the same database, as the host does after a restart. Every
    /// `ObjectStorage` must be gone.
    fn restart(&mut self) {
        self.running.take().expect("the host is running").stop();
        self.running = Some(Running::start(&self.store));
    }

    /// Cuts the simulated disk's power while commits may be in flight, then starts again on what
    /// was synced. Every `ObjectStorage` must be gone.
    fn cut_power(&mut self) {
        let running = self.running.take().expect("the host is running");
        self.disk().cut_power();
        // The commit thread fails whatever it still had queued: its file died with the power.
        running.stop();
        self.running = Some(Running::start(&self.store));
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // After a failed assertion the checks of `stop` could only panic again, aborting the run.
        if let Some(running) = self.running.take()
            && !std::thread::panicking()
        {
            running.stop();
        }
    }
}

impl Running {
    fn start(store: &Store) -> Running {
        let db = match store {
            Store::Dir(dir) => Db::open(&dir.path().join("dohost.redb"), 64 << 20),
            Store::Disk(disk) => {
                // This file, not a new one, when the database opens again after an I/O failure:
                // after a power cut it is dead, as the host that held it would be.
                let file = disk.file();
                Db::open_with_backend(move || Ok(file.clone()), 64 << 20)
            }
        };
        let storage = Storage::local(db.expect("open the database")).expect("read the sizes");
        let (committer, thread) = Committer::start(storage.objects.clone(), Box::new(|_, _| {}))
            .expect("start the commit thread");
        Running {
            storage,
            committer,
            thread,
        }
    }

    /// Ends the commit thread and closes the database.
    fn stop(self) {
        drop(self.committer);
        self.thread.join().expect("the commit thread panicked");
        let db = self.storage.local.clone();
        drop(self.storage);
        let db = Arc::try_unwrap(db)
            .ok()
            .expect("nothing else holds the database");
        drop(db);
    }
}

/// Checks that `s`, object `name`'s storage, holds exactly `expected`, of `size` bytes, and still
/// does after a restart of the host: all of it was committed.
fn assert_durable(
    mut host: Host,
    s: ObjectStorage,
    name: &str,
    expected: &[(String, Vec<u8>)],
    size: u64,
) {
    let check = |s: &ObjectStorage, when: &str| {
        assert_eq!(all(s), expected, "contents {when}");
        assert_eq!(s.size(), size, "size {when}");
    };
    check(&s, "before the restart");
    drop(s);
    host.restart();
    check(&host.object(name), "after the restart");
}

/// Ends the event successfully and waits until its writes are durable.
fn finish_durably(s: &mut ObjectStorage, host: &Host) {
    if let Some(outcome) = s.finish_event(host.committer()) {
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

/// What `list` returns for valid options `o` over the entries of `map`: the plain model of it.
fn listed(map: &BTreeMap<String, Vec<u8>>, o: &ListOptions) -> Vec<(String, Vec<u8>)> {
    // `str` orders by bytes, as the storage does.
    let mut out: Vec<(String, Vec<u8>)> = map
        .iter()
        .filter(|(k, _)| {
            o.prefix.as_ref().is_none_or(|p| k.starts_with(p.as_str()))
                && o.start.as_ref().is_none_or(|s| *k >= s)
                && o.start_after.as_ref().is_none_or(|s| *k > s)
                && o.end.as_ref().is_none_or(|e| *k < e)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if o.reverse {
        out.reverse();
    }
    if let Some(limit) = o.limit {
        out.truncate(limit as usize);
    }
    out
}
