//! The Socket.IO handlers: the only code that handles socketioxide events.
//!
//! - [`admission`]: the connect middleware (handshake, connection cap) that prepares a socket's
//!   delivery before the client learns it is connected, and starts it.
//! - [`chat`]: `chat message`: rate limit, validation, the log, the ack after the sender's own
//!   copy; and the shutdown drain of messages in flight.
//! - [`history`]: `history` pages of older messages.
//! - [`identity`]: who a connection is (`--auth`): the token at connect, its expiry while
//!   connected, `refresh token`.
//! - [`moderation`]: access to rooms (the checks of joins and posts) and the requests that
//!   change it: `create room`, `set role`, `invite`, `kick`, `ban`, `mute`, `delete message`.
//! - [`presence`]: who is online, join/leave notices, typing, nickname changes (ephemeral);
//!   [`roster`] is its plain state.
//! - [`rate`]: the per-connection token bucket (pure).
//! - [`recovery`]: durable connection state recovery (the CONNECT `pid`, sessions).
//! - [`rooms`]: room names and limits, and `join`, `leave`, `rooms`.
//!
//! Validation rules live in [`crate::protocol`]; ordering and delivery in [`crate::delivery`].

pub mod admission;
pub mod chat;
pub mod history;
pub mod identity;
pub mod moderation;
pub mod presence;
pub mod rate;
pub mod recovery;
pub mod rooms;
pub mod roster;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, SocketRef};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::delivery::cursor::EmittedCursor;
use crate::delivery::outbox::{self, NotQueued, SendLock};
use crate::delivery::socket_task::Signals;
use crate::delivery::{self, BatchLimits, Hub, Live, Subscription};
use crate::every::Backoff;
use crate::ingest::SharedLog;
use crate::protocol::{AckReply, Limits};
use crate::storage::StoreReader;
use admission::ConnectionCount;
use chat::InFlight;
use presence::SharedRoster;
use rate::{RateLimit, TokenBucket, Verdict};

/// Shared state of every handler.
#[derive(Clone)]
pub struct ChatState {
    /// Where stored messages are published; catch-up readers read its tail cache.
    pub hub: Arc<Hub>,
    /// Replay and history reads.
    pub reader: StoreReader,
    /// Where `chat message`s are stored.
    pub log: SharedLog,
    /// Payload limits.
    pub limits: Limits,
    /// Replay batch bounds.
    pub batch: BatchLimits,
    /// Tracks the delivery tasks (catching up) and forced disconnects; shutdown waits for
    /// them, so the database is closed only after the last replay read.
    pub tasks: TaskTracker,
    /// Cancelled when the server shuts down (socketioxide does not run per-socket disconnect
    /// handlers then).
    pub shutdown: CancellationToken,
    /// Per-connection send limit.
    pub rate_limit: RateLimit,
    /// Connected clients, against `--max-connections`.
    pub connections: ConnectionCount,
    /// Who is online.
    pub roster: SharedRoster,
    /// Chat messages being stored and acked; shutdown waits for them before closing sockets.
    pub in_flight: InFlight,
    /// This database's epoch, as sent in `sync` (16 hex digits).
    pub epoch: Arc<str>,
    /// The caught-up sockets, served by the live broadcaster.
    pub live: Arc<Live>,
    /// In a cluster: passes typing and renames to the other nodes.
    pub relay: Option<Arc<dyn presence::Relay>>,
    /// Connection state recovery.
    pub recovery: recovery::Recovery,
    /// The default room's name and the rooms' limits.
    pub rooms: rooms::Rooms,
    /// The token policy (`--auth`).
    pub auth: identity::SharedAuth,
}

/// What the event handlers of one socket share (a socket extension): one allocation, which
/// every event's `Extension` extractor clones as one `Arc`.
#[derive(Clone)]
pub struct Connection(Arc<ConnectionState>);

/// The state behind a [`Connection`].
pub struct ConnectionState {
    /// The highest id queued to this socket: a handler acks a message only once the socket's
    /// own copy of it has been queued, so the client sees the message before its ack.
    pub emitted: Arc<EmittedCursor>,
    /// When the socket closes, and how to make it disconnect.
    pub signals: Arc<Signals>,
    /// The connection's allowance of sends and history reads.
    pub bucket: Mutex<TokenBucket>,
    /// Whether a rate-limit refusal is waiting for room in the outgoing buffer (one at most).
    refusal_waiting: AtomicBool,
    /// Taken while queueing to this socket (see [`SendLock`]).
    pub sending: SendLock,
    /// The order its `chat message`s arrived in: they are stored in that order.
    pub arrival: Arc<chat::ArrivalOrder>,
    /// Its rooms, with their join marks.
    pub subscription: Arc<Subscription>,
    /// Where it is typing, and its allowance of typing notices.
    typing: presence::Typing,
    /// Its recovery session, if recovery is on.
    pub pid: Option<String>,
    /// Its verified user (`--auth`); `None` for an anonymous connection.
    pub verified: Option<Arc<identity::Verified>>,
}

