//! A storage backend that fails on demand, for tests and the fuzz targets: the real file,
//! except that every write, resize and sync fails with "no space left on device" while its
//! [`FaultSwitch`] is on. Reads always work, as they do on a full disk.

use std::fs::OpenOptions;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

use super::{Store, StoreError, StoreReader, StoreWriter};

/// Turns the failures of a [`FaultyDisk`] on and off.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch(Arc<AtomicBool>);

impl FaultSwitch {
    /// From now on, writes fail (`true`) or work (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.0.store(failing, Ordering::SeqCst);
    }

    fn check(&self) -> std::io::Result<()> {
        if self.0.load(Ordering::SeqCst) {
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
