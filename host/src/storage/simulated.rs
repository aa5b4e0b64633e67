//! A disk simulated in memory, for tests of what a real disk can do to the host: lose power,
//! fill up, fail, or lie about syncing. The host never uses it; it is public so that the end-to-end
//! tests in `tests/` can start a host on it (`Db::open_with_backend`).
//!
//! Everything written since the last `sync_data` is volatile: [`SimulatedDisk::cut_power`]
//! throws it away, as a power cut throws away the operating system's page cache, which a killed
//! process leaves intact. A block is allocated when first written, as on a real filesystem; while
//! the disk is [full](SimulatedDisk::set_full), writing a block not yet allocated fails with
//! `StorageFull` (ENOSPC), and overwriting one succeeds.

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

/// The unit of allocation and of syncing.
const BLOCK: usize = 4096;

/// What `sync_data` makes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// Everything written so far, as it should.
    Honest,
    /// Only what was written before the previous sync: a disk (or a host) that acknowledges
    /// before what it acknowledged is durable. The negative control of the power-loss test.
    Lagging,
}

/// The disk. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct SimulatedDisk {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    /// What survives a power cut.
    durable: Vec<u8>,
    /// What reads see.
    current: Vec<u8>,
    /// Blocks written since the last sync.
    dirty: BTreeSet<usize>,
    /// Per block of `current`, whether it is allocated.
    allocated: Vec<bool>,
    /// With [`Sync::Lagging`], what the last sync promised and has not made durable yet.
    promised: Option<Snapshot>,
    sync: Sync,
    full: bool,
    /// Whether every write and sync fails.
    failing: bool,
    /// Counts power cuts: a file opened before the last one is dead.
    power_cycle: u64,
}

/// Blocks as a sync saw them, and the file's length then.
#[derive(Debug)]
struct Snapshot {
    blocks: Vec<(usize, Vec<u8>)>,
    len: usize,
}

impl Default for State {
    fn default() -> Self {
        State {
            durable: Vec::new(),
            current: Vec::new(),
            dirty: BTreeSet::new(),
            allocated: Vec::new(),
            promised: None,
            sync: Sync::Honest,
            full: false,
            failing: false,
            power_cycle: 0,
        }
    }
}

impl SimulatedDisk {
    /// An empty disk.
    pub fn new() -> SimulatedDisk {
        SimulatedDisk::default()
    }

    /// The disk's one file, for redb, until the next power cut.
    pub fn file(&self) -> SimulatedFile {
        SimulatedFile {
            disk: self.clone(),
            power_cycle: self.lock().power_cycle,
        }
    }

    /// Cuts the power and turns it on again: what was not synced is gone, and every file opened
    /// before fails from now on, as the host that held it would be gone.
    pub fn cut_power(&self) {
        let mut s = self.lock();
        s.current = s.durable.clone();
        let blocks = s.current.len().div_ceil(BLOCK);
        s.allocated.resize(blocks, true);
        s.dirty.clear();
        s.promised = None;
        s.power_cycle += 1;
    }

    /// Fills the disk (writes to blocks not yet allocated fail), or frees space again.
    pub fn set_full(&self, full: bool) {
        self.lock().full = full;
    }

    /// Makes every write and sync fail with an I/O error, as a failing disk's do, or work again.
    /// Reads go on, as they do when only the blocks being written are bad.
    pub fn set_failing(&self, failing: bool) {
        self.lock().failing = failing;
    }

    /// Chooses what `sync_data` makes durable from now on.
    pub fn set_sync(&self, sync: Sync) {
        let mut s = self.lock();
        if sync == Sync::Honest
            && let Some(promised) = s.promised.take()
        {
            s.persist(promised);
        }
        s.sync = sync;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the bytes half-updated: every change is one call.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn sync(&mut self) {
        let blocks: Vec<(usize, Vec<u8>)> = std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|b| {
                let start = b * BLOCK;
                let bytes = self
                    .current
                    .get(start..(start + BLOCK).min(self.current.len()))?;
                Some((b, bytes.to_vec()))
            })
            .collect();
        let snapshot = Snapshot {
            blocks,
            len: self.current.len(),
        };
        match self.sync {
            Sync::Honest => self.persist(snapshot),
            Sync::Lagging => {
                if let Some(promised) = self.promised.replace(snapshot) {
                    self.persist(promised);
                }
            }
        }
    }

