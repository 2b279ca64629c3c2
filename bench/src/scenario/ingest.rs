//! `ingest`: C clients each send M messages with a clientOffset, one at a time, awaiting each
//! ack before the next; every client also receives every broadcast, and the bench checks that
//! each one got every message exactly once, in increasing id order. With several URLs (the
//! nodes of a cluster) the clients are spread over them in turn; a `--history` prefill goes to
//! the first.
//!
//! `--offsets shared` sends every message of every client under one clientOffset, each with
//! its own content: the dedup rule (same offset and same content) makes each one new, so each
//! must be stored and acked with its id, never as a duplicate. It measures what the server's
//! dedup costs when one offset is reused (issue 27: a lookup of every id stored under it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde_json::{Map, Value};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::prefill::{PrefillPlan, prefill};
use super::{Target, connect_many, nonce, parse_tag, summarize_errors, tagged};
use crate::conn::{Buffers, Conn};
use crate::frame::{self, AckBody, Frame};
use crate::procfs::CpuMeter;
use crate::progress::Progress;
use crate::report::{Better, Report};
use crate::server_metrics::CacheMisses;
use crate::stats::Histogram;

#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// Connected clients sending at once.
    #[arg(short = 'c', long, default_value_t = 50, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub clients: usize,

    /// Messages each client sends (sequentially, each after the previous ack).
    #[arg(short = 'm', long, default_value_t = 100, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000_000))]
    pub messages: usize,

    /// Content size in bytes (at least the tag the bench needs, ~20 bytes).
    #[arg(long, default_value_t = 32, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16_777_216))]
    pub size: usize,

    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,

    /// Store this many messages first (4 connections, 64 in flight each; not measured), so
    /// ingest runs on a database that already holds a history. The clients then connect at
    /// the newest id (they replay none of it).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    pub history: u64,

    /// Client offsets: one per message (`fresh`), or one for every message of every client
    /// (`shared`; each message still has its own content, so each must be acked as new).
    #[arg(long, value_enum, default_value_t = Offsets::Fresh)]
    pub offsets: Offsets,
}

/// Which clientOffset each message is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Offsets {
    /// `NONCE-CLIENT-SEQ`: a new offset for every message, as the tutorial's clients send.
    Fresh,
    /// `NONCE-shared` for every message of every client.
    Shared,
}

impl Offsets {
    pub fn name(self) -> &'static str {
        match self {
            Offsets::Fresh => "fresh",
            Offsets::Shared => "shared",
        }
    }
}

/// The clientOffset of message `seq` of client `client` in a run tagged `nonce`.
fn client_offset(offsets: Offsets, nonce: &str, client: usize, seq: usize) -> String {
    match offsets {
        Offsets::Fresh => format!("{nonce}-{client}-{seq}"),
        Offsets::Shared => format!("{nonce}-shared"),
    }
}

/// What one client saw.
#[derive(Default)]
struct ClientResult {
    acked: u64,
    ack_errors: u64,
    duplicate_acks: u64,
    /// Acks with neither an id nor an error (the reference's ack, stored or not).
    acks_without_id: u64,
    received: u64,
    duplicates: u64,
    out_of_order: u64,
    ack_before_broadcast: u64,
    id_mismatch: u64,
    last_ack: Option<Instant>,
    done: Option<Instant>,
    failure: Option<String>,
}

struct Shared {
    nonce: String,
    clients: usize,
    messages: usize,
    size: usize,
    offsets: Offsets,
    ack_latency: Histogram,
    deadline: tokio::time::Instant,
}

/// `i.NONCE.CLIENT.SEQ.` padded: the tag identifies who sent which message.
fn content(shared: &Shared, client: usize, seq: usize) -> String {
    tagged('i', &shared.nonce, client, seq as u64, shared.size)
}

fn parse_content(content: &str, nonce: &str) -> Option<(usize, usize)> {
    let (client, seq) = parse_tag(content, 'i', nonce)?;
    Some((client, usize::try_from(seq).ok()?))
}

