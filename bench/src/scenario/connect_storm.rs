//! `connect-storm`: what presence costs at connect (tidings' `presence` extension, README
//! "Extensions"). N idle connections are held, each with its own nickname (`auth.nickname`);
//! then
//!
//! - **probes**: M more clients connect one at a time, each timed from opening the websocket
//!   to the CONNECT reply (`40…`) and to its first `presence` event (a newcomer gets the
//!   current list at once), with the server's CPU per connect;
//! - **storm**: all N connections are dropped at once and reconnect (at most `--concurrency`
//!   handshakes at a time), as every page does after a network blip: the time until all are
//!   connected again, until every one has received a `presence` with count N, and the server
//!   CPU that took.
//!
//! Presence counts every connection of the server, so the scenario needs a server of its own
//! (compare mode starts one); it connects at `serverOffset` 0, so a fresh database keeps
//! replays out of the figures. The counts are checked, not assumed: a phase ends when every
//! connection's latest `presence` says the expected count and still does one presence interval
//! later (the server coalesces presence to one event a second).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::Args;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Target, nonce, summarize_errors};
use crate::conn::{Buffers, Conn, HANDSHAKE_TIMEOUT};
use crate::frame;
use crate::procfs::{CpuMeter, CpuUse};
use crate::report::{Better, Report};
use crate::stats::Histogram;

#[derive(Debug, Clone, Args)]
pub struct ConnectStormArgs {
    /// Idle connections held, each with its own nickname (N).
    #[arg(long, default_value_t = 1000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub conns: usize,

    /// Additional clients connected one at a time over the N held ones (M).
    #[arg(long, default_value_t = 200, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=100_000))]
    pub probes: usize,

    /// Handshakes in progress at once when the N connections open and reconnect (the
    /// listen backlog would otherwise drop SYNs, and the figures would be the kernel's
    /// retransmission timer's).
    #[arg(long, default_value_t = 128, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub concurrency: usize,

    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
}

/// How long every connection's presence count must hold before a phase counts as settled:
/// past the server's presence interval (1 s), so a change still to be announced shows.
const STABLE: Duration = Duration::from_millis(1500);

/// What one held connection has seen on its current websocket.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    /// When its current websocket got the CONNECT reply.
    connected: Option<Instant>,
    /// The count of the latest `presence` on that websocket, and when it came.
    presence: Option<(u64, Instant)>,
}

/// When every connection got its CONNECT reply and its latest presence, if every one
/// connected at or after `since` and its latest presence (received since) says `expected`.
fn settled(seen: &[Seen], since: Instant, expected: u64) -> Option<(Instant, Instant)> {
    let mut last = (since, since);
    for s in seen {
        let connected = s.connected.filter(|&at| at >= since)?;
        let (count, at) = s.presence?;
        if count != expected || at < connected {
            return None;
        }
        last = (last.0.max(connected), last.1.max(at));
    }
    Some(last)
}

/// What the held connections share with the scenario.
struct Held {
    seen: Mutex<Vec<Seen>>,
    /// Handshake slots (`--concurrency`).
    gate: Semaphore,
    /// Time from a holder's (re)connect attempt to its CONNECT reply, slot wait included.
    handshake: Histogram,
}

impl Held {
    fn update(&self, i: usize, f: impl FnOnce(&mut Seen)) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = seen.get_mut(i) {
            f(s);
        }
    }

    fn settled(&self, since: Instant, expected: u64) -> Option<(Instant, Instant)> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        settled(&seen, since, expected)
    }
}

/// How a phase ended.
struct Settled {
    /// From the phase's start to the last CONNECT reply.
    all_connected: Duration,
    /// From the phase's start to the last connection's presence with the expected count.
    all_presence: Duration,
    /// Over the phase, up to the moment it settled.
    cpu: CpuUse,
}

