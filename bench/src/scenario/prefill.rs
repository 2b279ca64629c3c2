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

/// One room's share of a prefill.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoomFill {
    /// Messages acked to this room.
    pub count: u64,
    /// The highest id of this room seen (in its broadcasts or acks).
    pub last_id: u64,
}

/// What a prefill into rooms stored, overall and per room.
#[derive(Debug, Clone)]
pub struct PrefilledRooms {
    pub total: Prefilled,
    /// By room, in the order of the names given.
    pub rooms: Vec<RoomFill>,
}

/// The rooms connection `i` of `connections` is in. Message `seq` goes to room `seq mod
/// rooms`, and connection i sends the sequence numbers i, i + connections, ...: so it sends to
/// the rooms r with r = i (mod gcd(connections, rooms)), each the same share when `rooms`
/// divides the message count.
fn rooms_of(i: usize, connections: usize, rooms: usize) -> Vec<usize> {
    let g = gcd(connections, rooms);
    (i % g..rooms).step_by(g).collect()
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

/// No frame at all for this long means the server is stuck.
const STALL: Duration = Duration::from_secs(60);

pub async fn prefill(ws_url: &str, plan: PrefillPlan) -> anyhow::Result<Prefilled> {
    Ok(prefill_rooms(ws_url, plan, &[]).await?.total)
}

/// Stores `plan.messages` messages spread evenly over `rooms` (sent with tidings' `{ room }`
/// third argument, each connection in its rooms through `auth.rooms`); no rooms sends the
/// tutorial's `chat message (content, clientOffset)`.
pub async fn prefill_rooms(
    ws_url: &str,
    plan: PrefillPlan,
    rooms: &[String],
) -> anyhow::Result<PrefilledRooms> {
    let tag = nonce();
    let counter = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("prefilling", plan.messages, counter.clone());
    let start = Instant::now();
    let connections = plan.connections.max(1);
    let rooms: Arc<[String]> = rooms.into();
    let mut set = JoinSet::new();
    for i in 0..connections {
        let mine = if rooms.is_empty() {
            Vec::new()
        } else {
            rooms_of(i, connections, rooms.len())
        };
        let conn = if rooms.is_empty() {
            Conn::connect(ws_url, 0, Buffers::Busy).await
        } else {
            let names: Vec<&str> = mine.iter().map(|&r| rooms[r].as_str()).collect();
            Conn::connect_auth(ws_url, &super::rooms_auth(0, &names), Buffers::Busy).await
        }
        .context("prefill connection")?;
        // Connection i sends the sequence numbers i, i + connections, ...
        let quota = (plan.messages + (connections - 1 - i) as u64) / connections as u64;
        let (tag, counter, rooms) = (tag.clone(), counter.clone(), rooms.clone());
        let sender = Sender {
            first: i,
            step: connections,
            quota,
            plan,
            tag,
            rooms,
            mine,
        };
        set.spawn(async move { sender.run(conn, &counter).await });
    }
    let mut acked = 0;
    let mut last_id = 0;
    let mut per_room = vec![RoomFill::default(); rooms.len()];
    while let Some(joined) = set.join_next().await {
        let (a, id, fills) = joined.context("prefill task")??;
        acked += a;
        last_id = last_id.max(id);
        for (total, fill) in per_room.iter_mut().zip(fills) {
            total.count += fill.count;
            total.last_id = total.last_id.max(fill.last_id);
        }
    }
    progress.finish();
    Ok(PrefilledRooms {
        total: Prefilled {
            acked,
            last_id,
            elapsed: start.elapsed(),
        },
        rooms: per_room,
    })
}

/// One prefill connection.
struct Sender {
    first: usize,
    step: usize,
    quota: u64,
    plan: PrefillPlan,
    tag: String,
    /// Every room's name (empty: no rooms).
    rooms: Arc<[String]>,
    /// The rooms this connection is in (those its messages go to); empty: no rooms.
    mine: Vec<usize>,
}

/// `p.TAG.SEQ.ROOM.`: the room index lets a broadcast be counted to its room.
fn parse_room(content: &str, tag: &str) -> Option<usize> {
    let rest = content
        .strip_prefix("p.")?
        .strip_prefix(tag)?
        .strip_prefix('.')?;
    let (_, rest) = frame::leading_u64(rest)?;
    let (room, _) = frame::leading_u64(rest.strip_prefix('.')?)?;
    usize::try_from(room).ok()
}

impl Sender {
    async fn run(
        self,
        mut conn: Conn,
        counter: &AtomicU64,
    ) -> anyhow::Result<(u64, u64, Vec<RoomFill>)> {
        let (plan, tag, quota) = (self.plan, &self.tag, self.quota);
        let mut fills = vec![RoomFill::default(); self.rooms.len()];
        let (mut sent, mut acked, mut in_flight, mut last_id) = (0u64, 0u64, 0usize, 0u64);
        // The room of the message with ack id `sent` (its index): its sequence number's.
        let room_of = |sent: u64| -> Option<usize> {
            let seq = self.first as u64 + sent * self.step as u64;
            (!self.mine.is_empty()).then(|| (seq % self.rooms.len() as u64) as usize)
        };
        while acked < quota {
            while sent < quota && in_flight < plan.window {
                let seq = self.first as u64 + sent * self.step as u64;
                let offset = format!("p{tag}-{seq}");
                match room_of(sent) {
                    None => {
                        let content = padded(format!("p.{tag}.{seq}."), plan.size);
                        conn.emit_chat(&content, &offset, Some(sent)).await?;
                    }
                    Some(room) => {
                        let content = padded(format!("p.{tag}.{seq}.{room}."), plan.size);
                        conn.emit_chat_to(&content, &offset, &self.rooms[room], Some(sent))
                            .await?;
                    }
                }
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
                Frame::Chat { id, content } => {
                    last_id = last_id.max(id);
                    if let Some(fill) = parse_room(content, tag).and_then(|r| fills.get_mut(r)) {
                        fill.last_id = fill.last_id.max(id);
                    }
                }
                Frame::Ack { body, ack_id } => {
                    let id = match body {
                        AckBody::Error => bail!("the server refused a prefill message: {text}"),
                        AckBody::Id(id) | AckBody::Duplicate(id) => Some(id),
                        AckBody::Empty => None,
                    };
                    if let Some(room) = room_of(ack_id) {
                        fills[room].count += 1;
                        if let Some(id) = id {
                            fills[room].last_id = fills[room].last_id.max(id);
                        }
                    }
                    last_id = last_id.max(id.unwrap_or(0));
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
        Ok((acked, last_id, fills))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_shared_out_between_connections() {
        assert_eq!(rooms_of(1, 4, 10), [1, 3, 5, 7, 9]);
        assert_eq!(rooms_of(2, 4, 10), [0, 2, 4, 6, 8]);
        assert_eq!(rooms_of(1, 4, 100).len(), 25);
        assert_eq!(rooms_of(3, 4, 1), [0]);
        assert_eq!(rooms_of(3, 4, 2), [1]);
        assert_eq!(rooms_of(2, 3, 7), [0, 1, 2, 3, 4, 5, 6]);
        // Every message a connection sends goes to one of its rooms.
        for (connections, rooms) in [(4, 10), (4, 100), (3, 7), (4, 1), (6, 4)] {
            for i in 0..connections {
                let mine = rooms_of(i, connections, rooms);
                for k in 0..50 {
                    let seq = i + k * connections;
                    assert!(
                        mine.contains(&(seq % rooms)),
                        "{connections} {rooms} {i} {k}"
                    );
                }
            }
        }
        assert_eq!(parse_room("p.ab.12.7.xx", "ab"), Some(7));
        assert_eq!(parse_room("p.ab.12.xx", "ab"), None);
    }
}
