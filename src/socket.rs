//! The Socket.IO layer: the only module that touches socketioxide.
//!
//! Owns the per-connection lifecycle: the handshake check (`auth.serverOffset`), one delivery
//! task per socket that pulls its [`Feed`] and emits `chat message (content, id)` at the
//! client's pace, and the `chat message` handler that validates, hands the message to the
//! writer and acks. Validation rules live in [`crate::protocol`]; ordering in the hub and feed.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde_json::Value;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;
use socketioxide::{SendError, SocketError, SocketIo};
use tokio::sync::{Notify, watch};

use crate::feed::{BatchLimits, Feed};
use crate::hub::{Hub, LiveMessage};
use crate::protocol::{
    AckReply, AuthError, Limits, MessageId, PayloadError, parse_server_offset,
    validate_chat_message,
};
use crate::store::{AppendOutcome, StoreReader};
use crate::writer::WriterHandle;

/// The event name of the tutorial's protocol, both directions.
pub const CHAT_MESSAGE: &str = "chat message";

/// Shared state of every handler.
#[derive(Clone)]
pub struct ChatState {
    /// Sequencer of live delivery; each socket's feed subscribes to it.
    pub hub: Arc<Hub>,
    /// Replay reads.
    pub reader: StoreReader,
    /// The single writer.
    pub writer: WriterHandle,
    /// Payload limits.
    pub limits: Limits,
    /// Replay batch bounds.
    pub batch: BatchLimits,
}

/// The offset a socket connected with, set by the handshake check.
#[derive(Clone, Copy)]
struct StartOffset(u64);

/// The highest id emitted to this socket so far: a handler acks a message only once the
/// socket's own copy of it has been emitted, so the client sees the message before its ack.
#[derive(Clone)]
struct Delivered(watch::Receiver<u64>);

/// Registers the handlers on the default namespace.
pub fn register(io: &SocketIo) {
    io.ns("/", on_connect.with(check_auth));
}

async fn check_auth(socket: SocketRef, TryData(auth): TryData<Value>) -> Result<(), AuthError> {
    let auth = auth.map_err(|e| AuthError::BadServerOffset(format!("unreadable auth: {e}")))?;
    let offset = parse_server_offset(&auth)?;
    socket.extensions.insert(StartOffset(offset));
    Ok(())
}

async fn on_connect(socket: SocketRef, State(state): State<ChatState>) {
    let start = socket
        .extensions
        .get::<StartOffset>()
        .map_or(0, |offset| offset.0);
    let feed = Feed::new(state.hub.clone(), state.reader.clone(), start, state.batch);
    let (delivered_tx, delivered_rx) = watch::channel(feed.cursor());
    socket.extensions.insert(Delivered(delivered_rx));
    socket.on(CHAT_MESSAGE, on_chat_message);
    let closed = Arc::new(Notify::new());
    let on_close = closed.clone();
    socket.on_disconnect(move |socket: SocketRef, reason: DisconnectReason| async move {
        tracing::debug!(sid = %socket.id, ?reason, "disconnected");
        on_close.notify_one();
    });
    tracing::debug!(sid = %socket.id, start, "connected");
    tokio::spawn(deliver(socket, feed, delivered_tx, closed));
}

/// Pulls the feed and emits each message to this one socket, in order, until it closes.
async fn deliver(
    socket: SocketRef,
    mut feed: Feed,
    delivered: watch::Sender<u64>,
    closed: Arc<Notify>,
) {
    loop {
        let batch = tokio::select! {
            batch = feed.next_batch() => batch,
            () = closed.notified() => return,
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(sid = %socket.id, "delivery stopped: {e}");
                let _ = socket.disconnect();
                return;
            }
        };
        for message in batch {
            if emit_in_order(&socket, &message, &closed).await.is_err() {
                return;
            }
            delivered.send_replace(message.id.0);
        }
    }
}

/// Emits one message, waiting while the socket's outgoing buffer is full (the client reads
/// slowly) instead of dropping it. Errs once the socket is closed.
async fn emit_in_order(
    socket: &SocketRef,
    message: &LiveMessage,
    closed: &Notify,
) -> Result<(), SocketError> {
    let mut backoff = Duration::from_micros(200);
    loop {
        match socket.emit(CHAT_MESSAGE, &(&message.content, message.id.0)) {
            Ok(()) => return Ok(()),
            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                // A client that never reads is eventually closed by the engine.io heartbeat,
                // which ends this wait through `closed` or a Closed error.
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = closed.notified() => return Err(SocketError::Closed),
                }
                backoff = (backoff * 2).min(Duration::from_millis(50));
            }
            Err(SendError::Socket(e)) => return Err(e),
            Err(SendError::Serialize(e)) => {
                // Strings and integers always serialize; skip rather than stall the feed.
                tracing::error!(sid = %socket.id, id = message.id.0, "cannot encode message: {e}");
                return Ok(());
            }
        }
    }
}

async fn on_chat_message(
    socket: SocketRef,
    TryData(args): TryData<EventArgs>,
    ack: AckSender,
    State(state): State<ChatState>,
    Extension(Delivered(mut delivered)): Extension<Delivered>,
) {
    let input = args
        .map_err(|e| PayloadError::Undecodable(e.to_string()))
        .and_then(|EventArgs(args)| validate_chat_message(&args, &state.limits));
    let input = match input {
        Ok(input) => input,
        Err(error) => {
            tracing::debug!(sid = %socket.id, "rejected chat message: {error}");
            send_ack(
                &socket,
                ack,
                &AckReply::Rejected {
                    error: error.to_string(),
                },
            );
            return;
        }
    };
    let (id, duplicate) = match state.writer.append(input).await {
        Ok(AppendOutcome::Stored(id)) => (id, false),
        Ok(AppendOutcome::Duplicate(id)) => (id, true),
        Err(e) => {
            // No ack: the client's retry will find the message stored or store it then.
            tracing::error!(sid = %socket.id, "message not stored: {e}");
            return;
        }
    };
    if wait_delivered(&mut delivered, id).await {
        send_ack(&socket, ack, &AckReply::Stored { id, duplicate });
    }
}

/// Waits until this socket's own copy of `id` has been emitted; false if the socket closed.
async fn wait_delivered(delivered: &mut watch::Receiver<u64>, id: MessageId) -> bool {
    delivered.wait_for(|sent| *sent >= id.0).await.is_ok()
}

fn send_ack(socket: &SocketRef, ack: AckSender, reply: &AckReply) {
    if let Err(e) = ack.send(reply) {
        // Only a full or closed socket: the client's retry gets a fresh ack.
        tracing::debug!(sid = %socket.id, "ack not sent: {e}");
    }
}

/// All arguments of an event, whatever their number (socketioxide hands a tuple-shaped type
/// every argument; a plain `Vec` would get only the first).
pub struct EventArgs(pub Vec<Value>);

impl<'de> Deserialize<'de> for EventArgs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgsVisitor;
        impl<'de> Visitor<'de> for ArgsVisitor {
            type Value = EventArgs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of event arguments")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<EventArgs, S::Error> {
                let mut args = Vec::new();
                while let Some(arg) = seq.next_element()? {
                    args.push(arg);
                }
                Ok(EventArgs(args))
            }
        }
        deserializer.deserialize_tuple(usize::MAX, ArgsVisitor)
    }
}
