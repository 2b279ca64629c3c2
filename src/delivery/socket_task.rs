//! The task that serves one socket: replay what the client asked for, send `sync`, join the
//! live set, and catch up again whenever the client falls out of it.
//!
//! ```text
//! replay (catch-up reader, at the client's pace) ─▶ sync ─▶ try_join ─┬─▶ live (broadcaster)
//!        ▲                                                             │       │ fell behind
//!        └──────────── not caught up to sent_through / fell behind ◀──┴───────┘
//! ```
//!
//! It owns the socket's [`CatchUp`] reader and [`Signals`]; the socket layer builds a
//! [`SocketDelivery`] when it admits a socket and spawns [`deliver`] once the client knows it
//! is connected. It does not handle events (that is the socket layer's job).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socketioxide::SocketError;
use socketioxide::extract::SocketRef;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::catch_up::CatchUp;
use super::cursor::EmittedCursor;
use super::live::{LiveSet, Member};
use super::outbox::{self, NotQueued, SendLock, SocketOutbox};
use crate::message::SharedMessage;
use crate::ops::metrics;
use crate::protocol::event::{CHAT_MESSAGE, SYNC};

/// `sync ({ epoch, from, to, complete })`, sent once after the replay, before live messages.
#[derive(serde::Serialize)]
struct SyncReport<'a> {
    epoch: &'a str,
    /// First id the replay covered.
    from: u64,
    /// Last id the replay covered (the live stream continues after it).
    to: u64,
    /// False when the client asked for messages that are gone: deleted by retention, or
    /// its offset came from another database.
    complete: bool,
}

/// What the `sync` report will say, as far as it is known at connect.
pub struct SyncPlan {
    /// This database's epoch.
    pub epoch: Arc<str>,
    /// The client's offset came from another database.
    pub other_database: bool,
}

/// The signals that end a socket's delivery, shared with its event handlers.
pub struct Signals {
    /// Cancelled when the socket disconnects or the server shuts down (a child token of
    /// the server's: socketioxide runs no disconnect handlers when the server closes).
    pub closed: CancellationToken,
    /// The socket must be disconnected: an ack was lost (the client reconnects, replays and
    /// retries, getting a duplicate ack), or the client keeps sending over its rate limit.
    pub disconnect: Notify,
    /// Set once "connection closed" has been logged (by the disconnect handler, or by the
    /// delivery task when the server shuts down and no handler runs).
    pub logged: AtomicBool,
}

impl Signals {
    /// Signals for a socket of a server that shuts down with `shutdown`.
    pub fn new(shutdown: &CancellationToken) -> Self {
        Self {
            closed: shutdown.child_token(),
            disconnect: Notify::new(),
            logged: AtomicBool::new(false),
        }
    }

    /// Logs "connection closed" once, whoever notices first.
    pub fn log_closed(&self, sid: &dyn std::fmt::Display, reason: &dyn std::fmt::Debug) {
        if !self.logged.swap(true, Ordering::AcqRel) {
            tracing::info!(%sid, ?reason, "connection closed");
        }
    }

    async fn wait(&self) -> Stop {
        tokio::select! {
            () = self.closed.cancelled() => Stop::Closed,
            () = self.disconnect.notified() => Stop::Disconnect,
        }
    }
}

/// How a delivery wait ended.
enum Stop {
    /// The socket or the server closed: nothing more to do.
    Closed,
    /// Disconnect the socket (its client reconnects and recovers what it missed).
    Disconnect,
}

/// Everything one socket's delivery needs, prepared at admission.
pub struct SocketDelivery {
    /// Its reader of stored messages.
    pub catch_up: CatchUp,
    /// Highest id queued to the socket (acks wait on it).
    pub emitted: Arc<EmittedCursor>,
    /// When to stop.
    pub signals: Arc<Signals>,
    /// What `sync` will say.
    pub sync: SyncPlan,
    /// Where it goes once caught up.
    pub live: Arc<LiveSet>,
    /// Taken while queueing to the socket.
    pub sending: SendLock,
    /// Whether messages end with their id as a string (connection state recovery).
    pub offsets: bool,
}

/// Emits between yields to the scheduler during a long batch.
const YIELD_EVERY: usize = 32;

