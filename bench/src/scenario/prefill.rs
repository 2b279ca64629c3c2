//! Storing a history through the server: a few connections, each with a window of messages in
//! flight, until every one is acked. Used by `replay` and `startup`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::task::JoinSet;

use super::{nonce, padded};
use crate::conn::{Buffers, Conn};
use crate::frame::{self, AckBody, Frame};
use crate::progress::Progress;
use crate::report::{Better, Report};

/// How a history is stored.
#[derive(Debug, Clone, Copy)]
pub struct PrefillPlan {
    pub messages: u64,
    pub connections: usize,
    /// Messages in flight per connection.
    pub window: usize,
    pub size: usize,
}

/// What a prefill stored.
#[derive(Debug, Clone, Copy)]
pub struct Prefilled {
    pub acked: u64,
    /// The highest message id seen (in broadcasts or acks).
    pub last_id: u64,
    pub elapsed: Duration,
}

impl Prefilled {
    /// Adds the prefill's own rate to `report` (the same line in every scenario that prefills).
    pub fn report_rate(&self, report: &mut Report, plan: &PrefillPlan) {
        report.metric(
            "prefill_acked_per_s",
            format!(
                "prefill acked msgs/s ({} conns x {} in flight)",
                plan.connections, plan.window
            ),
            self.acked as f64 / self.elapsed.as_secs_f64().max(1e-9),
            "msg/s",
            Better::Higher,
        );
    }
}

/// No frame at all for this long means the server is stuck.
const STALL: Duration = Duration::from_secs(60);

pub async fn prefill(ws_url: &str, plan: PrefillPlan) -> anyhow::Result<Prefilled> {
    let tag = nonce();
    let counter = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("prefilling", plan.messages, counter.clone());
    let start = Instant::now();
    let connections = plan.connections.max(1);
    let mut set = JoinSet::new();
    for i in 0..connections {
        let conn = Conn::connect(ws_url, 0, Buffers::Busy)
            .await
            .context("prefill connection")?;
        // Connection i sends the sequence numbers i, i + connections, ...
        let quota = (plan.messages + (connections - 1 - i) as u64) / connections as u64;
        let (tag, counter) = (tag.clone(), counter.clone());
        set.spawn(async move { sender(conn, i, connections, quota, plan, &tag, &counter).await });
    }
    let mut acked = 0;
    let mut last_id = 0;
    while let Some(joined) = set.join_next().await {
        let (a, id) = joined.context("prefill task")??;
        acked += a;
        last_id = last_id.max(id);
    }
    progress.finish();
    Ok(Prefilled {
        acked,
        last_id,
        elapsed: start.elapsed(),
    })
}

async fn sender(
    mut conn: Conn,
    first: usize,
    step: usize,
    quota: u64,
    plan: PrefillPlan,
    tag: &str,
    counter: &AtomicU64,
) -> anyhow::Result<(u64, u64)> {
    let (mut sent, mut acked, mut in_flight, mut last_id) = (0u64, 0u64, 0usize, 0u64);
    while acked < quota {
        while sent < quota && in_flight < plan.window {
            let seq = first as u64 + sent * step as u64;
            let content = padded(format!("p.{tag}.{seq}."), plan.size);
            conn.emit_chat(&content, &format!("p{tag}-{seq}"), Some(sent))
                .await?;
            sent += 1;
            in_flight += 1;
        }
        let text = match tokio::time::timeout(STALL, conn.recv()).await {
            Ok(Ok(Some(text))) => text,
            Ok(Ok(None)) => bail!("the server closed a prefill connection"),
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("prefill stalled: no frame for {STALL:?} ({acked}/{quota} acked)"),
        };
        match frame::parse(text.as_str()) {
            Frame::Chat { id, .. } => last_id = last_id.max(id),
            Frame::Ack { body, .. } => {
                match body {
                    AckBody::Error => bail!("the server refused a prefill message: {text}"),
                    AckBody::Id(id) | AckBody::Duplicate(id) => last_id = last_id.max(id),
                    AckBody::Empty => {}
                }
                acked += 1;
                in_flight -= 1;
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Frame::Close | Frame::Disconnect => {
                bail!("the server disconnected a prefill connection")
            }
            _ => {}
        }
    }
    conn.close().await;
    Ok((acked, last_id))
}
