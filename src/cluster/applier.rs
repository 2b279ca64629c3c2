//! The applier: reads the stream in order, from where the node's replica ends, and has the
//! writer store each message under its stream sequence (its id) and publish it to the hub.
//!
//! It owns its position and its JetStream consumer: a plain pull consumer it creates at
//! `ByStartSequence { next }`, with a fresh name each time, and drops at the first sign of
//! trouble (an error, a missed heartbeat, a gap in the consumer's sequence). async-nats'
//! ordered consumer is not used: on nats-server 2.9, when the server hosting it died, it
//! stalled for minutes, and it restarts from the stream's start if it had delivered nothing.
//! A fresh name gets a fresh placement on a live server; each create is bounded.
//!
//! Sequences below the position are skipped (already applied); a jump over missing sequences
//! is a hole the stream's retention left, kept as such. A payload that is not a tidings record
//! (someone else published to the subject) is logged and skipped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, pull},
};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::ingest::WriterHandle;
use crate::message::{MessageId, StoredRow};
use crate::storage::record::decode_record;

/// Most messages handed to the writer in one apply (one commit).
const MAX_APPLY: usize = 512;

/// Bound on one consumer-create request (JetStream may place a consumer on a dead server and
/// never answer).
const CREATE_TIMEOUT: Duration = Duration::from_secs(2);

/// Idle heartbeat of the pull requests: two missed and the consumer is replaced.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Pull request expiry (more than twice the heartbeat).
const EXPIRES: Duration = Duration::from_secs(5);

static SERIAL: AtomicU64 = AtomicU64::new(0);

/// Applies the stream from `next` on, until `stop`.
pub async fn apply_forever(
    js: jetstream::Context,
    stream: String,
    node: String,
    mut next: u64,
    writer: WriterHandle,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    next = next.max(1);
    loop {
        let name = format!(
            "tidings-{}-{}",
            sanitize(&node),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let config = pull::Config {
            name: Some(name.clone()),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: next,
            },
            ack_policy: AckPolicy::None,
            max_deliver: 1,
            memory_storage: true,
            num_replicas: 1,
            inactive_threshold: Duration::from_secs(10),
            ..Default::default()
        };
        let created = tokio::select! {
            created = tokio::time::timeout(
                CREATE_TIMEOUT,
                js.create_consumer_on_stream(config, stream.as_str()),
            ) => created,
            () = stop.cancelled() => return,
        };
        let consumer = match created {
            Ok(Ok(consumer)) => consumer,
            Ok(Err(e)) => {
                tracing::debug!(from = next, "cannot create the stream reader: {e}");
                if !pause(&mut backoff, &stop).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                tracing::debug!(from = next, "creating the stream reader timed out");
                if !pause(&mut backoff, &stop).await {
                    return;
                }
                continue;
            }
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(MAX_APPLY)
            .heartbeat(HEARTBEAT)
            .expires(EXPIRES)
            .messages()
            .await;
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(e) => {
                tracing::debug!("cannot read the stream: {e}");
                continue;
            }
        };
        tracing::debug!(from = next, consumer = %name, "reading the stream");
        let mut consumer_seq = 0u64;
        let reason = 'read: loop {
            // Everything already delivered, up to a batch, goes in one apply.
            let mut rows = Vec::new();
            loop {
                let item = if rows.is_empty() {
                    tokio::select! {
                        item = messages.next() => item,
                        () = stop.cancelled() => return,
                    }
                } else {
                    match futures_util::FutureExt::now_or_never(messages.next()) {
                        Some(item) => item,
                        None => break,
                    }
                };
                let message = match item {
                    None => break 'read "the stream reader ended".to_string(),
                    Some(Err(e)) => break 'read format!("reading the stream: {e}"),
                    Some(Ok(message)) => message,
                };
                let info = match message.info() {
                    Ok(info) => info,
                    Err(e) => break 'read format!("a message without its sequence: {e}"),
                };
                let (seq, delivered) = (info.stream_sequence, info.consumer_sequence);
                if delivered != consumer_seq + 1 {
                    break 'read format!("the reader skipped ({consumer_seq} -> {delivered})");
                }
                consumer_seq = delivered;
                if seq < next {
                    continue;
                }
                if seq > next {
                    tracing::warn!(
                        from = next,
                        to = seq - 1,
                        "the stream no longer holds these messages (retention): not applied"
                    );
                }
                next = seq + 1;
                match decode_record(&message.payload) {
                    Ok(record) => rows.push(StoredRow {
                        id: MessageId(seq),
                        message: record,
                    }),
                    Err(e) => tracing::error!(seq, "not a tidings message, skipped: {e}"),
                }
                if rows.len() >= MAX_APPLY {
                    break;
                }
            }
            if rows.is_empty() {
                continue;
            }
            let first = rows[0].id.0;
            // A failed commit is retried: the replica must not skip anything.
            loop {
                match writer.apply(rows.clone()).await {
                    Ok(_) => break,
                    Err(crate::ingest::AppendError::Stopped) => return,
                    Err(e) => {
                        tracing::error!(from = first, "applying from the stream failed: {e}");
                        if !pause(&mut backoff, &stop).await {
                            return;
                        }
                    }
                }
            }
            backoff = Duration::from_millis(50);
        };
        tracing::info!(from = next, "replacing the stream reader: {reason}");
        let (js, stream) = (js.clone(), stream.clone());
        tokio::spawn(async move {
            // Best effort: it also expires after its inactivity threshold.
            let _ = tokio::time::timeout(
                CREATE_TIMEOUT,
                js.delete_consumer_from_stream(&name, &stream),
            )
            .await;
        });
    }
}

/// Waits before the next try, doubling up to 2 s; false if stopped meanwhile.
async fn pause(backoff: &mut Duration, stop: &CancellationToken) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(Duration::from_secs(2));
    tokio::select! {
        () = tokio::time::sleep(wait) => true,
        () = stop.cancelled() => false,
    }
}

/// A consumer name may not contain `.`, `*`, `>` or white space.
fn sanitize(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
