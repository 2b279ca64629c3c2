//! The writer: the one thread that appends to the database, with group commit; the local
//! [`Log`].
//!
//! Owns the [`StoreWriter`]. Socket handlers send it [`ChatInput`]s through a bounded channel
//! ([`WriterHandle::append`]); it takes one request, drains whatever else is already queued
//! (bounded by count and bytes), stores the lot in one write transaction with one durable
//! commit, then publishes the new messages to the [`Hub`] in id order and only then answers
//! each request. So an answer means "on disk", and acked messages/s is not capped by the
//! disk's fsync rate. A failed commit publishes nothing and answers every request of the batch
//! with the error (the client gets no ack and retries).
//!
//! It runs on a dedicated OS thread because redb calls block. It does not validate (the
//! socket layer did) and does not talk to sockets (the hub hands messages to delivery).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::retention::Retention;
use super::{AppendError, BoxFuture, Log, Receipt};
use crate::delivery::Hub;
use crate::delivery::RoomKey;
use crate::every::now_ms;
use crate::message::{AppendOutcome, ChatInput, Message, StoredRow};
use crate::metrics;
use crate::storage::{SessionChanges, StoreWriter};

/// Bounds on one group commit.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Most messages in one transaction.
    pub max_batch_count: usize,
    /// Stop draining once this many content bytes are in the transaction.
    pub max_batch_bytes: usize,
    /// Requests that may wait for the writer before senders are slowed down.
    pub queue_capacity: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch_count: 1024,
            max_batch_bytes: 8 << 20,
            queue_capacity: 8192,
        }
    }
}

enum Command {
    Append {
        input: ChatInput,
        reply: oneshot::Sender<Result<AppendOutcome, AppendError>>,
    },
    /// Store rows that already have their ids (a cluster node applying the stream), then
    /// publish them.
    Apply {
        rows: Vec<StoredRow>,
        reply: oneshot::Sender<Result<usize, AppendError>>,
    },
    /// Store rows that fill holes below the last id (a cluster replica mended before it
    /// serves); nothing is published.
    Fill {
        rows: Vec<StoredRow>,
        reply: oneshot::Sender<Result<usize, AppendError>>,
    },
    /// Record recovery sessions as seen now, and rooms joined or left by them (committed
    /// with the next batch of appends).
    Sessions {
        changes: SessionChanges,
        /// Told once the changes are durable, if anyone waits for it.
        reply: Option<oneshot::Sender<Result<(), AppendError>>>,
    },
    /// Delete the recovery sessions last seen before this time.
    ExpireSessions {
        before_ms: u64,
        reply: oneshot::Sender<Result<usize, AppendError>>,
    },
    /// Delete one small batch of messages retention no longer keeps.
    Prune {
        retention: Retention,
        reply: oneshot::Sender<Result<usize, AppendError>>,
    },
    /// Finish everything queued before this, then stop.
    Stop,
}

/// Rows per retention transaction: small, so appends never wait long behind a prune.
pub const PRUNE_BATCH: usize = 1000;

/// Most sessions in one touch command (a commit of them takes a few milliseconds).
pub const TOUCH_BATCH: usize = 4096;

/// A cheap, cloneable way to talk to the writer.
#[derive(Clone)]
pub struct WriterHandle {
    commands: mpsc::Sender<Command>,
    /// False since the last commit failed (until one succeeds again).
    healthy: Arc<AtomicBool>,
}

