//! A real NATS JetStream cluster (3 `nats-server` processes on loopback ports, data in a temp
//! dir) and tidings nodes joined to it, for the cluster tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{ServerProcess, binary, free_port, get};

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
    client_port: u16,
    http_port: u16,
    process: Option<ServerProcess>,
}

/// Three NATS servers forming one JetStream cluster.
pub struct NatsCluster {
    servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts three servers with their data under `dir`, and waits until each is healthy.
    pub fn start(dir: &Path) -> Self {
        let binary = nats_server();
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
                let text = format!(
                    "server_name: n{n}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n\
                     jetstream {{ store_dir: {:?} }}\n\
                     cluster {{ name: tidings-test, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                    store.display().to_string(),
                    routes.join(", ")
                );
                std::fs::write(&config, text).expect("write a NATS config");
                NatsServer {
                    config,
                    client_port: *client,
                    http_port: *http,
                    process: None,
                }
            })
            .collect();
        let mut cluster = Self { servers };
        for n in 0..3 {
            cluster.spawn(n, &binary);
        }
        for n in 0..3 {
            cluster.wait_healthy(n);
        }
        cluster
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

    fn wait_healthy(&self, n: usize) {
        let port = self.servers[n].http_port;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("NATS server {n} did not start");
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
        self.wait_healthy(n);
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
