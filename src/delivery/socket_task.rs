//! One socket's delivery: replay what the client asked for, send `sync`, join the live set,
//! and catch up again whenever the client falls out of it.
//!
//! ```text
//! replay (catch-up reader, at the client's pace) ─▶ sync ─▶ try_join ─┬─▶ live (broadcaster)
//!        ▲                                                             │       │ fell behind
//!        └──────────── not caught up to sent_through / fell behind ◀──┴───────┘
//! ```
//!
//! A task runs only while the socket catches up: once it joins, its delivery state is parked
//! in its [`LiveSocket`] in the live set and the task ends (tens of thousands of idle sockets
//! cost no task each); when the broadcaster takes it out, [`LiveSocket`] spawns a task again.
//! The socket layer builds a [`SocketDelivery`] when it admits a socket, spawns [`deliver`]
//! once the client knows it is connected, and on disconnect takes the socket out of the set.
//! It does not handle events (that is the socket layer's job).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use socketioxide::extract::SocketRef;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::catch_up::CatchUp;
use super::cursor::EmittedCursor;
use super::live::{ChatSink, LiveSet, Member, PassBatch, Refused};
use super::outbox::{self, NotQueued, SendLock, SocketOutbox};
use super::subscription::Subscription;
use crate::every::Backoff;
use crate::message::SharedMessage;
use crate::metrics;
use crate::protocol::event::SYNC;

/// The live set of sockets.
pub type Live = LiveSet<LiveSocket>;

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
    /// Rooms it asked for (in `auth.rooms` or its recovered session) that it may not join:
    /// private rooms it is not a member of, rooms it is banned from. Absent when none.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    refused: &'a [String],
}

/// What the `sync` report will say, as far as it is known at connect.
pub struct SyncPlan {
    /// This database's epoch.
    pub epoch: Arc<str>,
    /// The client's offset came from another database.
    pub other_database: bool,
    /// The rooms it asked for that it may not join, by name.
    pub refused: Vec<String>,
}

/// The signals that end a socket's delivery, shared with its event handlers.
pub struct Signals {
    /// The server's: when it shuts down, socketioxide runs no disconnect handlers, so a
    /// socket counts as closed then too. A clone of the server's token, not a child of it
    /// (a child token is an allocation and an entry in the parent's list per socket).
    shutdown: CancellationToken,
    /// Set when the socket disconnected (see [`Signals::close`]).
    closed: AtomicBool,
    /// Wakes whoever waits in [`Signals::closed`] when `closed` is set.
    close: Notify,
    /// Set once the socket must be disconnected (see [`disconnect`]).
    disconnecting: AtomicBool,
    /// Wakes a catch-up task when `disconnecting` is set.
    disconnect: Notify,
    /// Set once "connection closed" has been logged (by the disconnect handler, or by
    /// delivery when the server shuts down and no handler runs).
    logged: AtomicBool,
}

impl Signals {
    /// Signals for a socket of a server that shuts down with `shutdown`.
    pub fn new(shutdown: &CancellationToken) -> Self {
        Self {
            shutdown: shutdown.clone(),
            closed: AtomicBool::new(false),
            close: Notify::new(),
            disconnecting: AtomicBool::new(false),
            disconnect: Notify::new(),
            logged: AtomicBool::new(false),
        }
    }

    /// Marks the socket closed (its disconnect handler calls this) and wakes every waiter.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.close.notify_waiters();
    }

    /// Whether the socket closed or the server shut down.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.shutdown.is_cancelled()
    }

    /// Returns once the socket closed or the server shut down.
    pub async fn closed(&self) {
        let notified = self.close.notified();
        tokio::pin!(notified);
        // Registered before the flag is read: a `close` in between still wakes this.
        notified.as_mut().enable();
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        tokio::select! {
            () = notified => {}
            () = self.shutdown.cancelled() => {}
        }
    }

    /// Logs "connection closed" once, whoever notices first.
    pub fn log_closed(&self, sid: &dyn std::fmt::Display, reason: &dyn std::fmt::Debug) {
        if !self.logged.swap(true, Ordering::AcqRel) {
            tracing::info!(%sid, ?reason, "connection closed");
        }
    }

    /// Whether delivery must stop: the socket closed, or is being disconnected.
    fn stopping(&self) -> bool {
        self.is_closed() || self.disconnecting.load(Ordering::Acquire)
    }

    async fn stopped(&self) {
        if self.disconnecting.load(Ordering::Acquire) {
            return;
        }
        tokio::select! {
            () = self.closed() => {}
            () = self.disconnect.notified() => {}
        }
    }

    /// Logs the close if the server shut down and no disconnect handler logged it.
    fn log_if_shut_down(&self, sid: &dyn std::fmt::Display) {
        if self.shutdown.is_cancelled() {
            self.log_closed(sid, &"ServerShutdown");
        }
    }
}

