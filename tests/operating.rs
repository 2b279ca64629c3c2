//! Operating: /healthz, /metrics, JSON logs, graceful shutdown under load, and the offline
//! commands (export, import, backup, stats).

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::client::Client;
use common::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_tidings");

#[tokio::test]
async fn healthz_and_metrics() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let mut client = server.connect(0).await;
    send_ok(&mut client, "counted", Some("m-1")).await;
    send(&mut client, "counted", Some("m-1")).await;
    send(&mut client, "", None).await;

    let (status, body) = get(&server.url, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body)?;
    assert_eq!(health["status"], json!("ok"));
    assert_eq!(health["lastId"], json!(1));

    let (status, text) = get(&server.url, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "tidings_messages_stored_total",
        "tidings_duplicates_total",
        "tidings_rejected_total{reason=\"invalid_payload\"}",
        "tidings_acks_total",
        "tidings_connections ",
        "tidings_connections_total",
        "tidings_replays_total",
        "tidings_commit_seconds_bucket",
        "tidings_commit_batch_size_bucket",
        "tidings_database_bytes",
        "tidings_last_message_id",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    server.stop().await;
    Ok(())
}

fn start(port: u16, db: &std::path::Path, extra: &[&str]) -> ServerProcess {
    ServerProcess::spawn(
        server_command(port, db)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
}

/// Seconds since midnight (UTC) of a JSON log line's `timestamp` (RFC 3339, as
/// tracing-subscriber writes it: `2026-12-02T10:11:12.345678Z`).
fn log_seconds(line: &Value) -> Option<f64> {
    let stamp = line["timestamp"].as_str()?;
    let (_, time) = stamp.split_once('T')?;
    let mut parts = time.trim_end_matches('Z').split(':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    Some(hours * 3600.0 + minutes * 60.0 + seconds)
}

/// The server's own time, from its JSON log, between its first line saying `from` and its
/// first line saying `to` after that (across midnight too).
fn logged_between(logs: &str, from: &str, to: &str) -> Option<Duration> {
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let said = |line: &Value, what: &str| line["fields"]["message"].as_str() == Some(what);
    let start = lines.iter().position(|l| said(l, from))?;
    let end = start + lines[start..].iter().position(|l| said(l, to))?;
    let mut took = log_seconds(&lines[end])? - log_seconds(&lines[start])?;
    if took < 0.0 {
        took += 86_400.0;
    }
    Some(Duration::from_secs_f64(took))
}

#[test]
fn log_times_are_read_from_json_lines() {
    let line = |time: &str, message: &str| {
        json!({ "timestamp": time, "level": "INFO", "fields": { "message": message } }).to_string()
    };
    let logs = [
        line("2026-12-02T10:11:12.250000Z", "listening"),
        line("2026-12-02T10:11:13.000000Z", "begin"),
        line("2026-12-02T10:11:14.500000Z", "end"),
        line("2026-12-02T10:11:15.000000Z", "end"),
    ]
    .join("\n");
    let took = logged_between(&logs, "begin", "end").map(|d| d.as_millis());
    assert_eq!(took, Some(1500));
    assert_eq!(logged_between(&logs, "end", "begin"), None);
    let midnight = [
        line("2026-12-02T23:59:59.900000Z", "begin"),
        line("2026-12-03T00:00:00.400000Z", "end"),
    ]
    .join("\n");
    let took = logged_between(&midnight, "begin", "end").map(|d| d.as_millis());
    assert_eq!(took, Some(500));
}

/// `--shutdown-timeout` bounds the whole shutdown, whatever cannot finish: here a client that
/// never reads, with a message of its own that can never be acked (its own copy cannot be
/// queued to it first). What was cut short is logged.
///
/// The bound is read from the server's own log, not from the test's clock: `serve` computes
/// one deadline when it logs "shutting down", bounds every wait of the sequence by it, and
/// logs "stopped" at the end, so the time between those lines is what the timeout governs.
/// The test's own window (signal to exit status) also holds the spawn of `kill`, the signal's
/// delivery, the runtime's teardown and its own wake-up, which a busy 2-core machine stretches
/// by a second or more; it only has to show that the stalled client, which could otherwise
/// hold the server for the 600 s of its ping timeout, did not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_by_the_timeout_even_when_a_client_never_reads() -> TestResult {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("chat.redb");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let timeout = Duration::from_secs(2);
    let flags = [
        "--shutdown-timeout",
        "2",
        "--socket-buffer",
        "16",
        "--ping-timeout-ms",
        "600000",
        "--log-format",
        "json",
    ];
    let mut server = start(port, &db, &flags);
    server.wait_listening();
    let mut stalled = connect_raw(&url).await?;
    let mut sender = Client::connect(&url, &json!({})).await?;
    // Fill the stalled client's buffer, its TCP window and the server's socket buffer.
    let text = "x".repeat(16 * 1024);
    for i in 0..1200 {
        sender
            .emit("chat message", &[json!(format!("{i} {text}"))])
            .await?;
    }
    // Its own message is stored and broadcast, but never acked.
    stalled
        .send(Message::text(r#"421["chat message","mine","stalled-1"]"#))
        .await?;
    loop {
        let (content, _) = sender.next_chat(WAIT).await?;
        if content == "mine" {
            break;
        }
    }
    let signalled = Instant::now();
    server.terminate();
    // Polled, not `wait()`ed: a server the stalled client holds would block the test for the
    // 600 s of its ping timeout.
    let status = loop {
        if let Some(status) = server.try_wait()? {
            break status;
        }
        assert!(
            signalled.elapsed() < timeout + WAIT,
            "the server still runs {:?} after SIGTERM with --shutdown-timeout 2",
            signalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = signalled.elapsed();
    let mut logs = String::new();
    if let Some(mut stderr) = server.stderr.take() {
        stderr.read_to_string(&mut logs)?;
    }
    assert!(status.success(), "exit status {status}:\n{logs}");
    assert!(
        logs.contains("shutdown timeout"),
        "what was cut short is logged:\n{logs}"
    );
    // The sockets' stage is cut at three quarters of the timeout, the writer and the database
    // have until the deadline (1.55-1.9 s from "shutting down" to "stopped" here, on a quiet
    // machine and beside two busy loops). Past the deadline only the few steps after a timed
    // out wait run (log, drop): milliseconds. Half a second more allows for a runtime thread
    // that a busy machine wakes late, and is still far below the 600 s the stalled client
    // could hold the server without the deadline.
    let logged = logged_between(
        &logs,
        "shutting down: finishing received messages",
        "stopped",
    )
    .unwrap_or_else(|| panic!("no 'shutting down' then 'stopped' in the log:\n{logs}"));
    assert!(
        logged <= timeout + Duration::from_millis(500),
        "the server logged {logged:?} from 'shutting down' to 'stopped' with \
         --shutdown-timeout 2:\n{logs}"
    );
    println!(
        "shutdown: {logged:?} from 'shutting down' to 'stopped', {took:?} from SIGTERM to exit"
    );
    drop(stalled);
    Ok(())
}

/// Messages each flooding client keeps in flight (sent, ack not yet received).
const IN_FLIGHT: usize = 20;

/// One flooding client: keeps up to [`IN_FLIGHT`] acked messages in flight until the server
/// goes away; returns each message's offset and acked id (`None`: never acked). `acked` and
/// `in_flight` count as it goes.
async fn flood(
    k: usize,
    url: String,
    acked: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
) -> Vec<(String, Option<u64>)> {
    let mut client = Client::connect(&url, &json!({})).await.expect("connect");
    let mut results = Vec::new();
    let mut pending = std::collections::VecDeque::new();
    let mut open = true;
    let mut i = 0;
    while open || !pending.is_empty() {
        if open && pending.len() < IN_FLIGHT {
            let offset = format!("c{k}-{i}");
            i += 1;
            match client
                .emit_pipelined("chat message", &[json!(offset), json!(offset)])
                .await
            {
                Ok(ack) => {
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    pending.push_back((offset, ack));
                }
                Err(_) => {
                    results.push((offset, None));
                    open = false;
                }
            }
            continue;
        }
        let Some((offset, ack)) = pending.pop_front() else {
            break;
        };
        // An ack comes, or the connection closes and the receiver fails.
        let id = tokio::time::timeout(WAIT, ack)
            .await
            .expect("an ack or the connection's end")
            .ok()
            .map(|args| {
                args[0]["id"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("ack without id: {args:?}"))
            });
        in_flight.fetch_sub(1, Ordering::SeqCst);
        if id.is_some() {
            acked.fetch_add(1, Ordering::SeqCst);
        } else {
            open = false;
        }
        results.push((offset, id));
    }
    results
}

/// SIGTERM while two clients each keep 20 acked messages in flight: the server stores and
/// acks what it received, takes nothing more, and exits 0. Every acked message is stored
/// with its id; every message it took was acked, so each unacked one, retried after the
/// restart, is new (not `duplicate`) and stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_flood_loses_nothing_and_logs_json() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("chat.redb");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = start(port, &db, &["--log-format", "json"]);
    server.wait_listening();

    let acked_count = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let floods: Vec<_> = (0..2)
        .map(|k| {
            tokio::spawn(flood(
                k,
                url.clone(),
                acked_count.clone(),
                in_flight.clone(),
            ))
        })
        .collect();
    // The flood is under way: many acks, and the pipelines full.
    let deadline = Instant::now() + WAIT;
    while acked_count.load(Ordering::SeqCst) < 200 {
        assert!(Instant::now() < deadline, "the flood did not get going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let in_flight_at_signal = in_flight.load(Ordering::SeqCst);
    let signalled = Instant::now();
    server.terminate();
    let status = server.wait()?;
    assert!(status.success(), "SIGTERM exits 0: {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "bounded shutdown"
    );
    let mut logs = String::new();
    if let Some(mut stderr) = server.stderr.take() {
        stderr.read_to_string(&mut logs)?;
    }
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut unacked: Vec<String> = Vec::new();
    for flood in floods {
        for (offset, id) in flood.await? {
            match id {
                Some(id) => {
                    acked.insert(offset, id);
                }
                None => unacked.push(offset),
            }
        }
    }
    println!(
        "{in_flight_at_signal} in flight at SIGTERM; {} acked, {} unacked",
        acked.len(),
        unacked.len()
    );
    assert!(
        in_flight_at_signal >= IN_FLIGHT,
        "pipelined: {in_flight_at_signal} messages in flight at the signal"
    );

    // JSON logs: every line parses; connections are logged; message text is not.
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == json!("connection opened"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == json!("connection closed"))
    );
    assert!(!logs.contains("c0-1\""), "no message content in info logs");

    // Restart; the unacked messages are retried once: none was stored (what the server took,
    // it acked), so each is new.
    let mut server = start(port, &db, &[]);
    server.wait_listening();
    let mut retry = Client::connect(&url, &json!({})).await?;
    for offset in &unacked {
        let ack = retry
            .emit_with_ack("chat message", &[json!(offset), json!(offset)], WAIT)
            .await?;
        assert!(ack[0]["id"].is_u64(), "{ack:?}");
        assert_eq!(
            ack[0].get("duplicate"),
            None,
            "{offset} was stored before the shutdown but never acked"
        );
    }
    // Everything acked before the signal is there, once, and nothing else.
    let mut reader = Client::connect(&url, &json!({})).await?;
    let total = acked.len() + unacked.len();
    let marker = send_ok(&mut reader, "end", None).await;
    assert_eq!(marker, total as u64 + 1, "nothing else was stored");
    let stored = receive(&mut reader, total).await;
    let by_content: BTreeMap<&str, u64> = stored.iter().map(|(c, id)| (c.as_str(), *id)).collect();
    assert_eq!(by_content.len(), total, "no duplicates");
    for (offset, id) in &acked {
        assert_eq!(
            by_content.get(offset.as_str()),
            Some(id),
            "{offset} acked as {id}"
        );
    }
    for offset in &unacked {
        assert!(by_content.contains_key(offset.as_str()), "{offset} retried");
    }
    Ok(())
}

#[test]
fn export_import_backup_stats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chat.redb");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let server = TestServer::start_on(&db).await;
        let mut client = Client::connect(&server.url, &json!({ "serverOffset": 0 }))
            .await
            .expect("connect");
        for i in 1..=5 {
            client
                .emit_with_ack(
                    "chat message",
                    &[
                        json!(format!("m{i}")),
                        json!(format!("o-{i}")),
                        json!({ "author": "ada" }),
                    ],
                    WAIT,
                )
                .await
                .expect("ack");
        }
        client
            .emit("chat message", &[json!("no offset")])
            .await
            .expect("emit");
        receive(&mut client, 6).await;
        // While the server runs, offline commands are refused with a hint.
        let out = Command::new(BIN)
            .args(["stats", "--db"])
            .arg(&db)
            .output()
            .expect("stats");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("already in use") && stderr.contains("stop the server"),
            "{stderr}"
        );
        server.stop().await;
    });

    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().expect("run");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let db_arg = db.to_str().expect("utf-8 path");
    let (stats, _) = run(&["stats", "--db", db_arg]);
    let stats: Value = serde_json::from_str(&stats).expect("stats JSON");
    assert_eq!(stats["messages"], json!(6));
    assert_eq!(
        (stats["firstId"].clone(), stats["lastId"].clone()),
        (json!(1), json!(6))
    );

    let export = dir.path().join("export.jsonl");
    let (_, said) = run(&[
        "export",
        "--db",
        db_arg,
        "--out",
        export.to_str().expect("utf-8"),
    ]);
    assert!(said.contains("exported 6 messages"), "{said}");
    let text = std::fs::read_to_string(&export).expect("export file");
    let first: Value = serde_json::from_str(text.lines().next().expect("a line")).expect("JSON");
    assert_eq!(first["id"], json!(1));
    assert_eq!(first["content"], json!("m1"));
    assert_eq!(first["clientOffset"], json!("o-1"));
    assert_eq!(first["author"], json!("ada"));
    let (since, _) = run(&["export", "--db", db_arg, "--since", "4"]);
    assert_eq!(since.lines().count(), 2);

    // Into an empty database: ids are preserved; again: nothing is added.
    let copy = dir.path().join("copy.redb");
    let copy_arg = copy.to_str().expect("utf-8");
    let export_arg = export.to_str().expect("utf-8");
    let (_, said) = run(&["import", "--db", copy_arg, export_arg]);
    assert!(
        said.contains("imported 6 messages (6 kept their ids"),
        "{said}"
    );
    let (_, said) = run(&["import", "--db", copy_arg, export_arg]);
    assert!(
        said.contains("imported 0 messages") && said.contains("skipped 6"),
        "{said}"
    );
    let (exported_again, _) = run(&["export", "--db", copy_arg]);
    assert_eq!(exported_again, text);

    // A bad line names itself.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"id\":1,\"content\":\"x\",\"time\":1}\nnot json\n").expect("write");
    let out = Command::new(BIN)
        .args(["import", "--db", copy_arg, bad.to_str().expect("utf-8")])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));

    // Backup: a verified copy; never over an existing file.
    let backup = dir.path().join("backup.redb");
    let backup_arg = backup.to_str().expect("utf-8");
    let (_, said) = run(&["backup", "--db", db_arg, backup_arg]);
    assert!(said.contains("backed up 6 messages"), "{said}");
    let (stats, _) = run(&["stats", "--db", backup_arg]);
    assert!(stats.contains("\"messages\": 6"), "{stats}");
    let out = Command::new(BIN)
        .args(["backup", "--db", db_arg, backup_arg])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}
