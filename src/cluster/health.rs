//! What a cluster node knows of its log: whether NATS is reachable with a stream leader,
//! whether its last publishes went through, and whether its replica is complete.
//!
//! Two decisions rest on it:
//! - ingest is open only while the replica is complete up to the stream's end of a *gate*
//!   ago (three quarters of the stream's duplicate window: 90 s for the 120 s window tidings
//!   creates): a retry of a message stored earlier than JetStream's duplicate window is
//!   answered by the node's own dedup table, which can only if the node has every message that
//!   old. The probe records the stream's end once a second; the gate compares the replica with
//!   the oldest such observation still within the gate (so a node just started, or back from a
//!   partition, must first apply what the stream held then; a node applying in step with the
//!   stream is never held up by the messages being stored right now);
//! - the node is ready (`/healthz` 200) only while NATS is connected, a probe or a publish
//!   succeeded lately, no publish failed since, and ingest is open. A node that is not ready
//!   still serves reads, replays and history from its replica; a load balancer moves the
//!   clients that want to send.
//!
//! Stream info alone is not a quorum signal: a leader cut off from its replicas (or deaf to
//! them) still answers it, with an end that the others have left behind, until it steps down.
//! So a probe counts only if the leader it reached has heard from a majority of the replicas
//! lately ([`has_quorum`]); an answer without one makes the node unready at once, like a
//! failed publish. Found by the fault harness (tests/faults): a node whose only reachable NATS
//! server was such a leader said ready for 12 s, and took a reader's offset, above that
//! leader's stale end, for another database's.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::stream;
use tokio_util::sync::CancellationToken;

use crate::delivery::Hub;
use crate::every::Every;

/// How far back the replica must be complete for ingest to be open, for a stream whose
/// duplicate window is `window`: less than the window (three quarters of it), so a retry older
/// than the window finds its original here.
pub fn gate_for(window: Duration) -> Duration {
    window * 3 / 4
}

/// How recent a successful probe or publish must be for the node to be ready.
const FRESH: Duration = Duration::from_secs(5);

/// How often the stream is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Bound on one probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A replica the stream's leader has not heard from for this long does not count towards its
/// quorum (JetStream's replicas hear from their leader every second).
const HEARD_WITHIN: Duration = Duration::from_secs(4);

/// Whether the stream's leader, as `cluster` describes it, has heard from a majority of the
/// stream's replicas (itself included) within [`HEARD_WITHIN`]. A stream without cluster
/// information (one replica, or a single server) has.
fn has_quorum(cluster: Option<&stream::ClusterInfo>) -> bool {
    let Some(cluster) = cluster else {
        return true;
    };
    if cluster.leader.is_none() {
        return false;
    }
    let heard = cluster
        .replicas
        .iter()
        .filter(|peer| !peer.offline && peer.active < HEARD_WITHIN)
        .count();
    let members = cluster.replicas.len() + 1;
    (heard + 1) * 2 > members
}

#[derive(Debug, Default)]
struct State {
    /// The last time the stream answered with a leader, or a publish was acked.
    last_ok: Option<Instant>,
    /// The last time a publish failed (timed out, no stream leader, disconnected) or the
    /// stream answered without a quorum, and which.
    last_failure: Option<(Instant, &'static str)>,
    /// The stream's end as the probe saw it, once a second, for the last [`GATE`].
    ends: VecDeque<(Instant, u64)>,
}

impl State {
    /// The end the replica must have reached at `now`: the oldest observation within `gate`.
    fn must_reach(&mut self, gate: Duration, now: Instant) -> Option<u64> {
        while self
            .ends
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= gate)
        {
            self.ends.pop_front();
        }
        self.ends.front().map(|(_, end)| *end)
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Health {
    /// Whether the NATS client is connected (its event callback sets it).
    connected: Arc<AtomicBool>,
    /// How far back the replica must be complete ([`gate_for`] the stream's window).
    gate: Duration,
    state: Mutex<State>,
}

impl Health {
    /// The health of a node whose replica must be complete up to the stream's end of `gate`
    /// ago (see [`gate_for`]), connected to NATS while `connected` says so.
    pub fn new(gate: Duration, connected: Arc<AtomicBool>) -> Self {
        Self {
            connected,
            gate,
            state: Mutex::default(),
        }
    }

