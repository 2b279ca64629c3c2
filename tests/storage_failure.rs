//! Storage failure: a commit that fails (disk full) acks nothing, broadcasts nothing, keeps
//! the server up, and the same message succeeds once the disk recovers.

mod common;

use std::time::Duration;

use common::client::ClientError;
use common::*;
use serde_json::json;
use tidings::storage::Store;
use tidings::storage::fault::FaultSwitch;
use tidings::{Config, Server};

const FAILURES: &str = "tidings_commit_failures_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_acks_nothing_and_recovers() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("chat.redb");
    let full = FaultSwitch::default();
    let config = Config::with_db(&path);
    let stores = {
        let (path, full) = (path.clone(), full.clone());
        tokio::task::spawn_blocking(move || Store::open_faulty(&path, full, 1 << 20)).await??
    };
    let server = tokio::task::spawn_blocking(move || Server::with_store(config, stores)).await??;
    let server = TestServer::serve(server).await;

    let mut sender = server.connect(0).await;
    let mut observer = server.connect(0).await;
    assert_eq!(send_ok(&mut sender, "before", Some("s-1")).await, 1);
    assert_eq!(observer.next_chat(WAIT).await?, ("before".into(), 1));

    let failures = || async { counter(&get(&server.url, "/metrics").await.1, FAILURES) };
    let failures_before = failures().await;
    full.set_failing(true);
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

    assert!(
        failures().await > failures_before,
        "the failed commit is counted in {FAILURES}"
    );
    full.set_failing(false);
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
