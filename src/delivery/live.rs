//! Live delivery: one broadcaster task hands every newly stored message to every socket that
//! is caught up (the live set).
//!
//! The broadcaster takes the hub's messages in id order, a batch at a time, and queues to each
//! member of the batch's rooms, through its [`ChatSink`], the batch's messages it wants (its
//! rooms', above their join marks: [`Subscription`]) and does not have yet, in id order. A
//! message to a room costs that room's members, whatever the other rooms and connections.
//! A member whose buffer is full (its client reads slowly) is taken out and told
//! ([`ChatSink::fell_behind`]); a delivery task ([`super::socket_task`]) then catches it up from
//! the tail cache or the store at the client's pace and joins again. A member needs no task of
//! its own while it is live: the set holds everything its delivery needs to resume.
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
//! one list of members per room across passes and rebuilds it only after that room's
//! membership changed.
//!
//! A socket joining a room ([`LiveSet::join_room`]) gets the room's messages above the room's
//! newest id at that moment (its mark), read under the set's lock: a pass that began before
//! carries only ids at or below it (they were published before), one that begins after has the
//! socket in the room's list.
//!
//! One task doing the sends, instead of one task per socket waking for every message, is what
//! keeps the cost of a delivery low when messages come one at a time. It does not read the
//! store and does not decide what a client asked for (that is the delivery task's job).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use socketioxide::socket::{EncodedEvent, Sid};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use super::Hub;
use super::cursor::EmittedCursor;
use super::outbox::NotQueued;
use super::subscription::{RoomKey, Subscription};
use crate::message::SharedMessage;
use crate::metrics;

/// Most messages the broadcaster queues per socket in one pass.
const MAX_BATCH: usize = 256;

/// Members served between yields, so the connections' writers woken so far get to run.
const YIELD_EVERY: usize = 128;

/// One member's side of the broadcaster: where its messages go and what happens when it is
/// taken out. A socket (see `socket_task::LiveSocket`), or a fake in tests.
pub trait ChatSink: Send + Sync + 'static {
    /// Queues as many of the batch's messages at indices `picks` (ascending) as fit, in
    /// order, and returns how many (at least one); or why not even the first could be queued.
    fn queue_chats(&self, batch: &PassBatch, picks: &[usize]) -> Result<usize, NotQueued>;

    /// The broadcaster took this member out of the set (its buffer was full, or the
    /// broadcaster lost messages): it must catch up before it joins again. Called once, after
    /// the removal, outside the set's lock.
    fn fell_behind(&self);

    /// The broadcaster stopped (the server is shutting down) with this member in the set:
    /// nothing more will be queued to it.
    fn broadcaster_stopped(&self);
}

/// One pass's messages, and their packets, encoded once for every member (with and without
/// the recovery offset) by the first member that needs them.
pub struct PassBatch {
    messages: Vec<SharedMessage>,
    /// Each room of the batch, with the indices of its messages (ascending).
    by_room: HashMap<RoomKey, Vec<usize>>,
    encoded: [OnceLock<Option<Vec<EncodedEvent>>>; 2],
}

