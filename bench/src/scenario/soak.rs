//! `soak`: a long run at a steady mix, to see that memory levels off and nothing drifts.
//!
//! For `--duration` seconds:
//! - `--clients` senders each send acked messages one at a time (the next after the previous
//!   ack), each with its own clientOffset; a sender that is disconnected or waits too long
//!   for an ack reconnects at the last id it saw and sends the same message again (same
//!   offset), as the official client does. Each sender also receives every message and checks
//!   that its connection's stream is gap-free and in order across reconnects.
//! - about every `--churn-every` seconds (jittered), `--churn` connections are opened (at the
//!   newest id) and closed again, and each round's open and close times are sampled;
//! - every `--replay-every` seconds, one client replays `--replay-messages` from a random
//!   offset (old pages, read through the database cache) and checks they are gap-free;
//! - every `--sample-every` seconds, a sample: the server's RSS and open files, ack p50 / p99
//!   / max of the interval, acked messages, errors, CPU, and (from tidings' `/metrics`) its
//!   connections and caches.
//!
//! At the end the senders finish their last message, and a final replay of everything
//! checks that every acked message is stored exactly once, with the id its ack gave.
//!
//! Every loop is bounded in time (the duration plus per-step timeouts) and in count
//! (`--max-messages`, `--max-reconnects`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant as Deadline;

use super::{Target, XorShift, connect_many, nonce, parse_tag, tagged};
use crate::conn::{Buffers, Conn};
use crate::frame::{self, AckBody, Frame};
use crate::procfs::{CpuMeter, Who, load_average, open_files, peak_rss_bytes, rss_bytes};
use crate::report::{Better, Report};
use crate::server_metrics::{scrape, value as metric_value};
use crate::stats::Histogram;

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub duration: u64,

    /// Senders, each sending acked messages one at a time.
    #[arg(short = 'c', long, default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub clients: usize,

    /// Content size in bytes (at least the tag the bench needs, ~30 bytes).
    #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16_777_216))]
    pub size: usize,

    /// Connections opened and closed in each churn round (0: no churn).
    #[arg(long, default_value_t = 300, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=100_000))]
    pub churn: usize,

    /// Seconds between churn rounds, on average.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub churn_every: u64,

    /// Seconds between periodic replays (0: none).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub replay_every: u64,

    /// Messages each periodic replay asks for, from a random offset in the history (so old
    /// pages are read, and each replay is the same work however long the history has grown);
    /// 0: the whole history from offset 0.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    pub replay_messages: u64,

    /// Seconds between samples.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub sample_every: u64,

    /// A sender that waits this many seconds for an ack reconnects and sends it again.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub ack_timeout: u64,

    /// Give up on one replay (periodic or final) after this many seconds.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub replay_timeout: u64,

    /// Most messages one sender sends, whatever the duration.
    #[arg(long, default_value_t = 50_000_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub max_messages: u64,

    /// Most reconnects of one sender; past it the sender stops (and that is a problem).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub max_reconnects: u64,
}

/// Counters shared by every task; the sampler reads their growth per interval.
#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    duplicate_acks: AtomicU64,
    ack_errors: AtomicU64,
    ack_timeouts: AtomicU64,
    disconnects: AtomicU64,
    connect_failures: AtomicU64,
    /// Ids that skipped ahead on a sender's stream.
    gaps: AtomicU64,
    /// Ids at or below one already seen on a sender's stream.
    repeats: AtomicU64,
    churned: AtomicU64,
    churn_failures: AtomicU64,
    replays: AtomicU64,
    replay_problems: AtomicU64,
    /// The newest id any sender has seen.
    newest: AtomicU64,
}

