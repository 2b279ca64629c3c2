//! The log of a cluster node: a message is stored by publishing it to the stream, and it is
//! acked once JetStream acked it (a quorum of the stream's replicas has it) and this node's
//! applier has it in the local replica (so the sender has its own copy first, as on a single
//! node).
//!
//! Exactly once, across nodes and across time, for as long as the message is retained:
//! - a message with a client offset is published with `Nats-Msg-Id` = a hash of the offset
//!   and the content (the single node's dedup key), so a retry arriving at any node within
//!   JetStream's duplicate window gets the original's sequence back (`duplicate: true`), even a
//!   retry racing its original on another node;
//! - before publishing, the node looks the message up in its own replica's dedup table, which
//!   answers retries older than the window: ingest is open only while the replica is complete
//!   up to the stream's end of a gate ago ([`super::health::gate_for`] the duplicate window);
//! - a publish whose ack does not come (a leader failover, a lost quorum) may still be stored:
//!   it is retried with the same message id until it is acked or [`RETRY_FOR`] has passed,
//!   never reported as "not stored". A message without a client offset gets a random message
//!   id, which dedups these retries only.
//!
//! Submissions are queued on the NATS connection in the order they are made, so one client's
//! messages keep their order; a retried publish may land after later ones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::health::Health;
use crate::delivery::Hub;
use crate::every::{Backoff, now_ms, since_epoch};
use crate::ingest::{AppendError, BoxFuture, Log, Receipt};
use crate::message::{AppendOutcome, ChatInput, MessageId, StoredMessage};
use crate::storage::StoreReader;
use crate::storage::record::encode_record;

/// How long a publish is retried (with the same message id) before the client gets no ack:
/// longer than a stream leader's failover (4–8 s measured).
pub const RETRY_FOR: Duration = Duration::from_secs(12);

/// Bound on one ack wait; a publish then is retried.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// See the module docs.
pub struct JetStreamLog {
    js: jetstream::Context,
    /// The stream's name: a message goes to its room's subject of it.
    stream: String,
    reader: StoreReader,
    hub: Arc<Hub>,
    health: Arc<Health>,
}

impl JetStreamLog {
    /// The log publishing to `stream` through `js` (each message to its room's subject);
    /// `reader` is this node's replica.
    pub fn new(
        js: jetstream::Context,
        stream: String,
        reader: StoreReader,
        hub: Arc<Hub>,
        health: Arc<Health>,
    ) -> Self {
        Self {
            js,
            stream,
            reader,
            hub,
            health,
        }
    }

    async fn submit_input(&self, input: ChatInput) -> Result<Receipt, AppendError> {
        if let Some(problem) = self.health.problem(&self.hub) {
            return Err(AppendError::Unavailable(problem));
        }
        if input.client_offset.is_some() {
            let (reader, retry) = (self.reader.clone(), input.clone());
            let found = tokio::task::spawn_blocking(move || {
                let key = retry.retry_key();
                key.map_or(Ok(None), |key| reader.find_retry(&key))
            })
            .await
            .map_err(|e| AppendError::Unavailable(format!("dedup lookup failed: {e}")))?
            .map_err(|e| AppendError::Storage(Arc::new(e)))?;
            if let Some(original) = found {
                return Ok(Box::pin(std::future::ready(Ok(AppendOutcome::Duplicate(
                    original,
                )))));
            }
        }
        let publish = Publish {
            js: self.js.clone(),
            subject: super::stream::subject(&self.stream, input.room.as_deref()),
            message_id: message_id(&input),
            payload: Bytes::from(encode_record(&StoredMessage::from_input(&input, now_ms()))),
        };
        let started = Instant::now();
        let first = publish.send().await;
        let (hub, health) = (self.hub.clone(), self.health.clone());
        Ok(Box::pin(async move {
            publish.until_acked(first, started, &hub, &health).await
        }))
    }
}

impl JetStreamLog {
    /// Erases message `id` from the stream (JetStream overwrites it on disk), once the
    /// deletion that made it a tombstone is stored: every replica has or will have the
    /// tombstone (a replica rebuilt from the stream writes it from the deletion, which is
    /// later in the stream), so the stream's copy is the last one. Retried for a while; a
    /// stream created before deletions existed refuses (`deny_delete`), which is logged.
    async fn erase_from_stream(&self, id: MessageId) {
        let subject = format!("STREAM.MSG.DELETE.{}", self.stream);
        let request = serde_json::json!({ "seq": id.0 });
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            let answer: Result<serde_json::Value, _> =
                self.js.request(subject.clone(), &request).await;
            let problem = match answer {
                Ok(reply) => match reply.get("error") {
                    None => return,
                    // Already gone (erased before, or retention took it): nothing to erase.
                    Some(error) if already_gone(error) => return,
                    Some(error) => {
                        tracing::warn!(
                            id = id.0,
                            "the stream refused to erase a deleted message (a stream with \
                             deny_delete keeps it until retention removes it): {error}"
                        );
                        return;
                    }
                },
                Err(e) => e.to_string(),
            };
            let wait = backoff.next_wait();
            if Instant::now() + wait >= deadline {
                tracing::warn!(
                    id = id.0,
                    "could not erase a deleted message from the stream: {problem}"
                );
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

impl Log for JetStreamLog {
    fn submit(&self, input: ChatInput) -> BoxFuture<'_, Result<Receipt, AppendError>> {
        Box::pin(self.submit_input(input))
    }

    fn erase(&self, id: MessageId) -> BoxFuture<'_, ()> {
        Box::pin(self.erase_from_stream(id))
    }

    fn problem(&self) -> Option<String> {
        self.health.problem(&self.hub)
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        let client = self.js.client();
        Box::pin(async move {
            // What was published is on its way; bounded: flush never returns while
            // disconnected.
            let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
        })
    }
}

/// One message's publish, repeatable with the same message id.
struct Publish {
    js: jetstream::Context,
    subject: String,
    message_id: String,
    payload: Bytes,
}

impl Publish {
    async fn send(&self) -> Result<PublishAckFuture, jetstream::context::PublishError> {
        self.js
            .send_publish(
                self.subject.clone(),
                PublishMessage::build()
                    .payload(self.payload.clone())
                    .message_id(&self.message_id),
            )
            .await
    }