impl PassBatch {
    fn new(messages: Vec<SharedMessage>) -> Self {
        let mut by_room: HashMap<RoomKey, Vec<usize>> = HashMap::new();
        for (i, message) in messages.iter().enumerate() {
            match by_room.get_mut(&message.room) {
                Some(indices) => indices.push(i),
                None => {
                    by_room.insert(message.room.clone(), vec![i]);
                }
            }
        }
        Self {
            messages,
            by_room,
            encoded: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// Puts in `picks` the indices of the messages a member wants and lacks: those of its
    /// rooms above the room's mark and above `emitted`, ascending. Costs the member's rooms or
    /// the batch's, whichever are fewer, and the picks; never a look at every message.
    fn pick(&self, subscription: &Subscription, emitted: u64, picks: &mut Vec<usize>) {
        picks.clear();
        let messages = &self.messages;
        let mut add = |indices: &[usize], mark: u64| {
            let above = emitted.max(mark);
            let from = indices.partition_point(|&i| messages[i].id.0 <= above);
            picks.extend_from_slice(&indices[from..]);
        };
        subscription.with_rooms(|rooms| {
            if rooms.len() < self.by_room.len() {
                for (room, mark) in rooms {
                    if let Some(indices) = self.by_room.get(room) {
                        add(indices, *mark);
                    }
                }
            } else {
                for (room, indices) in &self.by_room {
                    if let Some(mark) = rooms.get(room) {
                        add(indices, *mark);
                    }
                }
            }
        });
        if self.by_room.len() > 1 {
            picks.sort_unstable();
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
pub struct Member<S> {
    /// The socket's id.
    pub sid: Sid,
    /// Its rooms, and the marks above which it gets their messages.
    pub subscription: Arc<Subscription>,
    /// What has been queued to it; the broadcaster skips ids up to it and advances it.
    pub emitted: Arc<EmittedCursor>,
    /// Where to queue its messages, and what to do when it is taken out.
    pub sink: S,
}

/// A member the set did not take: it has not been queued everything up to `sent_through`.
pub struct Refused<S> {
    /// The id to catch up to before trying again.
    pub sent_through: u64,
    /// The member, given back.
    pub member: Member<S>,
}

struct Shared<S> {
    /// Every member has been queued, or is being queued by the pass in progress, every
    /// message of its rooms up to this id.
    sent_through: u64,
    members: HashMap<Sid, Arc<Member<S>>>,
    /// Each room's members, by room.
    rooms: HashMap<RoomKey, RoomMembers<S>>,
}

/// One room's live members.
struct RoomMembers<S> {
    members: HashMap<Sid, Arc<Member<S>>>,
    /// The members as a list for the broadcaster's passes; `None` once membership changed.
    list: Option<Arc<[Arc<Member<S>>]>>,
}

impl<S> Default for RoomMembers<S> {
    fn default() -> Self {
        Self {
            members: HashMap::new(),
            list: None,
        }
    }
}

impl<S> Shared<S> {
    /// Puts `member` in the lists of `rooms`.
    fn list_in(&mut self, member: &Arc<Member<S>>, rooms: impl IntoIterator<Item = RoomKey>) {
        for room in rooms {
            let members = self.rooms.entry(room).or_default();
            members.members.insert(member.sid, member.clone());
            members.list = None;
        }
    }

    /// Takes `sid` out of the list of `room`.
    fn unlist(&mut self, sid: Sid, room: &RoomKey) {
        if let Some(members) = self.rooms.get_mut(room)
            && members.members.remove(&sid).is_some()
        {
            members.list = None;
            if members.members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    /// Takes `member` out of the set and of its rooms' lists.
    fn remove(&mut self, member: &Arc<Member<S>>) {
        self.members.remove(&member.sid);
        // Its subscription names exactly the rooms it is listed in: the subscription changes
        // only under this lock (`join_room`, `leave_room`), together with the lists. So this
        // costs its rooms, never a look at every room.
        for (room, _) in member.subscription.rooms() {
            self.unlist(member.sid, &room);
        }
        metrics::gauge(metrics::LIVE_SOCKETS).set(self.members.len() as f64);
    }

    fn count(&self) {
        metrics::gauge(metrics::LIVE_SOCKETS).set(self.members.len() as f64);
    }
}

/// See the module docs.
pub struct LiveSet<S> {
    shared: Mutex<Shared<S>>,
    /// Where rooms' newest ids are read when a socket joins one.
    hub: Arc<Hub>,
}

impl<S: ChatSink> LiveSet<S> {
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
                rooms: HashMap::new(),
            }),
            hub: hub.clone(),
        });
        let broadcaster = broadcast_forever(live.clone(), hub, receiver, stop);
        (live, broadcaster)
    }

    fn lock(&self) -> MutexGuard<'_, Shared<S>> {
        // Every critical section is a few plain assignments and map operations.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `member` if it has been queued everything up to `sent_through`; otherwise gives
    /// it back with `sent_through`, the id to catch up to before trying again.
    pub fn try_join(&self, member: Member<S>) -> Result<(), Refused<S>> {
        let started = Instant::now();
        let mut shared = self.lock();
        metrics::histogram(metrics::LIVE_JOIN_SECONDS).record(started.elapsed().as_secs_f64());
        if member.emitted.get() < shared.sent_through {
            return Err(Refused {
                sent_through: shared.sent_through,
                member,
            });
        }
        let member = Arc::new(member);
        let rooms = member
            .subscription
            .rooms()
            .into_iter()
            .map(|(room, _)| room);
        shared.list_in(&member, rooms);
        shared.members.insert(member.sid, member);
        shared.count();
        Ok(())
    }

    /// Removes a socket (it closed). Nothing happens if it is not a member.
    pub fn leave(&self, sid: Sid) {
        let mut shared = self.lock();
        if let Some(member) = shared.members.get(&sid).cloned() {
            shared.remove(&member);
        }
    }

    /// Adds `room` to socket `sid`'s `subscription`, from the room's newest id now (read under
    /// the set's lock, see the module docs), and lists it in the room if it is live. Returns
    /// that mark; a room the socket is in keeps its mark and returns it.
    pub fn join_room(&self, sid: Sid, subscription: &Subscription, room: RoomKey) -> u64 {
        let mut shared = self.lock();
        if let Some(mark) = subscription.mark(&room) {
            return mark;
        }
        let mark = self.hub.room_last(&room);
        subscription.join(room.clone(), mark);
        if let Some(member) = shared.members.get(&sid).cloned() {
            shared.list_in(&member, [room]);
        }
        mark
    }

    /// Takes `room` out of socket `sid`'s `subscription` (and its room list, if it is live):
    /// nothing more of that room is queued to it. Returns whether it was in the room.
    pub fn leave_room(&self, sid: Sid, subscription: &Subscription, room: &RoomKey) -> bool {
        let mut shared = self.lock();
        shared.unlist(sid, room);
        subscription.leave(room)
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
    /// to serve: those of the batch's rooms (each once).
    fn begin_pass(&self, batch: &[SharedMessage]) -> Arc<[Arc<Member<S>>]> {
        let mut shared = self.lock();
        if let Some(last) = batch.last() {
            shared.sent_through = shared.sent_through.max(last.id.0);
        }
        let mut touched: Vec<&RoomKey> = batch.iter().map(|m| &m.room).collect();
        touched.sort_unstable();
        touched.dedup();
        let mut lists = touched.into_iter().filter_map(|room| {
            let members = shared.rooms.get_mut(room)?;
            let list = members
                .list
                .get_or_insert_with(|| members.members.values().cloned().collect());
            Some(list.clone())
        });
        let Some(first) = lists.next() else {
            return Arc::from([]);
        };
        let rest: Vec<Arc<[Arc<Member<S>>]>> = lists.collect();
        if rest.is_empty() {
            // One room (the usual batch): its list as it is.
            return first;
        }
        let mut seen = std::collections::HashSet::new();
        first
            .iter()
            .chain(rest.iter().flat_map(|list| list.iter()))
            .filter(|member| seen.insert(member.sid))
            .cloned()
            .collect()
    }

    /// Takes out the members that fell behind or closed during a pass; tells the former.
    fn end_pass(&self, out: Vec<(Arc<Member<S>>, bool)>) {
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
                    shared.remove(member);
                }
            }
        }
        for (member, behind) in out {
            if behind {
                metrics::counter(metrics::LIVE_FELL_BEHIND).increment(1);
                member.sink.fell_behind();
            }
        }
    }

