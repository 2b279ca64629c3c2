//! `startup`: stores N messages through a fresh server, stops it (SIGTERM, a clean shutdown),
//! then starts it again on the same database and times, from the moment the process is spawned:
//! the "ready" line on stdout, the first websocket handshake, and the first replayed message
//! (the newest one, asked for with `serverOffset = last - 1`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use super::prefill::{PrefillPlan, prefill};
use crate::conn::{Buffers, Conn, ws_url};
use crate::frame::{self, Frame};
use crate::procfs::{Who, rss_bytes};
use crate::report::{Better, Report};
use crate::server::{Kind, Launcher, free_port};
use crate::stats::median;

#[derive(Debug, Clone, Args)]
pub struct StartupArgs {
    /// Messages stored before the restarts.
    #[arg(short = 'n', long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub messages: u64,

    /// Messages stored when the server is the reference (it stores well under 1,000 msgs/s, and
    /// its start-up reads none of them); defaults to --messages.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub reference_messages: Option<u64>,

    /// Which server to start (compare mode runs both).
    #[arg(long, value_enum, default_value = "ours")]
    pub server: Kind,

    /// Restarts to time.
    #[arg(long, default_value_t = 5, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000))]
    pub runs: usize,

    /// Content size of the stored messages, in bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16_777_216))]
    pub size: usize,

    /// Connections used to store the history.
    #[arg(long, default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000))]
    pub prefill_connections: usize,

    /// Messages in flight per prefill connection.
    #[arg(long, default_value_t = 256, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub window: usize,
}

/// How long a restarted server may take to answer.
const FIRST_ANSWER: Duration = Duration::from_secs(60);

pub async fn run(
    args: &StartupArgs,
    launcher: &Launcher,
    kind: Kind,
    dir: &Path,
) -> anyhow::Result<Report> {
    let mut report = Report::new("startup", kind.name());
    let messages = match kind {
        Kind::Ours => args.messages,
        Kind::Reference => args.reference_messages.unwrap_or(args.messages),
    };
    report.param("messages", messages);
    report.param("content_bytes", args.size);
    let db = dir.join(match kind {
        Kind::Ours => "startup.redb",
        Kind::Reference => "startup.sqlite",
    });
    let log = dir.join(format!("startup-{}.log", kind.name()));

    let server = launcher.start(kind, &db, free_port()?, &log).await?;
    let plan = PrefillPlan {
        messages,
        connections: args.prefill_connections,
        window: args.window,
        size: args.size,
    };
    let stored = prefill(&ws_url(&server.url), plan).await;
    let status = server.stop().await?;
    let stored = stored?;
    // The reference has no SIGTERM handler: only ours must exit cleanly.
    if kind == Kind::Ours && !status.success() {
        report.problems.push(format!(
            "the server exited with {status} on SIGTERM after the prefill"
        ));
    }
    stored.report_rate(&mut report, &plan);
    let db_bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    report.metric(
        "db_mb",
        "database size",
        db_bytes as f64 / 1e6,
        "MB",
        Better::Neither,
    );
    report.metric(
        "db_bytes_per_msg",
        "database bytes per message",
        db_bytes as f64 / stored.acked.max(1) as f64,
        "B",
        Better::Lower,
    );
    if stored.acked < messages {
        report.problems.push(format!(
            "only {} of {messages} prefill messages acked",
            stored.acked
        ));
    }

    let (mut ready, mut handshake, mut first, mut rss) = (vec![], vec![], vec![], vec![]);
    for _ in 0..args.runs {
        let spawned = Instant::now();
        let mut server = launcher.start(kind, &db, free_port()?, &log).await?;
        ready.push(ms(server.ready_after));
        let answered = tokio::time::timeout(
            FIRST_ANSWER,
            first_answer(&ws_url(&server.url), stored.last_id, spawned),
        )
        .await
        .context("no answer from the restarted server");
        rss.push(rss_bytes(Who::Pid(server.pid)).unwrap_or(0) as f64 / 1e6);
        if let Some(status) = server.exited() {
            bail!(
                "the server exited ({status}) after a restart\n{}",
                server.log_tail()
            );
        }
        server.stop().await?;
        let (h, f) = answered??;
        handshake.push(ms(h));
        first.push(ms(f));
    }
    let med = |v: &[f64]| median(v).unwrap_or(0.0);
    report.metric(
        "ready_ms",
        format!("spawn to ready line (median of {})", args.runs),
        med(&ready),
        "ms",
        Better::Lower,
    );
    report.metric(
        "first_handshake_ms",
        "spawn to first websocket handshake (median)",
        med(&handshake),
        "ms",
        Better::Lower,
    );
    report.metric(
        "first_message_ms",
        "spawn to the newest message replayed (median)",
        med(&first),
        "ms",
        Better::Lower,
    );
    report.metric(
        "first_handshake_max_ms",
        "spawn to first websocket handshake (worst)",
        handshake.iter().copied().fold(0.0, f64::max),
        "ms",
        Better::Lower,
    );
    report.metric(
        "server_rss_mb",
        "server RSS after start-up",
        med(&rss),
        "MB",
        Better::Lower,
    );
    report.notes.push(format!(
        "ready line times (ms): {ready:.1?}; handshakes: {handshake:.1?}"
    ));
    Ok(report)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Connects asking for the newest message only; returns the times (since `spawned`) of the
/// completed handshake and of that message's arrival.
async fn first_answer(
    ws_url: &str,
    last_id: u64,
    spawned: Instant,
) -> anyhow::Result<(Duration, Duration)> {
    let mut conn = Conn::connect(ws_url, last_id.saturating_sub(1), Buffers::Busy).await?;
    let handshake = spawned.elapsed();
    loop {
        let text = conn.recv().await?.context("closed before replaying")?;
        if let Frame::Chat { id, .. } = frame::parse(text.as_str()) {
            if id != last_id {
                bail!("expected the newest message {last_id} first, got {id}");
            }
            let first = spawned.elapsed();
            conn.close().await;
            return Ok((handshake, first));
        }
    }
}
