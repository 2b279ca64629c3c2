//! The scenarios, and what they share: the target server, run nonces, content padding and
//! opening many connections at once.

pub mod fanout;
pub mod history;
pub mod idle;
pub mod ingest;
pub mod prefill;
pub mod replay;
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

/// The server a scenario talks to, when given on the command line.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// The server's base URL (compare mode starts the servers and fills this in).
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub url: String,

    /// The server's process id, for its CPU time and memory (/proc/PID); compare mode knows it.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// A running server to measure.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port`.
    pub url: String,
    pub pid: Option<u32>,
    /// How reports name it: `ours`, `reference` or the URL.
    pub name: String,
}

impl Target {
    pub fn from_args(args: &TargetArgs) -> Self {
        Self {
            url: args.url.clone(),
            pid: args.server_pid,
            name: args.url.clone(),
        }
    }

    pub fn ws_url(&self) -> String {
        crate::conn::ws_url(&self.url)
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

/// Opens `n` connections at `offset`, at most `concurrency` handshakes at a time. Returns the
/// connections opened and the errors of those that failed.
pub async fn connect_many(
    ws_url: &str,
    n: usize,
    offset: u64,
    buffers: Buffers,
    concurrency: usize,
    label: &str,
) -> (Vec<Conn>, Vec<String>) {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(label, n as u64, done.clone());
    let mut set = JoinSet::new();
    for _ in 0..n {
        let gate = gate.clone();
        let done = done.clone();
        let url = ws_url.to_string();
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let conn = Conn::connect(&url, offset, buffers).await;
            done.fetch_add(1, Ordering::Relaxed);
            conn
        });
    }
    let mut conns = Vec::with_capacity(n);
    let mut errors = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(conn)) => conns.push(conn),
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(format!("connect task: {e}")),
        }
    }
    progress.finish();
    (conns, errors)
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
    fn padding_and_nonce() {
        assert_eq!(padded("ab".into(), 5), "abxxx");
        assert_eq!(padded("abcdef".into(), 3), "abcdef");
        assert_eq!(nonce().len(), 6);
    }
}