impl WriterHandle {
    /// Queues `input` (after everything queued before it) and returns what resolves to its
    /// outcome, after the commit and the publish.
    pub async fn submit(&self, input: ChatInput) -> Result<Receipt, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Append { input, reply })
            .await
            .map_err(|_| AppendError::Stopped)?;
        Ok(Box::pin(async move {
            answer.await.map_err(|_| AppendError::Stopped)?
        }))
    }

    /// Stores `input` durably (or finds it already stored) and publishes it; resolves after the
    /// commit and the publish.
    #[cfg(test)]
    pub async fn append(&self, input: ChatInput) -> Result<AppendOutcome, AppendError> {
        self.submit(input).await?.await
    }

    /// Whether the database accepts writes: the last commit succeeded and the writer runs.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.commands.is_closed()
    }

    /// Sends the command `make` builds around a reply channel and waits for the writer's
    /// answer; a writer that has stopped answers [`AppendError::Stopped`].
    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, AppendError>>) -> Command,
    ) -> Result<T, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| AppendError::Stopped)?;
        answer.await.map_err(|_| AppendError::Stopped)?
    }

    /// Deletes up to [`PRUNE_BATCH`] messages that `retention` no longer keeps, in one
    /// transaction; returns how many (call again while it returns a full batch).
    pub async fn prune(&self, retention: Retention) -> Result<usize, AppendError> {
        self.request(|reply| Command::Prune { retention, reply })
            .await
    }

    /// Stores rows that already have their ids, in id order (a cluster node applying the
    /// stream; ids at or below the last one are skipped), and publishes them; resolves with
    /// how many were new, after the commit and the publish.
    pub async fn apply(&self, rows: Vec<StoredRow>) -> Result<usize, AppendError> {
        self.request(|reply| Command::Apply { rows, reply }).await
    }

    /// Stores rows where the database has none, below its last id too (a cluster replica's
    /// holes, before the node serves); publishes nothing. Resolves with how many were stored.
    pub async fn fill(&self, rows: Vec<StoredRow>) -> Result<usize, AppendError> {
        self.request(|reply| Command::Fill { rows, reply }).await
    }

    /// Records recovery session `pid` as issued (or seen) now, in `rooms` with their join
    /// marks, and (when `user` is given) as that verified user's, durably; resolves once
    /// committed (with the appends queued around it: one commit).
    pub async fn save_session(
        &self,
        pid: String,
        rooms: Vec<(RoomKey, u64)>,
        user: Option<String>,
    ) -> Result<(), AppendError> {
        let changes = SessionChanges {
            seen: vec![(pid.clone(), now_ms())],
            rooms: rooms
                .into_iter()
                .map(|(room, mark)| (pid.clone(), room, Some(mark)))
                .collect(),
            users: user.map(|user| (pid.clone(), user)).into_iter().collect(),
        };
        self.save_sessions(changes).await
    }

    /// Records that session `pid` joined `room` with `mark` (`Some`) or left it (`None`),
    /// durably; resolves once committed.
    pub async fn save_room(
        &self,
        pid: String,
        room: RoomKey,
        mark: Option<u64>,
    ) -> Result<(), AppendError> {
        let changes = SessionChanges {
            rooms: vec![(pid, room, mark)],
            ..SessionChanges::default()
        };
        self.save_sessions(changes).await
    }

    async fn save_sessions(&self, changes: SessionChanges) -> Result<(), AppendError> {
        self.request(|reply| Command::Sessions {
            changes,
            reply: Some(reply),
        })
        .await
    }

    /// Records that the clients of these sessions were seen now, in commands of at most
    /// [`TOUCH_BATCH`] sessions, each waiting for room in the queue: none is dropped, however
    /// many sockets are open. Resolves once they are queued (not yet committed).
    pub async fn touch_sessions(
        &self,
        pids: impl IntoIterator<Item = String>,
    ) -> Result<(), AppendError> {
        let seen_ms = now_ms();
        let mut pids = pids.into_iter().peekable();
        while pids.peek().is_some() {
            let touch = Command::Sessions {
                changes: SessionChanges {
                    seen: pids
                        .by_ref()
                        .take(TOUCH_BATCH)
                        .map(|pid| (pid, seen_ms))
                        .collect(),
                    ..SessionChanges::default()
                },
                reply: None,
            };
            self.commands
                .send(touch)
                .await
                .map_err(|_| AppendError::Stopped)?;
        }
        Ok(())
    }

    /// Deletes the sessions last seen more than `window` ago; returns how many.
    pub async fn expire_sessions(&self, window: std::time::Duration) -> Result<usize, AppendError> {
        let before_ms = now_ms().saturating_sub(window.as_millis() as u64);
        self.request(|reply| Command::ExpireSessions { before_ms, reply })
            .await
    }

    /// Asks the writer to finish what is queued and stop. Appends sent afterwards fail with
    /// [`AppendError::Stopped`].
    pub async fn stop(&self) {
        let _ = self.commands.send(Command::Stop).await;
    }
}

