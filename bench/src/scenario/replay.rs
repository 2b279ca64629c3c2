//! `replay`: stores a history of N messages through the server, then times fresh clients
//! receiving all of it from offset 0, and the last `--recent` messages from a recent offset.
//! With several URLs (the nodes of a cluster) the history is stored through the first and the
//! replays read from the one `--replay-from` picks.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use super::Target;
use super::prefill::{PrefillPlan, prefill};
use crate::conn::{Buffers, Conn};
use crate::frame::{self, Frame};
use crate::procfs::CpuMeter;
use crate::report::{Better, Report};
use crate::server_metrics::CacheMisses;
use crate::stats::median;

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Messages stored before measuring.
    #[arg(short = 'n', long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub messages: u64,

    /// Content size of the stored messages, in bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16_777_216))]
    pub size: usize,

    /// Full replays (offset 0) to time.
    #[arg(long, default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000))]
    pub runs: usize,

    /// How many of the newest messages the recent replays ask for.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub recent: u64,

    /// Recent replays to time.
    #[arg(long, default_value_t = 20, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=100_000))]
    pub recent_runs: usize,

    /// Connections used to store the history.
    #[arg(long, default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000))]
    pub prefill_connections: usize,

    /// Messages in flight per prefill connection.
    #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub window: usize,

    /// Full replays stop at this id (the oldest N messages) instead of the newest: with a
    /// long history, the oldest pages are the ones no cache holds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub first: Option<u64>,

    /// Which server of `--url` the timed replays read from, counting from 0 (the history is
    /// always stored through the first).
    #[arg(long, default_value_t = 0, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1_000))]
    pub replay_from: usize,

    /// Give up on one replay after this many seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
}

/// One timed replay.
pub(super) struct Run {
    pub handshake: Duration,
    pub all: Duration,
    pub received: u64,
    pub missing: u64,
    pub repeated: u64,
    pub server_cpu_s: Option<f64>,
    /// Each server process's CPU seconds (when there are several).
    pub server_cpu_each_s: Vec<Option<f64>>,
    pub others_cores: Option<f64>,
}

pub async fn run(args: &ReplayArgs, target: &Target) -> anyhow::Result<Report> {
    let mut report = Report::new("replay", &target.name);
    report.param("messages", args.messages);
    report.param("content_bytes", args.size);
    let replay_url = target.urls.get(args.replay_from).with_context(|| {
        format!(
            "--replay-from {}: there are {} URLs",
            args.replay_from,
            target.urls.len()
        )
    })?;
    if target.urls.len() > 1 {
        report.param("replay_from", replay_url.as_str());
    }
    let ws_url = crate::conn::ws_url(replay_url);
    let plan = PrefillPlan {
        messages: args.messages,
        connections: args.prefill_connections,
        window: args.window,
        size: args.size,
    };
    let stored = prefill(&target.ws_url(), plan).await?;
    stored.report_rate(&mut report, &plan);
    if stored.acked < args.messages || stored.last_id < args.messages {
        report.problems.push(format!(
            "prefill: {} acked, last id {} (expected {})",
            stored.acked, stored.last_id, args.messages
        ));
    }
    // Let the server settle (writer idle, buffers flushed) before timing.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let timeout = Duration::from_secs(args.timeout);
    let last = stored.last_id;
    let through = args.first.map_or(last, |first| first.min(last));
    let label = match args.first {
        Some(_) => format!("replay of the oldest {through} from offset 0"),
        None => "full replay".to_string(),
    };
    if let Some(first) = args.first {
        report.param("first", first);
    }
    let misses = CacheMisses::start(std::slice::from_ref(replay_url)).await;
    let mut full = Vec::new();
    for _ in 0..args.runs {
        full.push(replay_once(&ws_url, 0, through, &target.pids, timeout).await?);
    }
    summarize(&mut report, "replay_all", &label, &full, through);
    misses
        .report(
            &mut report,
            (args.runs as u64 * through) as f64,
            "msg",
            "_replay_all",
        )
        .await;
    let from = last.saturating_sub(args.recent);
    let misses = CacheMisses::start(std::slice::from_ref(replay_url)).await;
    let mut recent = Vec::new();
    for _ in 0..args.recent_runs {
        recent.push(replay_once(&ws_url, from, last, &target.pids, timeout).await?);
    }
    summarize(
        &mut report,
        "replay_recent",
        &format!("replay of the last {}", last - from),
        &recent,
        last - from,
    );
    misses
        .report(&mut report, args.recent_runs as f64, "replay", "_recent")
        .await;
    report.server_memory(&target.pids);
    Ok(report)
}