pub async fn run(args: &IngestArgs, target: &Target) -> anyhow::Result<Report> {
    let mut report = Report::new("ingest", &target.name);
    report.param("clients", args.clients);
    report.param("messages_per_client", args.messages);
    report.param("content_bytes", args.size);
    report.param("offsets", args.offsets.name());
    let mut offset = 0;
    if args.history > 0 {
        report.param("history", args.history);
        let plan = PrefillPlan {
            messages: args.history,
            connections: 4,
            window: 64,
            size: 64,
        };
        let stored = prefill(&target.ws_url(), plan).await?;
        stored.report_rate(&mut report, &plan);
        offset = stored.last_id;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let (conns, errors) = connect_many(
        &target.ws_urls(),
        args.clients,
        offset,
        Buffers::Busy,
        64,
        "connecting",
    )
    .await;
    if let Some(e) = summarize_errors("connections", &errors) {
        report.problems.push(e);
    }
    anyhow::ensure!(
        !conns.is_empty(),
        "no client could connect to {}",
        target.name
    );

    let shared = Arc::new(Shared {
        nonce: nonce(),
        clients: conns.len(),
        messages: args.messages,
        size: args.size,
        offsets: args.offsets,
        ack_latency: Histogram::new(),
        deadline: tokio::time::Instant::now() + Duration::from_secs(args.timeout),
    });
    let expected = (shared.clients * shared.messages) as u64;
    let counter = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("acked", expected, counter.clone());

    let misses = CacheMisses::start(&target.urls).await;
    let meter = CpuMeter::start(&target.pids);
    let start = Instant::now();
    let stop_tenths = CancellationToken::new();
    let tenths = tokio::spawn(record_tenths(
        counter.clone(),
        expected,
        start,
        stop_tenths.clone(),
    ));
    let mut set = JoinSet::new();
    for (me, conn) in conns.into_iter().enumerate() {
        let shared = shared.clone();
        let counter = counter.clone();
        set.spawn(async move { client(me, conn, shared, counter).await });
    }
    let mut results = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(r) => results.push(r),
            Err(e) => report.problems.push(format!("client task: {e}")),
        }
    }
    let cpu = meter.stop();
    progress.finish();
    stop_tenths.cancel();
    match tenths.await {
        Ok(tenths) => report.series = tenths.series(),
        Err(e) => report.problems.push(format!("progress task: {e}")),
    }

    let sum = |f: fn(&ClientResult) -> u64| results.iter().map(f).sum::<u64>();
    let acked = sum(|r| r.acked);
    let last_ack = results.iter().filter_map(|r| r.last_ack).max();
    let all_done = results.iter().all(|r| r.done.is_some());
    let done = results.iter().filter_map(|r| r.done).max();
    let ack_window = last_ack.map_or(0.0, |t| (t - start).as_secs_f64());

    report.metric(
        "acked_per_s",
        "acked msgs/s",
        acked as f64 / ack_window.max(1e-9),
        "msg/s",
        Better::Higher,
    );
    report.latency("ack", "ack latency", &shared.ack_latency.summary(), "");
    report.metric("acked", "acked", acked as f64, "msgs", Better::Neither);
    let received = sum(|r| r.received);
    if let Some(done) = done.filter(|_| all_done) {
        let window = (done - start).as_secs_f64();
        report.metric(
            "all_delivered_s",
            "time until every client had every message",
            window,
            "s",
            Better::Lower,
        );
        report.metric(
            "deliveries_per_s",
            "deliveries/s",
            received as f64 / window.max(1e-9),
            "msg/s",
            Better::Higher,
        );
    }
    report.cpu(&cpu, acked as f64, "msg", "");
    misses.report(&mut report, acked as f64, "msg", "").await;
    report.server_memory(&target.pids);

    let deliveries_expected = expected * shared.clients as u64;
    if acked < expected {
        report
            .problems
            .push(format!("only {acked} of {expected} messages were acked"));
    }
    if received < deliveries_expected {
        report.problems.push(format!(
            "lost deliveries: {} of {deliveries_expected} broadcasts never arrived",
            deliveries_expected - received
        ));
    }
    for (count, what) in [
        (sum(|r| r.ack_errors), "acks carried an error"),
        (
            sum(|r| r.duplicate_acks),
            "acks said duplicate for a new message",
        ),
        // Under a shared offset an ack without an id cannot be told from a message dropped
        // as a retry (the reference acks those with nothing): every message must get its id.
        (
            if shared.offsets == Offsets::Shared {
                sum(|r| r.acks_without_id)
            } else {
                0
            },
            "acks had no id (under a shared offset, each message must be acked with its id)",
        ),
        (sum(|r| r.duplicates), "broadcasts were received twice"),
        (
            sum(|r| r.out_of_order),
            "broadcasts arrived with a non-increasing id",
        ),
        (
            sum(|r| r.id_mismatch),
            "acks named another id than the broadcast",
        ),
    ] {
        if count > 0 {
            report.problems.push(format!("{count} {what}"));
        }
    }
    let early = sum(|r| r.ack_before_broadcast);
    if early > 0 {
        report.notes.push(format!(
            "{early} acks arrived before the sender's own broadcast of the message"
        ));
    }
    let failures: Vec<String> = results.iter().filter_map(|r| r.failure.clone()).collect();
    if let Some(e) = summarize_errors("clients", &failures) {
        report.problems.push(e);
    }
    if shared.clients != args.clients {
        report.notes.push(format!(
            "ran with {} clients instead of {}",
            shared.clients, args.clients
        ));
    }
    Ok(report)
}

