//! Metrics: names, buckets and the Prometheus exporter behind `GET /metrics`.
//!
//! The recording sites call [`counter`], [`gauge`] and [`histogram`] with the names defined
//! here; this module owns the recorder (installed once per process) and renders the text
//! format. It knows nothing about what is measured.

use std::sync::OnceLock;

pub use metrics::{Counter, Gauge, Histogram};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Connected clients now (gauge).
pub const CONNECTIONS: &str = "tidings_connections";
/// Clients that ever connected (counter).
pub const CONNECTIONS_TOTAL: &str = "tidings_connections_total";
/// Messages stored (counter).
pub const MESSAGES_STORED: &str = "tidings_messages_stored_total";
/// Retries answered as duplicates (counter).
pub const DUPLICATES: &str = "tidings_duplicates_total";
/// Messages refused, by `reason` (counter).
pub const REJECTED: &str = "tidings_rejected_total";
/// Acks sent for stored or duplicate messages (counter).
pub const ACKS: &str = "tidings_acks_total";
/// Replays started (counter).
pub const REPLAYS: &str = "tidings_replays_total";
/// Messages sent by replays (counter).
pub const REPLAYED_MESSAGES: &str = "tidings_replayed_messages_total";
/// Time from connect until a client's replay caught up with live delivery (histogram).
pub const REPLAY_SECONDS: &str = "tidings_replay_seconds";
/// Messages per group commit (histogram).
pub const COMMIT_BATCH: &str = "tidings_commit_batch_size";
/// Duration of a group commit, fsync included (histogram).
pub const COMMIT_SECONDS: &str = "tidings_commit_seconds";
/// Failed commits (counter).
pub const COMMIT_FAILURES: &str = "tidings_commit_failures_total";
/// Messages deleted by retention (counter).
pub const PRUNED: &str = "tidings_pruned_total";
/// Size of the database file in bytes (gauge, refreshed on scrape).
pub const DATABASE_BYTES: &str = "tidings_database_bytes";
/// Replay batches served from the in-memory tail cache (counter).
pub const TAIL_CACHE_HITS: &str = "tidings_tail_cache_hits_total";
/// Replay batches the tail cache did not hold, read from the database (counter).
pub const TAIL_CACHE_MISSES: &str = "tidings_tail_cache_misses_total";
/// Messages held in the tail cache (gauge).
pub const TAIL_CACHE_MESSAGES: &str = "tidings_tail_cache_messages";
/// Bytes the tail cache counts against `--tail-cache-bytes` (gauge).
pub const TAIL_CACHE_BYTES: &str = "tidings_tail_cache_bytes";
/// The database page cache's configured size, `--db-cache-mb`, in bytes (gauge).
pub const DATABASE_CACHE_BYTES: &str = "tidings_database_cache_bytes";
/// Bytes of pages the database cache holds now (gauge, refreshed on scrape).
pub const DATABASE_CACHE_USED_BYTES: &str = "tidings_database_cache_used_bytes";
/// Page reads the database cache served (counter, refreshed on scrape; restarts at 0 when
/// the database is reopened after an I/O failure).
pub const DATABASE_CACHE_HITS: &str = "tidings_database_cache_hits_total";
/// Page reads that missed the database cache and read the file (counter, as above).
pub const DATABASE_CACHE_MISSES: &str = "tidings_database_cache_misses_total";
/// Pages dropped from the database cache to stay within its size (counter, as above).
pub const DATABASE_CACHE_EVICTIONS: &str = "tidings_database_cache_evictions_total";
/// The process's resident memory in bytes, from /proc/self/status (gauge, refreshed on
/// scrape; Linux only). The usual Prometheus name, so dashboards find it.
pub const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
/// Times a client fell out of live delivery (its buffer was full) and caught up from the
/// tail cache or the database (counter).
pub const LIVE_FELL_BEHIND: &str = "tidings_live_fell_behind_total";
/// Times the live broadcaster fell behind the hub (its channel, `--live-buffer`, overflowed)
/// and sent every live client to catch up (counter).
pub const LIVE_BROADCASTER_LAGGED: &str = "tidings_live_broadcaster_lagged_total";
/// Connections by what became of their recovery request, by `outcome`: `new` (nothing to
/// recover), `recovered`, or why not (`unknown_session`, `expired`, `messages_deleted`,
/// `no_offset`, `malformed`, `unknown_offset`, `unavailable`) (counter).
pub const RECOVERIES: &str = "tidings_recoveries_total";
/// How long the live broadcaster took to queue one batch to every live socket (histogram).
pub const LIVE_PASS_SECONDS: &str = "tidings_live_pass_seconds";
/// How long a socket waited to join (or be refused by) the live set (histogram).
pub const LIVE_JOIN_SECONDS: &str = "tidings_live_join_seconds";
/// Sockets in the live set: caught up, served by the broadcaster alone (gauge).
pub const LIVE_SOCKETS: &str = "tidings_live_sockets";
/// Sockets with a delivery task running: replaying, or catching up after falling out of the
/// live set (gauge).
pub const CATCHING_UP: &str = "tidings_catching_up_sockets";
/// Highest stored id (gauge).
pub const LAST_ID: &str = "tidings_last_message_id";
/// Rooms that exist: with messages, or with members on any node (gauge, refreshed on
/// scrape). No label per room: a room's figures are in the `rooms` directory.
pub const ROOMS: &str = "tidings_rooms";
/// This node's sockets' room memberships: one per socket per room it is in (gauge).
pub const ROOM_MEMBERSHIPS: &str = "tidings_room_memberships";
/// `join` requests that put a socket in a room it was not in (counter).
pub const ROOM_JOINS: &str = "tidings_room_joins_total";
/// Room events stored at this node's request: access changes and deletions (counter).
pub const ROOM_EVENTS: &str = "tidings_room_events_total";
/// `leave` requests that took a socket out of a room it was in (counter).
pub const ROOM_LEAVES: &str = "tidings_room_leaves_total";

/// The counter `name`.
pub fn counter(name: &'static str) -> Counter {
    metrics::counter!(name)
}

/// The counter `name` with one label.
pub fn counter_with(name: &'static str, label: &'static str, value: &'static str) -> Counter {
    metrics::counter!(name, label => value)
}

/// The gauge `name`.
pub fn gauge(name: &'static str) -> Gauge {
    metrics::gauge!(name)
}

/// The histogram `name`.
pub fn histogram(name: &'static str) -> Histogram {
    metrics::histogram!(name)
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide recorder, installed on first use. `None` if another recorder was
/// installed first (then metrics are not exported, and `/metrics` says so).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(COMMIT_SECONDS.into()),
                    &[
                        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(COMMIT_BATCH.into()),
                        &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(REPLAY_SECONDS.into()),
                        &[0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Prefix("tidings_live_".into()),
                        &[
                            0.000_01, 0.000_1, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0,
                        ],
                    )
                });
            match builder.map(PrometheusBuilder::install_recorder) {
                Ok(Ok(handle)) => Some(handle),
                Ok(Err(e)) => {
                    tracing::warn!("metrics disabled: {e}");
                    None
                }
                Err(e) => {
                    tracing::warn!("metrics disabled: {e}");
                    None
                }
            }
        })
        .as_ref()
}
