//! `ingest`: C clients each send M messages with a clientOffset, one at a time, awaiting each
//! ack before the next; every client also receives every broadcast, and the bench checks that
//! each one got every message exactly once, in increasing id order. With several URLs (the
//! nodes of a cluster) the clients are spread over them in turn; a `--history` prefill goes to
//! the first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use tokio::task::JoinSet;

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
    #[arg(short = 'c', long, default_value_t = 50)]
    pub clients: usize,

    /// Messages each client sends (sequentially, each after the previous ack).
    #[arg(short = 'm', long, default_value_t = 100)]
    pub messages: usize,

    /// Content size in bytes (at least the tag the bench needs, ~20 bytes).
    #[arg(long, default_value_t = 32)]
    pub size: usize,

    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,

    /// Store this many messages first (4 connections, 64 in flight each; not measured), so
    /// ingest runs on a database that already holds a history. The clients then connect at
    /// the newest id (they replay none of it).
    #[arg(long, default_value_t = 0)]
    pub history: u64,
}

/// What one client saw.
#[derive(Default)]
struct ClientResult {
    acked: u64,
    ack_errors: u64,
    duplicate_acks: u64,
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
        ack_latency: Histogram::new(),
        deadline: tokio::time::Instant::now() + Duration::from_secs(args.timeout),
    });
    let expected = (shared.clients * shared.messages) as u64;
    let counter = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("acked", expected, counter.clone());

    let misses = CacheMisses::start(&target.urls).await;
    let meter = CpuMeter::start(&target.pids);
    let start = Instant::now();
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
    let my_offset = |seq: usize| format!("{}-{me}-{seq}", shared.nonce);
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
                    AckBody::Empty => {}
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
            ack_latency: Histogram::new(),
            deadline: tokio::time::Instant::now(),
        };
        let c = content(&shared, 1, 2);
        assert_eq!(c.len(), 40);
        assert_eq!(parse_content(&c, "abc123"), Some((1, 2)));
        assert_eq!(parse_content(&c, "zzz"), None);
    }
}
