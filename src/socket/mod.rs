//! The Socket.IO layer: the only module that touches socketioxide.
//!
//! Owns the per-connection lifecycle: admission (the handshake check, the connection cap),
//! one delivery task per socket that replays what the client asked for from its [`Feed`]
//! (`chat message (content, id, meta)`) at the client's pace, sends the `sync` report and then
//! hands the socket to the `live` broadcaster (taking it back to catch up whenever the client
//! falls behind), the `chat message` handler (rate limit, validation, hand-off to the writer,
//! ack after the sender's own copy, tracked by `emitted`), `history`, and the shutdown drain.
//! `outgoing` keeps acks and pings from being crowded out of a socket's buffer; `presence`
//! holds the ephemeral events. Validation rules live in [`crate::protocol`]; ordering in the
//! hub, the live set and the feed.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde_json::Value;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;
use socketioxide::{SocketError, SocketIo};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::feed::{BatchLimits, Feed};
use crate::hub::{Hub, LiveMessage};
use crate::protocol::{
    AckReply, AuthError, Limits, PayloadError, parse_handshake, parse_history_request,
    validate_chat_message,
};
use crate::rate::{RateLimit, TokenBucket, Verdict};
use crate::store::{AppendOutcome, StoreReader};
use crate::telemetry;
use crate::writer::WriterHandle;

mod emitted;
mod live;
mod outgoing;
mod presence;
use emitted::EmittedCursor;
pub use live::LiveSet;
use outgoing::{NotQueued, SendLock};
pub use presence::{SharedRoster, broadcast_presence};

/// The event name of the tutorial's protocol, both directions.
pub const CHAT_MESSAGE: &str = "chat message";
/// Pages of older messages: `history ({ before, limit }, ack)`.
pub const HISTORY: &str = "history";
/// Sent once after the replay: `sync ({ epoch, from, to, complete })`.
pub const SYNC: &str = "sync";

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
    /// Tracks the delivery tasks; shutdown waits for them, so the database is closed only
    /// after the last replay read.
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
    pub live: Arc<LiveSet>,
}

/// `sync ({ epoch, from, to, complete })`, sent once after the replay, before live messages.
#[derive(serde::Serialize)]
struct Sync<'a> {
    epoch: &'a str,
    /// First id the replay covered.
    from: u64,
    /// Last id the replay covered (the live stream continues after it).
    to: u64,
    /// False when the client asked for messages that are gone: deleted by retention, or
    /// its offset came from another database.
    complete: bool,
}

/// Known at connect; completed and sent after the replay.
struct SyncPlan {
    epoch: Arc<str>,
    /// The client's offset came from another database.
    other_database: bool,
}

/// Counts `chat message` handlers between receipt and ack. Once draining, new messages are
/// not taken (their senders retry after the restart), and [`InFlight::drained`] resolves
/// when the ones already taken have been stored and acked.
#[derive(Clone, Default)]
pub struct InFlight(Arc<InFlightState>);

#[derive(Default)]
struct InFlightState {
    count: AtomicUsize,
    draining: std::sync::atomic::AtomicBool,
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

/// Counts connected clients; a [`ConnectionSlot`] is held for each and released on drop,
/// whichever way the socket ends.
#[derive(Clone)]
pub struct ConnectionCount {
    current: Arc<AtomicUsize>,
    max: usize,
}

impl ConnectionCount {
    /// A counter allowing `max` connections.
    pub fn new(max: usize) -> Self {
        Self {
            current: Arc::default(),
            max,
        }
    }

    /// Connected clients now.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    fn try_acquire(&self) -> Option<ConnectionSlot> {
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|n| {
                metrics::counter!(telemetry::CONNECTIONS_TOTAL).increment(1);
                metrics::gauge!(telemetry::CONNECTIONS).set((n + 1) as f64);
                ConnectionSlot(self.current.clone())
            })
    }
}

/// One counted connection; dropping it frees the place.
struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let before = self.0.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(telemetry::CONNECTIONS).set(before.saturating_sub(1) as f64);
    }
}

/// Why a connection was refused; the text is the client's `connect_error` message.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("server is full: {0} clients connected, the limit")]
    Full(usize),
}

/// A socket's delivery, prepared by [`admit`] and started by [`on_connect`] (socketioxide
/// spawns the connect handler after sending CONNECT, so anything registered there could miss
/// the client's first events; the middleware runs before CONNECT is sent).
#[derive(Clone)]
struct PendingDelivery(Arc<Mutex<Option<Delivery>>>);

