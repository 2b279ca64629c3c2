//! `room-memory`: the server's resident memory per room and per membership (issue 28: under
//! 1 KiB each at 10,000 rooms). `--conns` connections open in no room (`auth.rooms: []`); then,
//! step by step, reading the server's RSS after each (`--settle` s later):
//!
//! 1. each joins a new room of its own: N rooms that exist through their one member;
//! 2. each joins `--extra` of those rooms more (its neighbours'): N x extra memberships, no
//!    new room. Per membership = step 2's growth / (N x extra); per room (with members, no
//!    messages) = step 1's growth / N - per membership;
//! 3. one connection sends N messages to its room (the control: N more messages, in one room);
//! 4. each sends one message to its own room: N more messages, now in N rooms. Per room
//!    holding messages = (step 4's growth - step 3's) / N;
//! 5. each leaves all its rooms (the rooms stay: they hold messages);
//! 6. each joins a new room, sends one message to it and leaves: N rooms that exist with
//!    messages and no member ("empty" rooms in a chat's sense). Per empty room = step 6's
//!    growth / N (its transient memberships reuse step 5's freed memory);
//! 7. each joins a new room and leaves it without sending: a room with no member and no
//!    message is forgotten, so this should cost nothing.
//!
//! Every join must be answered `{ room, last }`, every leave `{ ok: true }`, every send acked
//! without an error. The time of each step and the server's CPU per operation are reported
//! too (joins of new rooms against joins of existing ones).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::{Target, connect_all_auth, nonce, padded, rooms_auth, summarize_errors};
use crate::conn::{Buffers, Conn};
use crate::frame::{self, Frame};
use crate::procfs::{CpuMeter, Who, rss_bytes};
use crate::report::{Better, Report};

#[derive(Debug, Clone, Args)]
pub struct RoomMemoryArgs {
    /// Connections, and rooms made at each step.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub conns: u64,

    /// Rooms more each connection joins at step 2 (memberships: conns x extra).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=98))]
    pub extra: u64,

    /// Seconds to wait after each step before reading the server's memory.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub settle: u64,

    /// Content size of the messages sent, in bytes.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub size: u64,

    /// Requests (joins, leaves, sends) in flight at once over all connections, and handshakes.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,

    /// Give up on a step after this many seconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub timeout: u64,
}

/// A request to a connection's task: a socket.io event array (JSON text, without the `42` and
/// ack id), answered with the ack's body.
struct Request {
    event: String,
    reply: oneshot::Sender<anyhow::Result<String>>,
}

/// A connection held by a task that answers pings, counts deliveries and runs requests.
#[derive(Clone)]
struct Client {
    tx: mpsc::UnboundedSender<Request>,
}

impl Client {
    fn spawn(conn: Conn, set: &mut JoinSet<()>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        set.spawn(serve(conn, rx));
        Self { tx }
    }

    /// Emits `event` (a JSON array) with an ack request; the ack's body.
    async fn request(&self, event: String) -> anyhow::Result<String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request { event, reply })
            .ok()
            .context("the connection is closed")?;
        answer.await.context("the connection closed")?
    }
}

