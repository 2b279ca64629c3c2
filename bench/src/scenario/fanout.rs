//! `fanout`: R receivers, one sender at a fixed rate (open loop: it never waits for acks). Each
//! content carries its send time; receivers record the delivery latency. With several rates
//! the run is a sweep that stops at the first rate whose p99 reaches `--stop-p99-ms` or that
//! loses a message, and reports the highest rate that stayed under it. With several URLs (the
//! nodes of a cluster) the receivers are spread over them in turn and the sender is on the
//! first, so most deliveries cross from one node to another.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Target, connect_many, nonce, padded, summarize_errors};
use crate::conn::{Buffers, Conn};
use crate::frame::{self, AckBody, Frame, leading_u64};
use crate::procfs::CpuMeter;
use crate::progress::Progress;
use crate::report::{Better, Report};
use crate::stats::Histogram;

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Receiving clients.
    #[arg(short = 'r', long, default_value_t = 500, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub receivers: usize,

    /// Send rate(s) in messages/s; several (comma-separated) make a sweep.
    #[arg(long, value_delimiter = ',', default_value = "50", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub rate: Vec<u64>,

    /// Seconds of sending at each rate.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub duration: u64,

    /// Content size in bytes.
    #[arg(long, default_value_t = 32, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16_777_216))]
    pub size: usize,

    /// A sweep stops after the first rate whose delivery p99 reaches this.
    #[arg(long, default_value_t = 100.0, value_parser = super::positive_f64)]
    pub stop_p99_ms: f64,

    /// Seconds to wait after the last send of a rate for every delivery.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub drain: u64,
}

/// Deliveries of one rate.
struct Step {
    latency: Histogram,
    delivered: AtomicU64,
    /// Microseconds since `Shared::base` of the last delivery.
    last_us: AtomicU64,
}

struct Shared {
    base: Instant,
    nonce: String,
    steps: Vec<Step>,
    /// The first sequence number of each step.
    starts: Vec<u64>,
    /// Sequence numbers in the whole run.
    total: u64,
    repeated: AtomicU64,
    out_of_order: AtomicU64,
}