/// What a delivery task owns: the feed, where it reports progress, and when to stop.
struct Delivery {
    feed: Feed,
    delivered: Arc<EmittedCursor>,
    closed: Arc<Closed>,
    /// The nickname it connected with, listed in presence once connected.
    nickname: Option<String>,
    /// What the `sync` event after the replay will say.
    sync: SyncPlan,
    /// Where it goes once caught up.
    live: Arc<LiveSet>,
    /// Taken while queueing to the socket.
    sending: SendLock,
    /// Held while the socket lives (the task, or the pending delivery if it never starts).
    _slot: ConnectionSlot,
}

/// Per-socket delivery state the event handlers need: the highest id emitted to this socket
/// so far (a handler acks a message only once the socket's own copy of it has been emitted,
/// so the client sees the message before its ack), and the socket's [`Closed`] signals.
#[derive(Clone)]
struct Delivered {
    sent: Arc<EmittedCursor>,
    closed: Arc<Closed>,
    /// The connection's send allowance.
    bucket: Arc<Mutex<TokenBucket>>,
    /// Taken while queueing to this socket (see [`SendLock`]).
    sending: SendLock,
}

/// Registers the handlers on the default namespace.
pub fn register(io: &SocketIo) {
    io.ns("/", on_connect.with(admit));
}

/// The connect middleware: refuses a bad `auth`, otherwise prepares the socket completely
/// (event handlers, feed subscription) before the client learns it is connected.
async fn admit(
    socket: SocketRef,
    TryData(auth): TryData<Value>,
    State(state): State<ChatState>,
) -> Result<(), Refusal> {
    let auth = auth.map_err(|e| AuthError::BadServerOffset(format!("unreadable auth: {e}")))?;
    let handshake = parse_handshake(&auth)?;
    // An offset from another database (its epoch differs) means nothing here: replay all.
    let other_epoch = handshake
        .epoch
        .as_deref()
        .is_some_and(|epoch| epoch != &*state.epoch);
    let start = if other_epoch { 0 } else { handshake.offset };
    let slot = state
        .connections
        .try_acquire()
        .ok_or(Refusal::Full(state.connections.max))?;
    let feed = Feed::new(
        state.hub.clone(),
        state.reader.clone(),
        start,
        handshake.latest,
        state.batch,
    );
    let emitted = Arc::new(EmittedCursor::new(feed.cursor()));
    let sending = SendLock::default();
    let closed = Arc::new(Closed {
        socket: state.shutdown.child_token(),
        disconnect: Notify::new(),
        logged: Default::default(),
    });
    socket.extensions.insert(Delivered {
        sent: emitted.clone(),
        closed: closed.clone(),
        bucket: Arc::new(Mutex::new(TokenBucket::new(
            state.rate_limit,
            Instant::now(),
        ))),
        sending: sending.clone(),
    });
    socket.extensions.insert(sending.clone());
    let typing = presence::Typing::new();
    socket.extensions.insert(typing.clone());
    socket.on(CHAT_MESSAGE, on_chat_message);
    socket.on(HISTORY, on_history);
    socket.on("typing", presence::on_typing);
    socket.on("nickname", presence::on_nickname);
    let on_close = closed.clone();
    socket.on_disconnect(
        move |socket: SocketRef, reason: DisconnectReason, State(state): State<ChatState>| async move {
            if !on_close.logged.swap(true, Ordering::AcqRel) {
                tracing::info!(sid = %socket.id, ?reason, "connection closed");
            }
            on_close.socket.cancel();
            presence::left(&socket, &state.roster, Some(&typing));
        },
    );
    tracing::info!(
        sid = %socket.id,
        offset = start,
        transport = ?socket.transport_type(),
        "connection opened"
    );
    let sync = SyncPlan {
        epoch: state.epoch.clone(),
        other_database: other_epoch || feed.reset(),
    };
    let delivery = Delivery {
        feed,
        delivered: emitted,
        closed,
        nickname: handshake.nickname,
        sync,
        live: state.live.clone(),
        sending,
        _slot: slot,
    };
    socket
        .extensions
        .insert(PendingDelivery(Arc::new(Mutex::new(Some(delivery)))));
    Ok(())
}

