//! Storage backends that fail on demand, for tests and the fuzz targets. Every write, resize
//! and sync fails with "no space left on device" while their [`FaultSwitch`] is on; reads
//! always work, as they do on a full disk.
//!
//! - [`FaultyDisk`]: the real file.
//! - [`MemoryDisk`]: bytes in memory that outlive the database opened on them, so a store can
//!   be closed, crashed and reopened without a file or an fsync (the storage fuzz target runs
//!   millions of those). A crash can keep every write (the process died: the page cache
//!   survives) or lose those since the last sync (the machine lost power).

use std::fs::OpenOptions;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

use super::{Store, StoreError, StoreReader, StoreWriter};

/// A countdown that is not running.
const DISARMED: u64 = u64::MAX;

/// Turns the failures of a [`FaultyDisk`] or a [`MemoryDisk`] on and off, now or after a
/// number of writes.
#[derive(Debug, Clone)]
pub struct FaultSwitch {
    failing: Arc<AtomicBool>,
    /// Writes, resizes and syncs that still succeed before the switch turns on by itself.
    countdown: Arc<AtomicU64>,
}

impl Default for FaultSwitch {
    fn default() -> Self {
        Self {
            failing: Arc::default(),
            countdown: Arc::new(AtomicU64::new(DISARMED)),
        }
    }
}

impl FaultSwitch {
    /// From now on, writes fail (`true`) or work (`false`). Either way, a countdown started by
    /// [`FaultSwitch::fail_after`] stops.
    pub fn set_failing(&self, failing: bool) {
        self.countdown.store(DISARMED, Ordering::SeqCst);
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// The next `operations` writes, resizes and syncs succeed; the switch turns on at the one
    /// after them (a disk filling up in the middle of a commit).
    pub fn fail_after(&self, operations: u64) {
        self.failing.store(false, Ordering::SeqCst);
        self.countdown
            .store(operations.min(DISARMED - 1), Ordering::SeqCst);
    }

    /// Whether writes fail now.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    fn check(&self) -> std::io::Result<()> {
        let counted = self
            .countdown
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
                DISARMED | 0 => None,
                left => Some(left - 1),
            });
        if counted == Err(0) {
            self.countdown.store(DISARMED, Ordering::SeqCst);
            self.failing.store(true, Ordering::SeqCst);
        }
        if self.failing.load(Ordering::SeqCst) {
            Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no space left on device (simulated)",
            ))
        } else {
            Ok(())
        }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct FaultyDisk {
    file: FileBackend,
    switch: FaultSwitch,
}

impl StorageBackend for FaultyDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.switch.check()?;
        self.file.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.switch.check()?;
        self.file.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.switch.check()?;
        self.file.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.file.close()
    }
    fn try_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(s, e)
    }
    fn try_lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(s, e)
    }
    fn lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(s, e)
    }
    fn lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(s, e)
    }
    fn unlock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(s, e)
    }
}

impl Store {
    /// Opens (or creates) `path` over a [`FaultyDisk`] controlled by `switch`, with a page
    /// cache of `cache_bytes`; reopening after a failure goes through it too.
    pub fn open_faulty(
        path: &Path,
        switch: FaultSwitch,
        cache_bytes: usize,
    ) -> Result<(StoreReader, StoreWriter), StoreError> {
        let file = path.to_path_buf();
        Self::open_with(
            path,
            Arc::new(move || {
                let handle = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&file)?;
                Store::builder(cache_bytes).create_with_backend(FaultyDisk {
                    file: FileBackend::new(handle)?,
                    switch: switch.clone(),
                })
            }),
        )
    }
}

/// How a [`MemoryDisk`] comes back after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// Every write survives (the process was killed; the OS had the data).
    KeepUnsynced,
    /// Writes since the last successful sync are lost (the machine lost power).
    LoseUnsynced,
}

/// What a write or resize since the last sync replaced, to undo it in a power loss.
#[derive(Debug)]
enum Undo {
    Write { offset: usize, old: Vec<u8> },
    Len { old: usize, cut: Vec<u8> },
}

#[derive(Debug, Default)]
struct Memory {
    bytes: Vec<u8>,
    /// Newest last.
    unsynced: Vec<Undo>,
}

/// See the module docs. Clones share the same bytes and the same [`FaultSwitch`].
#[derive(Debug, Clone, Default)]
pub struct MemoryDisk {
    memory: Arc<Mutex<Memory>>,
    switch: FaultSwitch,
}

impl MemoryDisk {
    /// An empty disk whose writes fail while `switch` is on.
    pub fn new(switch: FaultSwitch) -> Self {
        Self {
            memory: Arc::default(),
            switch,
        }
    }

    /// A disk holding a copy of this one's bytes (as of the last write), failing with
    /// `switch`: a database created once can be copied for every run of a test.
    pub fn copy(&self, switch: FaultSwitch) -> Self {
        let bytes = self.lock().bytes.clone();
        Self {
            memory: Arc::new(Mutex::new(Memory {
                bytes,
                unsynced: Vec::new(),
            })),
            switch,
        }
    }

    /// Its switch.
    pub fn switch(&self) -> &FaultSwitch {
        &self.switch
    }

    /// Its size in bytes.
    pub fn size(&self) -> usize {
        self.lock().bytes.len()
    }