impl Log for WriterHandle {
    fn submit(&self, input: ChatInput) -> BoxFuture<'_, Result<Receipt, AppendError>> {
        Box::pin(WriterHandle::submit(self, input))
    }

    fn problem(&self) -> Option<String> {
        (!self.is_healthy()).then(|| "not writable: the last commit failed".to_string())
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(WriterHandle::stop(self))
    }
}

/// Starts the writer thread.
pub fn spawn_writer(
    store: StoreWriter,
    hub: Arc<Hub>,
    config: WriterConfig,
) -> std::io::Result<(WriterHandle, JoinHandle<()>)> {
    let (commands, receiver) = mpsc::channel(config.queue_capacity.max(1));
    let healthy = Arc::new(AtomicBool::new(true));
    let state = healthy.clone();
    let thread = std::thread::Builder::new()
        .name("tidings-writer".into())
        .spawn(move || run(store, hub, config, state, receiver))?;
    Ok((WriterHandle { commands, healthy }, thread))
}

fn run(
    mut store: StoreWriter,
    hub: Arc<Hub>,
    config: WriterConfig,
    healthy: Arc<AtomicBool>,
    mut receiver: mpsc::Receiver<Command>,
) {
    let mut batch = Batch::default();
    let mut stopping = false;
    while !stopping {
        let Some(first) = receiver.blocking_recv() else {
            break;
        };
        let mut bytes = 0;
        let mut after_appends = None;
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                command @ (Command::Prune { .. }
                | Command::Apply { .. }
                | Command::Fill { .. }
                | Command::ExpireSessions { .. }) => {
                    after_appends = Some(command);
                    break;
                }
                Command::Append { input, reply } => {
                    bytes += input.content.len();
                    batch.inputs.push(input);
                    batch.replies.push(reply);
                }
                Command::Sessions { changes, reply } => {
                    batch.sessions.absorb(changes);
                    batch.session_replies.extend(reply);
                }
                Command::Stop => {
                    stopping = true;
                    break;
                }
            }
            let full = batch.inputs.len() + batch.sessions.len() >= config.max_batch_count;
            if full || bytes >= config.max_batch_bytes {
                break;
            }
            next = receiver.try_recv().ok();
        }
        if !batch.is_empty() {
            commit_guarded(&mut store, &hub, &healthy, &mut batch);
        }
        // What must not share the appends' transaction runs after them; they keep their order.
        match after_appends {
            Some(Command::Prune { retention, reply }) => {
                let _ = reply.send(prune_batch(&mut store, &hub, retention));
            }
            Some(Command::Apply { rows, reply }) => {
                let _ = reply.send(apply_rows(&mut store, &hub, &healthy, rows));
            }
            Some(Command::Fill { rows, reply }) => {
                let filled = store
                    .fill(&rows)
                    .map_err(|e| AppendError::Storage(Arc::new(e)));
                tell_access_changes(&mut store, &hub);
                let _ = reply.send(filled);
            }
            Some(Command::ExpireSessions { before_ms, reply }) => {
                let expired = store
                    .expire_sessions(before_ms)
                    .map_err(|e| AppendError::Storage(Arc::new(e)));
                let _ = reply.send(expired);
            }
            _ => {}
        }
    }
    tracing::debug!("writer stopped");
}

/// Deletes one batch of what `retention` no longer keeps.
fn prune_batch(
    store: &mut StoreWriter,
    hub: &Hub,
    retention: Retention,
) -> Result<usize, AppendError> {
    let older_than_ms = retention
        .days
        .map(|days| now_ms().saturating_sub(days.saturating_mul(24 * 60 * 60 * 1000)));
    let (deleted, _) = store
        .prune(retention.messages, older_than_ms, PRUNE_BATCH)
        .map_err(|e| AppendError::Storage(Arc::new(e)))?;
    for room in store.take_emptied_rooms() {
        hub.forget_room(&room);
    }
    // Exactly the deleted ids: retention is per room, so a bound ("everything up to the
    // highest deleted id") would drop the other rooms' newer messages from the cache.
    hub.forget(&store.take_pruned_ids());
    if deleted > 0 {
        metrics::counter(metrics::PRUNED).increment(deleted as u64);
        tracing::debug!(deleted, "retention pruned old messages");
    }
    Ok(deleted)
}

