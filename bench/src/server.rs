//! Starting and stopping the servers under test: ours (the release binary) and the reference
//! (the tutorial's Node server), each on a free port with its own database file.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// tidings (target/release/tidings).
    Ours,
    /// The Socket.IO tutorial server (Node + SQLite).
    Reference,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Reference => "reference",
        }
    }

    /// How long the first start may take (the reference builds sqlite3 on its first start).
    fn ready_timeout(self) -> Duration {
        match self {
            Kind::Ours => Duration::from_secs(60),
            Kind::Reference => Duration::from_secs(600),
        }
    }
}

/// Where the servers are and how to start them.
#[derive(Debug, Clone, Args)]
pub struct Launcher {
    /// Our server's binary [default: `tidings` next to this binary, else target/release/tidings].
    #[arg(long, env = "TIDINGS_BENCH_BIN", global = true)]
    pub ours_bin: Option<PathBuf>,

    /// Extra argument for our server, repeatable (e.g. `--ours-arg=--socket-buffer=4096`).
    #[arg(long = "ours-arg", global = true, allow_hyphen_values = true)]
    pub ours_args: Vec<String>,

    /// The reference server's folder, holding start.sh [default: ../shared/reference/node-tutorial
    /// next to this repository].
    #[arg(long, env = "TIDINGS_REFERENCE", global = true)]
    pub reference: Option<PathBuf>,

    /// The reference with rooms (our extension of the tutorial server), holding start.sh, for
    /// the rooms scenarios [default: bench/reference-rooms in this repository].
    #[arg(long, env = "TIDINGS_REFERENCE_ROOMS", global = true)]
    pub reference_rooms: Option<PathBuf>,
}

/// Environment for our server unless already set: no per-connection rate limit (the
/// reference has none, and the scenarios send faster than a chat user would). A flag given
/// with `--ours-arg` overrides it.
pub const OURS_ENV: [(&str, &str); 1] = [("TIDINGS_RATE_LIMIT", "0")];

/// A server process started by the bench.
pub struct Running {
    child: Child,
    pub kind: Kind,
    pub pid: u32,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// From just before spawning to the "ready" line on stdout.
    pub ready_after: Duration,
    log: PathBuf,
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("looking for a free port")?;
    Ok(listener
        .local_addr()
        .context("reading a bound port")?
        .port())
}

/// The tidings repository (this crate lives in its `bench/` folder).
fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl Launcher {
    pub fn ours_bin(&self) -> PathBuf {
        if let Some(bin) = &self.ours_bin {
            return bin.clone();
        }
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("tidings")));
        match beside {
            Some(bin) if bin.is_file() => bin,
            _ => repository().join("target/release/tidings"),
        }
    }

    pub fn reference_dir(&self) -> PathBuf {
        self.reference
            .clone()
            .unwrap_or_else(|| repository().join("../shared/reference/node-tutorial"))
    }

    /// Our rooms extension of the tutorial server's folder.
    pub fn reference_rooms_dir(&self) -> PathBuf {
        self.reference_rooms
            .clone()
            .unwrap_or_else(|| repository().join("bench/reference-rooms"))
    }

    /// The same launcher with the rooms reference as the reference (for the rooms scenarios).
    pub fn for_rooms(&self) -> Self {
        Self {
            reference: Some(self.reference_rooms_dir()),
            ..self.clone()
        }
    }

    /// A warning when our binary looks older than the server sources it is built from (a
    /// `cargo run -p tidings-bench` does not rebuild it).
    pub fn staleness_warning(&self) -> Option<String> {
        let bin = self.ours_bin();
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok()?;
        let src = repository().join("src");
        let newest = newest_source(&src, 0).unwrap_or(SystemTime::UNIX_EPOCH);
        (newest > built).then(|| {
            format!(
                "{} is older than {}: run `cargo build --release` to measure the current server",
                bin.display(),
                src.display()
            )
        })
    }

    /// Starts `kind` on `port` with database `db`, logging its stderr to `log`, and waits
    /// until it prints that it is ready.
    pub async fn start(
        &self,
        kind: Kind,
        db: &Path,
        port: u16,
        log: &Path,
    ) -> anyhow::Result<Running> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("creating {}", log.display()))?;
        let mut command = match kind {
            Kind::Ours => {
                let bin = self.ours_bin();
                if !bin.is_file() {
                    bail!(
                        "{} not found: build it with `cargo build --release`",
                        bin.display()
                    );
                }
                let mut c = Command::new(bin);
                for (key, value) in OURS_ENV {
                    if std::env::var_os(key).is_none() {
                        c.env(key, value);
                    }
                }
                c.arg("--host")
                    .arg("127.0.0.1")
                    .arg("--port")
                    .arg(port.to_string())
                    .arg("--db")
                    .arg(db)
                    .args(&self.ours_args);
                c
            }
            Kind::Reference => {
                let script = self.reference_dir().join("start.sh");
                if !script.is_file() {
                    bail!(
                        "{} not found: set TIDINGS_REFERENCE or --reference",
                        script.display()
                    );
                }
                let mut c = Command::new(script);
                c.env("PORT", port.to_string()).env("DB", db);
                c
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting the {} server", kind.name()))?;
        let pid = child.id().context("the server exited at once")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = async {
            while let Some(line) = lines.next_line().await.context("reading server stdout")? {
                let is_ready = match kind {
                    Kind::Ours => line.contains("listening on http"),
                    Kind::Reference => line.contains("server running at"),
                };
                if is_ready {
                    return Ok(started.elapsed());
                }
            }
            bail!("the server closed its stdout before it was ready")
        };
        let ready_after = match tokio::time::timeout(kind.ready_timeout(), ready).await {
            Ok(Ok(after)) => after,
            Ok(Err(e)) => bail!("{e:#}\n{}", log_tail(log)),
            Err(_) => bail!(
                "the {} server was not ready within {:?}\n{}",
                kind.name(),
                kind.ready_timeout(),
                log_tail(log)
            ),
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Running {
            child,
            kind,
            pid,
            url: format!("http://127.0.0.1:{port}"),
            ready_after,
            log: log.to_path_buf(),
        })
    }
}

impl Running {
    /// The exit status if the server has already exited (it should not have).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Stops the server with SIGTERM (a graceful shutdown that closes the database), waiting
    /// up to 30 s before killing it.
    pub async fn stop(mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => status.context("waiting for the server to exit"),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!(
                    "the {} server did not stop within 30 s of SIGTERM",
                    self.kind.name()
                )
            }
        }
    }
}

/// The newest modification time of the server's sources under `dir` (not the bench's own).
fn newest_source(dir: &Path, depth: usize) -> Option<SystemTime> {
    if depth > 4 {
        return None;
    }
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != "bin")
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            if meta.is_dir() {
                newest_source(&e.path(), depth + 1)
            } else {
                meta.modified().ok()
            }
        })
        .max()
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    format!("--- last lines of {} ---\n{tail}", log.display())
}

/// A scratch folder for databases and logs, removed when dropped unless kept.
pub struct WorkDir {
    pub path: PathBuf,
    keep: bool,
}

impl WorkDir {
    pub fn create(keep: bool) -> anyhow::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("tidings-bench-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, keep })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