/// Waits until [`settled`] holds and still holds [`STABLE`] later (a later settled state
/// replaces the first); `None` after `timeout`.
async fn wait_settled(
    held: &Held,
    since: Instant,
    expected: impl Fn() -> u64,
    meter: &CpuMeter,
    timeout: Duration,
) -> Option<Settled> {
    let give_up = since + timeout;
    let mut candidate: Option<((Instant, Instant), CpuUse)> = None;
    loop {
        if Instant::now() > give_up {
            return None;
        }
        match held.settled(since, expected()) {
            None => candidate = None,
            Some(times) => match &candidate {
                Some((first, _)) if *first == times => {
                    if Instant::now() >= times.1.max(times.0) + STABLE {
                        let ((connected, presence), cpu) = candidate?;
                        return Some(Settled {
                            all_connected: connected - since,
                            all_presence: presence - since,
                            cpu,
                        });
                    }
                }
                _ => candidate = Some((times, meter.stop())),
            },
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn run(args: &ConnectStormArgs, target: &Target) -> anyhow::Result<Report> {
    let mut report = Report::new("connect-storm", &target.name);
    let target = &target.first_only(&mut report);
    report.param("conns", args.conns);
    report.param("probes", args.probes);
    report.param("concurrency", args.concurrency);
    anyhow::ensure!(args.conns > 0, "--conns must be at least 1");
    let url = target.ws_url();
    let tag = nonce();
    let timeout = Duration::from_secs(args.timeout);
    let held = Arc::new(Held {
        seen: Mutex::new(vec![Seen::default(); args.conns]),
        gate: Semaphore::new(args.concurrency.max(1)),
        handshake: Histogram::new(),
    });
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    // Presence counts the holders still up: one that failed is not coming back.
    let alive = {
        let failed = failed.clone();
        let n = args.conns;
        move || {
            let failed = failed.lock().unwrap_or_else(PoisonError::into_inner).len();
            n.saturating_sub(failed) as u64
        }
    };
    let stop = CancellationToken::new();
    let (reconnect, reconnects) = watch::channel(0u64);

    // N held connections, each with its nickname.
    let meter = CpuMeter::start(&target.pids);
    let begin = Instant::now();
    let mut holders = JoinSet::new();
    for i in 0..args.conns {
        let auth = format!("{{\"serverOffset\":0,\"nickname\":\"h{tag}-{i}\"}}");
        let (url, held, failed) = (url.clone(), held.clone(), failed.clone());
        let (stop, reconnects) = (stop.clone(), reconnects.clone());
        holders.spawn(async move {
            if let Err(e) = hold(i, &url, &auth, &held, reconnects, stop).await {
                failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(e);
            }
        });
    }
    let initial = wait_settled(&held, begin, &alive, &meter, timeout).await;
    let (handshakes, _) = held.handshake.take();
    let Some(initial) = initial else {
        stop.cancel();
        while holders.join_next().await.is_some() {}
        report_failures(&mut report, &failed);
        anyhow::bail!(
            "the {} connections did not all connect and see each other within {timeout:?}",
            args.conns
        );
    };
    phase(&mut report, "initial", &initial, alive() as f64);
    report.latency("initial_handshake", "initial: connect", &handshakes, "");

    // M probes, one at a time, over the N held ones.
    let n = alive();
    let connect = Histogram::new();
    let presence = Histogram::new();
    let meter = CpuMeter::start(&target.pids);
    let mut probes = Vec::with_capacity(args.probes);
    for k in 0..args.probes {
        let auth = format!("{{\"serverOffset\":0,\"nickname\":\"p{tag}-{k}\"}}");
        match probe(&url, &auth, n + k as u64 + 1).await {
            Ok((conn, to_connect, to_presence)) => {
                connect.record(to_connect);
                presence.record(to_presence);
                probes.push(conn);
            }
            Err(e) => {
                report.problems.push(format!("probe {k}: {e:#}"));
                break;
            }
        }
    }
    let cpu = meter.stop();
    let done = probes.len();
    report.metric(
        "probes_connected",
        "probes connected",
        done as f64,
        "",
        Better::Neither,
    );
    report.latency(
        "probe_connect",
        "probe: to CONNECT reply",
        &connect.summary(),
        "",
    );
    report.latency(
        "probe_presence",
        "probe: to first presence",
        &presence.summary(),
        "",
    );
    report.cpu(&cpu, done as f64, "connect", "_probe");
    let mut closing = JoinSet::new();
    for conn in probes {
        closing.spawn(conn.close());
    }
    while closing.join_next().await.is_some() {}
    // Back to the N held ones before the storm (not measured).
    let back = Instant::now();
    let quiet = CpuMeter::start(&[]);
    if wait_settled(&held, begin, &alive, &quiet, timeout)
        .await
        .is_none()
    {
        report.problems.push(format!(
            "after the probes left, presence never said {}",
            alive()
        ));
    }
    report.metric(
        "probes_gone_s",
        "until every held connection heard the probes left",
        back.elapsed().as_secs_f64(),
        "s",
        Better::Neither,
    );

    // The storm: every held connection dropped and reconnected at once.
    let meter = CpuMeter::start(&target.pids);
    let storm = Instant::now();
    reconnect.send_replace(1);
    let result = wait_settled(&held, storm, &alive, &meter, timeout).await;
    let (handshakes, _) = held.handshake.take();
    match result {
        Some(settled) => {
            phase(&mut report, "storm", &settled, alive() as f64);
            report.latency("storm_reconnect", "storm: reconnect", &handshakes, "");
        }
        None => {
            let seen = held.seen.lock().unwrap_or_else(PoisonError::into_inner);
            let connected = seen
                .iter()
                .filter(|s| s.connected.is_some_and(|at| at >= storm))
                .count();
            report.problems.push(format!(
                "storm: after {timeout:?}, {connected} of {} reconnected, and not every one saw count {}",
                args.conns,
                alive()
            ));
        }
    }

    stop.cancel();
    while holders.join_next().await.is_some() {}
    report_failures(&mut report, &failed);
    report.server_memory(&target.pids);
    Ok(report)
}

/// A phase's figures: its times, and the server CPU it took per connection.
fn phase(report: &mut Report, name: &str, settled: &Settled, conns: f64) {
    report.metric(
        format!("{name}_all_connected_s"),
        format!("{name}: until all {conns} connected"),
        settled.all_connected.as_secs_f64(),
        "s",
        Better::Lower,
    );
    report.metric(
        format!("{name}_all_presence_s"),
        format!("{name}: until all saw presence count {conns}"),
        settled.all_presence.as_secs_f64(),
        "s",
        Better::Lower,
    );
    if let Some(server_s) = settled.cpu.server_s {
        report.metric(
            format!("server_cpu_s_{name}"),
            format!("{name}: server CPU"),
            server_s,
            "s",
            Better::Lower,
        );
    }
    report.cpu(&settled.cpu, conns, "connect", &format!("_{name}"));
}

fn report_failures(report: &mut Report, failed: &Mutex<Vec<String>>) {
    let failed = failed.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(e) = summarize_errors("held connections", &failed) {
        report.problems.push(e);
    }
}

/// One probe: connects, then reads until its first `presence`, which must count at least
/// `at_least` clients (the held ones, the earlier probes and itself). Returns the connection
/// and the times to the CONNECT reply and to that presence.
async fn probe(url: &str, auth: &str, at_least: u64) -> anyhow::Result<(Conn, Duration, Duration)> {
    let start = Instant::now();
    let mut conn = Conn::connect_auth(url, auth, Buffers::Small).await?;
    let to_connect = start.elapsed();
    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            match conn.recv().await? {
                Some(text) => {
                    if let Some(count) = frame::presence_count(text.as_str()) {
                        return anyhow::Ok(count);
                    }
                }
                None => anyhow::bail!("closed before its first presence"),
            }
        }
    })
    .await;
    let count = match first {
        Ok(count) => count?,
        Err(_) => anyhow::bail!("no presence within {HANDSHAKE_TIMEOUT:?} of connecting"),
    };
    let to_presence = start.elapsed();
    anyhow::ensure!(
        count >= at_least,
        "its first presence counts {count} clients, expected at least {at_least}"
    );
    Ok((conn, to_connect, to_presence))
}