impl Shared {
    fn now_us(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// `f.NONCE.SEQ.SENT_US.` padded.
fn parse_content(content: &str, nonce: &str) -> Option<(u64, u64)> {
    let rest = content
        .strip_prefix("f.")?
        .strip_prefix(nonce)?
        .strip_prefix('.')?;
    let (seq, rest) = leading_u64(rest)?;
    let (sent_us, _) = leading_u64(rest.strip_prefix('.')?)?;
    Some((seq, sent_us))
}

pub async fn run(args: &FanoutArgs, target: &Target) -> anyhow::Result<Report> {
    let mut report = Report::new("fanout", &target.name);
    report.param("receivers", args.receivers);
    report.param("rates", args.rate.clone());
    report.param("seconds_per_rate", args.duration);
    report.param("content_bytes", args.size);
    let (conns, errors) = connect_many(
        &target.ws_urls(),
        args.receivers,
        0,
        Buffers::Busy,
        64,
        "receivers",
    )
    .await;
    if let Some(e) = summarize_errors("receiver connections", &errors) {
        report.problems.push(e);
    }
    let receivers = conns.len() as u64;
    anyhow::ensure!(
        receivers > 0,
        "no receiver could connect to {}",
        target.name
    );
    let mut sender = Conn::connect(&target.ws_url(), 0, Buffers::Busy).await?;

    let mut starts = Vec::new();
    let mut next = 0;
    for rate in &args.rate {
        starts.push(next);
        next += rate * args.duration;
    }
    let shared = Arc::new(Shared {
        base: Instant::now(),
        nonce: nonce(),
        steps: args
            .rate
            .iter()
            .map(|_| Step {
                latency: Histogram::new(),
                delivered: AtomicU64::new(0),
                last_us: AtomicU64::new(0),
            })
            .collect(),
        starts,
        total: next,
        repeated: AtomicU64::new(0),
        out_of_order: AtomicU64::new(0),
    });
    let stop = CancellationToken::new();
    let mut set = JoinSet::new();
    for conn in conns {
        let (shared, stop) = (shared.clone(), stop.clone());
        set.spawn(receiver(conn, shared, stop));
    }

    let sweep = args.rate.len() > 1;
    let mut best_ok: Option<u64> = None;
    let mut all_ok = true;
    for (i, &rate) in args.rate.iter().enumerate() {
        let suffix = if sweep {
            format!("@{rate}")
        } else {
            String::new()
        };
        let outcome = send_step(&mut sender, &shared, i, rate, args, receivers, &target.pids).await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                report
                    .problems
                    .push(format!("sender at {rate} msgs/s: {e:#}"));
                all_ok = false;
                break;
            }
        };
        let step = &shared.steps[i];
        let s = step.latency.summary();
        let delivered = step.delivered.load(Ordering::Relaxed);
        let expected = outcome.sent * receivers;
        let lost = expected.saturating_sub(delivered);
        let window_s =
            (step.last_us.load(Ordering::Relaxed) as f64 / 1e6 - outcome.started_s).max(1e-9);
        report.latency("delivery", "delivery latency", &s, &suffix);
        report.metric(
            format!("deliveries_per_s{suffix}"),
            format!("deliveries/s{suffix}"),
            delivered as f64 / window_s,
            "msg/s",
            Better::Higher,
        );
        report.metric(
            format!("sent_per_s{suffix}"),
            format!("achieved send rate{suffix}"),
            outcome.sent as f64 / outcome.send_s.max(1e-9),
            "msg/s",
            Better::Neither,
        );
        report.metric(
            format!("lost{suffix}"),
            format!("lost deliveries{suffix}"),
            lost as f64,
            "",
            Better::Lower,
        );
        report.latency("ack", "sender ack latency", &outcome.ack, &suffix);
        report.cpu(&outcome.cpu, delivered as f64, "delivery", &suffix);
        if lost > 0 {
            report.problems.push(format!(
                "{lost} of {expected} deliveries missing {}s after the last send at {rate} msgs/s",
                args.drain
            ));
        }
        if outcome.acked < outcome.sent {
            report.problems.push(format!(
                "only {} of {} sends acked at {rate} msgs/s",
                outcome.acked, outcome.sent
            ));
        }
        let kept_rate = outcome.send_s <= args.duration as f64 * 1.05 + 0.05;
        if !kept_rate {
            report.notes.push(format!(
                "the sender could not keep {rate} msgs/s ({:.1} s to send {})",
                outcome.send_s, outcome.sent
            ));
        }
        let ok = lost == 0 && s.p99_ms() < args.stop_p99_ms && kept_rate;
        if ok {
            best_ok = Some(rate);
        } else {
            all_ok = false;
            if sweep {
                report.notes.push(format!(
                    "sweep stopped at {rate} msgs/s (p99 {:.1} ms, {lost} lost)",
                    s.p99_ms()
                ));
            }
            break;
        }
    }
    stop.cancel();
    while set.join_next().await.is_some() {}
    sender.close().await;

    let repeated = shared.repeated.load(Ordering::Relaxed);
    if repeated > 0 {
        report
            .problems
            .push(format!("{repeated} deliveries received twice"));
    }
    let out_of_order = shared.out_of_order.load(Ordering::Relaxed);
    if out_of_order > 0 {
        report.problems.push(format!(
            "{out_of_order} deliveries arrived with an id not above the previous one"
        ));
    }
    if sweep {
        report.metric(
            "max_rate_ok",
            format!(
                "highest rate with p99 < {} ms and nothing lost",
                args.stop_p99_ms
            ),
            best_ok.unwrap_or(0) as f64,
            "msg/s",
            Better::Higher,
        );
        if all_ok {
            report.notes.push(
                "every rate of the sweep passed: the highest passing rate is a lower bound".into(),
            );
        }
    }
    Ok(report)
}

/// What sending one rate gave.
struct StepOutcome {
    sent: u64,
    acked: u64,
    /// When the step started, in seconds since `Shared::base`.
    started_s: f64,
    send_s: f64,
    ack: crate::stats::Summary,
    cpu: crate::procfs::CpuUse,
}