async fn serve(mut conn: Conn, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut pending: HashMap<u64, oneshot::Sender<anyhow::Result<String>>> = HashMap::new();
    let mut next_ack = 0u64;
    loop {
        tokio::select! {
            request = rx.recv() => {
                let Some(Request { event, reply }) = request else { break };
                next_ack += 1;
                match conn.send_owned(format!("42{next_ack}{event}")).await {
                    Ok(()) => {
                        pending.insert(next_ack, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                }
            }
            text = conn.recv() => {
                let Ok(Some(text)) = text else {
                    for (_, reply) in pending.drain() {
                        let _ = reply.send(Err(anyhow::anyhow!("the server closed the connection")));
                    }
                    return;
                };
                if let Frame::Ack { ack_id, .. } = frame::parse(text.as_str())
                    && let Some(reply) = pending.remove(&ack_id)
                {
                    // The body after `43<id>`.
                    let body = text.as_str()[2..].trim_start_matches(|c: char| c.is_ascii_digit());
                    let _ = reply.send(Ok(body.to_string()));
                }
            }
        }
    }
    conn.close().await;
}

/// What each step does for connection `i` of `n`: its requests, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    JoinOwn,
    JoinNeighbours,
    ControlMessages,
    SendOwn,
    LeaveAll,
    JoinSendLeave,
    JoinLeave,
}

impl Step {
    const ALL: [Step; 7] = [
        Step::JoinOwn,
        Step::JoinNeighbours,
        Step::ControlMessages,
        Step::SendOwn,
        Step::LeaveAll,
        Step::JoinSendLeave,
        Step::JoinLeave,
    ];

    fn key(self) -> &'static str {
        match self {
            Step::JoinOwn => "join_new",
            Step::JoinNeighbours => "join_existing",
            Step::ControlMessages => "messages_one_room",
            Step::SendOwn => "messages_own_rooms",
            Step::LeaveAll => "leave_all",
            Step::JoinSendLeave => "empty_rooms",
            Step::JoinLeave => "forgotten_rooms",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Step::JoinOwn => "1. each joins a new room",
            Step::JoinNeighbours => "2. each joins --extra existing rooms",
            Step::ControlMessages => "3. N messages into one room",
            Step::SendOwn => "4. one message into each own room",
            Step::LeaveAll => "5. each leaves all its rooms",
            Step::JoinSendLeave => "6. N new rooms: join, send, leave",
            Step::JoinLeave => "7. N new rooms: join, leave",
        }
    }
}

/// The names of the rooms of each step (the nonce keeps runs against one server apart).
struct Names {
    nonce: String,
    n: usize,
    extra: usize,
}

impl Names {
    fn own(&self, i: usize) -> String {
        format!("{}-m{i}", self.nonce)
    }

