//! Live delivery: one broadcaster task hands every newly stored message to every socket that
//! is caught up (the live set).
//!
//! The broadcaster takes the hub's messages in id order, a batch at a time, and queues each
//! batch to every member through its [`ChatSink`], skipping per member the ids it already has.
//! A member whose buffer is full (its client reads slowly) is taken out and told; its own
//! delivery task ([`super::socket_task`]) then catches it up from the tail cache or the store at
//! the client's pace and joins again.
//!
//! The rule that keeps every socket gap-free and duplicate-free at both switches: the set keeps
//! `sent_through`, the id through which every member has been (or, by the end of the pass in
//! progress, will have been) queued everything. A socket may join only if it has been queued
//! everything up to `sent_through`; otherwise it is told to catch up that far first. The
//! broadcaster moves `sent_through` to the end of its batch and takes its list of members in
//! the same short critical section, so a socket that joins before it is in the pass, and one
//! that joins after it already has the whole batch.
//!
//! The lock is held for a few map operations only, never across a pass over the members: joins
//! and leaves do not wait for a pass over tens of thousands of sockets. The broadcaster reuses
//! one list of members across passes and rebuilds it only after the membership changed.
//!
//! One task doing the sends, instead of one task per socket waking for every message, is what
//! keeps the cost of a delivery low when messages come one at a time. It does not read the
//! store and does not decide what a client asked for (that is the delivery task's job).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use socketioxide::socket::{EncodedEvent, Sid};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::Hub;
use super::cursor::EmittedCursor;
use super::outbox::NotQueued;
use crate::message::SharedMessage;
use crate::ops::metrics;

/// Most messages the broadcaster queues per socket in one pass.
const MAX_BATCH: usize = 256;

/// Members served between yields, so the connections' writers woken so far get to run.
const YIELD_EVERY: usize = 128;

/// Where the broadcaster queues one member's messages: its socket (see
/// [`super::outbox::SocketOutbox`]), or a fake in tests.
pub trait ChatSink: Send + Sync {
    /// Queues as many of the batch's messages from index `from` on as fit, in order, and
    /// returns how many (at least one); or why not even the first could be queued.
    fn queue_chats(&self, batch: &PassBatch, from: usize) -> Result<usize, NotQueued>;
}

/// One pass's messages, and their packets, encoded once for every member (with and without
/// the recovery offset) by the first member that needs them.
pub struct PassBatch {
    messages: Vec<SharedMessage>,
    encoded: [OnceLock<Option<Vec<EncodedEvent>>>; 2],
}

