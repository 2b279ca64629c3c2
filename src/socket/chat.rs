//! `chat message (content, clientOffset?, meta?, ack?)`: the rate limit, validation, the log,
//! and the ack, sent only after the sender's own copy of the message has been queued to it.
//!
//! One connection's messages are stored in the order it sent them, though socketioxide runs
//! each event's handler as a task of its own: the handler takes its place in line
//! ([`ArrivalOrder`]) synchronously, as the event arrives, and submits to the log only in
//! turn; the commits and acks that follow overlap. Also [`InFlight`], which lets shutdown
//! store and ack what was received before it closes the sockets.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use tokio::sync::Notify;

use futures_util::future::Either;

use super::{ChatState, Connection, refuse, send_ack};
use crate::delivery::socket_task::disconnect;
use crate::ingest::AppendError;
use crate::message::AppendOutcome;
use crate::metrics;
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

/// The order in which one connection's messages arrived, and whose turn it is to submit.
#[derive(Debug, Default)]
pub struct ArrivalOrder {
    next_ticket: AtomicU64,
    /// The ticket whose turn it is, and tickets given up before their turn (skipped).
    turn: Mutex<(u64, BTreeSet<u64>)>,
    moved: Notify,
}

impl ArrivalOrder {
    /// A place in line, behind every one taken before.
    pub fn take(self: &Arc<Self>) -> Place {
        Place {
            order: self.clone(),
            ticket: self.next_ticket.fetch_add(1, Ordering::AcqRel),
        }
    }

