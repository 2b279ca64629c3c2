//! A real NATS JetStream cluster (3 `nats-server` processes on loopback ports, data in a temp
//! dir) and tidings nodes joined to it, for the cluster tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{ServerProcess, binary, free_port, get, split_response};

/// The `nats-server` binary (Debian's package), or a clear failure.
pub fn nats_server() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    match found {
        Some(path) => path,
        None => panic!(
            "nats-server is not installed: the cluster tests need it \
             (apt-get install -y nats-server; .ci/run installs it)"
        ),
    }
}

struct NatsServer {
    config: PathBuf,
    /// Its log (`log_file`), quoted when the cluster does not form.
    log: PathBuf,
    client_port: u16,
    http_port: u16,
    process: Option<ServerProcess>,
}

/// Three NATS servers forming one JetStream cluster.
pub struct NatsCluster {
    servers: Vec<NatsServer>,
}

/// How long a server gets to report JetStream healthy (three fresh ones to elect a meta
/// leader; a restarted one to catch up). Generous: a loaded machine is slow.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(60);

/// Cluster starts tried when a server could not bind its port: the ports are chosen free, but
/// another process (any outgoing connection) may take one before the server binds it.
const START_ATTEMPTS: usize = 3;

impl NatsCluster {
    /// Starts three servers with their data under `dir`, and waits until they form a cluster:
    /// each reports JetStream healthy and the meta leader sees both others current (a stream
    /// of 3 replicas can be placed). Fails with every server's log if they do not.
    pub fn start(dir: &Path) -> Self {
        let binary = nats_server();
        for attempt in 1..=START_ATTEMPTS {
            let mut cluster = Self::configure(&dir.join(format!("nats-start-{attempt}")));
            for n in 0..3 {
                cluster.spawn(n, &binary);
            }
            match (0..3).try_for_each(|n| cluster.wait_healthy(n)) {
                Ok(()) => match cluster.wait_formed() {
                    Ok(()) => return cluster,
                    Err(why) => panic!("{why}\n{}", cluster.logs()),
                },
                Err(why) if attempt < START_ATTEMPTS && cluster.port_was_taken() => {
                    eprintln!("NATS cluster, start {attempt}: {why} (a port was taken); new ports");
                }
                Err(why) => panic!("{why}\n{}", cluster.logs()),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Three servers' configurations on fresh ports, files under `dir`; none started.
    fn configure(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("create the NATS cluster's directory");
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, _, route)| format!("nats-route://127.0.0.1:{route}"))
            .collect();
        let servers = ports
            .iter()
            .enumerate()
            .map(|(n, (client, http, route))| {
                let store = dir.join(format!("nats-{n}"));
                let config = dir.join(format!("nats-{n}.conf"));
                let log = dir.join(format!("nats-{n}.log"));
                let text = format!(
                    "server_name: n{n}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n\
                     log_file: {:?}\n\
                     jetstream {{ store_dir: {:?} }}\n\
                     cluster {{ name: tidings-test, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                    log.display().to_string(),
                    store.display().to_string(),
                    routes.join(", ")
                );
                std::fs::write(&config, text).expect("write a NATS config");
                NatsServer {
                    config,
                    log,
                    client_port: *client,
                    http_port: *http,
                    process: None,
                }
            })
            .collect();
        Self { servers }
    }

    fn spawn(&mut self, n: usize, binary: &Path) {
        let server = &mut self.servers[n];
        server.process = Some(ServerProcess::spawn(
            Command::new(binary)
                .arg("-c")
                .arg(&server.config)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        ));
    }

    /// Waits until server `n` answers `/healthz` with 200: JetStream is up and in contact
    /// with a meta leader (and, after a restart, caught up).
    fn wait_healthy(&mut self, n: usize) -> Result<(), String> {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            let server = &mut self.servers[n];
            if let Some(process) = &mut server.process
                && let Ok(Some(status)) = process.try_wait()
            {
                return Err(format!("NATS server n{n} exited at start: {status}"));
            }
            match blocking_get(server.http_port, "/healthz") {
                Some((200, _)) => return Ok(()),
                Some((status, body)) => last = format!("{status} {}", body.trim()),
                None => {}
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "NATS server n{n} not healthy after {HEALTHY_TIMEOUT:?} (/healthz: {last})"
        ))
    }