impl PassBatch {
    fn new(messages: Vec<SharedMessage>) -> Self {
        Self {
            messages,
            encoded: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The messages, ascending.
    pub fn messages(&self) -> &[SharedMessage] {
        &self.messages
    }

    /// The packets of every message (ending with the offset or not), encoded by `encode` the
    /// first time they are asked for; `None` if encoding failed.
    pub fn encoded(
        &self,
        offsets: bool,
        encode: impl FnOnce(&[SharedMessage]) -> Option<Vec<EncodedEvent>>,
    ) -> Option<&[EncodedEvent]> {
        self.encoded[usize::from(offsets)]
            .get_or_init(|| encode(&self.messages))
            .as_deref()
    }
}

/// A caught-up socket.
pub struct Member {
    /// The socket's id.
    pub sid: Sid,
    /// Where to queue its messages.
    pub sink: Box<dyn ChatSink>,
    /// What has been queued to it; the broadcaster skips ids up to it and advances it.
    pub emitted: Arc<EmittedCursor>,
    /// Notified when the broadcaster takes it out of the set (it fell behind).
    pub fell_behind: Arc<Notify>,
}

struct Shared {
    /// Every member has been queued, or is being queued by the pass in progress, every
    /// message up to this id.
    sent_through: u64,
    members: HashMap<Sid, Arc<Member>>,
    /// The members as a list for the broadcaster's passes; `None` once membership changed.
    list: Option<Arc<[Arc<Member>]>>,
}

/// See the module docs.
pub struct LiveSet {
    shared: Mutex<Shared>,
}

impl LiveSet {
    /// The set, and the broadcaster that serves it until `stop` is cancelled (or the hub
    /// closes). Subscribing here, before any socket exists, makes `sent_through` exactly the
    /// point the broadcaster's stream starts after.
    pub fn start(
        hub: Arc<Hub>,
        stop: CancellationToken,
    ) -> (Arc<Self>, impl Future<Output = ()> + Send + 'static) {
        let (sent_through, receiver) = hub.subscribe();
        let live = Arc::new(Self {
            shared: Mutex::new(Shared {
                sent_through,
                members: HashMap::new(),
                list: None,
            }),
        });
        let broadcaster = broadcast_forever(live.clone(), hub, receiver, stop);
        (live, broadcaster)
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // Every critical section is a few plain assignments and map operations.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `member` if it has been queued everything up to `sent_through`; otherwise returns
    /// `sent_through`, the id to catch up to before trying again.
    pub fn try_join(&self, member: Member) -> Result<(), u64> {
        let started = Instant::now();
        let mut shared = self.lock();
        metrics::histogram(metrics::LIVE_JOIN_SECONDS).record(started.elapsed().as_secs_f64());
        if member.emitted.get() < shared.sent_through {
            return Err(shared.sent_through);
        }
        shared.members.insert(member.sid, Arc::new(member));
        shared.list = None;
        Ok(())
    }

    /// Removes a socket (it closed). Nothing happens if it is not a member.
    pub fn leave(&self, sid: Sid) {
        let mut shared = self.lock();
        if shared.members.remove(&sid).is_some() {
            shared.list = None;
        }
    }

    /// Members now.
    pub fn len(&self) -> usize {
        self.lock().members.len()
    }

    /// Whether nobody is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a pass over `batch`: moves `sent_through` to its end and returns the members
    /// to serve.
    fn begin_pass(&self, batch: &[SharedMessage]) -> Arc<[Arc<Member>]> {
        let mut shared = self.lock();
        if let Some(last) = batch.last() {
            shared.sent_through = shared.sent_through.max(last.id.0);
        }
        let Shared { members, list, .. } = &mut *shared;
        list.get_or_insert_with(|| members.values().cloned().collect())
            .clone()
    }

    /// Takes out the members that fell behind or closed during a pass; tells the former.
    fn end_pass(&self, out: Vec<(Arc<Member>, bool)>) {
        if out.is_empty() {
            return;
        }
        {
            let mut shared = self.lock();
            for (member, _) in &out {
                // Only that very member: never one that joined again under the same id.
                if shared
                    .members
                    .get(&member.sid)
                    .is_some_and(|now| Arc::ptr_eq(now, member))
                {
                    shared.members.remove(&member.sid);
                    shared.list = None;
                }
            }
        }
        for (member, behind) in out {
            if behind {
                metrics::counter(metrics::LIVE_FELL_BEHIND).increment(1);
                member.fell_behind.notify_one();
            }
        }
    }

    /// The broadcaster lost messages: nobody may stay in the set (they would miss them).
    /// Everyone catches up from the cache or the store and joins again after `start`.
    fn reset(&self, start: u64) {
        let dropped: Vec<Arc<Member>> = {
            let mut shared = self.lock();
            shared.sent_through = shared.sent_through.max(start);
            shared.list = None;
            shared.members.drain().map(|(_, member)| member).collect()
        };
        tracing::warn!(
            members = dropped.len(),
            "live broadcaster fell behind; every client catches up from the store"
        );
        metrics::counter(metrics::LIVE_BROADCASTER_LAGGED).increment(1);
        for member in dropped {
            metrics::counter(metrics::LIVE_FELL_BEHIND).increment(1);
            member.fell_behind.notify_one();
        }
    }
}

/// Receives the hub's messages in order and hands each batch to every member.
async fn broadcast_forever(
    live: Arc<LiveSet>,
    hub: Arc<Hub>,
    mut receiver: broadcast::Receiver<SharedMessage>,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            first = receiver.recv() => first,
            () = stop.cancelled() => return,
        };
        let mut lagged = false;
        let mut batch = match first {
            Ok(message) => vec![message],
            Err(RecvError::Lagged(_)) => {
                lagged = true;
                Vec::new()
            }
            Err(RecvError::Closed) => return,
        };
        while !lagged && batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(message) => batch.push(message),
                Err(TryRecvError::Lagged(_)) => lagged = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let started = Instant::now();
            let members = live.begin_pass(&batch);
            let out = send_to_members(&members, &PassBatch::new(batch)).await;
            live.end_pass(out);
            metrics::histogram(metrics::LIVE_PASS_SECONDS).record(started.elapsed().as_secs_f64());
        }
        if lagged {
            // A fresh receiver and the exact id it starts after; everything up to that id
            // is in the cache or the store for the members to catch up from.
            let (start, fresh) = hub.subscribe();
            receiver = fresh;
            live.reset(start);
        }
    }
}

