//! Live delivery without a task per socket: a caught-up socket is served by the broadcaster
//! alone (`tidings_catching_up_sockets` falls back to 0 while `tidings_live_sockets` counts
//! it), gets every new message, and leaves the live set as soon as it disconnects or is
//! disconnected, without waiting for a message to find it gone.
//!
//! One test per binary: the gauges are the process's.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tidings::Config;

const LIVE: &str = "tidings_live_sockets";
const CATCHING_UP: &str = "tidings_catching_up_sockets";

/// A gauge's value in Prometheus text (`None` when absent).
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until the live and catching-up gauges read `live` and `catching_up`.
async fn until_gauges(url: &str, live: f64, catching_up: f64, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = get(url, "/metrics").await.1;
        let now = (gauge(&metrics, LIVE), gauge(&metrics, CATCHING_UP));
        if now == (Some(live), Some(catching_up)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: expected {live} live and {catching_up} catching up, /metrics says {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn caught_up_sockets_are_served_without_a_task_and_leave_when_they_go() -> TestResult {
    const CLIENTS: usize = 20;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("chat.redb");
    // Something to replay, so every socket starts with a task of its own.
    let seeding = TestServer::start_on(&db).await;
    let mut seeder = seeding.connect(0).await;
    for i in 1..=5 {
        assert_eq!(send_ok(&mut seeder, &format!("m{i}"), None).await, i);
    }
    seeder.close().await;
    seeding.stop().await;

    let mut config = Config::with_db(&db);
    config.rate_limit = 1.0;
    config.rate_burst = 3;
    let server = TestServer::start_with(config).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = server.connect(0).await;
        assert_eq!(receive(&mut client, 5).await.len(), 5);
        client.next_named("sync", WAIT).await?;
        clients.push(client);
    }
    let mut writer = server.connect(5).await;
    writer.next_named("sync", WAIT).await?;
    let mut abuser = server.connect(5).await;
    abuser.next_named("sync", WAIT).await?;
    // All caught up, and no delivery task left.
    until_gauges(&server.url, (CLIENTS + 2) as f64, 0.0, "all caught up").await;

    // The broadcaster alone delivers to every one of them.
    assert_eq!(send_ok(&mut writer, "live", None).await, 6);
    for client in clients.iter_mut().chain([&mut writer, &mut abuser]) {
        assert_eq!(client.next_chat(WAIT).await?, ("live".to_string(), 6));
    }

    // Half go away: they leave the set at once (no message needed to notice).
    for client in clients.drain(..CLIENTS / 2) {
        client.close().await;
    }
    until_gauges(&server.url, (CLIENTS / 2 + 2) as f64, 0.0, "half closed").await;

    // A live socket that must be disconnected (it ignores its rate limit) is taken out and
    // disconnected, with no task of its own to do it.
    spam_until_disconnected(&mut abuser, 10).await;
    until_gauges(
        &server.url,
        (CLIENTS / 2 + 1) as f64,
        0.0,
        "the abuser gone",
    )
    .await;

    // The others are still served: the burst the abuser was allowed, in order.
    let burst: Vec<(String, u64)> = (0..3).map(|i| (format!("spam {i}"), i + 7)).collect();
    for client in clients.iter_mut().chain([&mut writer]) {
        assert_eq!(receive(client, 3).await, burst);
    }
    server.stop().await;
    Ok(())
}