/// Hands what the last commit's room events changed to the rest of the server, before its
/// entries are published: a socket that receives a `room changed` finds the room's state
/// already changed, and a deleted message leaves the tail cache (replays no longer return it).
fn tell_access_changes(store: &mut StoreWriter, hub: &Hub) {
    let changes = store.take_access_changes();
    if changes.is_empty() {
        return;
    }
    hub.forget(&changes.erased);
    for (room, access) in changes.rooms {
        hub.access.set(room, access);
    }
    hub.access.remove_users(changes.removed);
}

/// Stores and publishes rows a cluster node's applier read from the stream.
fn apply_rows(
    store: &mut StoreWriter,
    hub: &Hub,
    healthy: &AtomicBool,
    rows: Vec<StoredRow>,
) -> Result<usize, AppendError> {
    let before = store.last_id();
    let started = Instant::now();
    let applied = store.apply(&rows);
    metrics::histogram(metrics::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
    healthy.store(applied.is_ok(), Ordering::Relaxed);
    match applied {
        Ok(applied) => {
            metrics::counter(metrics::MESSAGES_STORED).increment(applied as u64);
            metrics::gauge(metrics::LAST_ID).set(store.last_id() as f64);
            tell_access_changes(store, hub);
            hub.publish(
                rows.into_iter()
                    .filter(|row| row.id.0 > before)
                    .map(|row| Arc::new(Message::from(row))),
            );
            Ok(applied)
        }
        Err(e) => {
            metrics::counter(metrics::COMMIT_FAILURES).increment(1);
            tracing::error!(
                "applying {} messages from the stream failed: {e}",
                rows.len()
            );
            if let Err(e) = store.reopen() {
                tracing::error!("cannot reopen the database: {e}");
            }
            Err(AppendError::Storage(Arc::new(e)))
        }
    }
}

/// What one group commit holds: appends and recovery sessions, with whom to answer.
#[derive(Default)]
struct Batch {
    inputs: Vec<ChatInput>,
    replies: Vec<oneshot::Sender<Result<AppendOutcome, AppendError>>>,
    sessions: SessionChanges,
    session_replies: Vec<oneshot::Sender<Result<(), AppendError>>>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.inputs.is_empty() && self.sessions.is_empty()
    }

    fn clear(&mut self) {
        self.inputs.clear();
        self.replies.clear();
        self.sessions.clear();
        self.session_replies.clear();
    }
}

/// Commits a batch; a panic (there should be none) answers nothing and the writer goes on.
fn commit_guarded(store: &mut StoreWriter, hub: &Hub, healthy: &AtomicBool, batch: &mut Batch) {
    let committed = catch_unwind(AssertUnwindSafe(|| {
        commit_batch(store, hub, healthy, batch);
    }));
    if committed.is_err() {
        // There should be no panic here; if there is one, the batch's senders get no
        // answer (so no ack: their clients retry) and the writer carries on.
        tracing::error!("the writer panicked; the batch was not acknowledged");
        batch.clear();
        if let Err(e) = store.reopen() {
            tracing::error!("cannot reopen the database: {e}");
        }
    }
}

