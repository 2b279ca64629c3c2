//! The scenarios, and what they share: the target server, run nonces, content padding and
//! opening many connections at once.

pub mod connect_storm;
pub mod fanout;
pub mod history;
pub mod idle;
pub mod ingest;
pub mod prefill;
pub mod replay;
pub mod room_memory;
pub mod room_replay;
pub mod rooms;
pub mod soak;
pub mod startup;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use clap::Args;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::conn::{Buffers, Conn};
use crate::progress::Progress;
use crate::report::Report;

/// The server a scenario talks to, when given on the command line.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// The server's base URL (compare mode starts the servers and fills this in). Several,
    /// comma-separated, for the nodes of a cluster: a scenario's connections are spread over
    /// them in turn (see each scenario for which go where).
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:3000")]
    pub url: Vec<String>,

    /// The server's process id, for its CPU time and memory (/proc/PID); compare mode knows it.
    /// Several, comma-separated (the nodes of a cluster, and NATS servers if wanted): figures
    /// are their sum, with each process's share as `.p1`, `.p2`, ... in the order given.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
}

/// A running server (or the nodes of a cluster) to measure.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port`, one per node; never empty.
    pub urls: Vec<String>,
    /// The processes whose CPU and memory count as the server's.
    pub pids: Vec<u32>,
    /// How reports name it: `ours`, `reference` or the URL(s).
    pub name: String,
}

impl Target {
    pub fn from_args(args: &TargetArgs) -> anyhow::Result<Self> {
        let urls: Vec<String> = args.url.iter().map(|u| u.trim().to_string()).collect();
        anyhow::ensure!(
            !urls.is_empty() && urls.iter().all(|u| !u.is_empty()),
            "--url: an empty URL in {:?}",
            args.url.join(",")
        );
        Ok(Self {
            name: urls.join(","),
            urls,
            pids: args.server_pid.clone(),
        })
    }

    /// One server with a known process.
    pub fn single(url: String, pid: u32, name: &str) -> Self {
        Self {
            urls: vec![url],
            pids: vec![pid],
            name: name.to_string(),
        }
    }

    /// The first URL: where the single-connection parts of a scenario go (a fanout's sender,
    /// a prefill).
    pub fn url(&self) -> &str {
        &self.urls[0]
    }

    /// The websocket URL of the first server.
    pub fn ws_url(&self) -> String {
        crate::conn::ws_url(self.url())
    }

    /// The websocket URL of every server, for [`connect_many`] to spread connections over.
    pub fn ws_urls(&self) -> Vec<String> {
        self.urls.iter().map(|u| crate::conn::ws_url(u)).collect()
    }

    /// The first URL and pid only, for the scenarios that measure one server (history, idle,
    /// soak); a note in `report` says so when more were given.
    pub fn first_only(&self, report: &mut Report) -> Target {
        if self.urls.len() > 1 || self.pids.len() > 1 {
            report.notes.push(format!(
                "{} uses only the first URL and pid ({})",
                report.scenario,
                self.url()
            ));
        }
        Target {
            urls: vec![self.url().to_string()],
            pids: self.pids.iter().copied().take(1).collect(),
            name: self.name.clone(),
        }
    }
}

/// The URL the `i`-th connection goes to: round-robin over `urls`.
pub fn spread(urls: &[String], i: usize) -> &str {
    &urls[i % urls.len()]
}

/// A flag's value that must be a finite number above 0 (clap's `value_parser`).
pub fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(_) => Err(format!("{s} is not a finite number above 0")),
        Err(e) => Err(format!("{s}: {e}")),
    }
}

/// A short tag that makes this run's message contents and client offsets unique, so messages
/// from earlier runs or other clients are told apart.
pub fn nonce() -> String {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:06x}",
        (t as u64 ^ u64::from(std::process::id()) << 20) & 0xff_ffff
    )
}

/// A small deterministic generator of positions (no dependency for a few numbers).
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// `KIND.NONCE.CLIENT.SEQ.` padded to `size`: the tag says which run, sender and message a
/// content is.
pub fn tagged(kind: char, nonce: &str, client: usize, seq: u64, size: usize) -> String {
    padded(format!("{kind}.{nonce}.{client}.{seq}."), size)
}