/// Serves one socket until it closes: replays what the client asked for, sends `sync`, then
/// joins the live set; whenever the broadcaster takes it out (the client fell behind), catches
/// it up from the tail cache or the store at the client's pace and joins again.
pub async fn deliver(socket: SocketRef, delivery: SocketDelivery) {
    let SocketDelivery {
        mut catch_up,
        emitted,
        signals,
        sync,
        live,
        sending,
        offsets,
    } = delivery;
    metrics::counter(metrics::REPLAYS).increment(1);
    let started = Instant::now();
    let mut replaying = true;
    let fell_behind = Arc::new(Notify::new());
    // What to catch up to before trying to join: first the replay the client asked for.
    let mut through = catch_up.replay_until();
    let stop = 'deliver: loop {
        let batch = tokio::select! {
            batch = catch_up.read_through(through) => batch,
            stop = signals.wait() => break 'deliver stop,
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
                metrics::counter(metrics::REPLAYED_MESSAGES).increment(batch.len() as u64);
            }
            // Boxed (once a batch): its state is the largest of this task's, which an idle
            // socket would otherwise carry for its whole life.
            let sent = Box::pin(emit_batch(
                &socket, &sending, &signals, &emitted, &batch, offsets,
            ))
            .await;
            if let Err(stop) = sent {
                break 'deliver stop;
            }
            continue;
        }
        // Caught up to `through`.
        if replaying && catch_up.caught_up() {
            replaying = false;
            metrics::histogram(metrics::REPLAY_SECONDS).record(started.elapsed().as_secs_f64());
            let report = SyncReport {
                epoch: &sync.epoch,
                from: catch_up.start() + 1,
                to: catch_up.cursor(),
                // A hole in the replay is exact (ids are contiguous), and immune to races with
                // retention running meanwhile.
                complete: !sync.other_database && !catch_up.had_gap(),
            };
            let emit = || outbox::emit_leaving_headroom(&socket, &sending, SYNC, &report);
            if let Err(stop) = Box::pin(emit_in_order(&signals, emit)).await {
                break 'deliver stop;
            }
        }
        let member = Member {
            sid: socket.id,
            sink: Box::new(SocketOutbox {
                socket: socket.clone(),
                lock: sending.clone(),
                offsets,
            }),
            emitted: emitted.clone(),
            fell_behind: fell_behind.clone(),
        };
        match live.try_join(member) {
            // Newer messages were sent meanwhile: catch up to those first.
            Err(sent_through) => through = sent_through,
            Ok(()) => {
                // Live: the broadcaster queues everything now, until this socket closes or
                // falls behind.
                tokio::select! {
                    () = fell_behind.notified() => {}
                    stop = signals.wait() => break 'deliver stop,
                }
                catch_up.skip_to(emitted.get());
            }
        }
    };
    live.leave(socket.id);
    if let Stop::Disconnect = stop {
        force_disconnect(&socket, &signals).await;
    }
    // Cancelled with no disconnect handler having logged: the server is shutting down.
    if signals.closed.is_cancelled() {
        signals.log_closed(&socket.id, &"ServerShutdown");
    }
}

/// Queues a batch of caught-up messages to one socket in order, waiting while its buffer is
/// full, and advances its emitted cursor as they go.
async fn emit_batch(
    socket: &SocketRef,
    sending: &SendLock,
    signals: &Signals,
    emitted: &EmittedCursor,
    batch: &[SharedMessage],
    offsets: bool,
) -> Result<(), Stop> {
    for chunk in batch.chunks(YIELD_EVERY) {
        let mut rest = chunk;
        while !rest.is_empty() {
            let chats = || {
                outbox::emit_chats_leaving_headroom(socket, sending, CHAT_MESSAGE, rest, offsets)
            };
            // At least one was queued (`Ok` promises it).
            let queued = emit_in_order(signals, chats).await?.clamp(1, rest.len());
            let (sent, unsent) = rest.split_at(queued);
            if let Some(last) = sent.last() {
                emitted.advance(last.id.0);
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
async fn force_disconnect(socket: &SocketRef, signals: &Signals) {
    let mut backoff = Duration::from_millis(1);
    loop {
        match socket.clone().disconnect() {
            Err(SocketError::InternalChannelFull) => {}
            _ => return,
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = signals.closed.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_millis(200));
    }
}

/// Queues what `emit` queues (one message, or a run of them), waiting while the socket's
/// outgoing buffer is full (the client reads slowly) instead of dropping anything. Errs once
/// the socket is closed.
async fn emit_in_order<T>(
    signals: &Signals,
    emit: impl Fn() -> Result<T, NotQueued>,
) -> Result<T, Stop> {
    // Not too eager: a retry that finds only a slot or two free briefly holds them (see
    // `outbox`); waiting a little lets the connection drain more first.
    let mut backoff = Duration::from_millis(1);
    loop {
        match emit() {
            Ok(queued) => return Ok(queued),
            Err(NotQueued::Full) => {
                // A client that never reads stops answering pings (which still fit, thanks
                // to the headroom) and the engine.io heartbeat closes it: `closed` fires.
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    stop = signals.wait() => return Err(stop),
                }
                backoff = (backoff * 2).min(Duration::from_millis(50));
            }
            Err(NotQueued::Closed) => return Err(Stop::Closed),
        }
    }
}