/// Queues `batch` to every member; returns those whose buffer was full (`true`) or who
/// closed (`false`).
async fn send_to_members(members: &[Arc<Member>], batch: &PassBatch) -> Vec<(Arc<Member>, bool)> {
    let mut out = Vec::new();
    let messages = batch.messages();
    for (n, member) in members.iter().enumerate() {
        let emitted = member.emitted.get();
        let from = messages.partition_point(|m| m.id.0 <= emitted);
        let pending = &messages[from..];
        if !pending.is_empty() {
            match member.sink.queue_chats(batch, from) {
                Ok(queued) => {
                    let queued = queued.clamp(1, pending.len());
                    member.emitted.advance(pending[queued - 1].id.0);
                    if queued < pending.len() {
                        out.push((member.clone(), true));
                    }
                }
                Err(NotQueued::Full) => out.push((member.clone(), true)),
                Err(NotQueued::Closed) => out.push((member.clone(), false)),
            }
        }
        if n % YIELD_EVERY == YIELD_EVERY - 1 {
            tokio::task::yield_now().await;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::delivery::TailLimits;
    use crate::message::test_support::msg;

    /// A socket stand-in: takes up to `room` more messages, or says it closed.
    #[derive(Default)]
    struct FakeSink {
        got: Mutex<Vec<u64>>,
        room: AtomicUsize,
        closed: AtomicBool,
        /// Runs inside `queue_chats`, in the middle of a pass.
        during_pass: OnceLock<Box<dyn Fn() + Send + Sync>>,
    }

    impl FakeSink {
        fn with_room(room: usize) -> Arc<Self> {
            Arc::new(Self {
                room: AtomicUsize::new(room),
                ..Self::default()
            })
        }

        fn got(&self) -> Vec<u64> {
            self.got
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
    }

    impl ChatSink for Arc<FakeSink> {
        fn queue_chats(&self, batch: &PassBatch, from: usize) -> Result<usize, NotQueued> {
            let messages = &batch.messages()[from..];
            if let Some(hook) = self.during_pass.get() {
                hook();
            }
            if self.closed.load(Ordering::SeqCst) {
                return Err(NotQueued::Closed);
            }
            let room = self.room.load(Ordering::SeqCst);
            let n = room.min(messages.len());
            if n == 0 {
                return Err(NotQueued::Full);
            }
            self.room.fetch_sub(n, Ordering::SeqCst);
            let mut got = self.got.lock().unwrap_or_else(PoisonError::into_inner);
            got.extend(messages[..n].iter().map(|m| m.id.0));
            Ok(n)
        }
    }

    fn hub_at(last_id: u64, capacity: usize) -> Arc<Hub> {
        let tail = TailLimits {
            max_messages: 100,
            max_bytes: 1 << 20,
        };
        Arc::new(Hub::new(last_id, capacity, tail, []))
    }

    struct Joined {
        sink: Arc<FakeSink>,
        emitted: Arc<EmittedCursor>,
        fell_behind: Arc<Notify>,
    }

    fn member(sink: &Arc<FakeSink>, emitted: u64) -> (Member, Joined) {
        let joined = Joined {
            sink: sink.clone(),
            emitted: Arc::new(EmittedCursor::new(emitted)),
            fell_behind: Arc::new(Notify::new()),
        };
        let member = Member {
            sid: Sid::new(),
            sink: Box::new(sink.clone()),
            emitted: joined.emitted.clone(),
            fell_behind: joined.fell_behind.clone(),
        };
        (member, joined)
    }

    async fn eventually(what: &str, condition: impl Fn() -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            while !condition() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "timed out waiting until {what}");
    }

    #[tokio::test]
    async fn a_socket_joins_only_with_everything_up_to_sent_through() {
        let hub = hub_at(5, 64);
        let (live, broadcaster) = LiveSet::start(hub.clone(), CancellationToken::new());
        tokio::spawn(broadcaster);
        let sink = FakeSink::with_room(100);
        let (behind, _) = member(&sink, 4);
        assert_eq!(
            live.try_join(behind).err(),
            Some(5),
            "4 < 5: catch up first"
        );
        let (caught_up, joined) = member(&sink, 5);
        assert_eq!(live.try_join(caught_up), Ok(()));
        hub.publish([msg(6), msg(7)]);
        eventually("6 and 7 are queued", || joined.sink.got() == [6, 7]).await;
        assert_eq!(joined.emitted.get(), 7);
    }

    #[tokio::test]
    async fn ids_a_member_already_has_are_skipped() {
        let hub = hub_at(5, 64);
        let (live, broadcaster) = LiveSet::start(hub.clone(), CancellationToken::new());
        // 6 and 7 are published before the broadcaster runs; the socket caught up to 7 from
        // the store meanwhile and joins (it has everything up to sent_through = 5).
        hub.publish([msg(6), msg(7)]);
        let sink = FakeSink::with_room(100);
        let (ahead, joined) = member(&sink, 7);
        assert_eq!(live.try_join(ahead), Ok(()));
        tokio::spawn(broadcaster);
        hub.publish([msg(8)]);
        eventually("8 is queued", || joined.sink.got() == [8]).await;
    }

    #[tokio::test]
    async fn a_member_with_a_full_buffer_is_taken_out_and_told_while_others_go_on() {
        let hub = hub_at(5, 64);
        let (live, broadcaster) = LiveSet::start(hub.clone(), CancellationToken::new());
        let slow_sink = FakeSink::with_room(1);
        let fast_sink = FakeSink::with_room(100);
        let (slow, slow_joined) = member(&slow_sink, 5);
        let (fast, fast_joined) = member(&fast_sink, 5);
        assert_eq!(live.try_join(slow), Ok(()));
        assert_eq!(live.try_join(fast), Ok(()));
        hub.publish([msg(6), msg(7)]);
        tokio::spawn(broadcaster);
        tokio::time::timeout(Duration::from_secs(5), slow_joined.fell_behind.notified())
            .await
            .expect("the slow member is told it fell behind");
        assert_eq!(slow_joined.sink.got(), [6], "what fit was queued, in order");
        assert_eq!(slow_joined.emitted.get(), 6);
        eventually("the fast member has both", || {
            fast_joined.sink.got() == [6, 7]
        })
        .await;
        assert_eq!(live.len(), 1, "only the fast member is live");
        // The slow one may come back only once it has 7 (from the cache or the store).
        let (again, _) = member(&slow_sink, 6);
        assert_eq!(live.try_join(again).err(), Some(7));
        hub.publish([msg(8)]);
        eventually("the fast member goes on", || {
            fast_joined.sink.got() == [6, 7, 8]
        })
        .await;
        assert_eq!(
            slow_joined.sink.got(),
            [6],
            "nothing more for the member taken out"
        );
    }

    #[tokio::test]
    async fn a_closed_member_is_dropped_without_being_told() {
        let hub = hub_at(0, 64);
        let (live, broadcaster) = LiveSet::start(hub.clone(), CancellationToken::new());
        tokio::spawn(broadcaster);
        let sink = FakeSink::with_room(100);
        sink.closed.store(true, Ordering::SeqCst);
        let (closed, joined) = member(&sink, 0);
        assert_eq!(live.try_join(closed), Ok(()));
        hub.publish([msg(1)]);
        eventually("the closed member is gone", || live.is_empty()).await;
        let told = tokio::time::timeout(Duration::from_millis(50), joined.fell_behind.notified());
        assert!(
            told.await.is_err(),
            "a closed socket has nothing to catch up"
        );
    }

    #[tokio::test]
    async fn a_socket_joining_during_a_pass_needs_the_whole_batch_of_that_pass() {
        let hub = hub_at(5, 64);
        let (live, broadcaster) = LiveSet::start(hub.clone(), CancellationToken::new());
        let sink = FakeSink::with_room(100);
        let (existing, _) = member(&sink, 5);
        assert_eq!(live.try_join(existing), Ok(()));
        let late_sink = FakeSink::with_room(100);
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        {
            let (live, late_sink, outcomes) = (live.clone(), late_sink.clone(), outcomes.clone());
            let hook = move || {
                let mut outcomes = outcomes.lock().unwrap_or_else(PoisonError::into_inner);
                if !outcomes.is_empty() {
                    return;
                }
                // Mid-pass over 6..=7: a socket that has only 5 must not join (it would
                // miss 6 and 7); one that has 7 may.
                let (behind, _) = member(&late_sink, 5);
                outcomes.push(live.try_join(behind));
                let (caught_up, _) = member(&late_sink, 7);
                outcomes.push(live.try_join(caught_up));
            };
            let installed = sink.during_pass.set(Box::new(hook));
            assert!(installed.is_ok());
        }
        hub.publish([msg(6), msg(7)]);
        tokio::spawn(broadcaster);
        eventually("the pass ran", || {
            outcomes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
                == 2
        })
        .await;
        assert_eq!(
            *outcomes.lock().unwrap_or_else(PoisonError::into_inner),
            vec![Err(7), Ok(())]
        );
        hub.publish([msg(8)]);
        eventually("the late joiner gets 8, and only 8", || {
            late_sink.got() == [8]
        })
        .await;
    }

    #[tokio::test]
    async fn a_lagging_broadcaster_sends_everyone_to_catch_up_past_the_hub() {
        let hub = hub_at(0, 2);
        let (live, broadcaster) = LiveSet::start(hub.clone(), CancellationToken::new());
        let sink = FakeSink::with_room(100);
        let (member_a, joined) = member(&sink, 0);
        assert_eq!(live.try_join(member_a), Ok(()));
        // Five messages into a channel of two before the broadcaster reads any: it lags.
        hub.publish((1..=5).map(msg));
        tokio::spawn(broadcaster);
        tokio::time::timeout(Duration::from_secs(5), joined.fell_behind.notified())
            .await
            .expect("everyone is told to catch up");
        assert!(live.is_empty());
        let (rejoin, _) = member(&sink, 2);
        assert_eq!(
            live.try_join(rejoin).err(),
            Some(5),
            "catch up to the hub's end"
        );
        let (rejoin, again) = member(&sink, 5);
        assert_eq!(live.try_join(rejoin), Ok(()));
        hub.publish([msg(6)]);
        eventually("live again after the lag", || again.emitted.get() == 6).await;
    }
}