    /// The broadcaster lost messages: nobody may stay in the set (they would miss them).
    /// Everyone catches up from the cache or the store and joins again after `start`.
    fn reset(&self, start: u64) {
        let dropped: Vec<Arc<Member<S>>> = {
            let mut shared = self.lock();
            shared.sent_through = shared.sent_through.max(start);
            let dropped = shared.members.drain().map(|(_, member)| member).collect();
            shared.rooms.clear();
            shared.count();
            dropped
        };
        tracing::warn!(
            members = dropped.len(),
            "live broadcaster fell behind; every client catches up from the store"
        );
        metrics::counter(metrics::LIVE_BROADCASTER_LAGGED).increment(1);
        for member in dropped {
            metrics::counter(metrics::LIVE_FELL_BEHIND).increment(1);
            member.sink.fell_behind();
        }
    }

    /// The broadcaster stopped: empties the set and tells every member. A socket that joins
    /// later finds its own stop signal already given (the server's shutdown comes first).
    fn stop(&self) {
        let members: Vec<Arc<Member<S>>> = {
            let mut shared = self.lock();
            let members = shared.members.drain().map(|(_, member)| member).collect();
            shared.rooms.clear();
            shared.count();
            members
        };
        for member in members {
            member.sink.broadcaster_stopped();
        }
    }
}

