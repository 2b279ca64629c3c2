//! `rooms`: live delivery in many small rooms against one big room at the same deliveries per
//! second (issue 28). The "many rooms" phase opens `--conns` connections in `--conns /
//! --room-size` rooms (connection i in room i mod rooms, each named in its `auth.rooms`), and
//! sends `--rate` messages/s spread round-robin over the rooms, each from the room's first
//! member (open loop: it never waits for acks). The "one room" phase, run first on the same
//! server with fresh connections and a room of its own, puts `--single-room` connections in one
//! room and sends `rate x room-size / single-room` messages/s: the same deliveries per second.
//! A message to a room of S members is S deliveries, the sender's own copy included.
//!
//! Every member checks what it receives: only its room's messages (by the content's tag and by
//! the delivered `room` field), each once, ids increasing; every send must be acked, and every
//! delivery must arrive. Figures per phase and rate: delivery latency (send to receipt), server
//! CPU per delivery, the server's CPU use with every connection open and nothing sent (the
//! cost of holding them: engine.io pings), and the ratios of the many-rooms phase to the
//! one-room phase. With several rates, a phase is a sweep that stops at the first rate whose
//! p99 reaches `--stop-p99-ms`, that loses a delivery, or whose sends the server (or the
//! bench) cannot keep up with.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Target, connect_all_auth, nonce, padded, positive_f64, rooms_auth, summarize_errors};
use crate::conn::{Buffers, Conn};
use crate::frame::{self, AckBody, Frame, leading_u64};
use crate::procfs::CpuMeter;
use crate::progress::Progress;
use crate::report::{Better, Report};
use crate::stats::Histogram;

#[derive(Debug, Clone, Args)]
pub struct RoomsArgs {
    /// Connections in the many-rooms phase (a multiple of --room-size).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub conns: u64,

    /// Members of each room in the many-rooms phase.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub room_size: u64,

    /// Messages/s over all rooms of the many-rooms phase; several (comma-separated) make a
    /// sweep. The one-room phase sends rate x room-size / single-room.
    #[arg(long, value_delimiter = ',', default_value = "1000", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub rate: Vec<u64>,

    /// Seconds of sending at each rate.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration: u64,

    /// Members of the one room of the one-room phase (run first, at the same deliveries/s);
    /// 0 skips it.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub single_room: u64,

    /// Leave out the control phase: one room of --room-size members at the same messages/s
    /// (so the same deliveries/s) as the many rooms, with --room-size connections in all.
    #[arg(long)]
    pub no_small_room: bool,

    /// Content size in bytes.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub size: u64,

    /// A sweep stops after the first rate whose delivery p99 reaches this (milliseconds).
    #[arg(long, default_value_t = 100.0, value_parser = positive_f64)]
    pub stop_p99_ms: f64,

    /// Seconds to wait after the last send of a rate for every delivery and ack.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub drain: u64,

    /// Seconds to measure the server's CPU with every connection of a phase open and idle,
    /// before sending (0: not measured).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub idle: u64,

    /// Handshakes in progress at once.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,
}

/// One phase: `rooms` rooms of `members` each, sent to at `rates` messages/s.
#[derive(Debug, Clone)]
struct Phase {
    /// Key suffix of its figures (`@one_room`, `@small_room`, `` for many rooms).
    key: &'static str,
    label: &'static str,
    rooms: usize,
    members: usize,
    rates: Vec<f64>,
}

impl Phase {
    fn conns(&self) -> usize {
        self.rooms * self.members
    }
}

/// The phases `args` asks for: the one big room, the one small room, then the many rooms.
fn phases(args: &RoomsArgs) -> anyhow::Result<Vec<Phase>> {
    let (conns, size) = (args.conns as usize, args.room_size as usize);
    anyhow::ensure!(
        conns.is_multiple_of(size),
        "--conns {conns} is not a multiple of --room-size {size}"
    );
    let rates: Vec<f64> = args.rate.iter().map(|&r| r as f64).collect();
    let mut phases = Vec::new();
    if args.single_room > 0 {
        let single = args.single_room as usize;
        phases.push(Phase {
            key: "@one_room",
            label: " (one room, same deliveries/s)",
            rooms: 1,
            members: single,
            rates: rates
                .iter()
                .map(|&r| r * size as f64 / single as f64)
                .collect(),
        });
    }
    if !args.no_small_room && conns / size > 1 {
        phases.push(Phase {
            key: "@small_room",
            label: " (one small room, same messages/s)",
            rooms: 1,
            members: size,
            rates: rates.clone(),
        });
    }
    phases.push(Phase {
        key: "",
        label: "",
        rooms: conns / size,
        members: size,
        rates,
    });
    Ok(phases)
}