pub(super) fn summarize(report: &mut Report, key: &str, label: &str, runs: &[Run], expected: u64) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let all: Vec<f64> = runs.iter().map(|r| ms(r.all)).collect();
    let Some(med) = median(&all) else {
        return;
    };
    report.metric(
        format!("{key}_ms"),
        format!("{label} (median of {})", runs.len()),
        med,
        "ms",
        Better::Lower,
    );
    report.metric(
        format!("{key}_min_ms"),
        format!("{label} (best)"),
        all.iter().copied().fold(f64::INFINITY, f64::min),
        "ms",
        Better::Lower,
    );
    let hs: Vec<f64> = runs.iter().map(|r| ms(r.handshake)).collect();
    report.metric(
        format!("{key}_handshake_ms"),
        format!("{label}: connect + handshake (median)"),
        median(&hs).unwrap_or(0.0),
        "ms",
        Better::Lower,
    );
    report.metric(
        format!("{key}_msgs_per_s"),
        format!("{label}: msgs/s (median run)"),
        expected as f64 / (med / 1000.0).max(1e-9),
        "msg/s",
        Better::Higher,
    );
    let cpu: Vec<f64> = runs.iter().filter_map(|r| r.server_cpu_s).collect();
    if let Some(c) = median(&cpu) {
        report.metric(
            format!("{key}_server_cpu_ms"),
            format!("{label}: server CPU (median)"),
            c * 1000.0,
            "ms",
            Better::Lower,
        );
    }
    let processes = runs.first().map_or(0, |r| r.server_cpu_each_s.len());
    for p in (0..processes).filter(|_| processes > 1) {
        let cpu: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.server_cpu_each_s.get(p).copied().flatten())
            .collect();
        if let Some(c) = median(&cpu) {
            report.metric(
                format!("{key}_server_cpu_ms.p{}", p + 1),
                format!("{label}: server CPU (median): process {}", p + 1),
                c * 1000.0,
                "ms",
                Better::Neither,
            );
        }
    }
    let others: Vec<f64> = runs.iter().filter_map(|r| r.others_cores).collect();
    if let Some(o) = median(&others) {
        report.metric(
            format!("others_cpu_cores_{key}"),
            format!("{label}: other processes' CPU (median)"),
            o,
            "cores",
            Better::Neither,
        );
    }
    for (i, r) in runs.iter().enumerate() {
        if r.received != expected || r.missing > 0 || r.repeated > 0 {
            report.problems.push(format!(
                "{label} run {i}: received {} of {expected}, {} missing ids, {} repeated or out of order",
                r.received, r.missing, r.repeated
            ));
        }
    }
}

/// Connects at `offset` and reads until the message with id `last` arrives.
async fn replay_once(
    ws_url: &str,
    offset: u64,
    last: u64,
    pids: &[u32],
    timeout: Duration,
) -> anyhow::Result<Run> {
    let meter = CpuMeter::start(pids);
    let start = Instant::now();
    let mut conn = Conn::connect(ws_url, offset, Buffers::Busy).await?;
    let handshake = start.elapsed();
    let (mut received, mut missing, mut repeated, mut prev) = (0u64, 0u64, 0u64, offset);
    let deadline = tokio::time::Instant::now() + timeout;
    while prev < last {
        let text = match tokio::time::timeout_at(deadline, conn.recv()).await {
            Ok(Ok(Some(text))) => text,
            Ok(Ok(None)) => bail!("the server closed the replay after {received} messages"),
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("replay from {offset} timed out after {received} messages"),
        };
        match frame::parse(text.as_str()) {
            Frame::Chat { id, .. } => {
                received += 1;
                if id <= prev {
                    repeated += 1;
                } else {
                    missing += id - prev - 1;
                    prev = id;
                }
            }
            Frame::Close | Frame::Disconnect => bail!("disconnected during the replay"),
            _ => {}
        }
    }
    let all = start.elapsed();
    let cpu = meter.stop();
    conn.close().await;
    Ok(Run {
        handshake,
        all,
        received,
        missing,
        repeated,
        server_cpu_s: cpu.server_s,
        server_cpu_each_s: cpu.server_each_s.clone(),
        others_cores: cpu.others_cores(),
    })
}