/// Receives the hub's messages in order and hands each batch to every member.
async fn broadcast_forever<S: ChatSink>(
    live: Arc<LiveSet<S>>,
    hub: Arc<Hub>,
    receiver: broadcast::Receiver<SharedMessage>,
    stop: CancellationToken,
) {
    broadcast_until_stopped(&live, hub, receiver, stop).await;
    live.stop();
}

async fn broadcast_until_stopped<S: ChatSink>(
    live: &LiveSet<S>,
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
async fn send_to_members<S: ChatSink>(
    members: &[Arc<Member<S>>],
    batch: &PassBatch,
) -> Vec<(Arc<Member<S>>, bool)> {
    let mut out = Vec::new();
    let messages = batch.messages();
    let Some(end) = messages.last().map(|m| m.id.0) else {
        return out;
    };
    let mut picks = Vec::new();
    for (n, member) in members.iter().enumerate() {
        batch.pick(&member.subscription, member.emitted.get(), &mut picks);
        if picks.is_empty() {
            // Nothing of its rooms it lacks: it has everything up to the batch's end (or
            // further, when its catch-up went past this pass: then the cursor stays).
            member.emitted.advance(end);
        } else {
            match member.sink.queue_chats(batch, &picks) {
                Ok(queued) if queued >= picks.len() => member.emitted.advance(end),
                Ok(queued) => {
                    // What fit; the rest it catches up to.
                    let queued = queued.max(1);
                    member.emitted.advance(messages[picks[queued - 1]].id.0);
                    out.push((member.clone(), true));
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

    use tokio::sync::Notify;

    use super::*;
    use crate::delivery::TailLimits;
    use crate::message::test_support::msg;

    /// A socket stand-in: takes up to `room` more messages, or says it closed.
    #[derive(Default)]
    struct FakeSink {
        got: Mutex<Vec<u64>>,
        room: AtomicUsize,
        closed: AtomicBool,
        /// Told that the broadcaster stopped.
        stopped: AtomicBool,
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

    /// A member's sink in these tests: a shared fake socket, and its own "fell behind" signal.
    struct TestSink {
        sink: Arc<FakeSink>,
        fell_behind: Arc<Notify>,
    }

    impl ChatSink for TestSink {
        fn queue_chats(&self, batch: &PassBatch, picks: &[usize]) -> Result<usize, NotQueued> {
            self.sink.queue(batch, picks)
        }

        fn fell_behind(&self) {
            self.fell_behind.notify_one();
        }

        fn broadcaster_stopped(&self) {
            self.sink.stopped.store(true, Ordering::SeqCst);
        }
    }

    impl FakeSink {
        fn queue(&self, batch: &PassBatch, picks: &[usize]) -> Result<usize, NotQueued> {
            let messages: Vec<&SharedMessage> =
                picks.iter().map(|&i| &batch.messages()[i]).collect();
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

    fn member(sink: &Arc<FakeSink>, emitted: u64) -> (Member<TestSink>, Joined) {
        member_in(sink, emitted, Subscription::new([None]))
    }

    /// A member in the rooms of `subscription`.
    fn member_in(
        sink: &Arc<FakeSink>,
        emitted: u64,
        subscription: Subscription,
    ) -> (Member<TestSink>, Joined) {
        let joined = Joined {
            sink: sink.clone(),
            emitted: Arc::new(EmittedCursor::new(emitted)),
            fell_behind: Arc::new(Notify::new()),
        };
        let member = Member {
            sid: Sid::new(),
            subscription: Arc::new(subscription),
            sink: TestSink {
                sink: sink.clone(),
                fell_behind: joined.fell_behind.clone(),
            },
            emitted: joined.emitted.clone(),
        };
        (member, joined)
    }

    type TestSet = LiveSet<TestSink>;

    /// `try_join`, with only the id of a refusal.
    fn join(live: &TestSet, member: Member<TestSink>) -> Result<(), u64> {
        live.try_join(member)
            .map_err(|refused| refused.sent_through)
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

    /// A socket that caught up from the store past the broadcaster's batch (the broadcaster
    /// is more than one batch behind the hub) keeps its cursor: the pass with nothing for it
    /// must not move the cursor back to the batch's end, or the next pass queues again what it
    /// has (the live fuzz target found this: 297..=304 queued twice).
    #[tokio::test]
    async fn a_pass_behind_a_member_s_cursor_neither_moves_it_back_nor_queues_again() {
        let hub = hub_at(0, 1024);
        let (live, broadcaster) = TestSet::start(hub.clone(), CancellationToken::new());
        let total = MAX_BATCH as u64 + 40;
        // Published before the broadcaster first runs: its first pass is one full batch.
        hub.publish((1..=total).map(msg));
        let sink = FakeSink::with_room(1000);
        let (ahead, joined) = member(&sink, total);
        assert_eq!(
            join(&live, ahead),
            Ok(()),
            "nothing is sent yet: it may join"
        );
        tokio::spawn(broadcaster);
        hub.publish([msg(total + 1)]);
        eventually("the new message is queued", || {
            !joined.sink.got().is_empty()
        })
        .await;
        assert_eq!(joined.sink.got(), [total + 1], "only the new message, once");
        assert_eq!(joined.emitted.get(), total + 1);
    }

    #[tokio::test]
    async fn a_socket_joins_only_with_everything_up_to_sent_through() {
        let hub = hub_at(5, 64);
        let (live, broadcaster) = TestSet::start(hub.clone(), CancellationToken::new());
        tokio::spawn(broadcaster);
        let sink = FakeSink::with_room(100);
        let (behind, _) = member(&sink, 4);
        assert_eq!(join(&live, behind).err(), Some(5), "4 < 5: catch up first");
        let (caught_up, joined) = member(&sink, 5);
        assert_eq!(join(&live, caught_up), Ok(()));
        hub.publish([msg(6), msg(7)]);
        eventually("6 and 7 are queued", || joined.sink.got() == [6, 7]).await;
        assert_eq!(joined.emitted.get(), 7);
    }

    #[tokio::test]
    async fn ids_a_member_already_has_are_skipped() {
        let hub = hub_at(5, 64);
        let (live, broadcaster) = TestSet::start(hub.clone(), CancellationToken::new());
        // 6 and 7 are published before the broadcaster runs; the socket caught up to 7 from
        // the store meanwhile and joins (it has everything up to sent_through = 5).
        hub.publish([msg(6), msg(7)]);
        let sink = FakeSink::with_room(100);
        let (ahead, joined) = member(&sink, 7);
        assert_eq!(join(&live, ahead), Ok(()));
        tokio::spawn(broadcaster);
        hub.publish([msg(8)]);
        eventually("8 is queued", || joined.sink.got() == [8]).await;
    }

    #[tokio::test]
    async fn a_member_with_a_full_buffer_is_taken_out_and_told_while_others_go_on() {
        let hub = hub_at(5, 64);
        let (live, broadcaster) = TestSet::start(hub.clone(), CancellationToken::new());
        let slow_sink = FakeSink::with_room(1);
        let fast_sink = FakeSink::with_room(100);
        let (slow, slow_joined) = member(&slow_sink, 5);
        let (fast, fast_joined) = member(&fast_sink, 5);
        assert_eq!(join(&live, slow), Ok(()));
        assert_eq!(join(&live, fast), Ok(()));
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
        assert_eq!(join(&live, again).err(), Some(7));
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

    /// Message `id` of `room`.
    fn in_room(id: u64, room: &str) -> SharedMessage {
        let mut message = (*msg(id)).clone();
        message.room = Some(room.to_string());
        Arc::new(message)
    }

    #[tokio::test]
    async fn a_message_goes_to_its_room_s_members_only_in_id_order() {
        let hub = hub_at(0, 64);
        let (live, broadcaster) = TestSet::start(hub.clone(), CancellationToken::new());
        tokio::spawn(broadcaster);
        let dev_sink = FakeSink::with_room(100);
        let ops_sink = FakeSink::with_room(100);
        let both_sink = FakeSink::with_room(100);
        let dev_rooms = || Subscription::new([Some("dev".to_string())]);
        let (dev, dev_joined) = member_in(&dev_sink, 0, dev_rooms());
        let (ops, ops_joined) = member_in(&ops_sink, 0, Subscription::new([Some("ops".into())]));
        let (both, both_joined) = member_in(
            &both_sink,
            0,
            Subscription::new([Some("dev".into()), Some("ops".into())]),
        );
        for member in [dev, ops, both] {
            assert_eq!(join(&live, member), Ok(()));
        }
        hub.publish([
            in_room(1, "dev"),
            in_room(2, "ops"),
            in_room(3, "dev"),
            in_room(4, "x"),
        ]);
        eventually("both has 1..=3", || both_joined.sink.got() == [1, 2, 3]).await;
        eventually("dev has 1 and 3", || dev_joined.sink.got() == [1, 3]).await;
        eventually("ops has 2", || ops_joined.sink.got() == [2]).await;
        // Everyone has everything of its rooms up to the batch's end.
        eventually("cursors moved", || ops_joined.emitted.get() == 4).await;
        // A message of a room nobody is in costs no pass over anyone.
        hub.publish([in_room(5, "x")]);
        hub.publish([in_room(6, "ops")]);
        eventually("ops has 6", || ops_joined.sink.got() == [2, 6]).await;
        assert_eq!(dev_joined.sink.got(), [1, 3]);
    }

    #[tokio::test]
    async fn a_live_member_joining_a_room_gets_what_follows_its_mark() {
        let hub = hub_at(0, 64);
        let (live, broadcaster) = TestSet::start(hub.clone(), CancellationToken::new());
        tokio::spawn(broadcaster);
        let sink = FakeSink::with_room(100);
        let subscription = Arc::new(Subscription::new([Some("dev".to_string())]));
        let (member, joined) = member_in(&sink, 0, Subscription::new([]));
        let sid = member.sid;
        let member = Member {
            subscription: subscription.clone(),
            ..member
        };
        assert_eq!(join(&live, member), Ok(()));
        hub.publish([in_room(1, "ops"), in_room(2, "dev")]);
        eventually("dev's 2", || joined.sink.got() == [2]).await;
        // It joins ops: its mark is ops' newest id, 1; 1 it reads with history.
        assert_eq!(live.join_room(sid, &subscription, Some("ops".into())), 1);
        assert_eq!(
            live.join_room(sid, &subscription, Some("ops".into())),
            1,
            "again: the same"
        );
        hub.publish([in_room(3, "ops")]);
        eventually("ops' 3", || joined.sink.got() == [2, 3]).await;
        // It leaves dev: nothing more of dev.
        assert!(live.leave_room(sid, &subscription, &Some("dev".into())));
        assert!(!live.leave_room(sid, &subscription, &Some("dev".into())));
        hub.publish([in_room(4, "dev"), in_room(5, "ops")]);
        eventually("ops' 5", || joined.sink.got() == [2, 3, 5]).await;
        assert_eq!(joined.emitted.get(), 5);
    }

    #[tokio::test]
    async fn a_closed_member_is_dropped_without_being_told() {
        let hub = hub_at(0, 64);
        let (live, broadcaster) = TestSet::start(hub.clone(), CancellationToken::new());
        tokio::spawn(broadcaster);
        let sink = FakeSink::with_room(100);
        sink.closed.store(true, Ordering::SeqCst);
        let (closed, joined) = member(&sink, 0);
        assert_eq!(join(&live, closed), Ok(()));
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
        let (live, broadcaster) = TestSet::start(hub.clone(), CancellationToken::new());
        let sink = FakeSink::with_room(100);
        let (existing, _) = member(&sink, 5);
        assert_eq!(join(&live, existing), Ok(()));
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
                outcomes.push(join(&live, behind));
                let (caught_up, _) = member(&late_sink, 7);
                outcomes.push(join(&live, caught_up));
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
    async fn a_stopped_broadcaster_empties_the_set_and_tells_every_member() {
        let hub = hub_at(0, 64);
        let stop = CancellationToken::new();
        let (live, broadcaster) = TestSet::start(hub.clone(), stop.clone());
        let broadcaster = tokio::spawn(broadcaster);
        let (sink_a, sink_b) = (FakeSink::with_room(100), FakeSink::with_room(100));
        let (a, joined_a) = member(&sink_a, 0);
        let (b, _) = member(&sink_b, 0);
        assert_eq!(join(&live, a), Ok(()));
        assert_eq!(join(&live, b), Ok(()));
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), broadcaster)
            .await
            .expect("the broadcaster stops")
            .expect("it did not panic");
        assert!(live.is_empty(), "nobody stays in a set nobody serves");
        assert!(sink_a.stopped.load(Ordering::SeqCst));
        assert!(sink_b.stopped.load(Ordering::SeqCst));
        let told = tokio::time::timeout(Duration::from_millis(50), joined_a.fell_behind.notified());
        assert!(told.await.is_err(), "stopped, not sent to catch up");
    }

    #[tokio::test]
    async fn a_lagging_broadcaster_sends_everyone_to_catch_up_past_the_hub() {
        let hub = hub_at(0, 2);
        let (live, broadcaster) = TestSet::start(hub.clone(), CancellationToken::new());
        let sink = FakeSink::with_room(100);
        let (member_a, joined) = member(&sink, 0);
        assert_eq!(join(&live, member_a), Ok(()));
        // Five messages into a channel of two before the broadcaster reads any: it lags.
        hub.publish((1..=5).map(msg));
        tokio::spawn(broadcaster);
        tokio::time::timeout(Duration::from_secs(5), joined.fell_behind.notified())
            .await
            .expect("everyone is told to catch up");
        assert!(live.is_empty());
        let (rejoin, _) = member(&sink, 2);
        assert_eq!(
            join(&live, rejoin).err(),
            Some(5),
            "catch up to the hub's end"
        );
        let (rejoin, again) = member(&sink, 5);
        assert_eq!(join(&live, rejoin), Ok(()));
        hub.publish([msg(6)]);
        eventually("live again after the lag", || again.emitted.get() == 6).await;
    }
}