/// Tries for a connection whose handshake failed in the burst, after the first.
const CONNECT_RETRIES: usize = 2;

/// Deliveries and acks of one rate.
struct Step {
    latency: Histogram,
    ack_latency: Histogram,
    delivered: AtomicU64,
    acked: AtomicU64,
    /// Microseconds since `Shared::base` of the last delivery.
    last_us: AtomicU64,
}

struct Shared {
    base: Instant,
    nonce: String,
    rooms: usize,
    steps: Vec<Step>,
    /// The first sequence number of each step; message `seq` of a step goes to room
    /// `(seq - start) % rooms`.
    starts: Vec<u64>,
    /// Each step's first per-room slot (a member's bit for `seq` is `slots[step] + (seq -
    /// start) / rooms`).
    slots: Vec<u64>,
    total_slots: u64,
    repeated: AtomicU64,
    out_of_order: AtomicU64,
    /// Messages of another room (by their content).
    foreign: AtomicU64,
    /// Deliveries whose `room` field is missing or not the member's room.
    wrong_room_field: AtomicU64,
    refused: AtomicU64,
    first_refusal: std::sync::Mutex<Option<String>>,
    /// Connections the server closed during the run.
    closed: AtomicU64,
}

impl Shared {
    fn now_us(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn step_of(&self, seq: u64) -> usize {
        self.starts.partition_point(|&s| s <= seq).saturating_sub(1)
    }
}

/// `m.NONCE.ROOM.SEQ.SENT_US.` padded.
fn content(nonce: &str, room: usize, seq: u64, sent_us: u64, size: usize) -> String {
    padded(format!("m.{nonce}.{room}.{seq}.{sent_us}."), size)
}

/// (room, seq, sent_us) of a content made by [`content`] with `nonce`.
fn parse_content(content: &str, nonce: &str) -> Option<(usize, u64, u64)> {
    let rest = content
        .strip_prefix("m.")?
        .strip_prefix(nonce)?
        .strip_prefix('.')?;
    let (room, rest) = leading_u64(rest)?;
    let (seq, rest) = leading_u64(rest.strip_prefix('.')?)?;
    let (sent_us, _) = leading_u64(rest.strip_prefix('.')?)?;
    Some((usize::try_from(room).ok()?, seq, sent_us))
}

/// The name of room `i` of a phase (the nonce keeps runs against one server apart).
fn room_name(nonce: &str, phase: &Phase, i: usize) -> String {
    if phase.rooms == 1 {
        format!("{nonce}-one")
    } else {
        format!("{nonce}-r{i}")
    }
}

pub async fn run(args: &RoomsArgs, target: &Target) -> anyhow::Result<Report> {
    let mut report = Report::new("rooms", &target.name);
    let phases = phases(args)?;
    report.param("conns", args.conns);
    report.param("room_size", args.room_size);
    report.param("rooms", args.conns / args.room_size);
    report.param("rates", args.rate.clone());
    report.param("single_room", args.single_room);
    report.param("seconds_per_rate", args.duration);
    report.param("content_bytes", args.size);
    let mut passed = Vec::new();
    for phase in &phases {
        passed.push((phase, run_phase(args, target, phase, &mut report).await?));
    }
    // The many-rooms phase against each one-room phase, rate by rate.
    if let Some(((_, many), baselines)) = passed.split_last() {
        let sweep = args.rate.len() > 1;
        for (phase, one) in baselines {
            let against = phase.key.trim_start_matches('@');
            for (&(rate, cpu_many, p99_many), &(_, cpu_one, p99_one)) in many.iter().zip(one) {
                let suffix = if sweep {
                    format!("@{rate}")
                } else {
                    String::new()
                };
                if cpu_one > 0.0 && cpu_many > 0.0 {
                    report.metric(
                        format!("cpu_per_delivery_rooms_over_{against}{suffix}"),
                        format!("CPU per delivery, many rooms / {against}{suffix}"),
                        cpu_many / cpu_one,
                        "x",
                        Better::Lower,
                    );
                }
                if p99_one > 0.0 {
                    report.metric(
                        format!("delivery_p99_rooms_over_{against}{suffix}"),
                        format!("delivery p99, many rooms / {against}{suffix}"),
                        p99_many / p99_one,
                        "x",
                        Better::Lower,
                    );
                }
            }
        }
    }
    report.server_memory(&target.pids);
    Ok(report)
}

/// Runs one phase; returns (rate, CPU µs per delivery, p99 ms) of each rate that ran.
async fn run_phase(
    args: &RoomsArgs,
    target: &Target,
    phase: &Phase,
    report: &mut Report,
) -> anyhow::Result<Vec<(f64, f64, f64)>> {
    let nonce = nonce();
    let names: Vec<String> = (0..phase.rooms)
        .map(|i| room_name(&nonce, phase, i))
        .collect();
    let conns_wanted = phase.conns();
    let connect_start = Instant::now();
    let (conns, errors, retried) = connect_all_auth(
        &target.ws_urls(),
        conns_wanted,
        |i| rooms_auth(0, &[&names[i % phase.rooms]]),
        Buffers::Small,
        args.concurrency as usize,
        &format!("members{}", phase.label),
        CONNECT_RETRIES,
    )
    .await;
    report.metric(
        format!("connect_s{}", phase.key),
        format!(
            "{} connections in {} rooms opened in{}",
            conns.len(),
            phase.rooms,
            phase.label
        ),
        connect_start.elapsed().as_secs_f64(),
        "s",
        Better::Lower,
    );
    if retried > 0 {
        report.metric(
            format!("connects_retried{}", phase.key),
            format!(
                "connections that failed at first and were tried again{}",
                phase.label
            ),
            retried as f64,
            "",
            Better::Lower,
        );
        if let Some(e) = summarize_errors(
            &format!("first tries of member connections{}", phase.label),
            &errors,
        ) {
            report.notes.push(e);
        }
    }
    if conns.len() < conns_wanted {
        let why = summarize_errors("member connections", &errors).unwrap_or_default();
        anyhow::bail!(
            "{} of {conns_wanted} members could connect{} after {CONNECT_RETRIES} retries ({why}): every room must be full to count its deliveries",
            conns.len(),
            phase.label
        );
    }

    // Sequence numbers and per-room slots of each step.
    let per_step: Vec<u64> = phase
        .rates
        .iter()
        .map(|&rate| ((rate * args.duration as f64).round() as u64).max(1))
        .collect();
    let (mut starts, mut slots) = (Vec::new(), Vec::new());
    let (mut next, mut next_slot) = (0u64, 0u64);
    for &n in &per_step {
        starts.push(next);
        slots.push(next_slot);
        next += n;
        next_slot += n.div_ceil(phase.rooms as u64);
    }
    let shared = Arc::new(Shared {
        base: Instant::now(),
        nonce: nonce.clone(),
        rooms: phase.rooms,
        steps: per_step
            .iter()
            .map(|_| Step {
                latency: Histogram::new(),
                ack_latency: Histogram::new(),
                delivered: AtomicU64::new(0),
                acked: AtomicU64::new(0),
                last_us: AtomicU64::new(0),
            })
            .collect(),
        starts,
        slots,
        total_slots: next_slot,
        repeated: AtomicU64::new(0),
        out_of_order: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
        wrong_room_field: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        first_refusal: std::sync::Mutex::new(None),
        closed: AtomicU64::new(0),
    });
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut senders = Vec::with_capacity(phase.rooms);
    for (i, conn) in conns {
        let room = i % phase.rooms;
        // The first member of each room sends its room's messages.
        let sends = (i < phase.rooms).then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            rx
        });
        let member = Member {
            room,
            name: names[room].clone(),
            size: args.size as usize,
            shared: shared.clone(),
        };
        tasks.spawn(member.run(conn, sends, stop.clone()));
    }

    if args.idle > 0 {
        let meter = CpuMeter::start(&target.pids);
        tokio::time::sleep(Duration::from_secs(args.idle)).await;
        let cpu = meter.stop();
        if let Some(server_s) = cpu.server_s {
            report.metric(
                format!("idle_server_cpu_cores{}", phase.key),
                format!(
                    "server CPU use, {} connections idle{}",
                    conns_wanted, phase.label
                ),
                server_s / cpu.wall_s.max(1e-9),
                "cores",
                Better::Lower,
            );
        }
    }

    let sweep = phase.rates.len() > 1;
    let mut passed = Vec::new();
    for (step, (&rate, &n)) in phase.rates.iter().zip(&per_step).enumerate() {
        let suffix = if sweep {
            format!("{}@{}", phase.key, args.rate[step])
        } else {
            phase.key.to_string()
        };
        let label = if sweep {
            format!("{} @{} msgs/s", phase.label, fmt_rate(rate))
        } else {
            phase.label.to_string()
        };
        let outcome = send_step(&shared, &senders, step, rate, n, phase, args, &target.pids).await;
        let s = &shared.steps[step];
        let latency = s.latency.summary();
        let delivered = s.delivered.load(Ordering::Relaxed);
        let acked = s.acked.load(Ordering::Relaxed);
        let expected = outcome.sent * phase.members as u64;
        let lost = expected.saturating_sub(delivered);
        let window_s =
            (s.last_us.load(Ordering::Relaxed) as f64 / 1e6 - outcome.started_s).max(1e-9);
        report.metric(
            format!("send_rate{suffix}"),
            format!("messages/s asked{label}"),
            rate,
            "msg/s",
            Better::Neither,
        );
        report.latency("delivery", "delivery latency", &latency, &suffix);
        report.metric(
            format!("deliveries_per_s{suffix}"),
            format!("deliveries/s{label}"),
            delivered as f64 / window_s,
            "msg/s",
            Better::Higher,
        );
        report.metric(
            format!("sent_per_s{suffix}"),
            format!("achieved send rate{label}"),
            outcome.sent as f64 / outcome.send_s.max(1e-9),
            "msg/s",
            Better::Neither,
        );
        report.metric(
            format!("lost{suffix}"),
            format!("lost deliveries{label}"),
            lost as f64,
            "",
            Better::Lower,
        );
        let ack = s.ack_latency.summary();
        report.latency("ack", "sender ack latency", &ack, &suffix);
        report.cpu(&outcome.cpu, delivered as f64, "delivery", &suffix);
        if lost > 0 {
            report.problems.push(format!(
                "{lost} of {expected} deliveries missing {} s after the last send{label}",
                args.drain
            ));
        }
        if acked < outcome.sent {
            report.problems.push(format!(
                "only {acked} of {} sends acked{label}",
                outcome.sent
            ));
        }
        let kept_rate = outcome.send_s <= args.duration as f64 * 1.05 + 0.05;
        if !kept_rate {
            report.notes.push(format!(
                "the senders could not keep {} msgs/s{label} ({:.1} s to send {})",
                fmt_rate(rate),
                outcome.send_s,
                outcome.sent
            ));
        }
        let cpu_per_delivery = match outcome.cpu.server_s {
            Some(server_s) if delivered > 0 => server_s * 1e6 / delivered as f64,
            _ => 0.0,
        };
        passed.push((args.rate[step] as f64, cpu_per_delivery, latency.p99_ms()));
        if lost > 0 || latency.p99_ms() >= args.stop_p99_ms || !kept_rate {
            if sweep {
                report.notes.push(format!(
                    "sweep{} stopped at {} msgs/s (p99 {:.1} ms, {lost} lost)",
                    phase.label,
                    fmt_rate(rate),
                    latency.p99_ms()
                ));
            }
            break;
        }
    }
    drop(senders);
    stop.cancel();
    while tasks.join_next().await.is_some() {}

    let count = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let checks = [
        (count(&shared.repeated), "deliveries received twice"),
        (
            count(&shared.out_of_order),
            "deliveries arrived with an id not above the previous one",
        ),
        (
            count(&shared.foreign),
            "deliveries of another room's message",
        ),
        (
            count(&shared.wrong_room_field),
            "deliveries whose `room` field is missing or another room",
        ),
        (
            count(&shared.closed),
            "member connections closed by the server",
        ),
    ];
    for (n, what) in checks {
        if n > 0 {
            report.problems.push(format!("{n} {what}{}", phase.label));
        }
    }
    let refused = count(&shared.refused);
    if refused > 0 {
        let first = shared
            .first_refusal
            .lock()
            .map(|f| f.clone().unwrap_or_default())
            .unwrap_or_default();
        report.problems.push(format!(
            "{refused} sends refused{} (first: {first})",
            phase.label
        ));
    }
    Ok(passed)
}