    /// Waits until the meta leader sees the two other servers as current peers.
    fn wait_formed(&self) -> Result<(), String> {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        while Instant::now() < deadline {
            for server in &self.servers {
                let Some((200, body)) = blocking_get(server.http_port, "/jsz") else {
                    continue;
                };
                let Ok(jsz) = serde_json::from_str::<serde_json::Value>(&body) else {
                    continue;
                };
                let meta = &jsz["meta_cluster"];
                let current = meta["replicas"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|peer| peer["current"] == true)
                    .count();
                // Only the leader lists the replicas.
                if current == 2 {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "the NATS servers did not form a 3-peer JetStream cluster in {HEALTHY_TIMEOUT:?}"
        ))
    }

    /// Whether a server's log says it could not bind a port.
    fn port_was_taken(&self) -> bool {
        self.servers.iter().any(|server| {
            std::fs::read_to_string(&server.log)
                .is_ok_and(|log| log.contains("address already in use"))
        })
    }

    /// The last lines of every server's log.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (n, server) in self.servers.iter().enumerate() {
            let log = std::fs::read_to_string(&server.log).unwrap_or_else(|e| e.to_string());
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            out.push_str(&format!("--- n{n} ({}):\n{tail}\n", server.log.display()));
        }
        out
    }

    /// Every server's client URL, comma-separated (what `--cluster` takes).
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILLs server `n`.
    pub fn kill(&mut self, n: usize) {
        if let Some(mut process) = self.servers[n].process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts server `n` again, on its data.
    pub fn restart(&mut self, n: usize) {
        self.spawn(n, &nats_server());
        if let Err(why) = self.wait_healthy(n) {
            panic!("{why}\n{}", self.logs());
        }
    }

    /// `stream`'s details (`/jsz?streams=true&config=true`: state, config, cluster) as one
    /// live server's monitoring endpoint gives them.
    pub async fn stream_details(&self, stream: &str) -> Option<serde_json::Value> {
        for server in self.servers.iter().filter(|s| s.process.is_some()) {
            let url = format!("http://127.0.0.1:{}", server.http_port);
            let (status, body) = get(&url, "/jsz?streams=true&config=true").await;
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            if status != 200 {
                continue;
            }
            let details = json["account_details"].as_array().into_iter().flatten();
            for account in details {
                for found in account["stream_detail"].as_array().into_iter().flatten() {
                    if found["name"] == stream {
                        return Some(found.clone());
                    }
                }
            }
        }
        None
    }

    /// The server leading `stream` (by its name `nN`), as the monitoring endpoint says.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        for server in &self.servers {
            if server.process.is_none() {
                continue;
            }
            let url = format!("http://127.0.0.1:{}", server.http_port);
            let (status, body) = get(&url, "/jsz?streams=true").await;
            if status != 200 {
                continue;
            }
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            let details = json["account_details"].as_array().into_iter().flatten();
            for account in details {
                for found in account["stream_detail"].as_array().into_iter().flatten() {
                    if found["name"] == stream
                        && let Some(leader) = found["cluster"]["leader"].as_str()
                    {
                        return leader.trim_start_matches('n').parse().ok();
                    }
                }
            }
        }
        None
    }
}

/// GET `path` on 127.0.0.1:`port` with a blocking socket (the cluster starts outside any
/// runtime's help): the status and body, or None if nothing answered.
fn blocking_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    // HTTP/1.0: a whole body, never chunked.
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    split_response(&raw)
}

/// A tidings node of a cluster: its process, URL and database file.
pub struct Node {
    pub url: String,
    pub port: u16,
    pub db: PathBuf,
    pub name: String,
    pub process: Option<ServerProcess>,
}

impl Node {
    /// Starts node `name` on `db`, joined to `nats`, with `extra` flags.
    pub fn start(name: &str, db: &Path, nats: &str, extra: &[&str]) -> Self {
        let port = free_port();
        let mut node = Self {
            url: format!("http://127.0.0.1:{port}"),
            port,
            db: db.to_path_buf(),
            name: name.to_string(),
            process: None,
        };
        node.spawn(nats, extra);
        node
    }

    fn spawn(&mut self, nats: &str, extra: &[&str]) {
        let mut process = ServerProcess::spawn(
            Command::new(binary())
                .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
                .args([
                    "--rate-limit",
                    "0",
                    "--cluster",
                    nats,
                    "--node-name",
                    &self.name,
                ])
                .args(["--replicas", "3"])
                .args(extra)
                .arg("--db")
                .arg(&self.db)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        );
        process.wait_listening();
        self.process = Some(process);
    }

    /// Waits until `/healthz` says ready (NATS reachable, caught up).
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = get(&self.url, "/healthz").await;
            if status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} never became ready: {status} {body}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILLs the node.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Stops the node with SIGTERM and checks it exits 0.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.terminate();
            let status = process.wait().expect("wait for the node");
            assert!(status.success(), "node {} exits 0: {status}", self.name);
        }
    }

    /// Starts the node again on its file (a new port is not needed: the old one is free).
    pub fn restart(&mut self, nats: &str, extra: &[&str]) {
        self.spawn(nats, extra);
    }
}
