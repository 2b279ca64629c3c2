//! Shared test helpers: a real server on an ephemeral port with a temp-dir database.
#![allow(dead_code)] // each test binary uses a different subset

pub mod client;
pub mod cluster;

use std::path::Path;
use std::time::Duration;

use client::Client;
use serde_json::{Value, json};
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

    pub async fn connect_auth(&self, auth: Value) -> Result<Client, client::ClientError> {
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

/// Sends `n` chat messages without waiting for their acks (`spam 0`, `spam 1`, ...), then waits
/// until the server disconnects the client (it ignores its rate limit); panics on anything else.
pub async fn spam_until_disconnected(client: &mut Client, n: usize) {
    for i in 0..n {
        client
            .emit("chat message", &[json!(format!("spam {i}"))])
            .await
            .expect("emit");
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.next(left).await {
            Ok(client::Incoming::Disconnected) | Err(client::ClientError::Closed) => break,
            Ok(_) => continue,
            Err(e) => panic!("expected a disconnect, got {e}"),
        }
    }
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

/// The server binary: `TIDINGS_BIN` (CI points it at the release build), else the one cargo
/// built for this test run.
pub fn binary() -> String {
    std::env::var("TIDINGS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tidings").to_string())
}

/// The server binary listening on 127.0.0.1:`port` with database `db` and no rate limit (the
/// callers flood on purpose); callers add flags, environment and stdio.
pub fn server_command(port: u16, db: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(binary());
    command
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--rate-limit",
            "0",
        ])
        .arg("--db")
        .arg(db);
    command
}

/// A server process that is killed and reaped when dropped, so a failing assertion never
/// leaves one running (it derefs to its `Child`).
pub struct ServerProcess(std::process::Child);

impl ServerProcess {
    /// Spawns `command` (a [`server_command`], usually).
    pub fn spawn(command: &mut std::process::Command) -> Self {
        Self(command.spawn().expect("start tidings"))
    }

    /// Reads the "listening on" line from its standard output (which must be piped) and
    /// returns it.
    pub fn wait_listening(&mut self) -> String {
        use std::io::BufRead;
        let stdout = self.0.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        assert!(line.starts_with("listening on"), "{line:?}");
        line
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }
}

impl std::ops::Deref for ServerProcess {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for ServerProcess {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A raw websocket to the engine.io endpoint whose TCP receive window is tiny, so the
/// server's buffers fill as soon as the test stops reading; connected to namespace `/`.
pub async fn connect_raw(
    url: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let address: std::net::SocketAddr = url.trim_start_matches("http://").parse()?;
    let tcp = tokio::net::TcpSocket::new_v4()?;
    tcp.set_recv_buffer_size(4096)?;
    let stream = tcp.connect(address).await?;
    stream.set_nodelay(true)?;
    let ws_url = format!("ws://{address}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::client_async(ws_url.as_str(), stream).await?;
    let open = ws.next().await.ok_or("no open packet")??;
    if !open.to_text()?.starts_with('0') {
        return Err(format!("expected engine.io open, got {open:?}").into());
    }
    ws.send(Message::text(r#"40{"serverOffset":0}"#)).await?;
    loop {
        let frame = ws.next().await.ok_or("no connect packet")??;
        match frame.to_text()? {
            "2" => ws.send(Message::text("3")).await?,
            text if text.starts_with("40") => return Ok(ws),
            other => return Err(format!("unexpected {other:?} while connecting").into()),
        }
    }
}

/// Runs `command`, which must fail with exactly one line on stderr; returns that line.
pub fn refused_in_one_line(command: &mut std::process::Command) -> String {
    let out = command.env("RUST_LOG", "off").output().expect("run");
    assert!(!out.status.success(), "{command:?} must fail");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    stderr
}

/// A counter's value in Prometheus text (0 when absent: never incremented).
pub fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// `GET path` over a fresh connection: the status and the body.
pub async fn get(url: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    // HTTP/1.0: a whole body, never chunked.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("read");
    split_response(&raw).unwrap_or((0, String::new()))
}

/// An HTTP/1.0 response's status and body, if it has both.
pub fn split_response(raw: &str) -> Option<(u16, String)> {
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let (_, body) = raw.split_once("\r\n\r\n")?;
    Some((status, body.to_string()))
}
