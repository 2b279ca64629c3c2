//! The crash-loop proof: the server binary is killed with SIGKILL at random moments while
//! clients send acknowledged messages as fast as they can, and restarted on the same file.
//!
//! Every cycle: each client must have had a message acked by the running server (so every
//! server served every client, and every kill breaks every client's connection), then the
//! kill comes at a random moment of the traffic; the process must have died of that SIGKILL
//! (not of anything else, not exited by itself); the file is opened directly, right after the
//! kill, and must hold every message acked so far, once; and the restart must open it and
//! listen (a restart that fails fails the test).
//!
//! Clients tell "the server died" (the connection closed) from a server that misbehaves (a
//! malformed broadcast or ack, no ack from a live server): the latter fail the test. At the
//! end every acked message is stored exactly once, ids strictly increase, every client's view
//! equals the database order, each client reconnected after every kill, and the file opens
//! cleanly after a SIGTERM that exits 0.

mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::client::{Client, ClientError};
use common::{ServerProcess, WAIT, free_port, server_command};
use serde_json::{Value, json};
use tidings::storage::Store;

const CYCLES: u64 = 20;
const CLIENTS: usize = 3;
const SIGKILL: i32 = 9;
/// Longest wait for every client to be served by a restarted server (a healthy run takes a
/// fraction of a second; the machine may be busy).
const CYCLE_WAIT: Duration = Duration::from_secs(60);

/// Every acked message so far, across clients: clientOffset -> (content, id).
type Acked = Arc<Mutex<BTreeMap<String, (String, u64)>>>;

/// What the clients share with the test: the running server's generation (1 for the first,
/// then one more per restart, set before the server starts), and per client the generation of
/// the server that acked its latest message.
struct Shared {
    generation: AtomicU64,
    acked_by: Vec<AtomicU64>,
    acked: Acked,
    stop: AtomicBool,
}

/// Starts the server on `db` and waits for its "listening on" line; a server that exits
/// instead (say, it cannot open the file) fails the test with its exit status.
async fn start(port: u16, db: &Path, generation: u64) -> ServerProcess {
    let mut server = ServerProcess::spawn(
        server_command(port, db)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let stdout = server.stdout.take().expect("stdout is piped");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    })
    .await
    .expect("read task")
    .expect("read the server's stdout");
    if !line.starts_with("listening on") {
        let status = server.wait().expect("reap");
        panic!("server {generation} did not start on the file ({status}): stdout {line:?}");
    }
    server
}

/// What one client saw and had acknowledged.
#[derive(Default)]
struct Outcome {
    /// clientOffset -> (content, acked id)
    acked: BTreeMap<String, (String, u64)>,
    /// every `chat message` received, across reconnections, in order
    view: Vec<(String, u64)>,
    reconnects: u64,
}

impl Outcome {
    /// Takes the events a client received, failing on a malformed `chat message` and on ids
    /// that do not continue the view exactly.
    fn see(&mut self, events: Vec<(String, Vec<Value>)>) {
        for (name, args) in events {
            if name != "chat message" {
                continue;
            }
            let (content, id) = match args.as_slice() {
                [Value::String(content), id, ..] if id.is_u64() => {
                    (content.clone(), id.as_u64().unwrap_or_default())
                }
                _ => panic!("malformed broadcast (the server is alive): {args:?}"),
            };
            let expected = self.view.last().map_or(1, |(_, last)| last + 1);
            assert_eq!(id, expected, "gap or duplicate in a client's view");
            self.view.push((content, id));
        }
    }

    /// Records an ack; fails unless it is `{ id }` (or a duplicate's `{ id, duplicate }`).
    fn record_ack(&mut self, shared: &Shared, offset: &str, content: &str, ack: &[Value]) {
        let id = ack
            .first()
            .and_then(|a| a.get("id"))
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("malformed ack (the server is alive): {ack:?}"));
        let before = self
            .acked
            .insert(offset.to_string(), (content.to_string(), id));
        assert!(
            before.is_none_or(|(_, old)| old == id),
            "one offset, two ids"
        );
        shared
            .acked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(offset.to_string(), (content.to_string(), id));
    }
}