/// Delivery to the socket stopped (it closed, or is being disconnected).
struct Stopped;

/// Stops a socket's delivery and disconnects it; its client reconnects and recovers what it
/// missed. For an ack that was lost (the client's retry gets a duplicate ack), a client that
/// keeps sending over its rate limit, and a store that cannot be read. It takes effect at
/// once, whether the client reads or not: a client whose buffer is full cannot be sent the
/// DISCONNECT packet, and its connection is closed instead (socketioxide as patched in
/// `vendor/`, 0004).
pub fn disconnect(socket: &SocketRef, signals: &Signals, live: &Live) {
    if signals.disconnecting.swap(true, Ordering::AcqRel) {
        return;
    }
    signals.disconnect.notify_one();
    // A task that joins after this finds `disconnecting` set and leaves again.
    live.leave(socket.id);
    // Only a closed socket refuses, and it is gone already.
    let _ = socket.clone().disconnect();
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
    pub live: Arc<Live>,
    /// Taken while queueing to the socket.
    pub sending: SendLock,
    /// Whether messages end with their id as a string (connection state recovery).
    pub offsets: bool,
    /// The default room's name, for the messages that carry none.
    pub default_room: Arc<str>,
    /// Where its catch-up tasks run (shutdown waits for them).
    pub tasks: TaskTracker,
}

/// Emits between yields to the scheduler during a long batch.
const YIELD_EVERY: usize = 32;

/// Serves one socket until it joins the live set: replays what the client asked for, sends
/// `sync`, then joins (catching up further first if the live stream has moved on meanwhile).
/// From there the broadcaster delivers, and spawns a task again if the socket falls behind.
pub async fn deliver(socket: SocketRef, delivery: SocketDelivery) {
    let SocketDelivery {
        catch_up,
        emitted,
        signals,
        sync,
        live,
        sending,
        offsets,
        default_room,
        tasks,
    } = delivery;
    metrics::counter(metrics::REPLAYS).increment(1);
    let through = catch_up.replay_until();
    let delivery = Delivery {
        outbox: SocketOutbox {
            socket,
            lock: sending,
            offsets,
            default_room,
        },
        parked: Parked {
            catch_up,
            emitted,
            signals,
            live,
            tasks,
            replay: Some(Box::new(Replay {
                sync,
                started: Instant::now(),
            })),
        },
    };
    delivery.catch_up_and_join(through).await;
}

/// The replay in progress: what `sync` will say once it is done.
struct Replay {
    sync: SyncPlan,
    started: Instant,
}

/// A socket's delivery state that does not take part in live delivery: kept in its
/// [`LiveSocket`] while it is live, and taken out by the task that catches it up.
struct Parked {
    catch_up: CatchUp,
    emitted: Arc<EmittedCursor>,
    signals: Arc<Signals>,
    live: Arc<Live>,
    tasks: TaskTracker,
    /// Until `sync` is sent (boxed: a live socket does not carry it).
    replay: Option<Box<Replay>>,
}

/// A socket's whole delivery state, owned by the task catching it up.
struct Delivery {
    outbox: SocketOutbox,
    parked: Parked,
}

/// Counts a running catch-up task in [`metrics::CATCHING_UP`] while it lives.
struct CatchingUp;

impl CatchingUp {
    fn start() -> Self {
        metrics::gauge(metrics::CATCHING_UP).increment(1.0);
        Self
    }
}

impl Drop for CatchingUp {
    fn drop(&mut self) {
        metrics::gauge(metrics::CATCHING_UP).decrement(1.0);
    }
}

/// A socket in the live set: where the broadcaster queues its messages, and its delivery
/// state until the broadcaster takes it out.
pub struct LiveSocket {
    outbox: SocketOutbox,
    parked: Mutex<Option<Parked>>,
}

impl ChatSink for LiveSocket {
    fn queue_chats(&self, batch: &PassBatch, picks: &[usize]) -> Result<usize, NotQueued> {
        self.outbox.queue_chats(batch, picks)
    }

    fn fell_behind(&self) {
        let Some(mut parked) = self.take_parked() else {
            return;
        };
        if parked.signals.stopping() {
            // Closed or being disconnected: nothing to catch up.
            parked.signals.log_if_shut_down(&self.outbox.socket.id);
            return;
        }
        // What reached it live is skipped; it catches up to wherever the set has got.
        parked.catch_up.skip_to(parked.emitted.get());
        let through = parked.catch_up.cursor();
        let tasks = parked.tasks.clone();
        let delivery = Delivery {
            outbox: self.outbox.clone(),
            parked,
        };
        tasks.spawn(delivery.catch_up_and_join(through));
    }