/// The sender and sequence number of a content [`tagged`] with `kind` and `nonce`.
pub fn parse_tag(content: &str, kind: char, nonce: &str) -> Option<(usize, u64)> {
    let rest = content
        .strip_prefix(kind)?
        .strip_prefix('.')?
        .strip_prefix(nonce)?
        .strip_prefix('.')?;
    let mut parts = rest.splitn(3, '.');
    let client = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    Some((client, seq))
}

/// `s` padded with `x` up to `size` bytes (never truncated).
pub fn padded(mut s: String, size: usize) -> String {
    let missing = size.saturating_sub(s.len());
    s.extend(std::iter::repeat_n('x', missing));
    s
}

/// Opens `n` connections at `offset`, at most `concurrency` handshakes at a time, the i-th to
/// `ws_urls[i % len]` (see [`spread`]). Returns the connections opened and the errors of those
/// that failed.
pub async fn connect_many(
    ws_urls: &[String],
    n: usize,
    offset: u64,
    buffers: Buffers,
    concurrency: usize,
    label: &str,
) -> (Vec<Conn>, Vec<String>) {
    let auth = format!("{{\"serverOffset\":{offset}}}");
    let (conns, errors) =
        connect_many_auth(ws_urls, n, |_| auth.clone(), buffers, concurrency, label).await;
    (conns.into_iter().map(|(_, conn)| conn).collect(), errors)
}

/// Like [`connect_many`] with the i-th connection's `auth` object (raw JSON text) made by
/// `auth(i)`; each connection comes back with its index, in index order.
pub async fn connect_many_auth(
    ws_urls: &[String],
    n: usize,
    auth: impl Fn(usize) -> String,
    buffers: Buffers,
    concurrency: usize,
    label: &str,
) -> (Vec<(usize, Conn)>, Vec<String>) {
    let (conns, failed) = connect_indices(
        ws_urls,
        (0..n).collect(),
        &auth,
        buffers,
        concurrency,
        label,
    )
    .await;
    (conns, failed.into_iter().map(|(_, e)| e).collect())
}

/// Opens the connections of `indices` (see [`connect_many_auth`]); the ones opened and the
/// ones that failed, with their errors, each in index order.
pub async fn connect_indices(
    ws_urls: &[String],
    indices: Vec<usize>,
    auth: &impl Fn(usize) -> String,
    buffers: Buffers,
    concurrency: usize,
    label: &str,
) -> (Vec<(usize, Conn)>, Vec<(usize, String)>) {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(label, indices.len() as u64, done.clone());
    let mut set = JoinSet::new();
    for i in indices {
        let gate = gate.clone();
        let done = done.clone();
        let url = spread(ws_urls, i).to_string();
        let auth = auth(i);
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let conn = Conn::connect_auth(&url, &auth, buffers).await;
            done.fetch_add(1, Ordering::Relaxed);
            (i, conn.map_err(|e| format!("{e:#}")))
        });
    }
    let mut conns = Vec::new();
    let mut failed = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, Ok(conn))) => conns.push((i, conn)),
            Ok((i, Err(e))) => failed.push((i, e)),
            Err(e) => failed.push((usize::MAX, format!("connect task: {e}"))),
        }
    }
    progress.finish();
    conns.sort_unstable_by_key(|(i, _)| *i);
    failed.sort_unstable_by_key(|(i, _)| *i);
    (conns, failed)
}

/// Opens `n` connections like [`connect_many_auth`], trying the ones that failed up to
/// `retries` more times (a server may time out some handshakes of a large burst). Returns the
/// connections, the errors of every failed try, and how many connections needed a retry.
pub async fn connect_all_auth(
    ws_urls: &[String],
    n: usize,
    auth: impl Fn(usize) -> String,
    buffers: Buffers,
    concurrency: usize,
    label: &str,
    retries: usize,
) -> (Vec<(usize, Conn)>, Vec<String>, usize) {
    let (mut conns, mut failed) = connect_indices(
        ws_urls,
        (0..n).collect(),
        &auth,
        buffers,
        concurrency,
        label,
    )
    .await;
    let mut errors: Vec<String> = failed.iter().map(|(_, e)| e.clone()).collect();
    let retried = failed.len();
    for _ in 0..retries {
        if failed.is_empty() {
            break;
        }
        let indices: Vec<usize> = failed.iter().map(|&(i, _)| i).filter(|&i| i < n).collect();
        let (more, still) = connect_indices(
            ws_urls,
            indices,
            &auth,
            buffers,
            concurrency,
            &format!("{label} (retry)"),
        )
        .await;
        conns.extend(more);
        errors.extend(still.iter().map(|(_, e)| e.clone()));
        failed = still;
    }
    conns.sort_unstable_by_key(|(i, _)| *i);
    (conns, errors, retried)
}

