//! `idle`: opens idle connections in steps (e.g. 2,000 then 10,000), and reads the server's
//! resident memory at each step; the growth over the baseline divided by the connection count is
//! the memory one idle connection costs. The connections answer pings and are held for a while
//! at the last step, to see that the server keeps them all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Target, connect_many, summarize_errors};
use crate::conn::{Buffers, Conn};
use crate::procfs::{Who, rss_bytes};
use crate::report::{Better, Report};

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Connection counts to measure at, ascending (comma-separated; connections accumulate).
    #[arg(long, value_delimiter = ',', default_value = "2000,10000", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub conns: Vec<usize>,

    /// Seconds to wait at each step before reading the server's memory.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub settle: u64,

    /// Seconds to hold every connection at the last step (past one engine.io ping interval,
    /// 25 s, to see that the connections stay up).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub hold: u64,

    /// Handshakes in progress at once.
    #[arg(long, default_value_t = 128, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub concurrency: usize,
}

pub async fn run(args: &IdleArgs, target: &Target) -> anyhow::Result<Report> {
    let mut report = Report::new("idle", &target.name);
    let target = &target.first_only(&mut report);
    let pid = *target
        .pids
        .first()
        .context("idle needs the server's pid: pass --server-pid, or use compare")?;
    report.param("conns", args.conns.clone());
    let ws_urls = [target.ws_url()];
    let settle = Duration::from_secs(args.settle);

    tokio::time::sleep(settle).await;
    let baseline = rss_bytes(Who::Pid(pid))?;
    report.metric(
        "server_rss_mb@0",
        "server RSS with no connection",
        baseline as f64 / 1e6,
        "MB",
        Better::Lower,
    );

    let stop = CancellationToken::new();
    let dropped = Arc::new(AtomicU64::new(0));
    let mut holders = JoinSet::new();
    let mut held = 0usize;
    for &level in &args.conns {
        let missing = level.saturating_sub(held);
        let (conns, errors) = connect_many(
            &ws_urls,
            missing,
            0,
            Buffers::Small,
            args.concurrency,
            &format!("to {level}"),
        )
        .await;
        if let Some(e) = summarize_errors(&format!("connections (towards {level})"), &errors) {
            report.problems.push(e);
        }
        held += conns.len();
        for conn in conns {
            holders.spawn(hold(conn, stop.clone(), dropped.clone()));
        }
        tokio::time::sleep(settle).await;
        let rss = rss_bytes(Who::Pid(pid))?;
        let alive = held as u64 - dropped.load(Ordering::Relaxed);
        report.metric(
            format!("server_rss_mb@{level}"),
            format!("server RSS with {alive} connections"),
            rss as f64 / 1e6,
            "MB",
            Better::Lower,
        );
        report.metric(
            format!("rss_per_conn_kb@{level}"),
            format!("server RSS per connection at {alive}"),
            rss.saturating_sub(baseline) as f64 / 1024.0 / alive.max(1) as f64,
            "KiB",
            Better::Lower,
        );
    }

    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let rss = rss_bytes(Who::Pid(pid))?;
    let alive = held as u64 - dropped.load(Ordering::Relaxed);
    report.metric(
        "held",
        format!("connections still open after {} s", args.hold),
        alive as f64,
        "",
        Better::Higher,
    );
    report.metric(
        "server_rss_mb_after_hold",
        "server RSS after the hold",
        rss as f64 / 1e6,
        "MB",
        Better::Lower,
    );
    let wanted = args.conns.last().copied().unwrap_or(0) as u64;
    if alive < wanted {
        report.problems.push(format!(
            "{alive} of {wanted} connections held ({} opened, {} closed by the server)",
            held,
            dropped.load(Ordering::Relaxed)
        ));
    }
    stop.cancel();
    while holders.join_next().await.is_some() {}
    Ok(report)
}

/// Keeps one connection open (answering pings) until `stop`.
async fn hold(mut conn: Conn, stop: CancellationToken, dropped: Arc<AtomicU64>) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            frame = conn.recv() => {
                if !matches!(frame, Ok(Some(_))) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
    conn.close().await;
}
