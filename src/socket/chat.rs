//! `chat message (content, clientOffset?, meta?, ack?)`: the rate limit, validation, the log,
//! and the ack, sent only after the sender's own copy of the message has been queued to it.
//! Also [`InFlight`], which lets shutdown store and ack what was received before it closes the
//! sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use tokio::sync::Notify;

use super::rate::Verdict;
use super::{ChatState, Connection, rate_limited, send_ack};
use crate::message::AppendOutcome;
use crate::ops::metrics;
use crate::protocol::{AckReply, EventArgs, PayloadError, validate_chat_message};

/// Counts `chat message` handlers between receipt and ack. Once draining, new messages are
/// not taken (their senders retry after the restart), and [`InFlight::drained`] resolves
/// when the ones already taken have been stored and acked.
#[derive(Clone, Default)]
pub struct InFlight(Arc<InFlightState>);

#[derive(Default)]
struct InFlightState {
    count: AtomicUsize,
    draining: AtomicBool,
    idle: Notify,
}

/// Held by one handler; dropping it counts the message as done.
struct InFlightGuard(Arc<InFlightState>);

impl InFlight {
    fn enter(&self) -> Option<InFlightGuard> {
        self.0.count.fetch_add(1, Ordering::AcqRel);
        if self.0.draining.load(Ordering::Acquire) {
            drop(InFlightGuard(self.0.clone()));
            return None;
        }
        Some(InFlightGuard(self.0.clone()))
    }

    /// Messages being handled now.
    pub fn count(&self) -> usize {
        self.0.count.load(Ordering::Acquire)
    }

    /// Stops taking messages and waits until those taken are done.
    pub async fn drained(&self) {
        self.0.draining.store(true, Ordering::Release);
        loop {
            let idle = self.0.idle.notified();
            if self.0.count.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The `chat message` handler.
pub(super) async fn on_chat_message(
    socket: SocketRef,
    TryData(args): TryData<EventArgs>,
    ack: AckSender,
    State(state): State<ChatState>,
    Extension(connection): Extension<Connection>,
) {
    let Some(_in_flight) = state.in_flight.enter() else {
        // Shutting down: not taken, not acked; the client retries after the restart.
        return;
    };
    let verdict = connection.take_allowance();
    if let Some(reply) = rate_limited(verdict) {
        metrics::counter_with(metrics::REJECTED, "reason", "rate_limited").increment(1);
        send_ack(&socket, ack, &reply, &connection).await;
        if let Verdict::Limited { strikes, .. } = verdict
            && f64::from(strikes) > state.rate_limit.burst
        {
            tracing::warn!(sid = %socket.id, strikes, "disconnecting a client that ignores its rate limit");
            connection.signals.disconnect.notify_one();
        }
        return;
    }
    let input = args
        .map_err(|e| PayloadError::Undecodable(e.to_string()))
        .and_then(|EventArgs(args)| validate_chat_message(&args, &state.limits));
    let input = match input {
        Ok(input) => input,
        Err(error) => {
            tracing::debug!(sid = %socket.id, "rejected chat message: {error}");
            metrics::counter_with(metrics::REJECTED, "reason", "invalid_payload").increment(1);
            let reply = AckReply::Rejected {
                error: error.to_string(),
            };
            // If this ack is lost, the client's retry is rejected again: nothing to recover.
            send_ack(&socket, ack, &reply, &connection).await;
            return;
        }
    };
    let (id, duplicate) = match state.log.append(input).await {
        Ok(AppendOutcome::Stored(id)) => (id, false),
        Ok(AppendOutcome::Duplicate(id)) => (id, true),
        Err(e) => {
            // No ack: the client's retry will find the message stored or store it then.
            metrics::counter_with(metrics::REJECTED, "reason", "storage_failure").increment(1);
            tracing::error!(sid = %socket.id, "message not stored: {e}");
            return;
        }
    };
    tracing::trace!(sid = %socket.id, id = id.0, duplicate, "stored, waiting for own copy");
    // Wait until this socket's own copy has been queued (fails only if it closed).
    tokio::select! {
        () = connection.emitted.reached(id.0) => {}
        () = connection.signals.closed.cancelled() => return,
    }
    let reply = AckReply::Stored { id, duplicate };
    metrics::counter(metrics::ACKS).increment(1);
    if !send_ack(&socket, ack, &reply, &connection).await {
        // The message is stored and broadcast, but the client cannot learn it from this
        // ack: make it reconnect, so its retry is answered with `duplicate: true`.
        connection.signals.disconnect.notify_one();
    }
}
