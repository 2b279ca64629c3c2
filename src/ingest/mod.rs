//! Ingest: from a validated [`ChatInput`] to an id in the log, exactly once.
//!
//! The socket layer validates a `chat message` with [`crate::protocol`], then submits the
//! [`ChatInput`] with [`Log::submit`] (in the order the connection received its messages) and
//! acks with the answer its [`Receipt`] resolves to. Everything behind that call is
//! "the log": here the [`writer`] thread, which dedups by client offset and content, assigns the
//! next id and commits to the local redb file in groups, then publishes the new messages to the
//! delivery hub before it answers, so the sender's own copy is on its way before the ack.
//! [`retention`] deletes what the configured retention no longer keeps, through the same writer.
//!
//! [`Log`] is the one seam a different log (a replicated one, for a cluster) plugs into:
//! delivery, replay and history read the local replica and do not know which log is behind it.

pub mod retention;
pub mod writer;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::message::{AppendOutcome, ChatInput};
use crate::storage::StoreError;

pub use writer::{WriterConfig, WriterHandle, spawn_writer};

/// A boxed future, as [`Log`]'s methods return (one allocation per message is nothing next to
/// a durable commit).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an append got no id. The client gets no ack and retries.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// The commit failed; nothing of its batch was stored.
    #[error("{0}")]
    Storage(Arc<StoreError>),
    /// The log has stopped (shutdown).
    #[error("the log has stopped")]
    Stopped,
    /// The log cannot take messages now (a cluster node without NATS, or still catching up);
    /// the outcome of a message already handed over is unknown, never "not stored".
    #[error("the log is unavailable: {0}")]
    Unavailable(String),
}

/// What a submitted message becomes: resolves once the message is durably stored (or found
/// already stored: same client offset and content) and published to the delivery hub, so the
/// id is durable and every socket's delivery can see it.
pub type Receipt = BoxFuture<'static, Result<AppendOutcome, AppendError>>;

/// The ordered, durable log of chat messages, as ingest sees it.
pub trait Log: Send + Sync {
    /// Hands `input` to the log. Resolves once the log has taken it, in order: messages
    /// submitted one after the other (each submit awaited before the next) are stored in that
    /// order. The returned [`Receipt`] then resolves to the outcome; several receipts may be
    /// outstanding at once, so one connection's messages still share commits.
    fn submit(&self, input: ChatInput) -> BoxFuture<'_, Result<Receipt, AppendError>>;

    /// Erases the content of message `id`, which a stored deletion has made a tombstone,
    /// wherever the log keeps a copy of its own (a cluster's stream); best effort, logged.
    /// The local log keeps none: the deletion's commit erased it.
    fn erase(&self, id: crate::message::MessageId) -> BoxFuture<'_, ()> {
        let _ = id;
        Box::pin(std::future::ready(()))
    }

    /// Why the log does not take writes now, in words (`/healthz`); `None` while it does.
    fn problem(&self) -> Option<String>;

    /// Finishes what it was given, then stops; later appends fail with
    /// [`AppendError::Stopped`].
    fn stop(&self) -> BoxFuture<'_, ()>;
}

/// The log the server runs with.
pub type SharedLog = Arc<dyn Log>;
