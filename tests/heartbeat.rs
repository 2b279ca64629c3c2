//! The heartbeat under backpressure, alone in its own test binary so that the other tests'
//! floods do not compete with it for the CPU: a client that reads in bursts keeps the
//! server's outgoing buffer full, and the engine.io ping must still fit.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tidings::Config;
use tokio_tungstenite::tungstenite::Message;

/// How long a wait may last before it is called a hang: these tests move 13-19 MB through a
/// debug build, which a busy machine can stretch far beyond `WAIT`; nothing here measures
/// speed.
const HANG: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_survive_a_backpressured_replay() -> TestResult {
    // A client that reads in bursts keeps the server's buffer full while it pauses. The
    // heartbeat ping must still fit (delivery leaves headroom), or socketioxide would drop a
    // perfectly healthy client in the middle of its replay.
    let dir = tempfile::tempdir()?;
    let mut config = Config::with_db(dir.path().join("chat.redb"));
    config.rate_limit = 0.0;
    config.socket_buffer = 16;
    // Pings come often; answering one can take a while (the client reads through the
    // backlog queued before it, on a loaded machine), so the timeout is long: it is not what
    // this test is about. Without headroom a ping fails at once, whatever the timeout: the
    // buffer is full when it is due, and socketioxide counts a ping it cannot queue as a
    // timeout.
    config.ping_interval_ms = 300;
    config.ping_timeout_ms = 120_000;
    let server = TestServer::start_with(config).await;
    let mut writer = server.connect(0).await;
    let text = "y".repeat(16 * 1024);
    let n = 800u64;
    for i in 1..=n {
        writer
            .emit(
                "chat message",
                &[json!(format!("{i} {text}")), json!(format!("o-{i}"))],
            )
            .await?;
    }
    // 13 MB to store and echo back first: on a busy machine that can take longer than WAIT,
    // and only the ack's arrival matters here.
    let ack = writer
        .emit_with_ack("chat message", &[json!("last"), json!("o-last")], HANG)
        .await?;
    assert!(ack[0]["id"].is_u64(), "ack {ack:?}");
    let total = n + 1;

    let mut ws = connect_raw(&server.url).await?;
    let (mut next_id, mut pings) = (1u64, 0u32);
    let deadline = Instant::now() + HANG;
    while next_id <= total {
        let frame = tokio::time::timeout_at(deadline.into(), ws.next())
            .await?
            .ok_or("connection ended")??;
        let text = match frame {
            Message::Text(text) => text,
            Message::Close(reason) => panic!("closed at id {next_id}: {reason:?}"),
            _ => continue,
        };
        if text.as_str() == "2" {
            pings += 1;
            ws.send(Message::text("3")).await?;
        } else if let Some(body) = text.strip_prefix("42") {
            let args: Vec<Value> = serde_json::from_str(body)?;
            if args.first() != Some(&json!("chat message")) {
                continue; // sync, presence
            }
            assert_eq!(args.get(2).and_then(Value::as_u64), Some(next_id));
            if next_id % 25 == 0 {
                // Stop reading for a while: TCP and then the server's buffer fill up, and
                // pings come due meanwhile. A ping waits behind what TCP already holds (a few
                // MB on loopback), so a cycle takes 1-2 s here: 32 pauses make the replay span
                // several (with 8 pauses, some runs saw only 2 pings; with 16, 3 or 4).
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            next_id += 1;
        } else if text.as_str() == "41" {
            panic!("disconnected at id {next_id}");
        }
    }
    assert!(pings >= 3, "the replay should span several pings ({pings})");
    server.stop().await;
    Ok(())
}

/// Every ack, the `nickname` ack included, is queued under the socket's send lock and only
/// while a slot stays free after it (for the heartbeat's ping): acks of a client that stopped
/// reading never fill its buffer, and none is dropped. Before the fix, `nickname` acks went
/// straight into the buffer: they took the last slots (the ping then waited behind them),
/// and one that found it full was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_to_a_client_that_stopped_reading_leave_the_ping_a_slot() -> TestResult {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = ServerProcess::spawn(
        server_command(port, &dir.path().join("chat.redb"))
            // The client stays stalled through the whole flood below, which can take tens of
            // seconds on a busy machine: the ping timeout must outlast it (pings still come
            // due every 300 ms, which is what this test is about).
            .args([
                "--socket-buffer",
                "16",
                "--ping-interval-ms",
                "300",
                "--ping-timeout-ms",
                "120000",
            ])
            .env("RUST_LOG", "off")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null()),
    );
    server.wait_listening();
    let mut stalled = connect_raw(&url).await?;
    let mut sender = common::client::Client::connect(&url, &json!({})).await?;
    // Fill the stalled client's TCP window, the server's socket buffer and its outgoing
    // buffer (delivery stops with two slots free).
    let text = "z".repeat(16 * 1024);
    let n = 1200u64;
    for i in 1..=n {
        sender
            .emit("chat message", &[json!(format!("{i} {text}"))])
            .await?;
    }
    for _ in 1..=n {
        sender.next_chat(WAIT).await?;
    }
    const ACKS: u64 = 5;
    for id in 0..ACKS {
        let request = format!(r#"42{id}["nickname","name{id}"]"#);
        stalled.send(Message::text(request)).await?;
    }
    // Pings come due while nothing is read.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let (mut acks, mut ping_before_second_ack) = (0u64, false);
    let deadline = Instant::now() + HANG;
    while acks < ACKS {
        let frame = tokio::time::timeout_at(deadline.into(), stalled.next())
            .await?
            .ok_or("connection ended")??;
        let text = match frame {
            Message::Text(text) => text,
            Message::Close(reason) => panic!("closed after {acks} acks: {reason:?}"),
            _ => continue,
        };
        if text.as_str() == "2" {
            ping_before_second_ack |= acks < 2;
            stalled.send(Message::text("3")).await?;
        } else if let Some(ack) = text.strip_prefix("43") {
            assert!(ack.ends_with(r#"[{"ok":true}]"#), "{ack}");
            acks += 1;
        } else if text.as_str() == "41" {
            panic!("disconnected after {acks} acks");
        }
    }
    assert!(
        ping_before_second_ack,
        "the second ack took the slot left for the ping"
    );
    drop(server);
    Ok(())
}
