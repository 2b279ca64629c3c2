//! Limits: the per-connection rate limit, the connection cap, slow consumers, and the
//! heartbeat staying alive while a client is backpressured.

mod common;

use std::time::{Duration, Instant};

use common::client::{Client, ClientError, Incoming};
use common::*;
use futures_util::StreamExt;
use serde_json::json;
use tidings::Config;
use tokio_tungstenite::tungstenite::Message;

fn config(dir: &tempfile::TempDir) -> Config {
    Config::with_db(dir.path().join("chat.redb"))
}

#[tokio::test]
async fn over_the_rate_limit_is_refused_with_a_retry_time() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = config(&dir);
    config.rate_limit = 5.0;
    config.rate_burst = 3;
    let server = TestServer::start_with(config).await;
    let mut client = server.connect(0).await;
    for i in 1..=3 {
        assert_eq!(send_ok(&mut client, &format!("m{i}"), None).await, i);
    }
    let limited = send(&mut client, "m4", Some("o-4")).await;
    assert_eq!(limited["error"], json!("rate limited"), "{limited}");
    let retry_after = limited["retryAfterMs"].as_u64().unwrap_or(0);
    assert!((1..=200).contains(&retry_after), "{limited}");
    tokio::time::sleep(Duration::from_millis(retry_after + 20)).await;
    // The same message, retried when told, is stored (the refusal stored nothing).
    assert_eq!(send_ok(&mut client, "m4", Some("o-4")).await, 4);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_client_that_ignores_its_limit_is_disconnected() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = config(&dir);
    config.rate_limit = 1.0;
    config.rate_burst = 3;
    let server = TestServer::start_with(config).await;
    let mut abuser = server.connect(0).await;
    for i in 0..10 {
        abuser
            .emit("chat message", &[json!(format!("spam {i}"))])
            .await?;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        match abuser.next(deadline - Instant::now()).await {
            Ok(Incoming::Disconnected) | Err(ClientError::Closed) => break,
            Ok(_) => continue,
            Err(e) => panic!("expected a disconnect, got {e}"),
        }
    }
    // Only the burst was stored; everyone else is unaffected.
    let mut other = server.connect(0).await;
    assert_eq!(receive(&mut other, 3).await.len(), 3);
    other.expect_silence(Duration::from_millis(300)).await?;
    assert_eq!(send_ok(&mut other, "still fine", None).await, 4);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_until_one_leaves() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = config(&dir);
    config.max_connections = 2;
    let server = TestServer::start_with(config).await;
    let first = server.connect(0).await;
    let _second = server.connect(0).await;
    match Client::connect(&server.url, &json!({})).await {
        Err(ClientError::Refused(message)) => {
            assert!(message.contains("server is full"), "{message}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|c| c.sid)),
    }
    first.close().await;
    let deadline = Instant::now() + WAIT;
    loop {
        match Client::connect(&server.url, &json!({})).await {
            Ok(_) => break,
            Err(ClientError::Refused(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("a place should free up: {e}"),
        }
    }
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_slows_nobody_and_is_dropped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = config(&dir);
    config.rate_limit = 0.0;
    config.socket_buffer = 16;
    config.ping_interval_ms = 300;
    config.ping_timeout_ms = 300;
    let server = TestServer::start_with(config).await;
    let mut stalled = connect_raw(&server.url).await?;
    let mut sender = server.connect(0).await;
    let mut observer = server.connect(0).await;

    // Enough to fill the stalled client's buffer and its TCP window many times over.
    let text = "x".repeat(8 * 1024);
    let n = 1500u64;
    let started = Instant::now();
    for i in 1..=n {
        let args = [json!(format!("{i} {text}")), json!(format!("o-{i}"))];
        if i % 100 == 0 {
            // Events are handled concurrently, so ids follow commit order, not send order.
            let ack = sender.emit_with_ack("chat message", &args, WAIT).await?;
            assert!(ack[0]["id"].is_u64(), "ack {ack:?}");
        } else {
            sender.emit("chat message", &args).await?;
        }
    }
    for i in 1..=n {
        let (_, id) = observer.next_chat(WAIT).await?;
        assert_eq!(id, i);
    }
    let elapsed = started.elapsed();
    assert!(elapsed < WAIT, "others were held up: {elapsed:?}");

    // The stalled client never answered a ping: the server has closed it. Reading now
    // drains what was in flight and then ends, well short of everything.
    let mut frames = 0u64;
    let drained = tokio::time::timeout(WAIT, async {
        while let Some(Ok(frame)) = stalled.next().await {
            if matches!(frame, Message::Close(_)) {
                break;
            }
            frames += 1;
        }
    })
    .await;
    assert!(drained.is_ok(), "the stalled connection was never closed");
    assert!(
        frames < n,
        "a stalled client cannot have received everything ({frames})"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn history_requests_share_the_rate_limit() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = config(&dir);
    config.rate_limit = 1.0;
    config.rate_burst = 2;
    let server = TestServer::start_with(config).await;
    let mut client = server.connect(0).await;
    for _ in 0..2 {
        let ack = client.emit_with_ack("history", &[json!({})], WAIT).await?;
        assert!(ack[0]["messages"].is_array(), "{ack:?}");
    }
    let ack = client.emit_with_ack("history", &[json!({})], WAIT).await?;
    assert_eq!(ack[0]["error"], json!("rate limited"), "{ack:?}");
    assert!(ack[0]["retryAfterMs"].as_u64().is_some_and(|ms| ms > 0));
    server.stop().await;
    Ok(())
}