    /// The bytes as a crash leaves them. Call it once nothing has the disk open (drop the
    /// store's handles first, with the switch on so that closing writes nothing).
    pub fn crash(&self, crash: Crash) {
        let mut memory = self.lock();
        let undo = std::mem::take(&mut memory.unsynced);
        if crash == Crash::LoseUnsynced {
            for step in undo.into_iter().rev() {
                match step {
                    Undo::Write { offset, old } => {
                        memory.bytes[offset..offset + old.len()].copy_from_slice(&old);
                    }
                    Undo::Len { old, cut } => {
                        memory.bytes.truncate(old - cut.len());
                        memory.bytes.extend_from_slice(&cut);
                        memory.bytes.resize(old, 0);
                    }
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        // Every mutation below completes before it could panic (bounds are checked first).
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn out_of_range() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "beyond the end of the disk",
    )
}

impl StorageBackend for MemoryDisk {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.lock().bytes.len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let memory = self.lock();
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let source = start
            .checked_add(out.len())
            .and_then(|end| memory.bytes.get(start..end))
            .ok_or_else(out_of_range)?;
        out.copy_from_slice(source);
        Ok(())
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.switch.check()?;
        let len = usize::try_from(len).map_err(|_| out_of_range())?;
        let mut memory = self.lock();
        let old = memory.bytes.len();
        let cut = memory
            .bytes
            .get(len..)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        memory.unsynced.push(Undo::Len { old, cut });
        memory.bytes.resize(len, 0);
        Ok(())
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.switch.check()?;
        self.lock().unsynced.clear();
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.switch.check()?;
        let mut memory = self.lock();
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let end = start
            .checked_add(data.len())
            .filter(|&end| end <= memory.bytes.len())
            .ok_or_else(out_of_range)?;
        let old = memory.bytes[start..end].to_vec();
        memory.unsynced.push(Undo::Write { offset: start, old });
        memory.bytes[start..end].copy_from_slice(data);
        Ok(())
    }
}

impl Store {
    /// Opens (or creates) a database on `disk`; reopening after a failure goes through it
    /// too. Errors name it `:memory:`.
    pub fn open_memory(disk: &MemoryDisk) -> Result<(StoreReader, StoreWriter), StoreError> {
        let disk = disk.clone();
        Self::open_with(
            Path::new(":memory:"),
            Arc::new(move || {
                // The fuzz target opens thousands of these a second; they are small.
                Store::builder(1 << 20).create_with_backend(disk.clone())
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::test_support::input;
    use crate::message::{AppendOutcome, MessageId};

    fn contents(reader: &StoreReader) -> Vec<String> {
        reader
            .read_range(0, u64::MAX, usize::MAX, usize::MAX)
            .expect("read")
            .into_iter()
            .map(|row| row.message.content)
            .collect()
    }

    #[test]
    fn a_memory_disk_outlives_the_database_opened_on_it() -> Result<(), StoreError> {
        let disk = MemoryDisk::default();
        {
            let (reader, mut writer) = Store::open_memory(&disk)?;
            writer.append_batch(&[input("a", None)], 1)?;
            drop(writer);
            reader.close()?;
        }
        let (reader, mut writer) = Store::open_memory(&disk)?;
        assert_eq!(contents(&reader), ["a"]);
        assert_eq!(
            writer.append_batch(&[input("b", None)], 2)?,
            [AppendOutcome::Stored(MessageId(2))]
        );
        let copy = disk.copy(FaultSwitch::default());
        drop((reader, writer));
        let (reader, _writer) = Store::open_memory(&copy)?;
        assert_eq!(contents(&reader), ["a", "b"]);
        Ok(())
    }

    #[test]
    fn a_commit_failing_half_way_stores_nothing_and_the_store_reopens() -> Result<(), StoreError> {
        let switch = FaultSwitch::default();
        let disk = MemoryDisk::new(switch.clone());
        let (reader, mut writer) = Store::open_memory(&disk)?;
        writer.append_batch(&[input("a", None)], 1)?;
        switch.fail_after(1);
        assert!(writer.append_batch(&[input("b", None)], 2).is_err());
        assert!(switch.is_failing(), "the countdown turned the switch on");
        assert!(
            writer.reopen().is_err(),
            "still full: the store stays closed"
        );
        assert!(!writer.is_open());
        switch.set_failing(false);
        writer.reopen()?;
        assert_eq!(contents(&reader), ["a"]);
        assert_eq!(
            writer.append_batch(&[input("c", None)], 3)?,
            [AppendOutcome::Stored(MessageId(2))]
        );
        Ok(())
    }

    #[test]
    fn a_power_loss_keeps_exactly_what_was_committed() -> Result<(), StoreError> {
        let switch = FaultSwitch::default();
        let disk = MemoryDisk::new(switch.clone());
        let (reader, mut writer) = Store::open_memory(&disk)?;
        writer.append_batch(&[input("a", None)], 1)?;
        // The power goes in the middle of the next commit: whatever it wrote is lost.
        switch.fail_after(2);
        assert!(writer.append_batch(&[input("b", None)], 2).is_err());
        drop((reader, writer));
        disk.crash(Crash::LoseUnsynced);
        switch.set_failing(false);
        let (reader, writer) = Store::open_memory(&disk)?;
        assert_eq!(contents(&reader), ["a"]);
        assert_eq!(writer.last_id(), 1);
        Ok(())
    }
}
