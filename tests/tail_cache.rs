//! The tail cache: replays that start before it, inside it or across its edge are the same
//! gap-free sequence as from the database, before and after a restart (the cache is seeded
//! from the store), with retention evicting what it deletes; its hit and miss counters.

mod common;

use std::process::Stdio;

use common::*;
use serde_json::json;
use tidings::Config;

fn config(db: &std::path::Path, cached: u32) -> Config {
    let mut config = Config::with_db(db.to_path_buf());
    config.tail_cache_messages = cached;
    config.replay_batch = 7;
    config.rate_limit = 0.0;
    config
}

fn expected(from: u64, to: u64) -> Vec<(String, u64)> {
    (from..=to).map(|i| (format!("m{i}"), i)).collect()
}

/// Stores `m1..=mN` in unacked bursts (grouped into few commits).
async fn seed(server: &TestServer, n: u64) {
    let mut writer = server.connect(0).await;
    for i in 1..=n {
        writer
            .emit(
                "chat message",
                &[json!(format!("m{i}")), json!(format!("s-{i}"))],
            )
            .await
            .expect("emit");
    }
    assert_eq!(receive(&mut writer, n as usize).await, expected(1, n));
    writer.close().await;
}

async fn assert_replays(server: &TestServer, newest: u64, offsets: &[u64]) {
    for &offset in offsets {
        let mut client = server.connect(offset).await;
        assert_eq!(
            receive(&mut client, (newest - offset) as usize).await,
            expected(offset + 1, newest),
            "replay from offset {offset}"
        );
        client
            .expect_silence(std::time::Duration::from_millis(100))
            .await
            .expect("nothing after the replay");
        client.close().await;
    }
}

#[tokio::test]
async fn replays_cross_from_the_database_into_the_cache_and_survive_a_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("chat.redb");
    // 50 cached of 200: offsets below 150 start in the database and end in the cache.
    let offsets = [0, 1, 100, 148, 149, 150, 151, 180, 199];
    let server = TestServer::start_with(config(&db, 50)).await;
    seed(&server, 200).await;
    assert_replays(&server, 200, &offsets).await;
    server.stop().await;

    // After a restart the cache is seeded from the store, and live messages extend it.
    let server = TestServer::start_with(config(&db, 50)).await;
    assert_replays(&server, 200, &offsets).await;
    let mut writer = server.connect(200).await;
    assert_eq!(send_ok(&mut writer, "m201", None).await, 201);
    assert_replays(&server, 201, &[0, 150, 151, 200]).await;
    server.stop().await;

    // The same sequences with the cache off: everything from the database.
    let server = TestServer::start_with(config(&db, 0)).await;
    assert_replays(&server, 201, &[0, 150, 200]).await;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn retention_evicts_from_the_cache_what_it_deletes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = config(&dir.path().join("chat.redb"), 1000);
    config.retain_messages = Some(5);
    let server = TestServer::start_with(config.clone()).await;
    seed(&server, 40).await;
    server.stop().await;
    // Retention runs at start-up, after the cache was seeded with all 40: wait until
    // replay from 0 begins at 36.
    let server = TestServer::start_with(config).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut client = server.connect(0).await;
        let first = client.next_chat(WAIT).await?;
        client.close().await;
        if first.1 == 36 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention did not reach the cache: replay from 0 still starts at {first:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_replays(&server, 40, &[35, 36, 39]).await;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn hits_and_misses_are_counted() -> TestResult {
    // Its own process, so no other test's replays are counted.
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = ServerProcess::spawn(
        server_command(port, &dir.path().join("chat.redb"))
            .args(["--tail-cache-messages", "50", "--replay-batch", "7"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    child.wait_listening();

    let mut writer = common::client::Client::connect(&url, &json!({ "serverOffset": 0 })).await?;
    for i in 1..=100u64 {
        assert_eq!(send_ok(&mut writer, &format!("m{i}"), None).await, i);
    }
    let scrape = || async { get(&url, "/metrics").await.1 };
    let before = scrape().await;
    let (hits, misses) = (
        "tidings_tail_cache_hits_total",
        "tidings_tail_cache_misses_total",
    );
    assert!(
        before.contains("tidings_tail_cache_messages 50"),
        "{before}"
    );

    // 91..=100 are cached: two batches of at most 7, both hits.
    let mut recent = common::client::Client::connect(&url, &json!({ "serverOffset": 90 })).await?;
    assert_eq!(receive(&mut recent, 10).await, expected(91, 100));
    let after_recent = scrape().await;
    assert_eq!(counter(&after_recent, hits), counter(&before, hits) + 2);
    assert_eq!(counter(&after_recent, misses), counter(&before, misses));

    // From 0: 1..=50 are not cached (misses), 51..=100 are (hits).
    let mut fresh = common::client::Client::connect(&url, &json!({ "serverOffset": 0 })).await?;
    assert_eq!(receive(&mut fresh, 100).await, expected(1, 100));
    let after_fresh = scrape().await;
    assert!(counter(&after_fresh, misses) > counter(&after_recent, misses));
    assert!(counter(&after_fresh, hits) > counter(&after_recent, hits));

    drop(child);
    Ok(())
}