/// When each tenth of the acks came: the rate over each tenth shows a cost that grows with
/// what is stored (as the dedup's under a shared offset), which the run's average hides; a run
/// that times out shows how far it got.
#[derive(Debug)]
struct Tenths {
    /// The ack counts that end each tenth, ascending, without repeats.
    marks: Vec<u64>,
    /// `(acks, seconds since the start)` when a mark was passed (one row per sample, however
    /// many marks it passed), and where a stopped run was.
    rows: Vec<(u64, f64)>,
}

impl Tenths {
    fn new(expected: u64) -> Self {
        let mut marks: Vec<u64> = (1..=10)
            .map(|k| (expected * k).div_ceil(10))
            .filter(|&m| m > 0)
            .collect();
        marks.dedup();
        Self {
            marks,
            rows: Vec::new(),
        }
    }

    /// `acked` acks after `secs`: a row when it passed the next mark.
    fn observe(&mut self, acked: u64, secs: f64) {
        let next = self.rows.last().map_or(0, |&(n, _)| n);
        if self.marks.iter().any(|&m| m > next && acked >= m) {
            self.rows.push((acked, secs));
        }
    }

    fn complete(&self) -> bool {
        self.marks
            .last()
            .is_none_or(|&last| self.rows.last().is_some_and(|&(n, _)| n >= last))
    }

    /// The run stopped at `acked` after `secs`: a last row if it got further than the last.
    fn stop(&mut self, acked: u64, secs: f64) {
        if acked > self.rows.last().map_or(0, |&(n, _)| n) {
            self.rows.push((acked, secs));
        }
    }

    /// One row per sample: acks so far, seconds, and the rate since the previous row.
    fn series(&self) -> Vec<Map<String, Value>> {
        let mut previous = (0, 0.0);
        self.rows
            .iter()
            .map(|&(acked, secs)| {
                let rate = (acked - previous.0) as f64 / (secs - previous.1).max(1e-9);
                previous = (acked, secs);
                let mut row = Map::new();
                row.insert("acked".into(), acked.into());
                row.insert("elapsed_s".into(), round3(secs));
                row.insert("acked_per_s_since_previous".into(), round3(rate));
                row
            })
            .collect()
    }
}

fn round3(v: f64) -> Value {
    serde_json::Number::from_f64((v * 1000.0).round() / 1000.0).map_or(Value::Null, Value::Number)
}

/// Samples the ack counter every 20 ms until every ack came or `stop`.
async fn record_tenths(
    counter: Arc<AtomicU64>,
    expected: u64,
    start: Instant,
    stop: CancellationToken,
) -> Tenths {
    let mut tenths = Tenths::new(expected);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            () = stop.cancelled() => true,
        };
        let (acked, secs) = (
            counter.load(Ordering::Relaxed),
            start.elapsed().as_secs_f64(),
        );
        if stopping {
            tenths.stop(acked, secs);
            return tenths;
        }
        tenths.observe(acked, secs);
        if tenths.complete() {
            return tenths;
        }
    }
}

/// One client: sends its messages one ack at a time while reading every broadcast.
async fn client(
    me: usize,
    mut conn: Conn,
    shared: Arc<Shared>,
    counter: Arc<AtomicU64>,
) -> ClientResult {
    let mut r = ClientResult::default();
    if let Err(e) = client_loop(me, &mut conn, &shared, &counter, &mut r).await {
        r.failure = Some(format!("client {me}: {e:#}"));
    }
    conn.close().await;
    r
}