    /// The gate: how far back the replica must be complete for ingest to be open.
    pub fn gate(&self) -> Duration {
        self.gate
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Plain fields assigned one at a time: never inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A publish was acked: the stream reaches `end`, and answers. Also tells the hub.
    pub fn acked(&self, end: u64, hub: &Hub) {
        hub.learn_log_end(end);
        self.state().last_ok = Some(Instant::now());
    }

    /// The probe found the stream's end at `end`. Also tells the hub.
    pub fn probed(&self, end: u64, hub: &Hub) {
        self.probed_at(end, hub, Instant::now());
    }

    fn probed_at(&self, end: u64, hub: &Hub, now: Instant) {
        hub.probed(end);
        let mut state = self.state();
        state.last_ok = Some(now);
        let end = state.ends.back().map_or(end, |(_, last)| end.max(*last));
        state.ends.push_back((now, end));
    }

    /// A publish failed.
    pub fn publish_failed(&self) {
        self.state().last_failure = Some((Instant::now(), "the last publish failed"));
    }

    /// The stream answered, but its leader has no quorum.
    pub fn no_quorum(&self) {
        self.state().last_failure = Some((
            Instant::now(),
            "the stream's leader has not heard from a majority of its replicas",
        ));
    }

    /// Whether the node can take messages now (see the module docs).
    pub fn is_ready(&self, hub: &Hub) -> bool {
        self.problem(hub).is_none()
    }

    /// Why the node is not ready, for `/healthz` and logs; `None` when it is.
    pub fn problem(&self, hub: &Hub) -> Option<String> {
        self.problem_at(hub, Instant::now())
    }

    fn problem_at(&self, hub: &Hub, now: Instant) -> Option<String> {
        if !self.connected.load(Ordering::Acquire) {
            return Some("NATS is unreachable".into());
        }
        let mut state = self.state();
        match (state.last_ok, state.last_failure) {
            (None, _) => return Some("no answer from the stream yet".into()),
            (Some(ok), _) if now.saturating_duration_since(ok) >= FRESH => {
                return Some("the stream has not answered lately (no leader or no quorum)".into());
            }
            (Some(ok), Some((failure, why))) if failure >= ok => return Some(why.into()),
            _ => {}
        }
        match state.must_reach(self.gate, now) {
            Some(end) if hub.last_published() >= end => None,
            Some(end) => Some(format!(
                "catching up: applied {} of {end}",
                hub.last_published()
            )),
            None => Some("the stream's end is not known yet".into()),
        }
    }
}

/// Asks the stream for its state every second until `stop`: a leader means it answers, and
/// its last sequence is an end the replica must reach.
pub async fn probe_forever(
    mut stream: stream::Stream,
    health: Arc<Health>,
    hub: Arc<Hub>,
    stop: CancellationToken,
) {
    let mut every = Every::new(PROBE_EVERY, stop);
    let mut logged_problem = Some("starting".to_string());
    hub.follow_stream();
    while every.tick().await {
        match tokio::time::timeout(PROBE_TIMEOUT, stream.info()).await {
            Ok(Ok(info)) if has_quorum(info.cluster.as_ref()) => {
                health.probed(info.state.last_sequence, &hub);
            }
            Ok(Ok(info)) if info.cluster.as_ref().is_some_and(|c| c.leader.is_some()) => {
                tracing::debug!("stream probe: a leader without a quorum");
                health.no_quorum();
            }
            Ok(Ok(_)) => tracing::debug!("stream probe: no leader"),
            Ok(Err(e)) => tracing::debug!("stream probe failed: {e}"),
            Err(_) => tracing::debug!("stream probe timed out"),
        }
        let problem = health.problem(&hub);
        if problem != logged_problem {
            match &problem {
                Some(problem) => tracing::warn!("not ready: {problem}"),
                None => tracing::info!("ready: connected to the stream and caught up"),
            }
            logged_problem = problem;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::TailLimits;
    use crate::message::test_support::msg;

    fn hub(last: u64) -> Hub {
        let tail = TailLimits {
            max_messages: 10,
            max_bytes: 1 << 20,
        };
        Hub::new(last, 8, tail, [])
    }

    #[test]
    fn a_probe_counts_only_a_leader_that_heard_from_a_majority_lately() {
        let cluster = |leader: Option<&str>, active_ms: &[u64], offline: bool| {
            let replicas: Vec<_> = active_ms
                .iter()
                .enumerate()
                .map(|(n, ms)| {
                    serde_json::json!({
                        "name": format!("n{n}"), "current": true, "offline": offline,
                        "active": ms * 1_000_000,
                    })
                })
                .collect();
            serde_json::from_value::<stream::ClusterInfo>(
                serde_json::json!({ "leader": leader, "replicas": replicas }),
            )
            .expect("cluster info")
        };
        assert!(has_quorum(None), "a single server");
        assert!(has_quorum(Some(&cluster(Some("n0"), &[300, 800], false))));
        assert!(
            has_quorum(Some(&cluster(Some("n0"), &[300, 60_000], false))),
            "two of three"
        );
        // The harness's cases: a leader cut off from both replicas, or deaf to them (one-way):
        // it still answers, having heard from nobody for a while.
        assert!(!has_quorum(Some(&cluster(
            Some("n0"),
            &[9_000, 12_000],
            false
        ))));
        assert!(!has_quorum(Some(&cluster(Some("n0"), &[100, 100], true))));
        assert!(!has_quorum(Some(&cluster(None, &[100, 100], false))));
    }

    #[test]
    fn ingest_opens_once_the_replica_has_what_the_stream_held_a_gate_ago() {
        let gate = gate_for(Duration::from_secs(120));
        assert_eq!(gate, Duration::from_secs(90));
        let health = Health::new(gate, Arc::new(AtomicBool::new(true)));
        let hub = hub(50);
        let t0 = Instant::now();
        // Just started: the stream ends at 100, the replica at 50.
        health.probed_at(100, &hub, t0);
        assert_eq!(
            health.problem_at(&hub, t0).as_deref(),
            Some("catching up: applied 50 of 100")
        );
        // Applying in step with a busy stream: the end keeps moving, the replica follows a
        // little behind; what counts is the end as of the gate ago.
        hub.publish((51..=100).map(msg));
        let t1 = t0 + Duration::from_secs(1);
        health.probed_at(180, &hub, t1);
        assert_eq!(health.problem_at(&hub, t1), None, "100 of 100 as of t0");
        // The replica stops at 100 (a stalled applier) while the stream goes on. Until the
        // t0 observation is a gate old, 100 is all it must have; then it must have 180, as
        // the stream had at t1: ingest closes.
        let aged_out = t0 + gate;
        health.probed_at(260, &hub, aged_out - Duration::from_secs(2));
        assert_eq!(
            health.problem_at(&hub, aged_out - Duration::from_millis(1)),
            None,
            "still within the gate of t0"
        );
        assert_eq!(
            health.problem_at(&hub, aged_out).as_deref(),
            Some("catching up: applied 100 of 180")
        );
    }
}