    /// Waits for the ack, publishing again (same message id) after a timeout or while the
    /// stream has no leader, then for this node's replica to have the message.
    async fn until_acked(
        &self,
        first: Result<PublishAckFuture, jetstream::context::PublishError>,
        started: Instant,
        hub: &Hub,
        health: &Health,
    ) -> Result<AppendOutcome, AppendError> {
        let deadline = started + RETRY_FOR;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let mut attempt = first;
        let ack = loop {
            let outcome = match attempt {
                Ok(pending) => match tokio::time::timeout(ACK_TIMEOUT, pending).await {
                    Ok(acked) => acked,
                    Err(_) => Err(PublishErrorKind::TimedOut.into()),
                },
                Err(e) => Err(e),
            };
            let problem = match outcome {
                // nats-server 2.10 answers a duplicate of a message whose original is still
                // being replicated with sequence 0: not an id. The original may yet fail (a
                // leader change drops it), so ask again until the stream names the id.
                // Found by the fault harness (tests/faults): clients were acked `{ id: 0 }`
                // for messages no node stored.
                Ok(ack) if ack.duplicate && ack.sequence == 0 => {
                    "the stream has not stored the original of this retry yet".to_string()
                }
                Ok(ack) => break ack,
                Err(e) => {
                    health.publish_failed();
                    let problem = format!("the stream did not acknowledge the message: {e}");
                    let retryable = matches!(
                        e.kind(),
                        PublishErrorKind::TimedOut
                            | PublishErrorKind::StreamNotFound
                            | PublishErrorKind::BrokenPipe
                            | PublishErrorKind::MaxAckPending
                    );
                    if !retryable {
                        return Err(AppendError::Unavailable(problem));
                    }
                    problem
                }
            };
            let wait = backoff.next_wait();
            if Instant::now() + wait >= deadline {
                return Err(AppendError::Unavailable(problem));
            }
            tracing::debug!("publish not settled ({problem}), retrying");
            tokio::time::sleep(wait).await;
            attempt = self.send().await;
        };
        health.acked(ack.sequence, hub);
        // The sender's own copy comes from this node's replica: wait for the applier.
        let remaining = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(remaining.max(ACK_TIMEOUT), hub.published(ack.sequence))
            .await
            .is_err()
        {
            return Err(AppendError::Unavailable(format!(
                "message {} is stored but this node has not applied it yet",
                ack.sequence
            )));
        }
        let id = MessageId(ack.sequence);
        Ok(if ack.duplicate {
            AppendOutcome::Duplicate(id)
        } else {
            AppendOutcome::Stored(id)
        })
    }
}

/// Whether JetStream's answer to an erase says the message is not in the stream (10043, or
/// 10057 "no message found"; 10057 is also "message delete not permitted").
pub(super) fn already_gone(error: &serde_json::Value) -> bool {
    let code = error.get("err_code").and_then(serde_json::Value::as_u64);
    let description = error
        .get("description")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    code == Some(10043) || (code == Some(10057) && description.contains("no message found"))
}

/// The `Nats-Msg-Id` of `input`: its dedup key (client offset and content, the rule every
/// node's replica also indexes), so every node gives a retry the same id; random for a message
/// without an offset (nothing to dedup but this node's own retries of the publish).
pub fn message_id(input: &ChatInput) -> String {
    match input.dedup_key() {
        Some(key) => key.hex(),
        None => Sha256::digest(random_bytes())[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    }
}

/// 16 bytes that differ from call to call and from process to process (std's randomly keyed
/// hasher, the time and a counter): a unique message id, not a secret.
fn random_bytes() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = [0u8; 16];
    for half in out.chunks_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u128(since_epoch().as_nanos());
        half.copy_from_slice(&hasher.finish().to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::test_support::input;

    #[test]
    fn message_ids_follow_the_dedup_key() {
        let a = message_id(&input("hi", Some("o-1")));
        assert_eq!(
            a,
            message_id(&input("hi", Some("o-1"))),
            "a retry, anywhere"
        );
        assert_eq!(a.len(), 32);
        assert_ne!(
            a,
            message_id(&input("other", Some("o-1"))),
            "same offset, new text"
        );
        assert_ne!(a, message_id(&input("hi", Some("o-2"))));
        // The offset's length is part of the key: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            message_id(&input("c", Some("ab"))),
            message_id(&input("bc", Some("a")))
        );
        // Without an offset nothing is a retry of anything.
        assert_ne!(
            message_id(&input("hi", None)),
            message_id(&input("hi", None))
        );
    }
}
