//! Shared test helpers: a real server on an ephemeral port with a temp-dir database.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tidings::client::Client;
use tidings::{Config, Server, ServerError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generous: CI machines are shared and slow; a healthy run never waits this long.
pub const WAIT: Duration = Duration::from_secs(10);

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A running server; `stop` shuts it down gracefully and closes the database.
pub struct TestServer {
    pub url: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl TestServer {
    /// Starts a server on a fresh database in `dir`.
    pub async fn start(dir: &tempfile::TempDir) -> Self {
        Self::start_with(Config::with_db(dir.path().join("chat.redb"))).await
    }

    /// Starts a server on the database file `db`.
    pub async fn start_on(db: &Path) -> Self {
        Self::start_with(Config::with_db(db)).await
    }

    pub async fn start_with(config: Config) -> Self {
        let server = tokio::task::spawn_blocking(move || Server::open(config))
            .await
            .expect("open task")
            .expect("open the database");
        Self::serve(server).await
    }

    /// Serves an already opened server.
    pub async fn serve(server: Server) -> Self {
        // RUST_LOG=debug cargo test -- --nocapture shows the server's logs.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (shutdown, signal) = oneshot::channel();
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = signal.await;
        }));
        Self {
            url,
            shutdown: Some(shutdown),
            task,
        }
    }

    pub async fn connect(&self, offset: u64) -> Client {
        Client::connect(&self.url, &json!({ "serverOffset": offset }))
            .await
            .expect("connect")
    }

    pub async fn connect_auth(&self, auth: Value) -> Result<Client, tidings::client::ClientError> {
        Client::connect(&self.url, &auth).await
    }

    /// Graceful stop; returns once the database is closed.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("server stops in time")
            .expect("server task")
            .expect("server exits cleanly");
    }
}

/// Sends `content` with `offset` and returns the ack's object.
pub async fn send(client: &mut Client, content: &str, offset: Option<&str>) -> Value {
    let mut args = vec![json!(content)];
    if let Some(offset) = offset {
        args.push(json!(offset));
    }
    let mut ack = client
        .emit_with_ack("chat message", &args, WAIT)
        .await
        .expect("ack");
    assert_eq!(ack.len(), 1, "ack has one argument: {ack:?}");
    ack.remove(0)
}

/// Sends and returns the new id, asserting the ack says stored.
pub async fn send_ok(client: &mut Client, content: &str, offset: Option<&str>) -> u64 {
    let ack = send(client, content, offset).await;
    assert_eq!(ack.get("duplicate"), None, "unexpected duplicate: {ack}");
    ack.get("id")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("ack without id: {ack}"))
}

/// Receives `n` chat messages.
pub async fn receive(client: &mut Client, n: usize) -> Vec<(String, u64)> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(client.next_chat(WAIT).await.expect("chat message"));
    }
    got
}

/// A port that was free a moment ago (for tests that restart a server on the same port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
