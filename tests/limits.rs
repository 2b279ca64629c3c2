//! Limits: the per-connection rate limit, the connection cap, slow consumers, and the
//! heartbeat staying alive while a client is backpressured.

mod common;

use std::time::{Duration, Instant};

use common::client::{Client, ClientError};
use common::*;
use futures_util::StreamExt;
use serde_json::json;
use tidings::Config;
use tidings::message::ChatInput;
use tidings::storage::Store;
use tokio_tungstenite::tungstenite::Message;

fn config(dir: &tempfile::TempDir) -> Config {
    Config::with_db(dir.path().join("chat.redb"))
}

/// Connected clients, as this server's /healthz reports them.
async fn connections(url: &str) -> u64 {
    let (status, body) = get(url, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("healthz JSON");
    health["connections"].as_u64().expect("a connection count")
}

/// A burst of 3, then refused with a retry time; the refused message, retried when told, is
/// stored. The four are pipelined, so the limit is checked for all of them within the moment
/// they arrive: at 1 message/s no token can come back in between on any machine (three
/// sequential fsync'd sends at 5/s refilled a token whenever they took over 200 ms).
#[tokio::test]
async fn over_the_rate_limit_is_refused_with_a_retry_time() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = config(&dir);
    config.rate_limit = 1.0;
    config.rate_burst = 3;
    let server = TestServer::start_with(config).await;
    let mut client = server.connect(0).await;
    let mut pending = Vec::new();
    for i in 1..=4 {
        let args = [json!(format!("m{i}")), json!(format!("o-{i}"))];
        pending.push(client.emit_pipelined("chat message", &args).await?);
    }
    let mut acks = Vec::new();
    for ack in pending {
        let mut ack = tokio::time::timeout(WAIT, ack).await??;
        acks.push(ack.remove(0));
    }
    for (i, ack) in (1..).zip(&acks[..3]) {
        assert_eq!(ack, &json!({ "id": i }), "the burst is stored in order");
    }
    let limited = &acks[3];
    assert_eq!(limited["error"], json!("rate limited"), "{limited}");
    let retry_after = limited["retryAfterMs"].as_u64().unwrap_or(0);
    assert!((1..=1000).contains(&retry_after), "{limited}");
    // Waiting out a time the server gave is the protocol, not a guess.
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
    spam_until_disconnected(&mut abuser, 10).await;
    // Only the burst was stored; everyone else is unaffected.
    let mut other = server.connect(0).await;
    assert_eq!(send_ok(&mut other, "still fine", None).await, 4);
    let burst: Vec<(String, u64)> = (0..3).map(|i| (format!("spam {i}"), i + 1)).collect();
    assert_eq!(receive(&mut other, 3).await, burst);
    assert_eq!(other.next_chat(WAIT).await?, ("still fine".into(), 4));
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

/// A client that stops reading slows nobody and loses nothing: with heartbeats far apart (so
/// nothing but the server's delivery can matter), the others get every message while it
/// still holds its connection, full; when it reads again it gets all of them, in order, on
/// the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_slows_nobody_and_loses_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = config(&dir);
    config.rate_limit = 0.0;
    config.socket_buffer = 16;
    config.ping_interval_ms = 600_000;
    config.ping_timeout_ms = 600_000;
    let server = TestServer::start_with(config).await;
    let mut stalled = connect_raw(&server.url).await?;
    let mut sender = server.connect(0).await;
    let mut observer = server.connect(0).await;

    // Enough to fill the stalled client's buffer and its TCP window many times over.
    let text = "x".repeat(8 * 1024);
    let n = 1500u64;
    for i in 1..=n {
        let args = [json!(format!("{i} {text}")), json!(format!("o-{i}"))];
        if i % 100 == 0 {
            let ack = sender.emit_with_ack("chat message", &args, WAIT).await?;
            assert!(ack[0]["id"].is_u64(), "ack {ack:?}");
        } else {
            sender.emit("chat message", &args).await?;
        }
    }
    // One connection's messages are stored in the order sent: id i is message i.
    for i in 1..=n {
        let (content, id) = observer.next_chat(WAIT).await?;
        assert_eq!(
            (id, content.split(' ').next()),
            (i, Some(i.to_string().as_str()))
        );
    }

    assert_eq!(
        connections(&server.url).await,
        3,
        "the stalled client is still connected"
    );
    // Nothing could have closed the stalled connection (no heartbeat is due): reading now,
    // it gets every message, in order, and is never closed.
    let mut next = 1u64;
    while next <= n {
        let frame = tokio::time::timeout(WAIT, stalled.next())
            .await
            .map_err(|_| format!("the stalled client got {} of {n}, then nothing", next - 1))?
            .ok_or("the stalled connection ended")??;
        let text = match frame {
            Message::Text(text) => text,
            Message::Close(close) => return Err(format!("closed at {next}: {close:?}").into()),
            _ => continue,
        };
        let Some(body) = text.strip_prefix("42") else {
            continue; // sync, presence
        };
        let args: serde_json::Value = serde_json::from_str(body)?;
        if args[0] == json!("chat message") {
            assert_eq!(args[2], json!(next), "ids in order, none missing");
            next += 1;
        }
    }
    server.stop().await;
    Ok(())
}

