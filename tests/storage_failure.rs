//! Storage failure: a commit that fails (disk full) acks nothing, broadcasts nothing, keeps
//! the server up, and the same message succeeds once the disk recovers.

mod common;

use std::fs::OpenOptions;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::client::ClientError;
use common::*;
use redb::backends::FileBackend;
use redb::{BackendError, Database, StorageBackend};
use serde_json::json;
use tidings::storage::Store;
use tidings::{Config, Server};

/// The file, except that every write fails with "no space left" while `full` is set.
#[derive(Debug)]
struct FillableDisk {
    file: FileBackend,
    full: Arc<AtomicBool>,
}

impl FillableDisk {
    fn check(&self) -> std::io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no space left on device (simulated)",
            ))
        } else {
            Ok(())
        }
    }
}

impl StorageBackend for FillableDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.file.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.check()?;
        self.file.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_acks_nothing_and_recovers() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("chat.redb");
    let full = Arc::new(AtomicBool::new(false));
    let opener = {
        let (path, full) = (path.clone(), full.clone());
        Arc::new(move || {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            Database::builder().create_with_backend(FillableDisk {
                file: FileBackend::new(file)?,
                full: full.clone(),
            })
        })
    };
    let config = Config::with_db(&path);
    let stores = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || Store::open_with(&path, opener)).await??
    };
    let server = tokio::task::spawn_blocking(move || Server::with_store(config, stores)).await??;
    let server = TestServer::serve(server).await;

    let mut sender = server.connect(0).await;
    let mut observer = server.connect(0).await;
    assert_eq!(send_ok(&mut sender, "before", Some("s-1")).await, 1);
    assert_eq!(observer.next_chat(WAIT).await?, ("before".into(), 1));

    full.store(true, Ordering::SeqCst);
    let attempt = sender
        .emit_with_ack(
            "chat message",
            &[json!("during"), json!("s-2")],
            Duration::from_millis(1500),
        )
        .await;
    assert!(
        matches!(attempt, Err(ClientError::Timeout(_))),
        "no ack while the disk is full: {attempt:?}"
    );
    observer.expect_silence(Duration::from_millis(300)).await?;
    assert_eq!(
        get(&server.url, "/healthz").await.0,
        503,
        "/healthz reports the failing disk"
    );

    full.store(false, Ordering::SeqCst);
    // The client's retry (same offset) is stored now, once, under the next id.
    assert_eq!(send_ok(&mut sender, "during", Some("s-2")).await, 2);
    assert_eq!(observer.next_chat(WAIT).await?, ("during".into(), 2));
    assert_eq!(send_ok(&mut sender, "after", Some("s-3")).await, 3);
    assert_eq!(observer.next_chat(WAIT).await?, ("after".into(), 3));
    assert_eq!(
        get(&server.url, "/healthz").await.0,
        200,
        "/healthz recovers with the disk"
    );
    server.stop().await;

    // On disk: exactly the acked messages, each once.
    let server = TestServer::start_on(&path).await;
    let mut fresh = server.connect(0).await;
    assert_eq!(
        receive(&mut fresh, 3).await,
        vec![
            ("before".into(), 1),
            ("during".into(), 2),
            ("after".into(), 3)
        ]
    );
    fresh.expect_silence(Duration::from_millis(300)).await?;
    server.stop().await;
    Ok(())
}