/// `auth` for a connection at `offset` in `rooms` (raw JSON; room names need no escaping).
pub fn rooms_auth(offset: u64, rooms: &[&str]) -> String {
    let mut auth = format!("{{\"serverOffset\":{offset},\"rooms\":[");
    for (i, room) in rooms.iter().enumerate() {
        if i > 0 {
            auth.push(',');
        }
        auth.push('"');
        auth.push_str(room);
        auth.push('"');
    }
    auth.push_str("]}");
    auth
}

/// One line summing up connection errors (how many, and the first few distinct ones).
pub fn summarize_errors(what: &str, errors: &[String]) -> Option<String> {
    if errors.is_empty() {
        return None;
    }
    let mut distinct: Vec<&String> = Vec::new();
    for e in errors {
        if !distinct.contains(&e) && distinct.len() < 3 {
            distinct.push(e);
        }
    }
    Some(format!("{} {what} failed: {distinct:?}", errors.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_with_rooms() {
        assert_eq!(rooms_auth(3, &[]), r#"{"serverOffset":3,"rooms":[]}"#);
        assert_eq!(
            rooms_auth(0, &["a", "b-1"]),
            r#"{"serverOffset":0,"rooms":["a","b-1"]}"#
        );
    }

    #[test]
    fn padding_and_nonce() {
        assert_eq!(padded("ab".into(), 5), "abxxx");
        assert_eq!(padded("abcdef".into(), 3), "abcdef");
        assert_eq!(nonce().len(), 6);
    }

    /// `--url` and `--server-pid` as a scenario's command line gives them.
    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        target: TargetArgs,
    }

    fn target(args: &[&str]) -> anyhow::Result<Target> {
        use clap::Parser;
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))?;
        Target::from_args(&cli.target)
    }

    #[test]
    fn one_url_and_pid_as_before() -> anyhow::Result<()> {
        let t = target(&[])?;
        assert_eq!(t.urls, ["http://127.0.0.1:3000"]);
        assert!(t.pids.is_empty());
        assert_eq!(t.name, "http://127.0.0.1:3000");
        let t = target(&["--url", "http://127.0.0.1:4000", "--server-pid", "42"])?;
        assert_eq!(t.urls, ["http://127.0.0.1:4000"]);
        assert_eq!(t.pids, [42]);
        assert_eq!(t.name, "http://127.0.0.1:4000");
        assert_eq!(t.ws_url(), crate::conn::ws_url("http://127.0.0.1:4000"));
        Ok(())
    }

    #[test]
    fn lists_of_urls_and_pids() -> anyhow::Result<()> {
        let t = target(&[
            "--url",
            "http://127.0.0.1:3001,http://127.0.0.1:3002, http://127.0.0.1:3003",
            "--server-pid",
            "11,12,13,14",
        ])?;
        assert_eq!(
            t.urls,
            [
                "http://127.0.0.1:3001",
                "http://127.0.0.1:3002",
                "http://127.0.0.1:3003"
            ]
        );
        assert_eq!(t.pids, [11, 12, 13, 14]);
        assert_eq!(t.url(), "http://127.0.0.1:3001");
        assert_eq!(t.ws_urls().len(), 3);
        assert!(target(&["--url", "http://127.0.0.1:3001,"]).is_err());
        assert!(target(&["--server-pid", "1,x"]).is_err());

        let mut report = Report::new("soak", &t.name);
        let first = t.first_only(&mut report);
        assert_eq!(first.urls, ["http://127.0.0.1:3001"]);
        assert_eq!(first.pids, [11]);
        assert_eq!(report.notes.len(), 1);
        Ok(())
    }

    #[test]
    fn connections_go_round_robin() {
        let urls: Vec<String> = ["a", "b", "c"].map(String::from).into();
        let picked: Vec<&str> = (0..7).map(|i| spread(&urls, i)).collect();
        assert_eq!(picked, ["a", "b", "c", "a", "b", "c", "a"]);
        let one = vec!["only".to_string()];
        assert!((0..3).all(|i| spread(&one, i) == "only"));
    }
}
