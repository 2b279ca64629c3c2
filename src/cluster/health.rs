//! What a cluster node knows of its log: whether NATS is reachable with a stream leader,
//! whether its last publishes went through, and whether its replica is complete.
//!
//! Two decisions rest on it:
//! - ingest is open only while the replica is complete up to the stream's end of [`GATE`]
//!   ago: a retry of a message stored earlier than JetStream's duplicate window is answered by
//!   the node's own dedup table, which can only if the node has every message that old. The
//!   probe records the stream's end once a second; the gate compares the replica with the
//!   oldest such observation still within [`GATE`] (so a node just started, or back from a
//!   partition, must first apply what the stream held then; a node applying in step with
//!   the stream is never held up by the messages being stored right now);
//! - the node is ready (`/healthz` 200) only while NATS is connected, a probe or a publish
//!   succeeded lately, no publish failed since, and ingest is open. A node that is not ready
//!   still serves reads, replays and history from its replica; a load balancer moves the
//!   clients that want to send.
//!
//! Stream info alone is not a quorum signal (an isolated ex-leader answers it for ~20 s), hence
//! the publish outcomes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::stream;
use tokio_util::sync::CancellationToken;

use crate::delivery::Hub;
use crate::every::Every;

/// How far back the replica must be complete for ingest to be open: less than the duplicate
/// window (120 s), so a retry older than the window finds its original here.
pub const GATE: Duration = Duration::from_secs(90);

/// How recent a successful probe or publish must be for the node to be ready.
const FRESH: Duration = Duration::from_secs(5);

/// How often the stream is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Bound on one probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct State {
    /// The last time the stream answered with a leader, or a publish was acked.
    last_ok: Option<Instant>,
    /// The last time a publish failed (timed out, no stream leader, disconnected).
    last_failure: Option<Instant>,
    /// The stream's end as the probe saw it, once a second, for the last [`GATE`].
    ends: VecDeque<(Instant, u64)>,
}

impl State {
    /// The end the replica must have reached: the oldest observation within [`GATE`].
    fn must_reach(&mut self) -> Option<u64> {
        while self
            .ends
            .front()
            .is_some_and(|(at, _)| at.elapsed() >= GATE)
        {
            self.ends.pop_front();
        }
        self.ends.front().map(|(_, end)| *end)
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Health {
    connected: AtomicBool,
    state: Mutex<State>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            connected: AtomicBool::new(true),
            state: Mutex::default(),
        }
    }
}

impl Health {
    fn state(&self) -> MutexGuard<'_, State> {
        // Plain fields assigned one at a time: never inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// NATS connected or disconnected (the client's event callback).
    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }

    /// A publish was acked: the stream reaches `end`, and answers. Also tells the hub.
    pub fn acked(&self, end: u64, hub: &Hub) {
        hub.learn_log_end(end);
        self.state().last_ok = Some(Instant::now());
    }

    /// The probe found the stream's end at `end`. Also tells the hub.
    pub fn probed(&self, end: u64, hub: &Hub) {
        hub.learn_log_end(end);
        let mut state = self.state();
        let now = Instant::now();
        state.last_ok = Some(now);
        let end = state.ends.back().map_or(end, |(_, last)| end.max(*last));
        state.ends.push_back((now, end));
    }

    /// A publish failed.
    pub fn publish_failed(&self) {
        self.state().last_failure = Some(Instant::now());
    }

    /// Whether the replica is complete up to the stream's end of [`GATE`] ago (see the
    /// module docs).
    pub fn caught_up(&self, hub: &Hub) -> bool {
        let must_reach = self.state().must_reach();
        must_reach.is_some_and(|end| hub.last_published() >= end)
    }

    /// Whether the node can take messages now (see the module docs).
    pub fn is_ready(&self, hub: &Hub) -> bool {
        if !self.connected.load(Ordering::Acquire) {
            return false;
        }
        let fresh = {
            let state = self.state();
            match (state.last_ok, state.last_failure) {
                (Some(ok), failure) => ok.elapsed() < FRESH && failure.is_none_or(|f| f < ok),
                (None, _) => false,
            }
        };
        fresh && self.caught_up(hub)
    }

    /// Why the node is not ready, for `/healthz` and logs; `None` when it is.
    pub fn problem(&self, hub: &Hub) -> Option<String> {
        if !self.connected.load(Ordering::Acquire) {
            return Some("NATS is unreachable".into());
        }
        let state = self.state();
        match (state.last_ok, state.last_failure) {
            (None, _) => return Some("no answer from the stream yet".into()),
            (Some(ok), _) if ok.elapsed() >= FRESH => {
                return Some("the stream has not answered lately (no leader or no quorum)".into());
            }
            (Some(ok), Some(failure)) if failure >= ok => {
                return Some("the last publish failed".into());
            }
            _ => {}
        }
        let mut state = state;
        match state.must_reach() {
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
    while every.tick().await {
        match tokio::time::timeout(PROBE_TIMEOUT, stream.info()).await {
            Ok(Ok(info)) if info.cluster.as_ref().is_none_or(|c| c.leader.is_some()) => {
                health.probed(info.state.last_sequence, &hub);
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