async fn client_loop(
    me: usize,
    conn: &mut Conn,
    shared: &Shared,
    counter: &AtomicU64,
    r: &mut ClientResult,
) -> anyhow::Result<()> {
    let (clients, messages) = (shared.clients, shared.messages);
    let total = clients * messages;
    let mut seen = vec![false; total];
    // The id each of my messages was broadcast with (0: not seen yet).
    let mut own_ids = vec![0u64; messages];
    let mut last_id = 0u64;
    let mut seq = 0usize;
    let my_offset = |seq: usize| client_offset(shared.offsets, &shared.nonce, me, seq);
    let mut sent_at = Instant::now();
    if messages > 0 {
        conn.emit_chat(&content(shared, me, 0), &my_offset(0), Some(0))
            .await?;
    }
    while seq < messages || r.received < total as u64 {
        let text = match tokio::time::timeout_at(shared.deadline, conn.recv()).await {
            Ok(Ok(Some(text))) => text,
            Ok(Ok(None)) => anyhow::bail!("the server closed the connection"),
            Ok(Err(e)) => return Err(e),
            Err(_) => anyhow::bail!(
                "timed out with {seq}/{messages} acked and {}/{total} received",
                r.received
            ),
        };
        match frame::parse(text.as_str()) {
            Frame::Chat { content, id } => {
                if id <= last_id {
                    r.out_of_order += 1;
                }
                last_id = id;
                let Some((client, s)) = parse_content(content, &shared.nonce) else {
                    continue; // not from this run
                };
                let Some(slot) = seen.get_mut(client * messages + s) else {
                    continue;
                };
                if std::mem::replace(slot, true) {
                    r.duplicates += 1;
                } else {
                    r.received += 1;
                }
                if client == me && s < messages {
                    own_ids[s] = id;
                }
            }
            Frame::Ack { ack_id, body } if ack_id == seq as u64 && seq < messages => {
                let now = Instant::now();
                shared.ack_latency.record(now - sent_at);
                match body {
                    AckBody::Empty => r.acks_without_id += 1,
                    AckBody::Id(id) if own_ids[seq] == 0 => {
                        r.ack_before_broadcast += 1;
                        own_ids[seq] = id;
                    }
                    AckBody::Id(id) if own_ids[seq] != id => r.id_mismatch += 1,
                    AckBody::Id(_) => {}
                    AckBody::Duplicate(_) => r.duplicate_acks += 1,
                    AckBody::Error => r.ack_errors += 1,
                }
                r.acked += 1;
                r.last_ack = Some(now);
                counter.fetch_add(1, Ordering::Relaxed);
                seq += 1;
                if seq < messages {
                    sent_at = Instant::now();
                    conn.emit_chat(&content(shared, me, seq), &my_offset(seq), Some(seq as u64))
                        .await?;
                }
            }
            Frame::Ack { ack_id, .. } => {
                anyhow::bail!("unexpected ack {ack_id} (waiting for {seq})")
            }
            Frame::Close | Frame::Disconnect => anyhow::bail!("disconnected by the server"),
            _ => {}
        }
    }
    r.done = Some(Instant::now());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_round_trip() {
        let shared = Shared {
            nonce: "abc123".into(),
            clients: 2,
            messages: 3,
            size: 40,
            offsets: Offsets::Fresh,
            ack_latency: Histogram::new(),
            deadline: tokio::time::Instant::now(),
        };
        let c = content(&shared, 1, 2);
        assert_eq!(c.len(), 40);
        assert_eq!(parse_content(&c, "abc123"), Some((1, 2)));
        assert_eq!(parse_content(&c, "zzz"), None);
    }

    #[test]
    fn offsets_fresh_or_shared() {
        assert_eq!(client_offset(Offsets::Fresh, "n1", 3, 7), "n1-3-7");
        assert_ne!(
            client_offset(Offsets::Fresh, "n1", 3, 7),
            client_offset(Offsets::Fresh, "n1", 7, 3)
        );
        let one = client_offset(Offsets::Shared, "n1", 0, 0);
        assert!((0..5).all(|c| (0..5).all(|s| client_offset(Offsets::Shared, "n1", c, s) == one)));
        // Another run does not share it.
        assert_ne!(one, client_offset(Offsets::Shared, "n2", 0, 0));
    }

    #[test]
    fn tenths_of_the_acks() {
        let mut t = Tenths::new(100);
        assert_eq!(t.marks, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
        t.observe(5, 0.1);
        assert!(t.rows.is_empty());
        t.observe(10, 0.2);
        t.observe(12, 0.3);
        // One sample past two marks: one row.
        t.observe(35, 1.2);
        assert_eq!(t.rows, [(10, 0.2), (35, 1.2)]);
        assert!(!t.complete());
        t.observe(100, 2.2);
        assert!(t.complete());
        let series = t.series();
        assert_eq!(series.len(), 3);
        assert_eq!(
            series[0]["acked_per_s_since_previous"],
            serde_json::json!(50.0)
        );
        assert_eq!(
            series[1]["acked_per_s_since_previous"],
            serde_json::json!(25.0)
        );
        assert_eq!(series[2]["acked"], serde_json::json!(100));

        // Few messages: no repeated marks; a stopped run ends where it was.
        let mut t = Tenths::new(3);
        assert_eq!(t.marks, [1, 2, 3]);
        t.observe(1, 0.5);
        t.stop(2, 1.0);
        t.stop(2, 1.5);
        assert_eq!(t.rows, [(1, 0.5), (2, 1.0)]);
        assert!(!t.complete());
        assert!(Tenths::new(0).complete());
    }
}
