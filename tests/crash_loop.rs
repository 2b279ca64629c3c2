//! The crash-loop proof: the server binary is killed with SIGKILL at random moments while
//! clients send acknowledged messages as fast as they can, and restarted on the same file.
//! At the end every acked message is stored exactly once, ids strictly increase, every
//! client's view equals the database order, and the file opens cleanly.
//!
//! Bounded: `CYCLES` kills, each after at most 300 ms of traffic.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::client::Client;
use common::{ServerProcess, free_port, server_command};
use serde_json::{Value, json};
use tidings::storage::Store;

const CYCLES: usize = 20;
const CLIENTS: usize = 3;

fn start(port: u16, db: &Path) -> ServerProcess {
    ServerProcess::spawn(
        server_command(port, db)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    )
}

/// What one client saw and had acknowledged.
#[derive(Default)]
struct Outcome {
    /// clientOffset -> (content, acked id)
    acked: BTreeMap<String, (String, u64)>,
    /// every `chat message` received, across reconnections, in order
    view: Vec<(String, u64)>,
    reconnects: usize,
}

async fn connect(url: &str, offset: u64, deadline: Instant) -> Client {
    loop {
        match Client::connect(url, &json!({ "serverOffset": offset })).await {
            Ok(client) => return client,
            Err(e) => {
                assert!(Instant::now() < deadline, "could not reconnect: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Receives whatever is already queued, checking that ids continue the view exactly.
async fn drain(client: &mut Client, outcome: &mut Outcome) -> bool {
    loop {
        match client.next_chat(Duration::from_millis(1)).await {
            Ok((content, id)) => {
                let expected = outcome.view.last().map_or(1, |(_, last)| last + 1);
                assert_eq!(id, expected, "gap or duplicate in a client's view");
                outcome.view.push((content, id));
            }
            Err(common::client::ClientError::Timeout(_)) => return true,
            Err(_) => return false,
        }
    }
}

async fn run_client(k: usize, url: String, stop: Arc<AtomicBool>) -> Outcome {
    let mut outcome = Outcome::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut client = connect(&url, 0, deadline).await;
    let mut next = 0usize;
    let mut pending: Option<(String, String)> = None;
    loop {
        if pending.is_none() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            next += 1;
            pending = Some((format!("c{k} message {next}"), format!("c{k}-{next}")));
        }
        let Some((content, offset)) = pending.clone() else {
            break;
        };
        let ack = client
            .emit_with_ack(
                "chat message",
                &[json!(content), json!(offset)],
                Duration::from_secs(2),
            )
            .await;
        let alive = drain(&mut client, &mut outcome).await;
        if let Ok(args) = &ack {
            let id = args
                .first()
                .and_then(|a| a.get("id"))
                .and_then(Value::as_u64)
                .unwrap_or_else(|| panic!("ack without id: {args:?}"));
            let before = outcome.acked.insert(offset, (content, id));
            assert!(
                before.is_none_or(|(_, old)| old == id),
                "one offset, two ids"
            );
            pending = None;
        }
        if ack.is_err() || !alive {
            // The server died (perhaps with the ack): reconnect from the last id seen; a
            // pending message is retried with the same offset.
            let last = outcome.view.last().map_or(0, |(_, id)| *id);
            client = connect(&url, last, deadline).await;
            outcome.reconnects += 1;
        }
    }
    // Catch up with everything stored, then stop.
    // One last message makes sure this connection is live and up to date.
    let last = [json!(format!("c{k} done")), json!(format!("c{k}-done"))];
    let _ = client
        .emit_with_ack("chat message", &last, Duration::from_secs(5))
        .await;
    while let Ok((content, id)) = client.next_chat(Duration::from_millis(500)).await {
        let expected = outcome.view.last().map_or(1, |(_, last)| last + 1);
        assert_eq!(id, expected, "gap or duplicate in a client's view");
        outcome.view.push((content, id));
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_repeated_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chat.redb");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    println!("seed {seed}");

    let mut server = start(port, &db);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| tokio::spawn(run_client(k, url.clone(), stop.clone())))
        .collect();

    let started = Instant::now();
    for _ in 0..CYCLES {
        tokio::time::sleep(Duration::from_millis(rng.u64(30..300))).await;
        server.kill().expect("kill -9");
        server.wait().expect("reap");
        server = start(port, &db);
    }
    stop.store(true, Ordering::SeqCst);
    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.push(client.await.expect("client task"));
    }
    // A clean stop, then read the file directly.
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill -TERM");
    let status = server.wait().expect("wait");
    assert!(status.success(), "SIGTERM exits 0: {status}");

    let (reader, _) = Store::open(&db, 1 << 20).expect("the file opens cleanly");
    let rows = reader
        .read_range(0, u64::MAX, usize::MAX, usize::MAX)
        .expect("read");
    let ids: Vec<u64> = rows.iter().map(|r| r.id.0).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids strictly increase");
    let mut by_offset: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for row in &rows {
        let offset = row
            .message
            .client_offset
            .clone()
            .expect("every test message has one");
        by_offset.entry(offset).or_default().push(row.id.0);
    }
    let duplicated = by_offset.values().filter(|ids| ids.len() > 1).count();
    let mut acked = 0;
    let mut lost = 0;
    for outcome in &outcomes {
        for (offset, (content, id)) in &outcome.acked {
            acked += 1;
            match rows.iter().find(|r| r.id.0 == *id) {
                Some(row)
                    if &row.message.content == content
                        && row.message.client_offset.as_deref() == Some(offset) => {}
                _ => lost += 1,
            }
        }
        // Each client saw a gap-free prefix of the database order that reaches at least
        // its own last message (later ones, from clients still running, may be missing).
        let database_view: Vec<(String, u64)> = rows
            .iter()
            .map(|r| (r.message.content.clone(), r.id.0))
            .collect();
        let mismatch = outcome
            .view
            .iter()
            .zip(&database_view)
            .position(|(seen, stored)| seen != stored);
        assert_eq!(
            mismatch, None,
            "a client's view differs from the database order"
        );
        assert!(outcome.view.len() <= database_view.len());
        let own_last = outcome.acked.values().map(|(_, id)| *id).max().unwrap_or(0);
        assert!(
            outcome.view.last().map_or(0, |(_, id)| *id) >= own_last,
            "a client's view reaches its own acked messages"
        );
    }
    let reconnects: usize = outcomes.iter().map(|o| o.reconnects).sum();
    println!(
        "crash loop: {CYCLES} kill -9 cycles in {:.1?}, {acked} messages acked, {} stored, \
         {reconnects} reconnects, lost = {lost}, duplicated = {duplicated}",
        started.elapsed(),
        rows.len()
    );
    assert_eq!(lost, 0, "every acked message is stored");
    assert_eq!(duplicated, 0, "no message is stored twice");
    assert!(acked >= CYCLES, "the clients made progress ({acked} acked)");
}