fn commit_batch(store: &mut StoreWriter, hub: &Hub, healthy: &AtomicBool, batch: &mut Batch) {
    let Batch {
        inputs,
        replies,
        sessions,
        session_replies,
    } = batch;
    if !store.is_open() {
        match store.reopen() {
            Ok(()) => tracing::info!("database reopened"),
            Err(e) => tracing::error!("database still unavailable: {e}"),
        }
    }
    let received_at_ms = now_ms();
    let started = Instant::now();
    let batch = inputs.len();
    let result = store.commit(inputs, sessions, received_at_ms);
    sessions.clear();
    for reply in session_replies.drain(..) {
        let answer = match &result {
            Ok(_) => Ok(()),
            Err(_) => Err(AppendError::Unavailable("the session was not saved".into())),
        };
        let _ = reply.send(answer);
    }
    metrics::histogram(metrics::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
    if batch > 0 {
        metrics::histogram(metrics::COMMIT_BATCH).record(batch as f64);
    }
    healthy.store(result.is_ok(), Ordering::Relaxed);
    match result {
        Ok(outcomes) => {
            let stored = outcomes
                .iter()
                .filter(|o| matches!(o, AppendOutcome::Stored(_)))
                .count();
            metrics::counter(metrics::MESSAGES_STORED).increment(stored as u64);
            metrics::counter(metrics::DUPLICATES).increment((batch - stored) as u64);
            metrics::gauge(metrics::LAST_ID).set(store.last_id() as f64);
            // Stored ids are consecutive and ascending in input order: publish in that order.
            let fresh = outcomes
                .iter()
                .zip(inputs.drain(..))
                .filter_map(|(outcome, input)| match outcome {
                    AppendOutcome::Stored(id) => {
                        Some(Arc::new(Message::new(*id, input, received_at_ms)))
                    }
                    AppendOutcome::Duplicate(_) => None,
                });
            tell_access_changes(store, hub);
            hub.publish(fresh);
            for (reply, outcome) in replies.drain(..).zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            metrics::counter(metrics::COMMIT_FAILURES).increment(1);
            tracing::error!(
                messages = inputs.len(),
                "commit failed, nothing stored: {e}"
            );
            inputs.clear();
            let error = AppendError::Storage(Arc::new(e));
            for reply in replies.drain(..) {
                let _ = reply.send(Err(error.clone()));
            }
            // redb refuses everything after an I/O error until the file is reopened.
            match store.reopen() {
                Ok(()) => tracing::info!(
                    "database reopened after the failed commit; retrying on the next message"
                ),
                Err(e) => {
                    tracing::error!("cannot reopen the database, retrying on the next message: {e}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::TailLimits;
    use crate::ingest::retention::Retention;
    use crate::message::MessageId;
    use crate::message::test_support::input;
    use crate::storage::fault::FaultSwitch;
    use crate::storage::{Store, TEST_CACHE_BYTES};

    struct Rig {
        _dir: tempfile::TempDir,
        reader: crate::storage::StoreReader,
        hub: Arc<Hub>,
        writer: WriterHandle,
        thread: JoinHandle<()>,
        disk: FaultSwitch,
    }

    fn rig() -> Rig {
        rig_with(WriterConfig::default())
    }

    fn rig_with(config: WriterConfig) -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        let disk = FaultSwitch::default();
        let (reader, store) =
            Store::open_faulty(&dir.path().join("w.redb"), disk.clone(), TEST_CACHE_BYTES)
                .expect("open");
        let tail = TailLimits {
            max_messages: 100,
            max_bytes: 1 << 20,
        };
        let hub = Arc::new(Hub::new(store.last_id(), 64, tail, []));
        let (writer, thread) = spawn_writer(store, hub.clone(), config).expect("spawn");
        Rig {
            _dir: dir,
            reader,
            hub,
            writer,
            thread,
            disk,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_get_consecutive_ids_published_before_the_answer() {
        let rig = rig();
        let (_, mut live) = rig.hub.subscribe();
        let appends = (0..50).map(|n| {
            let (writer, hub) = (rig.writer.clone(), rig.hub.clone());
            tokio::spawn(async move {
                let outcome = writer.append(input(&format!("m{n}"), None)).await;
                // The answer comes after the publish: the hub has the id already.
                let published = hub.last_published();
                (outcome, published)
            })
        });
        let mut ids = Vec::new();
        for append in appends {
            let (outcome, published) = append.await.expect("task");
            let Ok(AppendOutcome::Stored(MessageId(id))) = outcome else {
                panic!("not stored: {outcome:?}");
            };
            assert!(published >= id, "answered {id} before publishing it");
            ids.push(id);
        }
        ids.sort_unstable();
        assert_eq!(ids, (1..=50).collect::<Vec<_>>());
        for id in 1..=50 {
            let message = live.recv().await.expect("published");
            assert_eq!(message.id, MessageId(id), "published in id order");
        }
        rig.writer.stop().await;
    }

    /// Retention per room deletes a room's oldest messages; the tail cache must still serve
    /// the other rooms' messages around them (it dropped everything up to the highest id
    /// deleted in any room, so recent replays went to the store).
    #[tokio::test]
    async fn retention_in_one_room_keeps_the_other_rooms_in_the_tail_cache() {
        use crate::message::test_support::input_in;
        let rig = rig();
        // The default room has 1..=3; dev has 4..=6 and keeps its newest 2.
        for (room, content) in [(None, "g1"), (None, "g2"), (None, "g3")]
            .into_iter()
            .chain([
                (Some("dev"), "d4"),
                (Some("dev"), "d5"),
                (Some("dev"), "d6"),
            ])
        {
            rig.writer
                .append(input_in(room, content, None))
                .await
                .expect("stored");
        }
        let retention = Retention {
            messages: Some(2),
            days: None,
        };
        // The default room loses 1, dev loses 4.
        assert_eq!(rig.writer.prune(retention).await.ok(), Some(2));
        let cached = rig.hub.replay_from_tail(1, 6, 100, 1 << 20);
        let ids: Option<Vec<u64>> = cached.map(|batch| batch.iter().map(|m| m.id.0).collect());
        assert_eq!(
            ids,
            Some(vec![2, 3, 5, 6]),
            "the cache keeps what was not deleted"
        );
        rig.writer.stop().await;
    }

    #[tokio::test]
    async fn a_retry_is_answered_with_the_original_id_and_not_published_again() {
        let rig = rig();
        let (_, mut live) = rig.hub.subscribe();
        let first = rig.writer.append(input("hi", Some("o-1"))).await;
        let again = rig.writer.append(input("hi", Some("o-1"))).await;
        let other = rig.writer.append(input("other", Some("o-1"))).await;
        assert!(matches!(first, Ok(AppendOutcome::Stored(MessageId(1)))));
        assert!(matches!(again, Ok(AppendOutcome::Duplicate(MessageId(1)))));
        assert!(matches!(other, Ok(AppendOutcome::Stored(MessageId(2)))));
        let ids: Vec<u64> = [live.recv().await, live.recv().await]
            .into_iter()
            .map(|m| m.expect("published").id.0)
            .collect();
        assert_eq!(ids, [1, 2]);
        assert!(live.try_recv().is_err(), "the retry was not published");
        rig.writer.stop().await;
    }

    #[tokio::test]
    async fn a_failed_commit_answers_with_the_error_publishes_nothing_and_uses_no_id() {
        let rig = rig();
        assert_eq!(
            rig.writer.append(input("a", None)).await.ok(),
            Some(AppendOutcome::Stored(MessageId(1)))
        );
        rig.disk.set_failing(true);
        let failed = rig.writer.append(input("b", Some("o-b"))).await;
        assert!(matches!(failed, Err(AppendError::Storage(_))), "{failed:?}");
        assert!(!rig.writer.is_healthy());
        assert_eq!(rig.hub.last_published(), 1, "nothing published");
        rig.disk.set_failing(false);
        // The retry is stored under the next id, which the failure did not consume.
        assert_eq!(
            rig.writer.append(input("b", Some("o-b"))).await.ok(),
            Some(AppendOutcome::Stored(MessageId(2)))
        );
        assert!(rig.writer.is_healthy());
        rig.writer.stop().await;
    }

    #[tokio::test]
    async fn stop_answers_what_was_queued_before_it_then_refuses() {
        let rig = rig();
        // Each append is polled once, which queues it (the channel has room); then the stop.
        let mut queued: Vec<_> = (0..20)
            .map(|n| Box::pin(rig.writer.append(input(&format!("q{n}"), None))))
            .collect();
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        for append in &mut queued {
            assert!(append.as_mut().poll(&mut context).is_pending());
        }
        rig.writer.stop().await;
        for (n, append) in queued.into_iter().enumerate() {
            assert!(
                matches!(append.await, Ok(AppendOutcome::Stored(_))),
                "append {n} queued before the stop was not stored"
            );
        }
        assert!(matches!(
            rig.writer.append(input("late", None)).await,
            Err(AppendError::Stopped)
        ));
        let thread = rig.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("join task")
            .expect("the writer thread ends cleanly");
    }

    #[tokio::test]
    async fn every_touched_session_is_saved_though_they_outnumber_the_queue() {
        // A queue of 8 requests and 10,000 open sockets: each one's session must be saved.
        let rig = rig_with(WriterConfig {
            queue_capacity: 8,
            ..WriterConfig::default()
        });
        let pids: Vec<String> = (0..10_000).map(|n| format!("pid-{n}")).collect();
        rig.writer
            .touch_sessions(pids.clone())
            .await
            .expect("queued");
        // A request after them is answered after they are committed.
        rig.writer
            .append(input("after", None))
            .await
            .expect("stored");
        for pid in &pids {
            assert!(
                rig.reader.session(pid).expect("read").is_some(),
                "session {pid} was dropped"
            );
        }
        rig.writer.stop().await;
    }
}