/// Connects from `offset`, retrying while no server listens; returns the client and the
/// generation of the server it reached (the one running: the old one is dead by then).
async fn connect(url: &str, offset: u64, shared: &Shared, deadline: Instant) -> (Client, u64) {
    loop {
        let generation = shared.generation.load(Ordering::SeqCst);
        match Client::connect(url, &json!({ "serverOffset": offset })).await {
            // The generation is set before its server starts: unchanged across the attempt,
            // the server reached is that one. Changed, it may be either: try again.
            Ok(client) if shared.generation.load(Ordering::SeqCst) == generation => {
                return (client, generation);
            }
            Ok(_) => {}
            Err(e) => {
                assert!(Instant::now() < deadline, "could not reconnect: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Whether an error means the connection is gone (the server died), as opposed to a live
/// server misbehaving.
fn server_died(error: &ClientError) -> bool {
    matches!(error, ClientError::Closed | ClientError::Transport(_))
}

async fn run_client(k: usize, url: String, shared: Arc<Shared>) -> Outcome {
    let mut outcome = Outcome::default();
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut client, mut generation) = connect(&url, 0, &shared, deadline).await;
    let mut next = 0usize;
    let mut pending: Option<(String, String)> = None;
    loop {
        if pending.is_none() {
            if shared.stop.load(Ordering::SeqCst) {
                break;
            }
            next += 1;
            pending = Some((format!("c{k} message {next}"), format!("c{k}-{next}")));
        }
        let Some((content, offset)) = pending.clone() else {
            break;
        };
        // A live server acks (after the sender's own copy): no ack from a live server within
        // WAIT fails the test. When the server dies the connection closes at once.
        match client
            .emit_collecting_until_ack("chat message", &[json!(content), json!(offset)], WAIT)
            .await
        {
            Ok((events, ack)) => {
                outcome.see(events);
                outcome.record_ack(&shared, &offset, &content, &ack);
                shared.acked_by[k].store(generation, Ordering::SeqCst);
                pending = None;
            }
            Err(e) if server_died(&e) => {
                // Reconnect from the last id seen; a pending message is retried with the
                // same offset.
                let last = outcome.view.last().map_or(0, |(_, id)| *id);
                (client, generation) = connect(&url, last, &shared, deadline).await;
                outcome.reconnects += 1;
            }
            Err(e) => panic!("client {k}: the server is alive but {e}"),
        }
    }
    // One last message: its ack comes after everything up to it, which completes the view.
    let last = [json!(format!("c{k} done")), json!(format!("c{k}-done"))];
    let (events, ack) = client
        .emit_collecting_until_ack("chat message", &last, WAIT)
        .await
        .unwrap_or_else(|e| panic!("client {k}: the last message: {e}"));
    outcome.see(events);
    outcome.record_ack(&shared, &format!("c{k}-done"), &format!("c{k} done"), &ack);
    outcome
}

/// Opens the file directly (the server is dead) and checks that it holds every message
/// acked so far, with its content and offset, each offset once, ids strictly increasing.
/// Returns the number of rows.
fn check_file(db: &Path, acked: &BTreeMap<String, (String, u64)>, after: &str) -> usize {
    let (reader, _writer) = Store::open_existing(db, 1 << 20)
        .unwrap_or_else(|e| panic!("{after}: the file opens: {e}"));
    let rows = reader
        .read_range(0, u64::MAX, usize::MAX, usize::MAX)
        .unwrap_or_else(|e| panic!("{after}: the file reads: {e}"));
    reader
        .close()
        .unwrap_or_else(|e| panic!("{after}: the file closes: {e}"));
    let ids: Vec<u64> = rows.iter().map(|r| r.id.0).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "{after}: ids strictly increase"
    );
    let mut by_offset: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for row in &rows {
        let offset = row
            .message
            .client_offset
            .as_deref()
            .expect("every test message has one");
        by_offset.entry(offset).or_default().push(row.id.0);
    }
    let duplicated: Vec<_> = by_offset.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        duplicated.is_empty(),
        "{after}: stored twice: {duplicated:?}"
    );
    let lost: Vec<_> = acked
        .iter()
        .filter(|(offset, (content, id))| {
            !rows.iter().any(|r| {
                r.id.0 == *id
                    && &r.message.content == content
                    && r.message.client_offset.as_deref() == Some(offset.as_str())
            })
        })
        .collect();
    assert!(lost.is_empty(), "{after}: acked but not stored: {lost:?}");
    rows.len()
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

    let shared = Arc::new(Shared {
        generation: AtomicU64::new(1),
        acked_by: (0..CLIENTS).map(|_| AtomicU64::new(0)).collect(),
        acked: Acked::default(),
        stop: AtomicBool::new(false),
    });
    let mut server = start(port, &db, 1).await;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| tokio::spawn(run_client(k, url.clone(), shared.clone())))
        .collect();

    let started = Instant::now();
    for generation in 1..=CYCLES {
        // Every client is served by this server, then the kill comes at a random moment.
        let waited = Instant::now();
        while shared
            .acked_by
            .iter()
            .any(|g| g.load(Ordering::SeqCst) < generation)
        {
            if let Some(done) = clients.iter().position(|c| c.is_finished()) {
                panic!("client {done} stopped early (see its panic above)");
            }
            if let Some(status) = server.try_wait().expect("poll the server") {
                panic!("server {generation} exited by itself ({status})");
            }
            assert!(
                waited.elapsed() < CYCLE_WAIT,
                "server {generation} did not ack a message of every client"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..200))).await;
        server.kill().expect("kill -9");
        let status = server.wait().expect("reap");
        assert_eq!(
            status.signal(),
            Some(SIGKILL),
            "server {generation} died of the SIGKILL, not {status}"
        );
        // Every ack the dead server sent is in (it cannot send more).
        let acked = shared
            .acked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        check_file(&db, &acked, &format!("after kill {generation}"));
        shared.generation.store(generation + 1, Ordering::SeqCst);
        server = start(port, &db, generation + 1).await;
    }
    shared.stop.store(true, Ordering::SeqCst);
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

    let acked = shared
        .acked
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let stored = check_file(&db, &acked, "after SIGTERM");
    let (reader, _writer) = Store::open_existing(&db, 1 << 20).expect("the file opens cleanly");
    let rows = reader
        .read_range(0, u64::MAX, usize::MAX, usize::MAX)
        .expect("read");
    let database_view: Vec<(String, u64)> = rows
        .iter()
        .map(|r| (r.message.content.clone(), r.id.0))
        .collect();
    for (k, outcome) in outcomes.iter().enumerate() {
        // Each client saw a gap-free prefix of the database order that reaches at least its
        // own last message (later ones, from clients still running, may be missing).
        let mismatch = outcome
            .view
            .iter()
            .zip(&database_view)
            .position(|(seen, stored)| seen != stored);
        assert_eq!(
            mismatch, None,
            "client {k}'s view differs from the database order"
        );
        assert!(outcome.view.len() <= database_view.len());
        let own_last = outcome.acked.values().map(|(_, id)| *id).max().unwrap_or(0);
        assert!(
            outcome.view.last().map_or(0, |(_, id)| *id) >= own_last,
            "client {k}'s view reaches its own acked messages"
        );
        // Every kill broke its connection: it reconnected at least once per cycle.
        assert!(
            outcome.reconnects >= CYCLES,
            "client {k} reconnected {} times in {CYCLES} cycles",
            outcome.reconnects
        );
    }
    let reconnects: u64 = outcomes.iter().map(|o| o.reconnects).sum();
    println!(
        "crash loop: {CYCLES} kill -9 cycles in {:.1?}, {} messages acked, {stored} stored, \
         {reconnects} reconnects, lost = 0, duplicated = 0",
        started.elapsed(),
        acked.len(),
    );
    // Every server acked every client at least once, and each client's last message.
    let least = (CYCLES as usize + 1) * CLIENTS;
    assert!(
        acked.len() >= least,
        "the clients made progress ({} acked, at least {least} expected)",
        acked.len()
    );
}