    fn serving(&self) -> u64 {
        self.turn.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    /// Ends `ticket`'s place: passes the turn on if it was its turn, otherwise marks the place
    /// to be skipped when the turn gets there.
    fn leave(&self, ticket: u64) {
        let mut turn = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
        let (serving, given_up) = &mut *turn;
        if *serving != ticket {
            given_up.insert(ticket);
            return;
        }
        *serving += 1;
        while given_up.remove(serving) {
            *serving += 1;
        }
        drop(turn);
        self.moved.notify_waiters();
    }
}

/// One message's place in line. Dropping it passes the turn on (or gives the place up, if
/// the message is refused before its turn came).
#[derive(Debug)]
pub struct Place {
    order: Arc<ArrivalOrder>,
    ticket: u64,
}

impl Place {
    /// Waits until every message that arrived before this one has left the line.
    pub async fn wait_turn(&self) {
        loop {
            let moved = self.order.moved.notified();
            if self.order.serving() == self.ticket {
                return;
            }
            moved.await;
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.order.leave(self.ticket);
    }
}

/// The `chat message` handler. Its first lines run as the event arrives, in the connection's
/// order: the rate limit (a refused message is dropped here, whatever its size) and the
/// message's place in line; the rest is a task of its own.
pub(super) fn on_chat_message(
    socket: SocketRef,
    TryData(args): TryData<EventArgs>,
    ack: AckSender,
    State(state): State<ChatState>,
    Extension(connection): Extension<Connection>,
) -> impl Future<Output = ()> {
    match connection.take_allowance() {
        Ok(()) => {
            let place = connection.arrival.take();
            Either::Left(handle_chat_message(
                socket, args, ack, state, connection, place,
            ))
        }
        Err(refusal) => {
            drop(args);
            metrics::counter_with(metrics::REJECTED, "reason", "rate_limited").increment(1);
            Either::Right(refuse(&socket, ack, refusal, &state, &connection))
        }
    }
}

async fn handle_chat_message(
    socket: SocketRef,
    args: Result<EventArgs, socketioxide::ParserError>,
    ack: AckSender,
    state: ChatState,
    connection: Connection,
    place: Place,
) {
    let Some(_in_flight) = state.in_flight.enter() else {
        // Shutting down: not taken, not acked; the client retries after the restart.
        return;
    };
    let input = args
        .map_err(|e| PayloadError::Undecodable(e.to_string()))
        .and_then(|EventArgs(args)| validate_chat_message(&args, &state.limits))
        .map(|mut input| {
            // The default room is stored without its name.
            if input.room.as_deref() == Some(state.rooms.default_name()) {
                input.room = None;
            }
            // A verified sender is who its token says, whatever the message claims.
            if let Some(verified) = &connection.verified {
                input.author = Some(verified.name.clone());
                input.user = Some(verified.user.clone());
            }
            input
        });
    if connection.verified.as_ref().is_some_and(|v| v.expired()) {
        let reply = AckReply::Rejected {
            error: "token expired".into(),
        };
        metrics::counter_with(metrics::REJECTED, "reason", "token").increment(1);
        send_ack(&socket, ack, &reply, &connection).await;
        return;
    }
    let input = match input {
        Ok(input) if !connection.subscription.contains(&input.room) => {
            let room = state.rooms.name(&input.room);
            let reply = AckReply::Rejected {
                error: format!("not in room {room}: join it first"),
            };
            metrics::counter_with(metrics::REJECTED, "reason", "invalid_payload").increment(1);
            send_ack(&socket, ack, &reply, &connection).await;
            return;
        }
        Ok(input) => match super::rooms::may_post(&state, &connection, &input.room) {
            Ok(()) => input,
            Err(denied) => {
                let reply = AckReply::Rejected {
                    error: denied.to_string(),
                };
                metrics::counter_with(metrics::REJECTED, "reason", "not_allowed").increment(1);
                send_ack(&socket, ack, &reply, &connection).await;
                return;
            }
        },
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
    place.wait_turn().await;
    let room = input.room.clone();
    let submitted = state.log.submit(input).await;
    // The connection's next message may be submitted now.
    drop(place);
    let outcome = match submitted {
        Ok(receipt) => receipt.await,
        Err(e) => Err(e),
    };
    let (id, duplicate) = match outcome {
        Ok(AppendOutcome::Stored(id)) => (id, false),
        Ok(AppendOutcome::Duplicate(id)) => (id, true),
        Err(e) => {
            // No ack: the client's retry will find the message stored or store it then.
            metrics::counter_with(metrics::REJECTED, "reason", "storage_failure").increment(1);
            match e {
                // A cluster node without NATS, or catching up: expected, and said by /healthz.
                AppendError::Unavailable(_) => {
                    tracing::warn!(sid = %socket.id, "message not acked: {e}")
                }
                _ => tracing::error!(sid = %socket.id, "message not stored: {e}"),
            }
            return;
        }
    };
    tracing::trace!(sid = %socket.id, id = id.0, duplicate, "stored, waiting for own copy");
    // Wait until this socket's own copy has been queued, if it gets one: the message is of a
    // room it is in, above the room's mark (a retry of a message older than the socket's
    // join gets none, nor one whose room it has left meanwhile).
    if connection
        .subscription
        .mark(&room)
        .is_some_and(|mark| id.0 > mark)
    {
        tokio::select! {
            () = connection.emitted.reached(id.0) => {}
            () = connection.subscription.left(&room) => {}
            () = connection.signals.closed() => return,
        }
    }
    let reply = AckReply::Stored { id, duplicate };
    metrics::counter(metrics::ACKS).increment(1);
    if !send_ack(&socket, ack, &reply, &connection).await {
        // The message is stored and broadcast, but the client cannot learn it from this
        // ack: make it reconnect, so its retry is answered with `duplicate: true`.
        disconnect(&socket, &connection.signals, &state.live);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(future: &mut std::pin::Pin<Box<impl Future<Output = ()>>>) -> bool {
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        future.as_mut().poll(&mut context).is_ready()
    }

    #[test]
    fn turns_follow_arrival_and_skip_places_given_up() {
        let order = Arc::new(ArrivalOrder::default());
        let (first, second, third, fourth) =
            (order.take(), order.take(), order.take(), order.take());
        let mut fourth_turn = Box::pin(async move {
            fourth.wait_turn().await;
        });
        let mut second_turn = Box::pin(second.wait_turn());
        assert!(!ready(&mut second_turn), "the first has not left the line");
        assert!(!ready(&mut fourth_turn));
        // The third is refused (say, invalid) before its turn: its place is skipped.
        drop(third);
        drop(first);
        assert!(ready(&mut second_turn), "the second goes after the first");
        assert!(!ready(&mut fourth_turn), "not before the second has left");
        drop(second_turn);
        drop(second);
        assert!(ready(&mut fourth_turn), "the third's place was skipped");
    }
}