/// Runs once the client has been told it is connected: starts the delivery task.
async fn on_connect(socket: SocketRef, State(state): State<ChatState>) {
    let pending = socket
        .extensions
        .get::<PendingDelivery>()
        .and_then(|p| p.0.lock().unwrap_or_else(PoisonError::into_inner).take());
    let Some(mut delivery) = pending else {
        tracing::error!(sid = %socket.id, "connected without a prepared delivery");
        let _ = socket.disconnect();
        return;
    };
    presence::joined(&socket, &state.roster, delivery.nickname.take());
    state.tasks.spawn(deliver(socket, delivery));
}

/// Ends a socket's delivery: its own disconnect, the server's shutdown, or a lost ack.
struct Closed {
    /// Cancelled when the socket disconnects or the server shuts down (a child token of
    /// the server's: socketioxide runs no disconnect handlers when the server closes).
    socket: CancellationToken,
    /// The socket must be disconnected: an ack was lost (the client reconnects, replays and
    /// retries, getting a duplicate ack), or the client keeps sending over its rate limit.
    disconnect: Notify,
    /// Set once "connection closed" has been logged (by the disconnect handler, or by the
    /// delivery task when the server shuts down and no handler runs).
    logged: std::sync::atomic::AtomicBool,
}

/// How a delivery wait ended.
enum Stop {
    /// The socket or the server closed: nothing more to do.
    Closed,
    /// Disconnect the socket (its client reconnects and recovers what it missed).
    Disconnect,
}

impl Closed {
    async fn wait(&self) -> Stop {
        tokio::select! {
            () = self.socket.cancelled() => Stop::Closed,
            () = self.disconnect.notified() => Stop::Disconnect,
        }
    }
}

/// Emits between yields to the scheduler during a long batch.
const YIELD_EVERY: usize = 32;

/// Serves one socket until it closes: replays what the client asked for, sends `sync`, then
/// joins the live set; whenever the broadcaster takes it out (the client fell behind), catches
/// it up from the tail cache or the store at the client's pace and joins again.
async fn deliver(socket: SocketRef, delivery: Delivery) {
    let Delivery {
        mut feed,
        delivered,
        closed,
        nickname: _,
        sync,
        live,
        sending,
        _slot,
    } = delivery;
    metrics::counter!(telemetry::REPLAYS).increment(1);
    let started = Instant::now();
    let mut replaying = true;
    let fell_behind = Arc::new(Notify::new());
    // What to catch up to before trying to join: first the replay the client asked for.
    let mut through = feed.replay_until();
    let stop = 'deliver: loop {
        let batch = tokio::select! {
            batch = feed.read_through(through) => batch,
            stop = closed.wait() => break 'deliver stop,
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(sid = %socket.id, "delivery stopped: {e}");
                break 'deliver Stop::Disconnect;
            }
        };
        if !batch.is_empty() {
            if replaying {
                metrics::counter!(telemetry::REPLAYED_MESSAGES).increment(batch.len() as u64);
            }
            if let Err(stop) = emit_batch(&socket, &sending, &closed, &delivered, &batch).await {
                break 'deliver stop;
            }
            continue;
        }
        // Caught up to `through`.
        if replaying && feed.caught_up() {
            replaying = false;
            metrics::histogram!(telemetry::REPLAY_SECONDS).record(started.elapsed().as_secs_f64());
            let report = Sync {
                epoch: &sync.epoch,
                from: feed.start() + 1,
                to: feed.cursor(),
                // A hole in the replay is exact (ids are contiguous), and immune to races with
                // retention running meanwhile.
                complete: !sync.other_database && !feed.had_gap(),
            };
            let emit = || outgoing::emit_leaving_headroom(&socket, &sending, SYNC, &report);
            if let Err(stop) = emit_in_order(&closed, emit).await {
                break 'deliver stop;
            }
        }
        let member = live::Member {
            socket: socket.clone(),
            emitted: delivered.clone(),
            sending: sending.clone(),
            fell_behind: fell_behind.clone(),
        };
        match live.try_join(socket.id, member).await {
            // Newer messages were sent meanwhile: catch up to those first.
            Err(last_sent) => through = last_sent,
            Ok(()) => {
                // Live: the broadcaster queues everything now, until this socket closes or
                // falls behind.
                tokio::select! {
                    () = fell_behind.notified() => {}
                    stop = closed.wait() => break 'deliver stop,
                }
                feed.skip_to(delivered.get());
            }
        }
    };
    live.leave(socket.id).await;
    if let Stop::Disconnect = stop {
        force_disconnect(&socket, &closed).await;
    }
    // Cancelled with no disconnect handler having logged: the server is shutting down.
    if closed.socket.is_cancelled() && !closed.logged.swap(true, Ordering::AcqRel) {
        tracing::info!(sid = %socket.id, reason = "ServerShutdown", "connection closed");
    }
}

