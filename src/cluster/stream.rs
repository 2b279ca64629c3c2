//! The stream that is the cluster's log: created by the first node, checked by every other,
//! and its identity, which ties a node's file to it and gives clients their epoch.
//!
//! JetStream facts this relies on (checked against nats-server 2.9, see the README's cluster
//! section): creating a stream with an identical configuration is idempotent, even from
//! several nodes at once; `get_or_create_stream` would hide a different configuration, so the
//! node compares it itself; `created` is stable across leader changes and restarts and changes
//! when the stream is recreated.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use sha2::{Digest, Sha256};

use super::{ClusterConfig, ClusterError};

/// How long JetStream remembers a `Nats-Msg-Id` (beyond it, the node's own dedup table answers).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The subject messages are published to.
pub fn subject(stream: &str) -> String {
    format!("tidings.{stream}.msgs")
}

/// The stream configuration a node of `config` needs.
pub fn wanted(config: &ClusterConfig) -> stream::Config {
    let max_age = config
        .retention
        .days
        .map(|days| Duration::from_secs(days.saturating_mul(24 * 60 * 60)))
        .unwrap_or_default();
    stream::Config {
        name: config.stream.clone(),
        description: Some("tidings message log".into()),
        subjects: vec![subject(&config.stream)],
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        // The window may not exceed max_age (JetStream refuses it).
        duplicate_window: if max_age.is_zero() {
            DUPLICATE_WINDOW
        } else {
            DUPLICATE_WINDOW.min(max_age)
        },
        max_messages: config
            .retention
            .messages
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
        max_age,
        discard: stream::DiscardPolicy::Old,
        // Ids are never reused and nothing but retention removes a message.
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    }
}

/// What differs between the stream's settings and the ones a node needs, in words.
fn differences(have: &stream::Config, want: &stream::Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |what: &str, have: String, want: String| {
        if have != want {
            out.push(format!("{what} {have}, this node wants {want}"));
        }
    };
    check(
        "subjects",
        format!("{:?}", have.subjects),
        format!("{:?}", want.subjects),
    );
    check(
        "replicas",
        have.num_replicas.to_string(),
        want.num_replicas.to_string(),
    );
    check(
        "storage",
        format!("{:?}", have.storage),
        format!("{:?}", want.storage),
    );
    check(
        "max messages",
        have.max_messages.to_string(),
        want.max_messages.to_string(),
    );
    check(
        "max age",
        format!("{:?}", have.max_age),
        format!("{:?}", want.max_age),
    );
    check(
        "deny delete/purge",
        format!("{}/{}", have.deny_delete, have.deny_purge),
        format!("{}/{}", want.deny_delete, want.deny_purge),
    );
    out
}

/// The stream, created if missing, refused if its settings differ from this node's.
pub async fn ensure(
    js: &jetstream::Context,
    config: &ClusterConfig,
) -> Result<stream::Stream, ClusterError> {
    let want = wanted(config);
    let error = |reason: String| ClusterError::Stream {
        stream: config.stream.clone(),
        reason,
    };
    let mut stream = match js.get_stream(&config.stream).await {
        Ok(stream) => stream,
        Err(e) if is_not_found(&e) => js
            .create_stream(want.clone())
            .await
            .map_err(|e| error(format!("cannot create it: {e}")))?,
        Err(e) => return Err(error(format!("cannot read it: {e}"))),
    };
    let info = stream
        .info()
        .await
        .map_err(|e| error(format!("cannot read its settings: {e}")))?;
    let differences = differences(&info.config, &want);
    if !differences.is_empty() {
        return Err(ClusterError::Mismatch {
            stream: config.stream.clone(),
            differences: differences.join("; "),
        });
    }
    Ok(stream)
}

fn is_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// The stream's identity: its name and creation time. A node's file records it; a stream
/// deleted and created again under the same name is another stream.
pub fn identity(info: &stream::Info) -> String {
    format!(
        "{}@{}",
        info.config.name,
        info.created.unix_timestamp_nanos()
    )
}

/// The epoch clients see (`sync.epoch`): the same on every node of the cluster, so a client
/// that moves to another node keeps its offset.
pub fn epoch(identity: &str) -> u64 {
    let digest = Sha256::digest(identity.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first).max(1)
}