async fn send_step(
    sender: &mut Conn,
    shared: &Shared,
    step: usize,
    rate: u64,
    args: &FanoutArgs,
    receivers: u64,
    pids: &[u32],
) -> anyhow::Result<StepOutcome> {
    let n = rate * args.duration;
    let first = shared.starts[step];
    let ack_latency = Histogram::new();
    let mut sent_at: Vec<Instant> = Vec::with_capacity(n as usize);
    let counter = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(&format!("{rate}/s"), n * receivers, counter.clone());
    let meter = CpuMeter::start(pids);
    let started = Instant::now();
    let started_s = shared.base.elapsed().as_secs_f64();
    let period = Duration::from_secs_f64((1.0 / rate.max(1) as f64).max(0.001));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let send_deadline = tokio::time::Instant::now() + Duration::from_secs(args.duration * 3 + 5);
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut send_s = 0.0;
    while sent < n {
        tokio::select! {
            _ = tick.tick() => {
                let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(n);
                while sent < due {
                    let seq = first + sent;
                    let content = padded(
                        format!("f.{}.{seq}.{}.", shared.nonce, shared.now_us()),
                        args.size,
                    );
                    sent_at.push(Instant::now());
                    sender.emit_chat(&content, &format!("f{}-{seq}", shared.nonce), Some(seq)).await?;
                    sent += 1;
                }
                if sent == n {
                    send_s = started.elapsed().as_secs_f64();
                }
            }
            text = sender.recv() => {
                acked += on_sender_frame(text?, first, &sent_at, &ack_latency)?;
            }
            () = tokio::time::sleep_until(send_deadline) => {
                send_s = started.elapsed().as_secs_f64();
                break;
            }
        }
    }
    // Wait for every delivery (and ack), bounded.
    let expected = sent * receivers;
    let drain_deadline = tokio::time::Instant::now() + Duration::from_secs(args.drain);
    let delivered = || shared.steps[step].delivered.load(Ordering::Relaxed);
    let mut poll = tokio::time::interval(Duration::from_millis(5));
    while delivered() < expected || acked < sent {
        counter.store(delivered(), Ordering::Relaxed);
        tokio::select! {
            _ = poll.tick() => {}
            text = sender.recv() => {
                acked += on_sender_frame(text?, first, &sent_at, &ack_latency)?;
            }
            () = tokio::time::sleep_until(drain_deadline) => break,
        }
    }
    let cpu = meter.stop();
    progress.finish();
    Ok(StepOutcome {
        sent,
        acked,
        started_s,
        send_s,
        ack: ack_latency.summary(),
        cpu,
    })
}

/// Handles a frame on the sender's connection; returns 1 for an ack of this step.
fn on_sender_frame(
    text: Option<tokio_tungstenite::tungstenite::Utf8Bytes>,
    first: u64,
    sent_at: &[Instant],
    ack_latency: &Histogram,
) -> anyhow::Result<u64> {
    let Some(text) = text else {
        bail!("the server closed the sender's connection");
    };
    match frame::parse(text.as_str()) {
        Frame::Ack { ack_id, body } => {
            if body == AckBody::Error {
                bail!("the server refused a message: {}", text.as_str());
            }
            let at = ack_id
                .checked_sub(first)
                .and_then(|i| sent_at.get(i as usize));
            if let Some(at) = at {
                ack_latency.record(at.elapsed());
                return Ok(1);
            }
            Ok(0)
        }
        Frame::Close | Frame::Disconnect => bail!("the server disconnected the sender"),
        _ => Ok(0),
    }
}

async fn receiver(mut conn: Conn, shared: Arc<Shared>, stop: CancellationToken) {
    // One bit per sequence number of the whole run: deliveries are counted once.
    let mut seen = vec![0u64; (shared.total as usize).div_ceil(64)];
    let mut last_id = 0u64;
    loop {
        let text = tokio::select! {
            () = stop.cancelled() => break,
            text = conn.recv() => text,
        };
        let Ok(Some(text)) = text else {
            break; // counted as lost deliveries
        };
        let Frame::Chat { content, id } = frame::parse(text.as_str()) else {
            continue;
        };
        if id <= last_id {
            shared.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        last_id = last_id.max(id);
        let Some((seq, sent_us)) = parse_content(content, &shared.nonce) else {
            continue;
        };
        let now = shared.now_us();
        let Some(word) = seen.get_mut((seq / 64) as usize) else {
            continue;
        };
        let bit = 1u64 << (seq % 64);
        if *word & bit != 0 {
            shared.repeated.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        *word |= bit;
        let i = shared
            .starts
            .partition_point(|&s| s <= seq)
            .saturating_sub(1);
        if let Some(step) = shared.steps.get(i) {
            step.latency.record_us(now.saturating_sub(sent_us));
            step.delivered.fetch_add(1, Ordering::Relaxed);
            step.last_us.fetch_max(now, Ordering::Relaxed);
        }
    }
    conn.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_round_trip() {
        let c = padded("f.abc.12.345678.".into(), 40);
        assert_eq!(parse_content(&c, "abc"), Some((12, 345678)));
        assert_eq!(parse_content(&c, "abd"), None);
    }
}