/// A client that never reads, with its buffer full (a replay it never takes), still misses
/// its heartbeat and is closed; it gets well short of everything. Only this client and the
/// server are on the short heartbeat: nobody else must answer pings in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_at_its_heartbeat() -> TestResult {
    let dir = tempfile::tempdir()?;
    // The history, written straight into the file (a flood through a server would only make
    // this test depend on the machine's speed).
    let n = 1500u64;
    {
        let (reader, mut writer) = Store::open(&dir.path().join("chat.redb"), 1 << 20)?;
        let text = "y".repeat(8 * 1024);
        let inputs: Vec<ChatInput> = (1..=n)
            .map(|i| ChatInput {
                content: format!("{i} {text}"),
                client_offset: None,
                author: None,
                user: None,
                event: None,
                room: None,
            })
            .collect();
        writer.append_batch(&inputs, 1)?;
        reader.close()?;
    }
    let mut config = config(&dir);
    config.socket_buffer = 16;
    config.ping_interval_ms = 300;
    config.ping_timeout_ms = 300;
    let server = TestServer::start_with(config).await;
    let mut stalled = connect_raw(&server.url).await?;
    // Without reading, wait until the server has closed it (its heartbeat went unanswered).
    let deadline = Instant::now() + WAIT;
    while connections(&server.url).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the stalled client was never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut frames = 0u64;
    let drained = tokio::time::timeout(WAIT, async {
        while let Some(Ok(frame)) = stalled.next().await {
            match frame {
                Message::Close(_) => break,
                Message::Text(text) if text.as_str() == "2" => {} // a ping, never answered
                _ => frames += 1,
            }
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

/// The peak resident memory (`VmHWM`) of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmHWM line");
    kib * 1024
}

/// A client that floods 64 KiB messages without ever reading (its outgoing buffer full) is
/// disconnected as soon as it is past its limit, not at its heartbeat 45 s later, and what it
/// sent costs bounded memory: each refused message is dropped as it arrives. The server's peak
/// memory stays under README's "Memory" bound for the defaults (~70 MB + the database cache +
/// the tail cache), with nothing else connected. Before the fix each refused message parked a
/// task holding its parsed frame until its ack found room (never: the buffer is full), and
/// the disconnect waited behind that ack: the client stayed connected and the peak grew with
/// the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flooding_without_reading_is_disconnected_at_once_and_costs_bounded_memory()
-> TestResult {
    use futures_util::SinkExt;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("chat.redb");
    let port = free_port();
    // The defaults (a rate of 20/s, a burst of 50, heartbeats of 25 s + 20 s) but for the
    // database's place and a small outgoing buffer, which the history fills.
    let mut server = ServerProcess::spawn(
        std::process::Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--socket-buffer", "16"])
            .arg("--db")
            .arg(&db)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit()),
    );
    server.wait_listening();
    let url = format!("http://127.0.0.1:{port}");
    // A history the flooder is replayed and never reads: its outgoing buffer is full before
    // it sends anything, as for a client that stopped reading long ago.
    // (160 messages of 60 KiB, 9.4 MiB: more than the kernel's socket buffers take, at most
    // 4 MiB for the server's side here, then the 16 packets of the server's own buffer; from
    // four writers, each within its burst.)
    let text = "h".repeat(60 * 1024);
    for w in 0..4 {
        let mut writer = Client::connect(&url, &json!({})).await?;
        for i in 0..40 {
            let offset = format!("h-{w}-{i}");
            send_ok(&mut writer, &format!("{offset} {text}"), Some(&offset)).await;
        }
        writer.close().await;
    }
    let mut flooder = connect_raw(&url).await?;

    let content = "f".repeat(64 * 1024);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut disconnected = None;
    // 100 messages a second, five times its rate: a token comes back for one in five, which
    // used to reset its count of refusals every time, so it was never disconnected.
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    // Bounded: 2,000 frames (125 MiB) or 20 s, whichever comes first; a send that does not
    // complete in 2 s means the server stopped reading (it closed the connection).
    while sent < 2_000 && started.elapsed() < Duration::from_secs(20) {
        pace.tick().await;
        let frame = format!(r#"42["chat message","{content}","flood-{sent}"]"#);
        match tokio::time::timeout(Duration::from_secs(2), flooder.send(Message::text(frame))).await
        {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) | Err(_) => break,
        }
        if sent.is_multiple_of(50) && disconnected.is_none() && connections(&url).await == 0 {
            disconnected = Some(started.elapsed());
        }
    }
    while disconnected.is_none() && started.elapsed() < Duration::from_secs(20) {
        if connections(&url).await == 0 {
            disconnected = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak = peak_rss(server.id());
    let took = disconnected.ok_or_else(|| {
        format!(
            "still connected after {sent} messages and 20 s (the heartbeat would take 45 s); \
             server peak RSS {} MB",
            peak / 1_000_000
        )
    })?;
    assert!(
        took < Duration::from_secs(10),
        "disconnected only after {took:?} ({sent} messages)"
    );
    // README "Memory": ~70 MB + db cache (32 MiB) + tail cache (16 MiB) at the defaults.
    let bound = 70_000_000 + (32 << 20) + (16 << 20);
    assert!(
        peak < bound,
        "peak resident memory {} MB while flooding with {sent} messages of 64 KiB (bound {} MB)",
        peak / 1_000_000,
        bound / 1_000_000
    );
    eprintln!(
        "flood: {sent} messages sent, disconnected after {took:?}, server peak RSS {} MB",
        peak / 1_000_000
    );
    drop(flooder);
    server.terminate();
    assert!(server.wait()?.success());
    Ok(())
}
