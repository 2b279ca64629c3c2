//! The stream that is the cluster's log: created by the first node, checked by every other,
//! and its identity, which ties a node's file to it and gives clients their epoch.
//!
//! Rooms map onto subjects: the default room's messages go to `tidings.STREAM.msgs` (the
//! subject of every message before rooms, so those stay the default room's), another room's
//! to `tidings.STREAM.msgs.ROOM` (a room name is a valid subject token). Retention by count is
//! per room: the stream's per-subject limit (`max_msgs_per_subject`). The default room's name
//! is written in the stream's description, so every node agrees on it. A stream of the shape
//! before rooms (one subject, a stream-wide limit) is updated in place by the first node that
//! finds it.
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

/// The subject a message of `room` (`None`: the default room) is published to.
pub fn subject(stream: &str, room: Option<&str>) -> String {
    match room {
        None => format!("tidings.{stream}.msgs"),
        Some(room) => format!("tidings.{stream}.msgs.{room}"),
    }
}

/// Every subject the stream takes: the default room's and every other room's.
fn subjects(stream: &str) -> Vec<String> {
    vec![subject(stream, None), format!("tidings.{stream}.msgs.*")]
}

/// The stream's description, which names the default room.
fn description(default_room: &str) -> String {
    format!("tidings message log; default room {default_room}")
}

/// The default room a stream's description names (`None`: a stream from before rooms).
fn described_room(description: Option<&str>) -> Option<&str> {
    description?.split("; default room ").nth(1)
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
        description: Some(description(&config.default_room)),
        subjects: subjects(&config.stream),
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        // The window may not exceed max_age (JetStream refuses it).
        duplicate_window: if max_age.is_zero() {
            DUPLICATE_WINDOW
        } else {
            DUPLICATE_WINDOW.min(max_age)
        },
        max_messages: -1,
        max_messages_per_subject: config
            .retention
            .messages
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
        max_age,
        discard: stream::DiscardPolicy::Old,
        // Ids are never reused; a message is removed by retention, or erased once its
        // deletion is in the stream (`delete message`); never purged.
        deny_delete: false,
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
        "max messages per room",
        have.max_messages_per_subject.to_string(),
        want.max_messages_per_subject.to_string(),
    );
    check(
        "default room",
        format!("{:?}", described_room(have.description.as_deref())),
        format!("{:?}", described_room(want.description.as_deref())),
    );
    check(
        "max age",
        format!("{:?}", have.max_age),
        format!("{:?}", want.max_age),
    );
    // A stream created before deletions existed denies them: it is kept (deleted messages
    // become tombstones on every replica, and the stream keeps their bytes until retention;
    // JetStream cannot lift deny_delete), and an erase it refuses is logged.
    check(
        "deny purge",
        have.deny_purge.to_string(),
        want.deny_purge.to_string(),
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
    let mut have = stream
        .info()
        .await
        .map_err(|e| error(format!("cannot read its settings: {e}")))?
        .config
        .clone();
    if before_rooms(&have, &want) {
        tracing::info!(
            stream = %config.stream,
            "updating the stream for rooms: a subject per room, retention per room, the default room"
        );
        // JetStream refuses to lift deny_delete ("stream configuration update can not cancel
        // deny message deletes", 10052): an older stream keeps it (see `differences`).
        let update = stream::Config {
            deny_delete: have.deny_delete,
            ..want.clone()
        };
        have = js
            .update_stream(update)
            .await
            .map_err(|e| error(format!("cannot update it for rooms: {e}")))?
            .config
            .clone();
    }
    let differences = differences(&have, &want);
    if !differences.is_empty() {
        return Err(ClusterError::Mismatch {
            stream: config.stream.clone(),
            differences: differences.join("; "),
        });
    }
    Ok(stream)
}

/// Whether `have` is the stream a node wants, in the shape before rooms: one subject, a
/// stream-wide count limit, no default room in its description; the rest the same.
fn before_rooms(have: &stream::Config, want: &stream::Config) -> bool {
    let Some(legacy) = want.subjects.first() else {
        return false;
    };
    let old_shape = stream::Config {
        subjects: vec![legacy.clone()],
        description: have.description.clone(),
        max_messages: want.max_messages_per_subject,
        max_messages_per_subject: -1,
        ..want.clone()
    };
    described_room(have.description.as_deref()).is_none()
        && differences(have, &old_shape).is_empty()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::retention::Retention;

    fn config(messages: Option<u64>) -> ClusterConfig {
        ClusterConfig {
            urls: vec![],
            stream: "TIDINGS".into(),
            replicas: 3,
            retention: Retention {
                messages,
                days: None,
            },
            node: "n".into(),
            default_room: "general".into(),
        }
    }

    #[test]
    fn rooms_are_subjects_and_a_stream_before_rooms_is_recognised() {
        assert_eq!(subject("S", None), "tidings.S.msgs");
        assert_eq!(subject("S", Some("dev")), "tidings.S.msgs.dev");
        let want = wanted(&config(Some(5)));
        assert_eq!(
            want.subjects,
            ["tidings.TIDINGS.msgs", "tidings.TIDINGS.msgs.*"]
        );
        assert_eq!((want.max_messages, want.max_messages_per_subject), (-1, 5));
        assert_eq!(described_room(want.description.as_deref()), Some("general"));
        // The stream a node made before rooms.
        let old = stream::Config {
            description: Some("tidings message log".into()),
            subjects: vec!["tidings.TIDINGS.msgs".into()],
            max_messages: 5,
            max_messages_per_subject: -1,
            ..want.clone()
        };
        assert!(before_rooms(&old, &want));
        assert!(!before_rooms(&want, &want));
        // Another stream-wide limit is another setting, not an old shape of this one.
        let other = stream::Config {
            max_messages: 6,
            ..old.clone()
        };
        assert!(!before_rooms(&other, &want));
        // Nodes with another default room are refused.
        let lobby = wanted(&ClusterConfig {
            default_room: "lobby".into(),
            ..config(Some(5))
        });
        let said = differences(&lobby, &want).join("; ");
        assert!(said.contains("default room Some(\"lobby\")"), "{said}");
    }

    #[test]
    fn a_stream_that_denies_deletes_is_kept_and_a_new_one_allows_them() {
        let want = wanted(&config(None));
        assert!(!want.deny_delete && want.deny_purge);
        // Created by a build from before deletions: JetStream cannot lift deny_delete.
        let older = stream::Config {
            deny_delete: true,
            ..want.clone()
        };
        assert!(differences(&older, &want).is_empty());
        let purgeable = stream::Config {
            deny_purge: false,
            ..want.clone()
        };
        assert!(!differences(&purgeable, &want).is_empty());
        // The erase of a message the stream no longer holds is done; a refusal is not.
        let gone = serde_json::json!({ "code": 500, "err_code": 10057, "description": "no message found" });
        assert!(super::super::log::already_gone(&gone));
        let denied = serde_json::json!({ "code": 500, "err_code": 10057, "description": "message delete not permitted" });
        assert!(!super::super::log::already_gone(&denied));
    }
}