/// Queues a batch of caught-up messages to one socket in order, waiting while its buffer is
/// full, and advances its emitted cursor as they go.
async fn emit_batch(
    socket: &SocketRef,
    sending: &SendLock,
    closed: &Closed,
    delivered: &EmittedCursor,
    batch: &[Arc<LiveMessage>],
) -> Result<(), Stop> {
    for chunk in batch.chunks(YIELD_EVERY) {
        let mut rest = chunk;
        while !rest.is_empty() {
            let chats =
                || outgoing::emit_chats_leaving_headroom(socket, sending, CHAT_MESSAGE, rest);
            // At least one was queued (`Ok` promises it).
            let queued = emit_in_order(closed, chats).await?.min(rest.len());
            let (sent, unsent) = rest.split_at(queued);
            if let Some(last) = sent.last() {
                delivered.advance(last.id.0);
            }
            rest = unsent;
        }
        if chunk.len() == YIELD_EVERY {
            // Let the connection's writer drain the buffer before we fill it further.
            tokio::task::yield_now().await;
        }
    }
    Ok(())
}

/// Disconnects a socket whose client must reconnect to recover. socketioxide needs a free
/// slot in the outgoing buffer for that; delivery has stopped, so one frees up as soon as the
/// client reads (a client that never reads is closed by the engine.io heartbeat instead).
async fn force_disconnect(socket: &SocketRef, closed: &Closed) {
    let mut backoff = Duration::from_millis(1);
    loop {
        match socket.clone().disconnect() {
            Err(SocketError::InternalChannelFull) => {}
            _ => return,
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = closed.socket.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_millis(200));
    }
}

/// Queues what `emit` queues (one message, or a run of them), waiting while the socket's
/// outgoing buffer is full (the client reads slowly) instead of dropping anything. Errs once
/// the socket is closed.
async fn emit_in_order<T>(
    closed: &Closed,
    emit: impl Fn() -> Result<T, NotQueued>,
) -> Result<T, Stop> {
    // Not too eager: a retry that finds only a slot or two free briefly holds them (see
    // `outgoing`); waiting a little lets the connection drain more first.
    let mut backoff = Duration::from_millis(1);
    loop {
        match emit() {
            Ok(queued) => return Ok(queued),
            Err(NotQueued::Full) => {
                // A client that never reads stops answering pings (which still fit, thanks
                // to the headroom) and the engine.io heartbeat closes it: `closed` fires.
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    stop = closed.wait() => return Err(stop),
                }
                backoff = (backoff * 2).min(Duration::from_millis(50));
            }
            Err(NotQueued::Closed) => return Err(Stop::Closed),
        }
    }
}

async fn on_chat_message(
    socket: SocketRef,
    TryData(args): TryData<EventArgs>,
    ack: AckSender,
    State(state): State<ChatState>,
    Extension(delivered): Extension<Delivered>,
) {
    let Some(_in_flight) = state.in_flight.enter() else {
        // Shutting down: not taken, not acked; the client retries after the restart.
        return;
    };
    let verdict = delivered
        .bucket
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take(Instant::now());
    if let Verdict::Limited {
        retry_after,
        strikes,
    } = verdict
    {
        metrics::counter!(telemetry::REJECTED, "reason" => "rate_limited").increment(1);
        let reply = AckReply::RateLimited {
            error: "rate limited",
            retry_after_ms: retry_after.as_millis().max(1) as u64,
        };
        send_ack(&socket, ack, &reply, &delivered).await;
        if f64::from(strikes) > state.rate_limit.burst {
            tracing::warn!(sid = %socket.id, strikes, "disconnecting a client that ignores its rate limit");
            delivered.closed.disconnect.notify_one();
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
            metrics::counter!(telemetry::REJECTED, "reason" => "invalid_payload").increment(1);
            let reply = AckReply::Rejected {
                error: error.to_string(),
            };
            // If this ack is lost, the client's retry is rejected again: nothing to recover.
            send_ack(&socket, ack, &reply, &delivered).await;
            return;
        }
    };
    let (id, duplicate) = match state.writer.append(input).await {
        Ok(AppendOutcome::Stored(id)) => (id, false),
        Ok(AppendOutcome::Duplicate(id)) => (id, true),
        Err(e) => {
            // No ack: the client's retry will find the message stored or store it then.
            metrics::counter!(telemetry::REJECTED, "reason" => "storage_failure").increment(1);
            tracing::error!(sid = %socket.id, "message not stored: {e}");
            return;
        }
    };
    tracing::trace!(sid = %socket.id, id = id.0, duplicate, "stored, waiting for own copy");
    // Wait until this socket's own copy has been emitted (fails only if it closed).
    tokio::select! {
        () = delivered.sent.reached(id.0) => {}
        () = delivered.closed.socket.cancelled() => return,
    }
    let reply = AckReply::Stored { id, duplicate };
    metrics::counter!(telemetry::ACKS).increment(1);
    if !send_ack(&socket, ack, &reply, &delivered).await {
        // The message is stored and broadcast, but the client cannot learn it from this
        // ack: make it reconnect, so its retry is answered with `duplicate: true`.
        delivered.closed.disconnect.notify_one();
    }
}

