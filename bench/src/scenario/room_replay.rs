//! `room-replay`: the replay of one room from a long history of many rooms, against the replay
//! of as many messages from a history of one room (issue 28: a room's replay must not scan the
//! other rooms' messages).
//!
//! 1. On the fresh server, store `-n / --rooms` messages in one room and time fresh clients
//!    replaying that room from offset 0 (`auth: { serverOffset: 0, rooms: [it] }`): the
//!    one-room history (on tidings the newest 10,000 messages are in its tail cache, so a
//!    short history replays from memory).
//! 2. Store `-n` more messages spread evenly over `--rooms` other rooms (each connection of
//!    the prefill in its share of them), then time the replay of one of those rooms (its
//!    messages are one in `--rooms` of the history) and the replay of the first room again
//!    (its rows are now old and contiguous, read from the store like the other room's).
//!
//! Each replay must bring exactly the room's messages, in increasing id order, each the
//! room's (by its content's tag).

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;

use super::Target;
use super::prefill::{PrefillPlan, RoomFill, prefill_rooms};
use super::replay::{Run, summarize};
use super::{nonce, rooms_auth};
use crate::conn::{Buffers, Conn};
use crate::frame::{self, Frame, leading_u64};
use crate::procfs::CpuMeter;
use crate::report::{Better, Report};

#[derive(Debug, Clone, Args)]
pub struct RoomReplayArgs {
    /// Messages of the many-rooms history (the one-room history has -n / --rooms).
    #[arg(short = 'n', long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub messages: u64,

    /// Rooms the many-rooms history is spread over.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub rooms: u64,

    /// Content size of the stored messages, in bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub size: u64,

    /// Replays of each kind to time.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub runs: u64,

    /// Connections used to store the history (each in its share of the rooms).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub prefill_connections: u64,

    /// Messages in flight per prefill connection.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub window: u64,

    /// Give up on one replay after this many seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub timeout: u64,
}