impl Counters {
    fn errors(&self) -> u64 {
        [
            &self.ack_errors,
            &self.ack_timeouts,
            &self.disconnects,
            &self.connect_failures,
            &self.gaps,
            &self.repeats,
            &self.churn_failures,
            &self.replay_problems,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

struct Shared {
    ws_url: String,
    nonce: String,
    size: usize,
    /// Senders stop starting new messages after this.
    stop_at: Deadline,
    ack_timeout: Duration,
    max_messages: u64,
    max_reconnects: u64,
    ack_latency: Histogram,
    /// How long each churn round took to open all its connections.
    churn_open: Histogram,
    /// How long each churn round took to close them.
    churn_close: Histogram,
    counters: Counters,
}

/// `s.NONCE.CLIENT.SEQ.` padded.
fn content(shared: &Shared, client: usize, seq: u64) -> String {
    tagged('s', &shared.nonce, client, seq, shared.size)
}

fn parse_content(content: &str, nonce: &str) -> Option<(usize, u64)> {
    parse_tag(content, 's', nonce)
}

/// What one sender did.
#[derive(Default)]
struct SenderResult {
    /// The id each acked message was given, by sequence number (0: the server's ack
    /// carried no id, as the reference's does).
    acked_ids: Vec<u64>,
    failure: Option<String>,
}

pub async fn run(args: &SoakArgs, target: &Target) -> anyhow::Result<Report> {
    let mut report = Report::new("soak", &target.name);
    let target = &target.first_only(&mut report);
    report.param("duration_s", args.duration);
    report.param("clients", args.clients);
    report.param("content_bytes", args.size);
    report.param("churn", args.churn);
    report.param("churn_every_s", args.churn_every);
    report.param("replay_every_s", args.replay_every);
    report.param("replay_messages", args.replay_messages);
    anyhow::ensure!(args.clients > 0, "soak needs at least one client");
    let start = Instant::now();
    let shared = Arc::new(Shared {
        ws_url: target.ws_url(),
        nonce: nonce(),
        size: args.size,
        stop_at: Deadline::now() + Duration::from_secs(args.duration),
        ack_timeout: Duration::from_secs(args.ack_timeout.max(1)),
        max_messages: args.max_messages,
        max_reconnects: args.max_reconnects,
        ack_latency: Histogram::new(),
        churn_open: Histogram::new(),
        churn_close: Histogram::new(),
        counters: Counters::default(),
    });
    let whole_run = CpuMeter::start(&target.pids);

    let mut senders = JoinSet::new();
    for me in 0..args.clients {
        let shared = shared.clone();
        senders.spawn(async move { (me, sender(me, shared).await) });
    }
    let mut background = JoinSet::new();
    if args.churn > 0 {
        let every = Duration::from_secs(args.churn_every.max(1));
        background.spawn(churn(shared.clone(), args.churn, every));
    }
    if args.replay_every > 0 {
        let every = Duration::from_secs(args.replay_every);
        let timeout = Duration::from_secs(args.replay_timeout);
        background.spawn(replays(
            shared.clone(),
            every,
            args.replay_messages,
            timeout,
        ));
    }
    let samples = sample(
        &shared,
        target,
        Duration::from_secs(args.sample_every.max(1)),
        start,
    )
    .await;

    // The senders stop at the deadline, after their last ack (or its timeout). They finish
    // in any order; `results[i]` is sender i's.
    let mut results: Vec<SenderResult> =
        (0..args.clients).map(|_| SenderResult::default()).collect();
    while let Some(joined) = senders.join_next().await {
        match joined {
            Ok((me, r)) => results[me] = r,
            Err(e) => report.problems.push(format!("sender task: {e}")),
        }
    }
    while let Some(joined) = background.join_next().await {
        if let Err(e) = joined {
            report.problems.push(format!("background task: {e}"));
        }
    }
    let cpu = whole_run.stop();
    let elapsed = start.elapsed();
    let c = &shared.counters;
    let acked = c.acked.load(Ordering::Relaxed);

    report.metric(
        "duration_s",
        "duration",
        elapsed.as_secs_f64(),
        "s",
        Better::Neither,
    );
    report.metric("acked", "acked", acked as f64, "msgs", Better::Neither);
    report.metric(
        "acked_per_s",
        "acked msgs/s (whole run)",
        acked as f64 / elapsed.as_secs_f64().max(1e-9),
        "msg/s",
        Better::Higher,
    );
    report.cpu(&cpu, acked as f64, "msg", "");
    summarize_samples(&mut report, &samples);
    report.series = samples;
    for (key, label, value) in [
        (
            "duplicate_acks",
            "acks saying duplicate (retries after a reconnect)",
            c.duplicate_acks.load(Ordering::Relaxed),
        ),
        (
            "churned",
            "churn connections opened and closed",
            c.churned.load(Ordering::Relaxed),
        ),
        (
            "replays",
            "periodic replays",
            c.replays.load(Ordering::Relaxed),
        ),
        ("errors", "errors (all kinds)", c.errors()),
    ] {
        report.metric(key, label, value as f64, "", Better::Neither);
    }
    for (counter, what) in [
        (&c.ack_errors, "acks carried an error"),
        (&c.ack_timeouts, "acks did not come within --ack-timeout"),
        (
            &c.disconnects,
            "sender connections were closed by the server",
        ),
        (&c.connect_failures, "sender connects failed"),
        (&c.gaps, "sender streams skipped ids"),
        (
            &c.repeats,
            "sender streams repeated an id or went backwards",
        ),
        (&c.churn_failures, "churn connections failed"),
        (
            &c.replay_problems,
            "periodic replays failed or were not gap-free",
        ),
    ] {
        let n = counter.load(Ordering::Relaxed);
        if n > 0 {
            report.problems.push(format!("{n} {what}"));
        }
    }
    for r in &results {
        if let Some(failure) = &r.failure {
            report.problems.push(failure.clone());
        }
    }

    // Every acked message, stored exactly once, with its acked id.
    let newest = shared.counters.newest.load(Ordering::Relaxed);
    let timeout = Duration::from_secs(args.replay_timeout);
    match final_check(&shared, &results, newest, timeout).await {
        Ok(check) => check.report(&mut report),
        Err(e) => report.problems.push(format!("final replay: {e:#}")),
    }
    report.server_memory(&target.pids);
    Ok(report)
}

/// Sends messages one at a time until the deadline; reconnects and resends when needed.
async fn sender(me: usize, shared: Arc<Shared>) -> SenderResult {
    let mut r = SenderResult::default();
    let c = &shared.counters;
    let my_offset = |seq: u64| format!("{}-{me}-{seq}", shared.nonce);
    // The last id this sender's stream delivered (None: not yet known; the first connect
    // asks for the newest message only).
    let mut last_seen: Option<u64> = None;
    let mut seq = 0u64;
    let mut reconnects = 0u64;
    'connection: while Deadline::now() < shared.stop_at && seq < shared.max_messages {
        let auth = match last_seen {
            Some(id) => format!("{{\"serverOffset\":{id}}}"),
            None => "{\"serverOffset\":0,\"latest\":1}".to_string(),
        };
        let mut conn = match Conn::connect_auth(&shared.ws_url, &auth, Buffers::Busy).await {
            Ok(conn) => conn,
            Err(e) => {
                c.connect_failures.fetch_add(1, Ordering::Relaxed);
                reconnects += 1;
                if reconnects > shared.max_reconnects {
                    r.failure = Some(format!("sender {me}: gave up reconnecting: {e:#}"));
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // (Re)send the message in progress, then one after each ack.
        loop {
            if Deadline::now() >= shared.stop_at || seq >= shared.max_messages {
                conn.close().await;
                break 'connection;
            }
            let sent_at = Instant::now();
            if conn
                .emit_chat(&content(&shared, me, seq), &my_offset(seq), Some(seq))
                .await
                .is_err()
            {
                c.disconnects.fetch_add(1, Ordering::Relaxed);
                break;
            }
            let ack_by = Deadline::now() + shared.ack_timeout;
            let acked = loop {
                let text = match tokio::time::timeout_at(ack_by, conn.recv()).await {
                    Ok(Ok(Some(text))) => text,
                    Ok(Ok(None) | Err(_)) => {
                        c.disconnects.fetch_add(1, Ordering::Relaxed);
                        break false;
                    }
                    Err(_) => {
                        c.ack_timeouts.fetch_add(1, Ordering::Relaxed);
                        break false;
                    }
                };
                match frame::parse(text.as_str()) {
                    Frame::Chat { id, .. } => {
                        match last_seen {
                            Some(prev) if id <= prev => {
                                c.repeats.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(prev) if id != prev + 1 => {
                                c.gaps.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                        if last_seen.is_none_or(|prev| id > prev) {
                            last_seen = Some(id);
                            c.newest.fetch_max(id, Ordering::Relaxed);
                        }
                    }
                    Frame::Ack { ack_id, body } if ack_id == seq => match body {
                        AckBody::Error => {
                            c.ack_errors.fetch_add(1, Ordering::Relaxed);
                            break false;
                        }
                        AckBody::Id(id) | AckBody::Duplicate(id) => {
                            if matches!(body, AckBody::Duplicate(_)) {
                                c.duplicate_acks.fetch_add(1, Ordering::Relaxed);
                            }
                            r.acked_ids.push(id);
                            break true;
                        }
                        AckBody::Empty => {
                            r.acked_ids.push(0);
                            break true;
                        }
                    },
                    // An ack of an earlier attempt on this connection cannot come: each
                    // connection sends one message at a time and only after the last ack.
                    Frame::Ack { .. } => {}
                    Frame::Close | Frame::Disconnect => {
                        c.disconnects.fetch_add(1, Ordering::Relaxed);
                        break false;
                    }
                    _ => {}
                }
            };
            if !acked {
                // Reconnect at the last id seen and send the same message again.
                conn.close().await;
                reconnects += 1;
                if reconnects > shared.max_reconnects {
                    r.failure = Some(format!(
                        "sender {me}: more than {} reconnects",
                        shared.max_reconnects
                    ));
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue 'connection;
            }
            shared.ack_latency.record(sent_at.elapsed());
            c.acked.fetch_add(1, Ordering::Relaxed);
            seq += 1;
        }
    }
    r
}

/// Opens `n` connections at the newest id and closes them again, about every `every` (each
/// round starts 0.5 to 1.5 periods after the previous one), until the deadline.
///
/// The jitter keeps the rounds out of step with the samples: at a fixed period that divides
/// the sampling period, every sample lands at the same point of a round, and its connection
/// and open-file counts show that point (a round's first handshakes in flight) instead of
/// the usual state.
async fn churn(shared: Arc<Shared>, n: usize, every: Duration) {
    let mut rng = XorShift::new(u64::from(std::process::id()) ^ 0x636875726e);
    let mut next = Deadline::now();
    loop {
        let jitter = every.mul_f64(0.5 + (rng.next() % 1000) as f64 / 1000.0);
        // A round that overran starts the next one at once, never a backlog of them.
        next = (next + jitter).max(Deadline::now());
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = tokio::time::sleep_until(shared.stop_at) => return,
        }
        let offset = shared.counters.newest.load(Ordering::Relaxed);
        let opening = Instant::now();
        let (conns, errors) = connect_many(
            std::slice::from_ref(&shared.ws_url),
            n,
            offset,
            Buffers::Small,
            64,
            "churn",
        )
        .await;
        let c = &shared.counters;
        c.churn_failures
            .fetch_add(errors.len() as u64, Ordering::Relaxed);
        c.churned.fetch_add(conns.len() as u64, Ordering::Relaxed);
        shared.churn_open.record(opening.elapsed());
        let closing_at = Instant::now();
        let mut closing = JoinSet::new();
        for conn in conns {
            closing.spawn(conn.close());
        }
        while closing.join_next().await.is_some() {}
        shared.churn_close.record(closing_at.elapsed());
    }
}

/// A replay of `span` messages from a random offset (all of them from 0 when `span` is 0)
/// every `every`, until the deadline.
async fn replays(shared: Arc<Shared>, every: Duration, span: u64, timeout: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut rng = XorShift::new(u64::from(std::process::id()));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = tokio::time::sleep_until(shared.stop_at) => return,
        }
        let newest = shared.counters.newest.load(Ordering::Relaxed);
        let (from, through) = if span == 0 || span >= newest {
            (0, newest)
        } else {
            let from = rng.next() % (newest - span + 1);
            (from, from + span)
        };
        let c = &shared.counters;
        match replay(&shared.ws_url, from, through, timeout, |_, _| {}).await {
            Ok(r) if r.gaps == 0 && r.repeats == 0 => {}
            Ok(_) | Err(_) => {
                c.replay_problems.fetch_add(1, Ordering::Relaxed);
            }
        }
        c.replays.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a replay saw.
struct Replayed {
    messages: u64,
    gaps: u64,
    repeats: u64,
    last: u64,
}

/// Replays from offset `from` until the message with id `through`, calling `each` with every
/// chat message's content and id. When `through` is the newest id, it reads on until the
/// stream has been quiet for a second, so that nothing stored after it goes unseen.
async fn replay(
    ws_url: &str,
    from: u64,
    through: u64,
    timeout: Duration,
    mut each: impl FnMut(&str, u64),
) -> anyhow::Result<Replayed> {
    let deadline = Deadline::now() + timeout;
    let mut conn = Conn::connect(ws_url, from, Buffers::Busy).await?;
    let mut r = Replayed {
        messages: 0,
        gaps: 0,
        repeats: 0,
        last: from,
    };
    loop {
        let wait = if r.last >= through {
            Deadline::now() + Duration::from_secs(1)
        } else {
            deadline
        };
        let text = match tokio::time::timeout_at(wait.min(deadline), conn.recv()).await {
            Ok(Ok(Some(text))) => text,
            Ok(Ok(None)) => bail!("the server closed the replay after {} messages", r.messages),
            Ok(Err(e)) => return Err(e),
            Err(_) if r.last >= through => break,
            Err(_) => bail!(
                "replay timed out after {} messages (at id {})",
                r.messages,
                r.last
            ),
        };
        if let Frame::Chat { content, id } = frame::parse(text.as_str()) {
            r.messages += 1;
            if id <= r.last {
                r.repeats += 1;
            } else {
                if id != r.last + 1 {
                    r.gaps += 1;
                }
                r.last = id;
            }
            each(content, id);
        }
    }
    conn.close().await;
    Ok(r)
}

/// Samples until the deadline; returns one row per sample.
async fn sample(
    shared: &Shared,
    target: &Target,
    every: Duration,
    start: Instant,
) -> Vec<Map<String, Value>> {
    let mut rows = Vec::new();
    let c = &shared.counters;
    let (mut acked_before, mut errors_before) = (0u64, 0u64);
    let mut meter = CpuMeter::start(&target.pids);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // One row at the start (before any load shows), then one per interval, the last at the
    // deadline.
    let mut totals = None;
    rows.push(row(shared, target, start, &meter, &mut totals, 0, 0, true).await);
    let mut last = false;
    while !last {
        tokio::select! {
            _ = tick.tick() => {}
            () = tokio::time::sleep_until(shared.stop_at) => last = true,
        }
        let acked = c.acked.load(Ordering::Relaxed);
        let errors = c.errors();
        let sample = row(
            shared,
            target,
            start,
            &meter,
            &mut totals,
            acked - acked_before,
            errors - errors_before,
            false,
        )
        .await;
        eprintln!("soak: {}", Value::Object(sample.clone()));
        rows.push(sample);
        (acked_before, errors_before) = (acked, errors);
        meter = CpuMeter::start(&target.pids);
    }
    rows
}

/// Server counters whose change over an interval is a column of the samples.
#[derive(Clone, Copy)]
struct ServerTotals {
    commit_s: f64,
    commits: f64,
    replayed: f64,
}

impl ServerTotals {
    fn read(text: &str) -> Option<Self> {
        Some(Self {
            commit_s: metric_value(text, "tidings_commit_seconds_sum")?,
            commits: metric_value(text, "tidings_commit_seconds_count")?,
            replayed: metric_value(text, "tidings_replayed_messages_total").unwrap_or(0.0),
        })
    }
}

/// One sample. `totals` holds the server's counters at the previous sample.
#[allow(clippy::too_many_arguments)]
async fn row(
    shared: &Shared,
    target: &Target,
    start: Instant,
    meter: &CpuMeter,
    totals: &mut Option<ServerTotals>,
    acked: u64,
    errors: u64,
    first: bool,
) -> Map<String, Value> {
    let cpu = meter.stop();
    let (latency, _) = if first {
        Default::default()
    } else {
        shared.ack_latency.take()
    };
    let mb =
        |bytes: anyhow::Result<u64>| bytes.map_or(Value::Null, |b| json!(round(b as f64 / 1e6)));
    let mut row = Map::new();
    row.insert("t_s".into(), json!(start.elapsed().as_secs()));
    if let Some(&pid) = target.pids.first() {
        row.insert("rss_mb".into(), mb(rss_bytes(Who::Pid(pid))));
        row.insert("peak_rss_mb".into(), mb(peak_rss_bytes(Who::Pid(pid))));
        row.insert(
            "open_files".into(),
            open_files(Who::Pid(pid)).map_or(Value::Null, |n| json!(n)),
        );
    }
    let metrics = scrape(target.url()).await;
    let metric = |name: &str| metrics.as_deref().and_then(|text| metric_value(text, name));
    row.insert(
        "conns".into(),
        metric("tidings_connections").map_or(Value::Null, |v| json!(v)),
    );
    for (key, name) in [
        ("tail_mb", "tidings_tail_cache_bytes"),
        ("db_cache_mb", "tidings_database_cache_used_bytes"),
        ("db_mb", "tidings_database_bytes"),
    ] {
        row.insert(
            key.into(),
            metric(name).map_or(Value::Null, |v| json!(round(v / 1e6))),
        );
    }
    // The first row has no interval behind it: its rates and CPU figures are left empty.
    let seconds = cpu.wall_s.max(1e-9);
    let interval = |v: f64| if first { Value::Null } else { json!(round(v)) };
    row.insert("acked_per_s".into(), interval(acked as f64 / seconds));
    row.insert("ack_p50_ms".into(), interval(latency.p50_ms()));
    row.insert("ack_p99_ms".into(), interval(latency.p99_ms()));
    row.insert("ack_max_ms".into(), interval(latency.max_ms()));
    // Why connections churn slower or faster: how long rounds took to open and close their
    // connections, what the writer's commits cost, how many messages replays sent.
    // A round can open in one interval and close in the next: each column has its own count.
    let slowest = |histogram: &Histogram| match histogram.take() {
        (_, 0) => Value::Null,
        (summary, _) => json!(round(summary.max_ms())),
    };
    row.insert("churn_open_max_ms".into(), slowest(&shared.churn_open));
    row.insert("churn_close_max_ms".into(), slowest(&shared.churn_close));
    let now = metrics.as_deref().and_then(ServerTotals::read);
    if let (Some(now), Some(before)) = (now, *totals) {
        let commits = now.commits - before.commits;
        let commit_ms = (now.commit_s - before.commit_s) * 1e3 / commits.max(1.0);
        row.insert("commit_mean_ms".into(), interval(commit_ms));
        row.insert("commits_per_s".into(), interval(commits / seconds));
        row.insert(
            "replayed_per_s".into(),
            interval((now.replayed - before.replayed) / seconds),
        );
    }
    *totals = now;
    row.insert("errors".into(), json!(errors));
    row.insert(
        "server_cores".into(),
        cpu.server_s.map_or(Value::Null, |s| interval(s / seconds)),
    );
    row.insert("bench_cores".into(), interval(cpu.bench_cores()));
    row.insert(
        "others_cores".into(),
        cpu.others_cores().map_or(Value::Null, interval),
    );
    if let Ok(load) = load_average() {
        row.insert("load1".into(), json!(load));
    }
    row
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Sums the series up: RSS at start, peak and end, how it grew in each half, ack p99 drift.
fn summarize_samples(report: &mut Report, rows: &[Map<String, Value>]) {
    let column = |key: &str| -> Vec<f64> {
        rows.iter()
            .filter_map(|r| r.get(key).and_then(Value::as_f64))
            .collect()
    };
    let rss = column("rss_mb");
    if let (Some(first), Some(last)) = (rss.first(), rss.last()) {
        let peak = rss.iter().copied().fold(0.0, f64::max);
        report.metric(
            "rss_start_mb",
            "server RSS at the start",
            *first,
            "MB",
            Better::Lower,
        );
        report.metric(
            "rss_max_sampled_mb",
            "server RSS, highest sample",
            peak,
            "MB",
            Better::Lower,
        );
        report.metric(
            "rss_end_mb",
            "server RSS at the end (before the final replay)",
            *last,
            "MB",
            Better::Lower,
        );
        let mid = rss[rss.len() / 2];
        report.metric(
            "rss_growth_second_half_mb",
            "server RSS growth over the second half",
            last - mid,
            "MB",
            Better::Lower,
        );
    }
    // The first row is taken before any ack (it has no p99).
    let p99 = column("ack_p99_ms");
    if !p99.is_empty() {
        let quarter = (p99.len() / 4).max(1);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        report.metric(
            "ack_p99_first_quarter_ms",
            "ack p99, mean of the first quarter's intervals",
            mean(&p99[..quarter]),
            "ms",
            Better::Lower,
        );
        report.metric(
            "ack_p99_last_quarter_ms",
            "ack p99, mean of the last quarter's intervals",
            mean(&p99[p99.len() - quarter..]),
            "ms",
            Better::Lower,
        );
        report.metric(
            "ack_p99_worst_interval_ms",
            "ack p99, worst interval",
            p99.iter().copied().fold(0.0, f64::max),
            "ms",
            Better::Lower,
        );
    }
    let files = column("open_files");
    if let (Some(first), Some(max)) = (files.first(), files.iter().copied().reduce(f64::max)) {
        report.metric(
            "open_files_start",
            "server open files at the start",
            *first,
            "",
            Better::Neither,
        );
        report.metric(
            "open_files_max",
            "server open files, highest sample",
            max,
            "",
            Better::Lower,
        );
    }
    let others = column("others_cores");
    if !others.is_empty() {
        let mean = others.iter().sum::<f64>() / others.len() as f64;
        report.metric(
            "others_cores_mean",
            "other processes' CPU, mean over the samples",
            mean,
            "cores",
            Better::Neither,
        );
    }
}

/// The outcome of the final check.
struct FinalCheck {
    acked: u64,
    stored_once: u64,
    missing: u64,
    duplicated: u64,
    wrong_id: u64,
    unacked_stored: u64,
    replayed: Replayed,
    replay_s: f64,
}

impl FinalCheck {
    fn report(&self, report: &mut Report) {
        report.metric(
            "final_acked",
            "final check: acked messages",
            self.acked as f64,
            "msgs",
            Better::Neither,
        );
        report.metric(
            "final_stored_once",
            "final check: acked messages stored exactly once",
            self.stored_once as f64,
            "msgs",
            Better::Neither,
        );
        report.metric(
            "final_replayed",
            "final check: messages in the replay from 0",
            self.replayed.messages as f64,
            "msgs",
            Better::Neither,
        );
        report.metric(
            "final_replay_s",
            "final check: replay of everything",
            self.replay_s,
            "s",
            Better::Lower,
        );
        report.metric(
            "final_unacked_stored",
            "final check: messages stored whose ack never came (a stop mid-send)",
            self.unacked_stored as f64,
            "msgs",
            Better::Neither,
        );
        for (n, what) in [
            (self.missing, "acked messages are missing"),
            (self.duplicated, "messages are stored more than once"),
            (
                self.wrong_id,
                "acked messages are stored under another id than their ack's",
            ),
            (self.replayed.gaps, "gaps in the final replay"),
            (self.replayed.repeats, "repeated ids in the final replay"),
        ] {
            if n > 0 {
                report.problems.push(format!("final check: {n} {what}"));
            }
        }
    }
}

/// Replays everything and matches it against the acks.
async fn final_check(
    shared: &Shared,
    results: &[SenderResult],
    newest: u64,
    timeout: Duration,
) -> anyhow::Result<FinalCheck> {
    // How often each sender's sequence number was stored (one slot past the acked ones, for
    // a message whose ack never came).
    let mut counts: Vec<Vec<u8>> = results
        .iter()
        .map(|r| vec![0; r.acked_ids.len() + 1])
        .collect();
    let (mut duplicated, mut wrong_id) = (0u64, 0u64);
    let started = Instant::now();
    let replayed = replay(&shared.ws_url, 0, newest, timeout, |content, id| {
        let Some((client, seq)) = parse_content(content, &shared.nonce) else {
            return;
        };
        let seq = usize::try_from(seq).unwrap_or(usize::MAX);
        let Some(count) = counts.get_mut(client).and_then(|c| c.get_mut(seq)) else {
            // A sequence number past the last one sent: cannot be.
            duplicated += 1;
            return;
        };
        if *count > 0 {
            duplicated += 1;
        }
        *count = count.saturating_add(1);
        let acked_id = results[client].acked_ids.get(seq).copied().unwrap_or(0);
        if acked_id != 0 && acked_id != id {
            wrong_id += 1;
        }
    })
    .await?;
    let mut check = FinalCheck {
        acked: 0,
        stored_once: 0,
        missing: 0,
        duplicated,
        wrong_id,
        unacked_stored: 0,
        replayed,
        replay_s: started.elapsed().as_secs_f64(),
    };
    for (r, counts) in results.iter().zip(&counts) {
        let acked = r.acked_ids.len();
        check.acked += acked as u64;
        for &count in &counts[..acked] {
            match count {
                0 => check.missing += 1,
                1 => check.stored_once += 1,
                _ => {}
            }
        }
        if counts[acked] > 0 {
            check.unacked_stored += 1;
        }
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents() {
        assert_eq!(parse_content("s.abc.3.17.xxxx", "abc"), Some((3, 17)));
        assert_eq!(parse_content("s.abd.3.17.xxxx", "abc"), None);
        assert_eq!(parse_content("p.abc.3.17.", "abc"), None);
    }
}
