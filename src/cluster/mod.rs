//! Cluster mode: several tidings nodes share one NATS JetStream stream as their log.
//!
//! ```text
//! socket ─▶ ingest::Log = JetStreamLog ──publish (Nats-Msg-Id)──▶ stream (R3, sequence = id)
//!                                                                      │
//! hub ◀── writer (apply: local redb replica) ◀── applier (own tail) ◀──┘
//! ```
//!
//! - [`stream`]: the stream's setup and identity (the epoch clients see), checked against the
//!   node's file.
//! - [`log`]: the [`crate::ingest::Log`] of a cluster node: exactly-once publishes, retries
//!   with the same message id, and the ack only once this node's replica has the message.
//! - [`applier`]: tails the stream in order into the local replica and the hub.
//! - [`health`]: what the node knows of NATS and of its own catching up (readiness, and the
//!   gate that keeps ingest closed until the replica is complete).
//! - [`presence`]: who is online on every node, over plain NATS subjects.
//!
//! Everything after the log (delivery, replay, history, the tail cache) reads the local replica
//! exactly as a single node does.

pub mod applier;
pub mod health;
pub mod log;
pub mod presence;
pub mod stream;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream;

use crate::ingest::retention::Retention;
use health::Health;

/// How long start-up waits for NATS and the stream before giving up with one clear line.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the NATS connection is pinged: three unanswered pings (6 s) and the client moves
/// to another server. A NATS server cut off by a silent partition, or stopped, keeps its TCP
/// connections open; with async-nats' default (60 s), a node whose server was cut off acked
/// nothing for minutes while the rest of the cluster went on (found by the fault harness,
/// tests/faults: a 15 s partition of the stream's leader stopped every node's acks).
const NATS_PING: Duration = Duration::from_secs(2);

/// What a node needs to join a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URLs (every server of the NATS cluster, so the client fails over).
    pub urls: Vec<String>,
    /// The JetStream stream that is the log.
    pub stream: String,
    /// Its replicas (3 for a production NATS cluster; 1 with a single NATS server).
    pub replicas: usize,
    /// Retention, which the stream's limits mirror.
    pub retention: Retention,
    /// This node's name, in consumer names, presence and logs.
    pub node: String,
    /// The default room's name, which every node of the cluster must share.
    pub default_room: String,
}

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// NATS could not be reached.
    #[error("cannot reach NATS at {urls}: {reason}")]
    Connect {
        /// The URLs tried.
        urls: String,
        /// What the client said.
        reason: String,
    },
    /// The stream could not be created or read.
    #[error("JetStream stream {stream}: {reason}")]
    Stream {
        /// The stream's name.
        stream: String,
        /// What went wrong.
        reason: String,
    },
    /// The stream exists with settings this node cannot share.
    #[error(
        "JetStream stream {stream} exists with other settings ({differences}); use the same \
         --stream, --replicas and retention on every node, or another --stream"
    )]
    Mismatch {
        /// The stream's name.
        stream: String,
        /// Which settings differ.
        differences: String,
    },
}

/// A node's link to its cluster: the NATS connection, the stream and its identity.
pub struct Cluster {
    /// What it was asked to join.
    pub config: ClusterConfig,
    /// The NATS connection (reconnects by itself, to any of the URLs).
    pub client: async_nats::Client,
    /// JetStream over it, with bounded requests and acks.
    pub js: jetstream::Context,
    /// The log's stream.
    pub stream: jetstream::stream::Stream,
    /// The stream's identity (`NAME@CREATED`), which the node's file must match.
    pub identity: String,
    /// What the node knows of NATS and of its catching up.
    pub health: Arc<Health>,
}

impl Cluster {
    /// Connects to NATS and finds (or creates) the stream, waiting up to `START_TIMEOUT` (60 s)
    /// while NATS is unreachable or has no quorum; a stream with other settings is refused at
    /// once.
    pub async fn join(config: ClusterConfig) -> Result<Self, ClusterError> {
        // The readiness gate depends on the stream's duplicate window, known once it is found;
        // the connection's events need the health before that.
        let connected = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let events = connected.clone();
        let urls = config.urls.join(",");
        let client = async_nats::ConnectOptions::new()
            .name(&config.node)
            .ping_interval(NATS_PING)
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let health = events.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => health.store(true, Ordering::Release),
                        async_nats::Event::Disconnected => health.store(false, Ordering::Release),
                        other => tracing::debug!("nats: {other}"),
                    }
                }
            })
            .connect(config.urls.as_slice())
            .await
            .map_err(|e| ClusterError::Connect {
                urls: urls.clone(),
                reason: e.to_string(),
            })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(log::ACK_TIMEOUT)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let deadline = Instant::now() + START_TIMEOUT;
        let stream = loop {
            match stream::ensure(&js, &config).await {
                Ok(stream) => break stream,
                Err(e @ ClusterError::Mismatch { .. }) => return Err(e),
                Err(e) if Instant::now() >= deadline => {
                    return Err(match client.connection_state() {
                        async_nats::connection::State::Connected => e,
                        _ => ClusterError::Connect {
                            urls,
                            reason: format!("no connection after {START_TIMEOUT:?}"),
                        },
                    });
                }
                Err(e) => {
                    tracing::info!("waiting for NATS and the stream: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let identity = stream::identity(stream.cached_info());
        let gate = health::gate_for(stream.cached_info().config.duplicate_window);
        tracing::info!(
            window = ?stream.cached_info().config.duplicate_window,
            ?gate,
            "ingest opens once the replica has what the stream held this long ago"
        );
        let health = Arc::new(Health::new(gate, connected));
        Ok(Self {
            config,
            client,
            js,
            stream,
            identity,
            health,
        })
    }

    /// The stream, as the applier reads it.
    pub fn source(&self) -> applier::JetStreamSource {
        applier::JetStreamSource::new(self.js.clone(), self.stream.clone(), &self.config.node)
    }

    /// The epoch clients see: the same on every node of this cluster.
    pub fn epoch(&self) -> u64 {
        stream::epoch(&self.identity)
    }
}

/// `name` as one NATS subject token and a valid consumer name: letters, digits and `-` stay,
/// every other byte becomes `_` and two hex digits (so `a.b` and `a_b` stay apart). A host
/// name has dots, which would split a subject into several tokens.
pub fn name_token(name: &str) -> String {
    let mut token = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            token.push(char::from(byte));
        } else {
            token.push_str(&format!("_{byte:02x}"));
        }
    }
    token
}

/// A name for this process among the cluster's nodes: host name and process id.
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_become_distinct_single_tokens() {
        assert_eq!(name_token("node-1"), "node-1");
        assert_eq!(name_token("ip-10.ec2"), "ip-10_2eec2");
        assert_ne!(name_token("a.b"), name_token("a_b"));
        assert_eq!(name_token("é"), "_c3_a9");
    }
}