fn fmt_rate(rate: f64) -> String {
    crate::report::fmt_num(rate)
}

/// What sending one rate gave.
struct StepOutcome {
    sent: u64,
    /// When the step started, in seconds since `Shared::base`.
    started_s: f64,
    send_s: f64,
    cpu: crate::procfs::CpuUse,
}

/// Hands the step's `n` messages to the rooms' senders at `rate`, round-robin over the rooms,
/// then waits (at most `--drain` s) for every delivery and ack.
#[allow(clippy::too_many_arguments)]
async fn send_step(
    shared: &Shared,
    senders: &[mpsc::UnboundedSender<u64>],
    step: usize,
    rate: f64,
    n: u64,
    phase: &Phase,
    args: &RoomsArgs,
    pids: &[u32],
) -> StepOutcome {
    let first = shared.starts[step];
    let members = phase.members as u64;
    let delivered = || shared.steps[step].delivered.load(Ordering::Relaxed);
    let acked = || shared.steps[step].acked.load(Ordering::Relaxed);
    let counter = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        &format!("{}/s{}", fmt_rate(rate), phase.label),
        n * members,
        counter.clone(),
    );
    let meter = CpuMeter::start(pids);
    let started = Instant::now();
    let started_s = shared.base.elapsed().as_secs_f64();
    let period = Duration::from_secs_f64((1.0 / rate).max(0.001));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let send_deadline = Instant::now() + Duration::from_secs(args.duration * 3 + 5);
    let mut sent = 0u64;
    while sent < n && Instant::now() < send_deadline {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate) as u64 + 1).min(n);
        while sent < due {
            let room = (sent % phase.rooms as u64) as usize;
            // A sender whose connection closed is counted by its member task.
            let _ = senders[room].send(first + sent);
            sent += 1;
        }
        counter.store(delivered(), Ordering::Relaxed);
    }
    let send_s = started.elapsed().as_secs_f64();
    let expected = sent * members;
    let drain_deadline = Instant::now() + Duration::from_secs(args.drain);
    while (delivered() < expected || acked() < sent) && Instant::now() < drain_deadline {
        counter.store(delivered(), Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu = meter.stop();
    progress.finish();
    StepOutcome {
        sent,
        started_s,
        send_s,
        cpu,
    }
}

/// One member connection: receives and checks its room's messages; the room's sender also
/// sends what the step hands it.
struct Member {
    room: usize,
    name: String,
    size: usize,
    shared: Arc<Shared>,
}

impl Member {
    async fn run(
        self,
        mut conn: Conn,
        mut sends: Option<mpsc::UnboundedReceiver<u64>>,
        stop: CancellationToken,
    ) {
        let shared = &*self.shared;
        let mut seen = vec![0u64; (shared.total_slots as usize).div_ceil(64)];
        let mut last_id = 0u64;
        // Send time (µs since base) of each message awaiting its ack, by sequence number.
        let mut pending: HashMap<u64, u64> = HashMap::new();
        loop {
            let next_send = async {
                match sends.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => break,
                seq = next_send => {
                    let Some(seq) = seq else {
                        sends = None;
                        continue;
                    };
                    let now = shared.now_us();
                    let text = content(&shared.nonce, self.room, seq, now, self.size);
                    let offset = format!("m{}-{seq}", shared.nonce);
                    if conn.emit_chat_to(&text, &offset, &self.name, Some(seq)).await.is_err() {
                        shared.closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    pending.insert(seq, now);
                }
                text = conn.recv() => {
                    let Ok(Some(text)) = text else {
                        shared.closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    match frame::parse(text.as_str()) {
                        Frame::Chat { content, id } => {
                            if id <= last_id {
                                shared.out_of_order.fetch_add(1, Ordering::Relaxed);
                            }
                            last_id = last_id.max(id);
                            self.on_delivery(content, frame::chat_room(text.as_str()), &mut seen);
                        }
                        Frame::Ack { ack_id, body } => {
                            if body == AckBody::Error {
                                shared.refused.fetch_add(1, Ordering::Relaxed);
                                if let Ok(mut first) = shared.first_refusal.lock() {
                                    first.get_or_insert_with(|| text.as_str().to_string());
                                }
                            } else if let Some(sent_us) = pending.remove(&ack_id) {
                                let step = &shared.steps[shared.step_of(ack_id)];
                                step.ack_latency.record_us(shared.now_us().saturating_sub(sent_us));
                                step.acked.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Frame::Close | Frame::Disconnect => {
                            shared.closed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        _ => {}
                    }
                }
            }
        }
        conn.close().await;
    }

    fn on_delivery(&self, content: &str, room_field: Option<&str>, seen: &mut [u64]) {
        let shared = &*self.shared;
        let Some((room, seq, sent_us)) = parse_content(content, &shared.nonce) else {
            return; // not this run's
        };
        if room != self.room {
            shared.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if room_field != Some(self.name.as_str()) {
            shared.wrong_room_field.fetch_add(1, Ordering::Relaxed);
        }
        let now = shared.now_us();
        let step = shared.step_of(seq);
        let slot = shared.slots[step] + (seq - shared.starts[step]) / shared.rooms as u64;
        let Some(word) = seen.get_mut((slot / 64) as usize) else {
            return;
        };
        let bit = 1u64 << (slot % 64);
        if *word & bit != 0 {
            shared.repeated.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *word |= bit;
        let step = &shared.steps[step];
        step.latency.record_us(now.saturating_sub(sent_us));
        step.delivered.fetch_add(1, Ordering::Relaxed);
        step.last_us.fetch_max(now, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_round_trip() {
        let c = content("abc", 17, 12, 345_678, 48);
        assert_eq!(c.len(), 48);
        assert_eq!(parse_content(&c, "abc"), Some((17, 12, 345_678)));
        assert_eq!(parse_content(&c, "abd"), None);
    }

    fn args(extra: &[&str]) -> RoomsArgs {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            args: RoomsArgs,
        }
        Cli::try_parse_from(std::iter::once("rooms").chain(extra.iter().copied()))
            .expect("valid arguments")
            .args
    }

    #[test]
    fn the_one_room_phase_has_the_same_deliveries_per_second() -> anyhow::Result<()> {
        let p = phases(&args(&[]))?;
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].rooms, p[0].members), (1, 500));
        assert_eq!(p[0].rates, [20.0]);
        assert_eq!((p[1].rooms, p[1].members), (1, 10));
        assert_eq!(p[1].rates, [1000.0]);
        assert_eq!((p[2].rooms, p[2].members), (1000, 10));
        assert_eq!(p[2].rates, [1000.0]);
        assert_eq!(p[2].conns(), 10_000);
        let p = phases(&args(&["--no-small-room"]))?;
        assert_eq!(p.len(), 2);
        let p = phases(&args(&[
            "--single-room",
            "0",
            "--no-small-room",
            "--conns",
            "40",
            "--room-size",
            "4",
        ]))?;
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].rooms, 10);
        assert!(phases(&args(&["--conns", "45", "--room-size", "10"])).is_err());
        Ok(())
    }

    #[test]
    fn numeric_flags_are_validated() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            args: RoomsArgs,
        }
        for bad in [
            &["--conns", "0"][..],
            &["--room-size", "0"],
            &["--rate", "0"],
            &["--rate", "100,-1"],
            &["--duration", "0"],
            &["--size", "0"],
            &["--stop-p99-ms", "0"],
            &["--stop-p99-ms", "NaN"],
            &["--drain", "0"],
            &["--concurrency", "0"],
            &["--single-room", "x"],
        ] {
            assert!(
                Cli::try_parse_from(std::iter::once("rooms").chain(bad.iter().copied())).is_err(),
                "{bad:?} was accepted"
            );
        }
    }
}
