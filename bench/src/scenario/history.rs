//! `history`: stores N messages, then pages through them with `history ({ before, limit })`
//! (a tidings extension: the tutorial's reference server has no such event). First one client
//! walks the whole history page by page, newest to oldest, as a reader scrolling up would,
//! checking that every id comes exactly once; then several clients ask for pages at random
//! positions. Old pages are read from the database, not from the tail cache, so this is
//! where the size of the database's page cache (`--db-cache-mb`) shows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;
use tokio::task::JoinSet;

use super::prefill::{PrefillPlan, prefill};
use super::{Target, XorShift};
use crate::conn::{Buffers, Conn};
use crate::frame::leading_u64;
use crate::procfs::CpuMeter;
use crate::report::{Better, Report};
use crate::server_metrics::CacheMisses;
use crate::stats::Histogram;

#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// Messages stored before measuring.
    #[arg(short = 'n', long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub messages: u64,

    /// Content size of the stored messages, in bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16_777_216))]
    pub size: usize,

    /// Messages per page (1 to 200; the chat page asks for 50).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=200))]
    pub limit: u64,

    /// Pages requested at random positions after the walk.
    #[arg(long, default_value_t = 4000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=10_000_000))]
    pub random: usize,

    /// Clients requesting the random pages at once (each one request at a time).
    #[arg(short = 'c', long, default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub clients: usize,

    /// Connections used to store the history.
    #[arg(long, default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000))]
    pub prefill_connections: usize,

    /// Messages in flight per prefill connection.
    #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub window: usize,

    /// Give up waiting for one page after this many seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
}

/// One page as the server answered it.
struct Page {
    /// Ascending ids.
    ids: Vec<u64>,
    has_more: bool,
}

/// A client that asks for pages, one at a time.
struct Pager {
    conn: Conn,
    next_ack: u64,
    timeout: Duration,
}

impl Pager {
    async fn connect(ws_url: &str, timeout: Duration) -> anyhow::Result<Self> {
        // `latest: 1`: replay only the newest message, not the whole history.
        let conn =
            Conn::connect_auth(ws_url, "{\"serverOffset\":0,\"latest\":1}", Buffers::Busy).await?;
        Ok(Self {
            conn,
            next_ack: 0,
            timeout,
        })
    }

    /// Asks for the `limit` messages below `before` (`None`: the newest) and waits for the
    /// answer, skipping any other frame.
    async fn page(&mut self, before: Option<u64>, limit: u64) -> anyhow::Result<Page> {
        let ack = self.next_ack;
        self.next_ack += 1;
        let query = match before {
            Some(b) => format!("{{\"before\":{b},\"limit\":{limit}}}"),
            None => format!("{{\"limit\":{limit}}}"),
        };
        self.conn
            .send_owned(format!("42{ack}[\"history\",{query}]"))
            .await?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let text = match tokio::time::timeout_at(deadline, self.conn.recv()).await {
                Ok(Ok(Some(text))) => text,
                Ok(Ok(None)) => bail!("the server closed the connection"),
                Ok(Err(e)) => return Err(e),
                Err(_) => bail!(
                    "no answer to history (before {before:?}) within {:?}",
                    self.timeout
                ),
            };
            let Some(rest) = text.as_str().strip_prefix("43") else {
                continue;
            };
            let Some((id, body)) = leading_u64(rest) else {
                continue;
            };
            if id == ack {
                return parse_page(body);
            }
        }
    }

    async fn close(self) {
        self.conn.close().await;
    }
}

/// `[{"messages":[{"id":..},..],"hasMore":bool}]`.
fn parse_page(body: &str) -> anyhow::Result<Page> {
    let value: Value = serde_json::from_str(body).context("history ack is not JSON")?;
    let answer = value.get(0).context("empty history ack")?;
    if let Some(error) = answer.get("error") {
        bail!("history refused: {error}");
    }
    let ids = answer
        .get("messages")
        .and_then(Value::as_array)
        .context("history ack without messages")?
        .iter()
        .map(|m| {
            m.get("id")
                .and_then(Value::as_u64)
                .context("message without id")
        })
        .collect::<anyhow::Result<Vec<u64>>>()?;
    let has_more = answer
        .get("hasMore")
        .and_then(Value::as_bool)
        .context("history ack without hasMore")?;
    Ok(Page { ids, has_more })
}

/// The ids a page below `before` must hold when ids `1..=last` are all stored.
fn expected_page(before: Option<u64>, limit: u64, last: u64) -> Vec<u64> {
    let top = before.map_or(last, |b| b.saturating_sub(1).min(last));
    let bottom = top.saturating_sub(limit) + 1;
    (bottom..=top).collect()
}