    /// The event arrays connection `i` sends at `step`, in order.
    fn events(&self, step: Step, i: usize, size: usize) -> Vec<String> {
        let join = |room: &str| format!(r#"["join","{room}"]"#);
        let leave = |room: &str| format!(r#"["leave","{room}"]"#);
        let send = |room: &str, what: &str| {
            let content = padded(format!("{what}.{}.{i}.", self.nonce), size);
            format!(
                r#"["chat message","{content}","{what}{}-{i}",{{"room":"{room}"}}]"#,
                self.nonce
            )
        };
        let n = self.n;
        match step {
            Step::JoinOwn => vec![join(&self.own(i))],
            Step::JoinNeighbours => (1..=self.extra)
                .map(|k| join(&self.own((i + k) % n)))
                .collect(),
            // Connection 0 sends all N of them (in order; they are acked one by one).
            Step::ControlMessages if i == 0 => (0..n)
                .map(|k| {
                    let content = padded(format!("c.{}.{k}.", self.nonce), size);
                    format!(
                        r#"["chat message","{content}","c{}-{k}",{{"room":"{}"}}]"#,
                        self.nonce,
                        self.own(0)
                    )
                })
                .collect(),
            Step::ControlMessages => Vec::new(),
            Step::SendOwn => vec![send(&self.own(i), "s")],
            Step::LeaveAll => (0..=self.extra)
                .map(|k| leave(&self.own((i + k) % n)))
                .collect(),
            Step::JoinSendLeave => {
                let room = format!("{}-e{i}", self.nonce);
                vec![join(&room), send(&room, "e"), leave(&room)]
            }
            Step::JoinLeave => {
                let room = format!("{}-z{i}", self.nonce);
                vec![join(&room), leave(&room)]
            }
        }
    }
}

/// Whether `body` (an ack's body) answers `event` as the protocol says.
fn check_answer(event: &str, body: &str) -> Result<(), String> {
    let ok = if event.starts_with(r#"["join""#) {
        body.contains(r#""room":"#) && body.contains(r#""last":"#)
    } else if event.starts_with(r#"["leave""#) {
        body.contains(r#""ok":true"#)
    } else {
        !body.contains(r#""error""#)
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{event} was answered {body}"))
    }
}

pub async fn run(args: &RoomMemoryArgs, target: &Target) -> anyhow::Result<Report> {
    let mut report = Report::new("room-memory", &target.name);
    let target = &target.first_only(&mut report);
    let pid = *target
        .pids
        .first()
        .context("room-memory needs the server's pid: pass --server-pid, or use compare")?;
    let n = args.conns as usize;
    report.param("conns", args.conns);
    report.param("extra", args.extra);
    let settle = Duration::from_secs(args.settle);
    let names = Names {
        nonce: nonce(),
        n,
        extra: args.extra as usize,
    };

    let (conns, errors, retried) = connect_all_auth(
        &[target.ws_url()],
        n,
        |_| rooms_auth(0, &[]),
        Buffers::Small,
        args.concurrency as usize,
        "connections",
        2,
    )
    .await;
    if retried > 0 {
        report.notes.push(format!(
            "{retried} connections failed at first and were tried again"
        ));
    }
    anyhow::ensure!(
        conns.len() == n,
        "{} of {n} connections opened: the steps need them all ({})",
        conns.len(),
        summarize_errors("connections", &errors).unwrap_or_default()
    );
    let mut tasks = JoinSet::new();
    let clients: Vec<Client> = conns
        .into_iter()
        .map(|(_, conn)| Client::spawn(conn, &mut tasks))
        .collect();
    tokio::time::sleep(settle).await;
    let mut rss = vec![rss_bytes(Who::Pid(pid))?];
    report.metric(
        "server_rss_mb@no_room",
        format!("server RSS, {n} connections in no room"),
        rss[0] as f64 / 1e6,
        "MB",
        Better::Lower,
    );

    for step in Step::ALL {
        let started = Instant::now();
        let meter = CpuMeter::start(&target.pids);
        let requests = run_step(
            &clients,
            &names,
            step,
            args.size as usize,
            args.concurrency as usize,
            Duration::from_secs(args.timeout),
        )
        .await;
        let cpu = meter.stop();
        let elapsed = started.elapsed();
        let (done, failures) = match requests {
            Ok(counts) => counts,
            Err(e) => {
                report.problems.push(format!("{}: {e:#}", step.label()));
                break;
            }
        };
        if let Some(first) = failures.first() {
            report.problems.push(format!(
                "{}: {} requests failed (first: {first})",
                step.label(),
                failures.len()
            ));
        }
        tokio::time::sleep(settle).await;
        let now = rss_bytes(Who::Pid(pid))?;
        rss.push(now);
        let key = step.key();
        report.metric(
            format!("server_rss_mb@{key}"),
            format!("server RSS after {}", step.label()),
            now as f64 / 1e6,
            "MB",
            Better::Lower,
        );
        report.metric(
            format!("step_s@{key}"),
            format!("time of {} ({done} requests)", step.label()),
            elapsed.as_secs_f64(),
            "s",
            Better::Lower,
        );
        if let Some(server_s) = cpu.server_s
            && done > 0
        {
            report.metric(
                format!("server_cpu_us_per_request@{key}"),
                format!("server CPU per request, {}", step.label()),
                server_s * 1e6 / done as f64,
                "µs",
                Better::Lower,
            );
        }
    }

    if rss.len() == Step::ALL.len() + 1 {
        let grew = |step: usize| rss[step + 1] as f64 - rss[step] as f64;
        let n = n as f64;
        let memberships = n * args.extra as f64;
        let per_membership = grew(1) / memberships;
        let figures = [
            (
                "rss_per_membership_bytes",
                "RSS per membership (step 2)",
                per_membership,
            ),
            (
                "rss_per_room_with_members_bytes",
                "RSS per room with members, no message (step 1 less a membership)",
                grew(0) / n - per_membership,
            ),
            (
                "rss_per_room_holding_messages_bytes",
                "RSS per room holding messages (step 4 less step 3, per room)",
                (grew(3) - grew(2)) / n,
            ),
            (
                "rss_per_empty_room_bytes",
                "RSS per empty room: messages, no member (step 6)",
                grew(5) / n,
            ),
            (
                "rss_per_forgotten_room_bytes",
                "RSS per room joined and left with no message (step 7)",
                grew(6) / n,
            ),
        ];
        for (key, label, bytes) in figures {
            report.metric(key, label, bytes, "B", Better::Lower);
        }
    }
    drop(clients);
    while tasks.join_next().await.is_some() {}
    report.server_memory(&target.pids);
    Ok(report)
}

/// Runs `step` on every connection, at most `concurrency` connections at a time (each one's
/// requests in order); the number of requests made and the failures.
async fn run_step(
    clients: &[Client],
    names: &Names,
    step: Step,
    size: usize,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<(u64, Vec<String>)> {
    let work = futures_util::stream::iter(clients.iter().enumerate())
        .map(|(i, client)| {
            let events = names.events(step, i, size);
            let client = client.clone();
            async move {
                let mut failures = Vec::new();
                let count = events.len() as u64;
                if step == Step::ControlMessages {
                    // One connection, many sends: pipeline them (at most 64 in flight).
                    let answers: Vec<(String, anyhow::Result<String>)> =
                        futures_util::stream::iter(events)
                            .map(|event| {
                                let client = client.clone();
                                async move {
                                    let answer = client.request(event.clone()).await;
                                    (event, answer)
                                }
                            })
                            .buffered(64)
                            .collect()
                            .await;
                    for (event, answer) in answers {
                        record(&event, answer, &mut failures);
                    }
                } else {
                    for event in events {
                        let answer = client.request(event.clone()).await;
                        record(&event, answer, &mut failures);
                    }
                }
                (count, failures)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .fold((0u64, Vec::new()), |(count, mut all), (n, failures)| {
            all.extend(failures);
            async move { (count + n, all) }
        });
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => Ok(result),
        Err(_) => bail!("not done within {timeout:?}"),
    }
}

fn record(event: &str, answer: anyhow::Result<String>, failures: &mut Vec<String>) {
    let result = match answer {
        Ok(body) => check_answer(event, &body),
        Err(e) => Err(format!("{event}: {e:#}")),
    };
    if let Err(e) = result {
        failures.push(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_asks_what_it_measures() {
        let names = Names {
            nonce: "ab12".into(),
            n: 4,
            extra: 2,
        };
        assert_eq!(names.events(Step::JoinOwn, 1, 8), [r#"["join","ab12-m1"]"#]);
        assert_eq!(
            names.events(Step::JoinNeighbours, 3, 8),
            [r#"["join","ab12-m0"]"#, r#"["join","ab12-m1"]"#]
        );
        assert_eq!(names.events(Step::ControlMessages, 0, 8).len(), 4);
        assert!(names.events(Step::ControlMessages, 1, 8).is_empty());
        assert_eq!(names.events(Step::LeaveAll, 2, 8).len(), 3);
        let send = &names.events(Step::SendOwn, 2, 16)[0];
        assert!(
            send.ends_with(r#","sab12-2",{"room":"ab12-m2"}]"#),
            "{send}"
        );
        assert_eq!(names.events(Step::JoinSendLeave, 0, 8).len(), 3);
        assert_eq!(names.events(Step::JoinLeave, 0, 8).len(), 2);
    }

    #[test]
    fn answers_are_checked_against_the_protocol() {
        assert!(check_answer(r#"["join","a"]"#, r#"[{"room":"a","last":0}]"#).is_ok());
        assert!(check_answer(r#"["join","a"]"#, r#"[{"error":"too many rooms"}]"#).is_err());
        assert!(check_answer(r#"["leave","a"]"#, r#"[{"ok":true}]"#).is_ok());
        assert!(check_answer(r#"["chat message","x","o",{}]"#, "[]").is_ok());
        assert!(check_answer(r#"["chat message","x","o",{}]"#, r#"[{"id":3}]"#).is_ok());
        assert!(check_answer(r#"["chat message","x","o",{}]"#, r#"[{"error":"no"}]"#).is_err());
    }
}