impl std::ops::Deref for Connection {
    type Target = ConnectionState;

    fn deref(&self) -> &ConnectionState {
        &self.0
    }
}

/// A request over its connection's allowance.
pub(crate) struct Refusal {
    retry_after: Duration,
    /// Refusals in a row, this one included.
    strikes: u32,
}

impl Connection {
    /// Takes one request (a send, a history page, a rename) from the connection's allowance.
    /// Handlers call it synchronously as the event arrives, before they look at its
    /// arguments or spawn anything: a refused request holds nothing of what it carried (a
    /// frame may be up to the transport's limit, several times a message's).
    fn take_allowance(&self) -> Result<(), Refusal> {
        let verdict = self
            .bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(Instant::now());
        match verdict {
            Verdict::Allowed => Ok(()),
            Verdict::Limited {
                retry_after,
                strikes,
            } => Err(Refusal {
                retry_after,
                strikes,
            }),
        }
    }
}

/// Answers a refused request. A client past its limit (more refusals in a row than its
/// burst) is disconnected at once, whether it reads or not; otherwise it gets `{ error: "rate
/// limited", retryAfterMs }`. That ack is queued now if there is room; if the client is not
/// reading, one refusal per connection waits for room and the others are not answered (their
/// client retries, as after any lost ack), so a flood parks at most one small task.
fn refuse(
    socket: &SocketRef,
    ack: AckSender,
    refusal: Refusal,
    state: &ChatState,
    connection: &Connection,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    use futures_util::future::{Either, ready};
    if f64::from(refusal.strikes) > state.rate_limit.burst {
        tracing::warn!(sid = %socket.id, strikes = refusal.strikes, "disconnecting a client that ignores its rate limit");
        delivery::socket_task::disconnect(socket, &connection.signals, &state.live);
        return Either::Left(ready(()));
    }
    let reply = AckReply::RateLimited {
        error: "rate limited",
        retry_after_ms: u64::try_from(refusal.retry_after.as_millis().max(1)).unwrap_or(u64::MAX),
    };
    match outbox::try_ack(socket, &connection.sending, ack, &reply) {
        Err((NotQueued::Full, Some(ack)))
            if !connection.refusal_waiting.swap(true, Ordering::AcqRel) =>
        {
            let (socket, connection) = (socket.clone(), connection.clone());
            Either::Right(async move {
                send_ack(&socket, ack, &reply, &connection).await;
                connection.refusal_waiting.store(false, Ordering::Release);
            })
        }
        Err((NotQueued::Full, _)) => {
            tracing::debug!(sid = %socket.id, "rate-limit refusal not answered: the client is not reading");
            Either::Left(ready(()))
        }
        Ok(()) | Err((NotQueued::Closed, _)) => Either::Left(ready(())),
    }
}

/// The sockets of the chat namespace; none once it is closed. socketioxide's own
/// `SocketIo::sockets` panics then ("default namespace not found"), and a periodic task
/// (presence, session upkeep, a relayed event) may run one last time while the server closes.
pub fn chat_sockets(io: &SocketIo) -> Vec<SocketRef> {
    io.of("/").map(|ns| ns.sockets()).unwrap_or_default()
}

/// The sockets of the chat namespace in any of `rooms`; none once it is closed (see
/// [`chat_sockets`]).
pub fn room_sockets(io: &SocketIo, rooms: Vec<String>) -> Vec<SocketRef> {
    io.of("/")
        .map(|ns| ns.to(rooms).sockets())
        .unwrap_or_default()
}

/// Registers the handlers on the default namespace.
pub fn register(io: &SocketIo) {
    admission::register(io);
}

/// Sends an ack, waiting while the outgoing buffer has no slot to spare (delivery leaves
/// some). Returns false if the ack was lost (a heartbeat ping took the slot it had found).
async fn send_ack<T: serde::Serialize + ?Sized>(
    socket: &SocketRef,
    ack: AckSender,
    reply: &T,
    connection: &Connection,
) -> bool {
    let mut ack = ack;
    let mut backoff = Backoff::new(Duration::from_micros(200), Duration::from_millis(50));
    loop {
        match outbox::try_ack(socket, &connection.sending, ack, reply) {
            Ok(()) => return true,
            Err((NotQueued::Full, Some(back))) => ack = back,
            Err((NotQueued::Full, None)) => {
                tracing::warn!(sid = %socket.id, "ack lost to a full outgoing buffer");
                return false;
            }
            // A closed socket's client reconnects and retries anyway.
            Err((NotQueued::Closed, _)) => return true,
        }
        if !backoff.wait_unless(connection.signals.closed()).await {
            return true;
        }
    }
}