pub async fn run(args: &HistoryArgs, target: &Target) -> anyhow::Result<Report> {
    let mut report = Report::new("history", &target.name);
    let target = &target.first_only(&mut report);
    report.param("messages", args.messages);
    report.param("content_bytes", args.size);
    report.param("limit", args.limit);
    let ws_url = target.ws_url();
    let plan = PrefillPlan {
        messages: args.messages,
        connections: args.prefill_connections,
        window: args.window,
        size: args.size,
    };
    let stored = prefill(&ws_url, plan).await?;
    stored.report_rate(&mut report, &plan);
    let last = stored.last_id;
    // Ids 1..=last must all be there (a fresh database, no retention) for the checks.
    if stored.acked < args.messages || last != args.messages {
        report.problems.push(format!(
            "prefill: {} acked, last id {last} (expected {}): run on a fresh database",
            stored.acked, args.messages
        ));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let timeout = Duration::from_secs(args.timeout);

    // The walk: newest to oldest.
    let latency = Histogram::new();
    let mut pager = Pager::connect(&ws_url, timeout).await?;
    let misses = CacheMisses::start(&target.urls).await;
    let meter = CpuMeter::start(&target.pids);
    let start = Instant::now();
    let (mut before, mut pages, mut seen, mut wrong) = (None, 0u64, 0u64, 0u64);
    let most_pages = last / args.limit + 2;
    while pages < most_pages {
        let asked = Instant::now();
        let page = pager.page(before, args.limit).await?;
        latency.record(asked.elapsed());
        pages += 1;
        seen += page.ids.len() as u64;
        if page.ids != expected_page(before, args.limit, last) {
            wrong += 1;
        }
        match page.ids.first() {
            Some(&first) if page.has_more => before = Some(first),
            _ => break,
        }
    }
    let walk = start.elapsed();
    let cpu = meter.stop();
    pager.close().await;
    report.metric(
        "walk_s",
        format!("walk of the whole history, {} per page", args.limit),
        walk.as_secs_f64(),
        "s",
        Better::Lower,
    );
    report.metric(
        "walk_pages_per_s",
        "walk: pages/s",
        pages as f64 / walk.as_secs_f64().max(1e-9),
        "pages/s",
        Better::Higher,
    );
    report.latency("walk_page", "walk: page", &latency.summary(), "");
    report.cpu(&cpu, pages as f64, "page", "_walk");
    misses
        .report(&mut report, pages as f64, "page", "_walk")
        .await;
    if seen != last || wrong > 0 {
        report.problems.push(format!(
            "walk: {seen} of {last} messages in {pages} pages, {wrong} pages not the expected ids"
        ));
    }

    // Random pages, several clients at once.
    if args.random > 0 && last > 0 {
        let latency = Arc::new(Histogram::new());
        let clients = args.clients.clamp(1, args.random);
        let misses = CacheMisses::start(&target.urls).await;
        let meter = CpuMeter::start(&target.pids);
        let start = Instant::now();
        let mut set = JoinSet::new();
        for c in 0..clients {
            let quota = (args.random + clients - 1 - c) / clients;
            let (url, latency, limit) = (ws_url.clone(), latency.clone(), args.limit);
            set.spawn(async move {
                let mut pager = Pager::connect(&url, timeout).await?;
                let mut rng = XorShift::new(c as u64 + 1);
                let mut wrong = 0u64;
                for _ in 0..quota {
                    let before = 2 + rng.next() % last;
                    let asked = Instant::now();
                    let page = pager.page(Some(before), limit).await?;
                    latency.record(asked.elapsed());
                    if page.ids != expected_page(Some(before), limit, last) {
                        wrong += 1;
                    }
                }
                pager.close().await;
                anyhow::Ok(wrong)
            });
        }
        let mut wrong = 0;
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(Ok(w)) => wrong += w,
                Ok(Err(e)) => report.problems.push(format!("random pages: {e:#}")),
                Err(e) => report.problems.push(format!("random pages task: {e}")),
            }
        }
        let elapsed = start.elapsed();
        let cpu = meter.stop();
        let done = latency.count();
        report.metric(
            "random_pages_per_s",
            format!("random pages/s ({clients} clients)"),
            done as f64 / elapsed.as_secs_f64().max(1e-9),
            "pages/s",
            Better::Higher,
        );
        report.latency("random_page", "random page", &latency.summary(), "");
        report.cpu(&cpu, done as f64, "page", "_random");
        misses
            .report(&mut report, done as f64, "page", "_random")
            .await;
        if wrong > 0 {
            report
                .problems
                .push(format!("{wrong} random pages were not the expected ids"));
        }
    }
    report.server_memory(&target.pids);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_pages_and_answers() {
        assert_eq!(expected_page(None, 3, 10), vec![8, 9, 10]);
        assert_eq!(expected_page(Some(8), 3, 10), vec![5, 6, 7]);
        assert_eq!(expected_page(Some(3), 5, 10), vec![1, 2]);
        assert_eq!(expected_page(Some(1), 5, 10), Vec::<u64>::new());
        let page = parse_page(r#"[{"messages":[{"id":4,"content":"a"},{"id":5}],"hasMore":true}]"#)
            .expect("a page");
        assert_eq!((page.ids, page.has_more), (vec![4, 5], true));
        assert!(parse_page(r#"[{"error":"invalid limit"}]"#).is_err());
        let mut rng = XorShift::new(1);
        assert_ne!(rng.next(), rng.next());
    }
}