    fn persist(&mut self, Snapshot { blocks, len }: Snapshot) {
        self.durable.resize(len, 0);
        for (b, bytes) in blocks {
            let start = b * BLOCK;
            let end = (start + bytes.len()).min(len);
            if start < end {
                self.durable[start..end].copy_from_slice(&bytes[..end - start]);
            }
        }
    }
}

/// The disk's file as one redb handle holds it: dead after a power cut.
#[derive(Debug, Clone)]
pub struct SimulatedFile {
    disk: SimulatedDisk,
    power_cycle: u64,
}

impl SimulatedFile {
    fn state(&self) -> io::Result<MutexGuard<'_, State>> {
        let s = self.disk.lock();
        if s.power_cycle != self.power_cycle {
            return Err(io::Error::other("the power was cut"));
        }
        Ok(s)
    }

    /// The state, for a change.
    fn state_to_write(&self) -> io::Result<MutexGuard<'_, State>> {
        let s = self.state()?;
        if s.failing {
            return Err(io::Error::other("the simulated disk fails every write"));
        }
        Ok(s)
    }
}

fn len_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too large"))
}

impl redb::StorageBackend for SimulatedFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state()?.current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let s = self.state()?;
        let start = len_usize(offset)?;
        let bytes = s
            .current
            .get(start..start + out.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        out.copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.state_to_write()?;
        let len = len_usize(len)?;
        // Growing allocates nothing (the new blocks are a hole), as on a real filesystem.
        s.current.resize(len, 0);
        let blocks = len.div_ceil(BLOCK);
        s.allocated.resize(blocks, false);
        s.dirty.retain(|&b| b < blocks);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.state_to_write()?.sync();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut s = self.state_to_write()?;
        let start = len_usize(offset)?;
        let end = start + data.len();
        if data.is_empty() {
            return Ok(());
        }
        let blocks = start / BLOCK..end.div_ceil(BLOCK);
        if s.full
            && blocks
                .clone()
                .any(|b| !s.allocated.get(b).copied().unwrap_or(false))
        {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on the simulated disk",
            ));
        }
        if s.current.len() < end {
            s.current.resize(end, 0);
            s.allocated.resize(end.div_ceil(BLOCK), false);
        }
        s.current[start..end].copy_from_slice(data);
        for b in blocks {
            s.allocated[b] = true;
            s.dirty.insert(b);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::StorageBackend;

    fn read_all(file: &SimulatedFile) -> Vec<u8> {
        let mut out = vec![0; usize::try_from(file.len().unwrap()).unwrap()];
        file.read(0, &mut out).unwrap();
        out
    }

    #[test]
    fn a_power_cut_keeps_what_was_synced_and_kills_the_old_file() {
        let disk = SimulatedDisk::new();
        let file = disk.file();
        file.write(0, b"synced").unwrap();
        file.sync_data().unwrap();
        file.write(0, b"lost").unwrap();
        file.write(8192, b"grown").unwrap();
        disk.cut_power();
        assert!(
            file.len().is_err(),
            "a file of the host before the cut is dead"
        );
        assert_eq!(read_all(&disk.file()), b"synced");
    }

    #[test]
    fn a_lagging_sync_makes_durable_only_what_the_previous_sync_promised() {
        let disk = SimulatedDisk::new();
        disk.set_sync(Sync::Lagging);
        let file = disk.file();
        file.write(0, b"one").unwrap();
        file.sync_data().unwrap();
        file.write(0, b"two").unwrap();
        file.sync_data().unwrap();
        disk.cut_power();
        assert_eq!(read_all(&disk.file()), b"one");
    }

    #[test]
    fn a_full_disk_refuses_new_blocks_and_overwrites_old_ones() {
        let disk = SimulatedDisk::new();
        let file = disk.file();
        file.write(0, &[1; BLOCK]).unwrap();
        file.set_len(3 * BLOCK as u64).unwrap();
        disk.set_full(true);
        file.write(10, b"overwrite").unwrap();
        let full = file.write(BLOCK as u64, b"hole").unwrap_err();
        assert_eq!(full.kind(), io::ErrorKind::StorageFull);
        assert_eq!(
            file.write(3 * BLOCK as u64, b"past the end")
                .unwrap_err()
                .kind(),
            io::ErrorKind::StorageFull
        );
        disk.set_full(false);
        file.write(BLOCK as u64, b"hole").unwrap();
    }
}