    fn broadcaster_stopped(&self) {
        if let Some(parked) = self.take_parked() {
            parked.signals.log_if_shut_down(&self.outbox.socket.id);
        }
    }
}

impl LiveSocket {
    fn take_parked(&self) -> Option<Parked> {
        // Taken once, by whoever takes the socket out of the set.
        self.parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Delivery {
    /// Catches up to `through` at the client's pace (sending `sync` once the replay is done),
    /// then tries to join the live set; catches up again to what the set has sent meanwhile
    /// until it joins, and ends there: the state goes into the set with the socket.
    async fn catch_up_and_join(mut self, mut through: u64) {
        let _counted = CatchingUp::start();
        loop {
            if self.catch_up_to(through).await.is_err() {
                self.parked.signals.log_if_shut_down(&self.outbox.socket.id);
                return;
            }
            let sid = self.outbox.socket.id;
            let live = self.parked.live.clone();
            let signals = self.parked.signals.clone();
            let member = Member {
                sid,
                subscription: self.parked.catch_up.subscription().clone(),
                emitted: self.parked.emitted.clone(),
                sink: LiveSocket {
                    outbox: self.outbox,
                    parked: Mutex::new(Some(self.parked)),
                },
            };
            match live.try_join(member) {
                Ok(()) => {
                    // Closed or told to disconnect before it joined: whoever did that has
                    // already taken it out, or looked before it was in. Leave (dropping the
                    // parked state with it).
                    if signals.stopping() {
                        live.leave(sid);
                        signals.log_if_shut_down(&sid);
                    }
                    return;
                }
                // Newer messages were sent meanwhile: catch up to those first.
                Err(Refused {
                    sent_through,
                    member,
                }) => {
                    let LiveSocket { outbox, parked } = member.sink;
                    let Some(parked) = parked.into_inner().unwrap_or_else(PoisonError::into_inner)
                    else {
                        // Unreachable: only the set takes it, and this member was never in it.
                        tracing::error!(sid = %sid, "a refused member lost its delivery state");
                        return;
                    };
                    self = Self { outbox, parked };
                    through = sent_through;
                }
            }
        }
    }

    /// Queues everything stored up to `through` after the cursor, in batches at the client's
    /// pace; then sends `sync` if this was the replay.
    async fn catch_up_to(&mut self, through: u64) -> Result<(), Stopped> {
        let Self { outbox, parked } = self;
        loop {
            let batch = tokio::select! {
                batch = parked.catch_up.read_through(through) => batch,
                () = parked.signals.stopped() => return Err(Stopped),
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(sid = %outbox.socket.id, "delivery stopped: {e}");
                    disconnect(&outbox.socket, &parked.signals, &parked.live);
                    return Err(Stopped);
                }
            };
            if batch.is_empty() {
                // Everything of its rooms up to `through` is queued.
                parked.emitted.advance(parked.catch_up.cursor());
                break;
            }
            if parked.replay.is_some() {
                metrics::counter(metrics::REPLAYED_MESSAGES).increment(batch.len() as u64);
            }
            // Boxed (once a batch): its state is the largest of this task's.
            let subscription = parked.catch_up.subscription();
            let emitting = emit_batch(
                outbox,
                &parked.signals,
                &parked.emitted,
                subscription,
                &batch,
            );
            Box::pin(emitting).await?;
        }
        // Caught up to `through`.
        if parked.catch_up.caught_up()
            && let Some(replay) = parked.replay.take()
        {
            metrics::histogram(metrics::REPLAY_SECONDS)
                .record(replay.started.elapsed().as_secs_f64());
            let lost = match parked.catch_up.lost_any().await {
                Ok(lost) => lost,
                Err(e) => {
                    // Unknown: say it may be incomplete rather than promise it is not.
                    tracing::warn!(sid = %outbox.socket.id, "cannot tell whether the replay was complete: {e}");
                    true
                }
            };
            let report = SyncReport {
                epoch: &replay.sync.epoch,
                from: parked.catch_up.start() + 1,
                to: parked.catch_up.cursor(),
                // Each room records the highest id retention deleted from it (and a cluster
                // replica the ids it never got), whatever the other rooms lost. Read after the
                // replay: retention running meanwhile can make a complete replay say false,
                // never an incomplete one say true.
                complete: !replay.sync.other_database && !lost,
                refused: &replay.sync.refused,
            };
            let emit =
                || outbox::emit_leaving_headroom(&outbox.socket, &outbox.lock, SYNC, &report);
            Box::pin(emit_in_order(&parked.signals, emit)).await?;
        }
        Ok(())
    }
}

/// Queues a batch of caught-up messages to one socket in order, waiting while its buffer is
/// full, and advances its emitted cursor as they go. A room the socket leaves meanwhile (the
/// batch was read before, and waiting for room in the buffer can take long) gets nothing more:
/// its messages are dropped from what is left before each run is queued.
async fn emit_batch(
    outbox: &SocketOutbox,
    signals: &Signals,
    emitted: &EmittedCursor,
    subscription: &Subscription,
    batch: &[SharedMessage],
) -> Result<(), Stopped> {
    for chunk in batch.chunks(YIELD_EVERY) {
        let mut rest = chunk.to_vec();
        loop {
            rest.retain(|message| subscription.wants(message));
            if rest.is_empty() {
                break;
            }
            let chats = || {
                outbox::emit_chats_leaving_headroom(
                    &outbox.socket,
                    &outbox.lock,
                    &rest,
                    outbox.offsets,
                    &outbox.default_room,
                )
            };
            // At least one was queued (`Ok` promises it).
            let queued = emit_in_order(signals, chats).await?.clamp(1, rest.len());
            emitted.advance(rest[queued - 1].id.0);
            rest.drain(..queued);
        }
        // What was dropped is not wanted: the socket has everything of its rooms up to here.
        if let Some(last) = chunk.last() {
            emitted.advance(last.id.0);
        }
        if chunk.len() == YIELD_EVERY {
            // Let the connection's writer drain the buffer before we fill it further.
            tokio::task::yield_now().await;
        }
    }
    Ok(())
}

/// Queues what `emit` queues (one message, or a run of them), waiting while the socket's
/// outgoing buffer is full (the client reads slowly) instead of dropping anything. Errs once
/// the socket is closed or delivery must stop.
async fn emit_in_order<T>(
    signals: &Signals,
    emit: impl Fn() -> Result<T, NotQueued>,
) -> Result<T, Stopped> {
    // Not too eager: a retry that finds only a slot or two free briefly holds them (see
    // `outbox`); waiting a little lets the connection drain more first.
    let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(50));
    loop {
        match emit() {
            Ok(queued) => return Ok(queued),
            Err(NotQueued::Full) => {
                // A client that never reads stops answering pings (which still fit, thanks
                // to the headroom) and the engine.io heartbeat closes it: `closed` fires.
                if !backoff.wait_unless(signals.stopped()).await {
                    return Err(Stopped);
                }
            }
            Err(NotQueued::Closed) => return Err(Stopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long a waiter that must not return yet is given.
    const NOT_YET: Duration = Duration::from_millis(50);

    /// Fails with `what` if [`Signals::closed`] returns within [`NOT_YET`].
    async fn still_open(signals: &Signals, what: &str) {
        assert!(
            tokio::time::timeout(NOT_YET, signals.closed())
                .await
                .is_err(),
            "{what}"
        );
    }

    /// A task waiting in [`Signals::closed`], given the chance to start waiting.
    async fn wait_closed(signals: &Arc<Signals>) -> tokio::task::JoinHandle<()> {
        let signals = signals.clone();
        let waiter = tokio::spawn(async move { signals.closed().await });
        tokio::task::yield_now().await;
        waiter
    }

    /// Fails with `what` unless `waiter` returns within 5 s.
    async fn waited(waiter: tokio::task::JoinHandle<()>, what: &str) {
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap_or_else(|_| panic!("{what}: still waiting after 5 s"))
            .expect("waiter");
    }

    #[tokio::test]
    async fn closed_wakes_on_close_and_on_shutdown_and_not_before() {
        let shutdown = CancellationToken::new();
        let signals = Arc::new(Signals::new(&shutdown));
        assert!(!signals.is_closed());
        still_open(&signals, "closed() returned before anything happened").await;

        let waiter = wait_closed(&signals).await;
        signals.close();
        waited(waiter, "close() wakes a waiter").await;
        assert!(signals.is_closed() && signals.stopping());
        // Already closed: returns at once, and the server did not shut down.
        signals.closed().await;
        assert!(!shutdown.is_cancelled());

        // A socket that never closed counts as closed once the server shuts down.
        let other = Arc::new(Signals::new(&shutdown));
        let waiter = wait_closed(&other).await;
        shutdown.cancel();
        waited(waiter, "shutdown wakes a waiter").await;
        assert!(other.is_closed());
    }

    #[tokio::test]
    async fn stopped_wakes_on_disconnecting_but_closed_does_not() {
        let shutdown = CancellationToken::new();
        let signals = Signals::new(&shutdown);
        signals.disconnecting.store(true, Ordering::Release);
        signals.disconnect.notify_one();
        tokio::time::timeout(Duration::from_secs(5), signals.stopped())
            .await
            .expect("stopped() returns once disconnecting");
        assert!(signals.stopping());
        assert!(!signals.is_closed());
        still_open(&signals, "a socket being disconnected is not closed yet").await;
    }
}