/// One message of a `history` page.
#[derive(serde::Serialize)]
struct HistoryEntry {
    id: u64,
    content: String,
    author: Option<String>,
    time: u64,
}

/// `history ({ before, limit }, ack)`: a page of older messages, ascending.
async fn on_history(
    socket: SocketRef,
    TryData(args): TryData<EventArgs>,
    ack: AckSender,
    State(state): State<ChatState>,
    Extension(delivered): Extension<Delivered>,
) {
    let request = args
        .map_err(|e| e.to_string())
        .and_then(|EventArgs(args)| parse_history_request(&args).map_err(|e| e.to_string()));
    let verdict = delivered
        .bucket
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take(Instant::now());
    // History reads share the connection's allowance with sends.
    let request = match verdict {
        Verdict::Allowed => request,
        Verdict::Limited { retry_after, .. } => {
            let reply = AckReply::RateLimited {
                error: "rate limited",
                retry_after_ms: retry_after.as_millis().max(1) as u64,
            };
            send_ack(&socket, ack, &reply, &delivered).await;
            return;
        }
    };
    let reply = match request {
        Err(error) => serde_json::json!({ "error": error }),
        Ok(request) => {
            let reader = state.reader.clone();
            let read = tokio::task::spawn_blocking(move || {
                reader.read_before(request.before, request.limit as usize)
            })
            .await;
            match read {
                Ok(Ok((rows, has_more))) => {
                    let messages: Vec<HistoryEntry> = rows
                        .into_iter()
                        .map(|row| HistoryEntry {
                            id: row.id.0,
                            content: row.message.content,
                            author: row.message.author,
                            time: row.message.received_at_ms,
                        })
                        .collect();
                    serde_json::json!({ "messages": messages, "hasMore": has_more })
                }
                Ok(Err(e)) => {
                    tracing::error!(sid = %socket.id, "history read failed: {e}");
                    serde_json::json!({ "error": "history is unavailable right now" })
                }
                Err(e) => {
                    tracing::error!(sid = %socket.id, "history task failed: {e}");
                    serde_json::json!({ "error": "history is unavailable right now" })
                }
            }
        }
    };
    send_ack(&socket, ack, &reply, &delivered).await;
}

/// Sends an ack, waiting for a free slot in the outgoing buffer (delivery leaves some).
/// Returns false if the ack was lost (a heartbeat ping took the slot it had found).
async fn send_ack<T: serde::Serialize + ?Sized>(
    socket: &SocketRef,
    ack: AckSender,
    reply: &T,
    delivered: &Delivered,
) -> bool {
    let mut ack = ack;
    let mut backoff = Duration::from_micros(200);
    loop {
        match outgoing::try_ack(socket, &delivered.sending, ack, reply) {
            Ok(()) => return true,
            Err((NotQueued::Full, Some(back))) => ack = back,
            Err((NotQueued::Full, None)) => {
                tracing::warn!(sid = %socket.id, "ack lost to a full outgoing buffer");
                return false;
            }
            // A closed socket's client reconnects and retries anyway.
            Err((NotQueued::Closed, _)) => return true,
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = delivered.closed.socket.cancelled() => return true,
        }
        backoff = (backoff * 2).min(Duration::from_millis(50));
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