/// Holds connection `i`: connects (waiting for a handshake slot), records every `presence`
/// count it receives, answers pings; drops the connection and connects again whenever
/// `reconnects` changes, until `stop`. An error ends it: the server refused or closed it.
async fn hold(
    i: usize,
    url: &str,
    auth: &str,
    held: &Held,
    mut reconnects: watch::Receiver<u64>,
    stop: CancellationToken,
) -> Result<(), String> {
    loop {
        let attempt = Instant::now();
        let conn = {
            let _slot = held.gate.acquire().await.map_err(|e| e.to_string())?;
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                conn = Conn::connect_auth(url, auth, Buffers::Small) => conn,
            }
        };
        let mut conn = conn.map_err(|e| format!("connection {i}: {e:#}"))?;
        let connected = Instant::now();
        held.handshake.record(connected - attempt);
        held.update(i, |s| {
            *s = Seen {
                connected: Some(connected),
                presence: None,
            }
        });
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    conn.close().await;
                    return Ok(());
                }
                changed = reconnects.changed() => {
                    if changed.is_err() {
                        conn.close().await;
                        return Ok(());
                    }
                    // Dropped, not closed: as a page whose network went away, the server
                    // learns it from the TCP connection's end.
                    drop(conn);
                    break;
                }
                text = conn.recv() => match text {
                    Ok(Some(text)) => {
                        if let Some(count) = frame::presence_count(text.as_str()) {
                            let at = Instant::now();
                            held.update(i, |s| s.presence = Some((count, at)));
                        }
                    }
                    Ok(None) => return Err(format!("connection {i}: closed by the server")),
                    Err(e) => return Err(format!("connection {i}: {e:#}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(connected: Option<Instant>, presence: Option<(u64, Instant)>) -> Seen {
        Seen {
            connected,
            presence,
        }
    }

    #[test]
    fn settled_only_when_every_connection_saw_the_count_since_it_connected() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let all = [
            seen(Some(at(10)), Some((2, at(15)))),
            seen(Some(at(20)), Some((2, at(30)))),
        ];
        assert_eq!(settled(&all, t0, 2), Some((at(20), at(30))));
        // Another count, or no presence yet.
        assert_eq!(settled(&all, t0, 3), None);
        let waiting = [all[0], seen(Some(at(20)), None)];
        assert_eq!(settled(&waiting, t0, 2), None);
        // Not connected, or connected before the phase began (a connection the storm has not
        // dropped yet still shows its old state).
        let unconnected = [all[0], seen(None, None)];
        assert_eq!(settled(&unconnected, t0, 2), None);
        assert_eq!(settled(&all, at(12), 2), None);
        // A presence older than the connection is from the websocket before.
        let stale = [all[0], seen(Some(at(40)), Some((2, at(30))))];
        assert_eq!(settled(&stale, t0, 2), None);
        assert_eq!(settled(&[], t0, 0), Some((t0, t0)));
    }
}