pub async fn run(args: &RoomReplayArgs, target: &Target) -> anyhow::Result<Report> {
    let mut report = Report::new("room-replay", &target.name);
    let target = &target.first_only(&mut report);
    let per_room = args.messages / args.rooms;
    anyhow::ensure!(
        per_room > 0,
        "-n {} over --rooms {} leaves no message per room",
        args.messages,
        args.rooms
    );
    report.param("messages", args.messages);
    report.param("rooms", args.rooms);
    report.param("one_room_messages", per_room);
    report.param("content_bytes", args.size);
    let ws_url = target.ws_url();
    let tag = nonce();
    let timeout = Duration::from_secs(args.timeout);
    let plan = |messages| PrefillPlan {
        messages,
        connections: args.prefill_connections as usize,
        window: args.window as usize,
        size: args.size as usize,
    };

    // 1. The one-room history.
    let one = format!("{tag}-one");
    let stored = prefill_rooms(&ws_url, plan(per_room), std::slice::from_ref(&one)).await?;
    stored.total.report_rate(&mut report, &plan(per_room));
    let one_fill = stored.rooms[0];
    check_fill(&mut report, "the one-room history", one_fill, per_room);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut runs = Vec::new();
    for _ in 0..args.runs {
        runs.push(replay_room(&ws_url, &one, 0, one_fill, &target.pids, timeout).await?);
    }
    summarize(
        &mut report,
        "replay_one_room",
        &format!("replay of a one-room history of {}", one_fill.count),
        &runs,
        one_fill.count,
    );

    // 2. The many-rooms history.
    let names: Vec<String> = (0..args.rooms).map(|r| format!("{tag}-h{r}")).collect();
    let stored = prefill_rooms(&ws_url, plan(args.messages), &names).await?;
    let many_plan = plan(args.messages);
    report.metric(
        "prefill_many_rooms_acked_per_s",
        format!(
            "prefill acked msgs/s over {} rooms ({} conns x {} in flight)",
            args.rooms, many_plan.connections, many_plan.window
        ),
        stored.total.acked as f64 / stored.total.elapsed.as_secs_f64().max(1e-9),
        "msg/s",
        Better::Higher,
    );
    let pick = (args.rooms / 2) as usize;
    let fill = stored.rooms[pick];
    // Message seq goes to room seq mod rooms: the first n mod rooms rooms have one more.
    let expected =
        args.messages / args.rooms + u64::from((pick as u64) < args.messages % args.rooms);
    check_fill(
        &mut report,
        "the many-rooms history's replayed room",
        fill,
        expected,
    );
    if stored.total.acked < args.messages {
        report.problems.push(format!(
            "prefill over {} rooms: {} of {} acked",
            args.rooms, stored.total.acked, args.messages
        ));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut runs = Vec::new();
    for _ in 0..args.runs {
        runs.push(replay_room(&ws_url, &names[pick], 0, fill, &target.pids, timeout).await?);
    }
    summarize(
        &mut report,
        "replay_room",
        &format!(
            "replay of one room of {} from {} over {} rooms",
            fill.count,
            stored.total.acked + one_fill.count,
            args.rooms + 1
        ),
        &runs,
        fill.count,
    );
    let mut runs = Vec::new();
    for _ in 0..args.runs {
        runs.push(replay_room(&ws_url, &one, 0, one_fill, &target.pids, timeout).await?);
    }
    summarize(
        &mut report,
        "replay_one_room_stored",
        &format!(
            "replay of the first room's {} again, behind the {} others",
            one_fill.count, stored.total.acked
        ),
        &runs,
        one_fill.count,
    );
    for (key, label, base) in [
        (
            "room_over_one_room",
            "replay of a room among many / a one-room history",
            "replay_one_room_ms",
        ),
        (
            "room_over_stored_one_room",
            "replay of a room among many / the contiguous room, stored",
            "replay_one_room_stored_ms",
        ),
    ] {
        if let (Some(room), Some(base)) = (report.get("replay_room_ms"), report.get(base))
            && base > 0.0
        {
            report.metric(key, label, room / base, "x", Better::Lower);
        }
    }
    report.server_memory(&target.pids);
    Ok(report)
}

fn check_fill(report: &mut Report, what: &str, fill: RoomFill, expected: u64) {
    if fill.count != expected || fill.last_id == 0 {
        report.problems.push(format!(
            "{what}: {} messages acked (expected {expected}), last id {}",
            fill.count, fill.last_id
        ));
    }
}

/// `p.TAG.SEQ.ROOM.` (see prefill): the room index of a prefill content, whatever its tag.
fn room_index(content: &str) -> Option<u64> {
    let rest = content.strip_prefix("p.")?;
    let (_, rest) = rest.split_once('.')?;
    let (_, rest) = leading_u64(rest)?;
    leading_u64(rest.strip_prefix('.')?).map(|(room, _)| room)
}

/// Connects in `room` at `offset` and reads until the room's last message arrives.
async fn replay_room(
    ws_url: &str,
    room: &str,
    offset: u64,
    fill: RoomFill,
    pids: &[u32],
    timeout: Duration,
) -> anyhow::Result<Run> {
    let meter = CpuMeter::start(pids);
    let start = Instant::now();
    let mut conn = Conn::connect_auth(ws_url, &rooms_auth(offset, &[room]), Buffers::Busy).await?;
    let handshake = start.elapsed();
    let (mut received, mut repeated, mut prev) = (0u64, 0u64, offset);
    let mut rooms_seen: Option<u64> = None;
    let mut foreign = 0u64;
    let deadline = tokio::time::Instant::now() + timeout;
    while prev < fill.last_id {
        let text = match tokio::time::timeout_at(deadline, conn.recv()).await {
            Ok(Ok(Some(text))) => text,
            Ok(Ok(None)) => bail!("the server closed the replay after {received} messages"),
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("replay of {room} timed out after {received} messages"),
        };
        match frame::parse(text.as_str()) {
            Frame::Chat { id, content } => {
                received += 1;
                // Every message must carry the room's index (the first one seen sets it).
                let index = room_index(content);
                match (rooms_seen, index) {
                    (None, Some(i)) => rooms_seen = Some(i),
                    (Some(seen), Some(i)) if seen == i => {}
                    _ => foreign += 1,
                }
                if frame::chat_room(text.as_str()) != Some(room) {
                    foreign += 1;
                }
                if id <= prev {
                    repeated += 1;
                } else {
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
        // Ids of a room are not contiguous: what is missing is what the count lacks, and a
        // message of another room counts as both.
        missing: fill.count.saturating_sub(received - foreign.min(received)),
        repeated: repeated + foreign,
        server_cpu_s: cpu.server_s,
        server_cpu_each_s: cpu.server_each_s.clone(),
        others_cores: cpu.others_cores(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_index_of_a_prefill_content() {
        assert_eq!(room_index("p.abc123.77.5.xxxx"), Some(5));
        assert_eq!(room_index("p.abc123.77.xxxx"), None);
        assert_eq!(room_index("m.abc.1.2."), None);
    }
}
