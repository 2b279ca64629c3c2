//! Rooms, the live set's join rule and the emitted cursor, with the real hub, live set and
//! broadcaster on a current-thread runtime, and sockets simulated the way
//! `delivery::socket_task` drives them: catch up to `through` from what is stored (as
//! `CatchUp::read_through` reads: the hub's tail cache when it holds the range, kept to what
//! the socket's `Subscription` wants, else the store's rows of its rooms after
//! `Subscription::cursors`), queue each batch as room allows, try to join, and catch up again
//! when told they fell behind. Messages go to three rooms (the default one and two named
//! ones), several rooms in one publish too. Clients connect with any set of rooms (or resume
//! their last socket's rooms and marks, as a recovered session does), and join and leave rooms
//! as `socket::rooms` does (`join_room` unless the subscription has the room already;
//! `leave_room`) at any moment, in the middle of the broadcaster's passes too. Clients read
//! slowly (bounded buffers), disconnect (losing what they had not read) and reconnect from
//! their last id; messages are published between and in the middle of the broadcaster's
//! passes, and the broadcaster may lag behind the hub.
//!
//! The model is the sequence of publishes, connects, joins and leaves performed, not the live
//! set's state: a socket's stay in a room begins when it connects (it wants the room's messages
//! above its start, or above the room's mark if a recovered session's is higher) or joins (above
//! its mark, which must be the room's newest id at that moment), and ends when it leaves.
//! After every step, for each socket:
//! - it was queued ids in strictly increasing order, all above its start;
//! - each of them is of a room it was in, above the stay's mark, queued during the stay; after
//!   a leave, a message of that room is queued only if it was already on its way at the leave:
//!   in the catch-up batch being queued, or among the messages the broadcaster was queueing to
//!   it at that very moment (picked before the leave). Never one published after the leave;
//! - within each stay, it got the room's messages above the mark with no gap: every one up to
//!   its emitted cursor (up to the cursor at the leave, for a stay that ended), and any that
//!   were on their way at the leave follow on from those;
//! - its emitted cursor never moves back, is at least the last id queued and at most the last
//!   published (so everything its rooms had up to it was queued);
//! - a join's mark is the room's newest id (or the mark it joined at, for a room it is in);
//!   `leave_room` says it was in the room exactly when it was; a join of the live set is
//!   refused only to a socket missing ids up to `sent_through`;
//! - an ack waiting on the cursor is woken exactly when its id has been queued.
//! Each client has read strictly increasing ids, across its sockets. At the end, once nothing
//! more is published, every client is connected and live, `sent_through` is the last id and
//! the clients read all they were sent: every client has every message of each room it is in,
//! above that stay's mark (or its start).
//!
//! So the guarantee at a leave (what `LiveSet::leave_room` gives): nothing published after it;
//! of what was published before, only messages already on their way to the socket (the one
//! catch-up batch it is queueing, or its part of the broadcaster's pass in progress), which
//! continue its run of that room without a gap.
#![no_main]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use socketioxide::socket::Sid;
use tidings::fuzzing::EmittedCursor;
use tidings::fuzzing::NotQueued;
use tidings::fuzzing::{ChatSink, LiveSet, Member, PassBatch, Refused};
use tidings::fuzzing::{Hub, Subscription, TailLimits};
use tidings::message::{Message, MessageId, SharedMessage};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const CLIENTS: usize = 3;
/// The default room (0) and two named ones.
const ROOMS: usize = 3;
const MAX_OPS: usize = 96;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Action {
    /// The writer publishes `n` new messages; the `k`-th goes to the room of bits `2k..2k+2`
    /// of `rooms`.
    Publish(u8, u16),
    /// The broadcaster gets `n` turns.
    Broadcast(u8),
    /// A client's delivery task gets a turn (queueing some of its catch-up batch, reading the
    /// next one, a try to join, or noticing it fell behind).
    Deliver(u8),
    /// A client reads up to `n` queued messages, making room.
    Read(u8, u8),
    /// A client's socket closes; its task leaves the live set now or on its next turn.
    Close(u8, bool),
    /// A client connects again (from the last id it read): in the rooms of the bits of `mask`
    /// or, with `recover`, in those its last socket was in, with their marks.
    Connect(u8, u8, bool),
    /// An ack for the `k`-th next message of a client starts waiting on its cursor.
    Wait(u8, u8),
    /// A client's socket joins a room.
    Join(u8, u8),
    /// A client's socket leaves a room.
    Leave(u8, u8),
}

#[derive(Debug, Clone, Copy, Arbitrary)]
struct Op {
    action: Action,
    /// Run it inside the broadcaster's next pass (while it queues to some member) instead.
    mid_pass: bool,
}

/// Room `room`'s key: `None` for the default room.
fn key(room: usize) -> Option<String> {
    (room > 0).then(|| format!("r{room}"))
}

/// The room of the `k`-th message of a publish.
fn room_in(rooms: u16, k: usize) -> usize {
    usize::from((rooms >> (2 * (k % 8))) & 3) % ROOMS
}

/// One socket's outgoing buffer.
struct Buffer {
    capacity: usize,
    queued: Vec<u64>,
    /// Everything ever queued to this socket, in order.
    history: Vec<u64>,
    closed: bool,
}

struct Sink {
    sid: Sid,
    buffer: Arc<Mutex<Buffer>>,
    world: Arc<Mutex<World>>,
    fell_behind: Arc<Notify>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ChatSink for Sink {
    fn queue_chats(&self, batch: &PassBatch, picks: &[usize]) -> Result<usize, NotQueued> {
        let picked: Vec<SharedMessage> =
            picks.iter().map(|&i| batch.messages()[i].clone()).collect();
        // The broadcaster is mid-pass: run what the input scheduled for this moment (while
        // these messages are on their way to this socket).
        if let Ok(mut world) = self.world.try_lock()
            && let Some(op) = world.mid_pass.pop()
        {
            world.in_queue = Some((self.sid, picked.iter().map(|m| m.id.0).collect()));
            world.apply(op);
            world.in_queue = None;
        }
        queue(&self.buffer, &picked)
    }

    fn fell_behind(&self) {
        // Its task notices on its next turn (the real one is spawned at this point).
        self.fell_behind.notify_one();
    }

    fn broadcaster_stopped(&self) {}
}

fn queue(buffer: &Mutex<Buffer>, messages: &[SharedMessage]) -> Result<usize, NotQueued> {
    let mut buffer = lock(buffer);
    if buffer.closed {
        return Err(NotQueued::Closed);
    }
    let room = buffer.capacity - buffer.queued.len();
    let n = room.min(messages.len());
    if n == 0 {
        return Err(NotQueued::Full);
    }
    for m in &messages[..n] {
        buffer.queued.push(m.id.0);
        buffer.history.push(m.id.0);
    }
    Ok(n)
}

type Ack = (u64, Pin<Box<dyn Future<Output = ()> + Send>>, bool);

enum Phase {
    /// Catching up to `through`, then trying to join.
    CatchingUp {
        through: u64,
    },
    Live,
}

/// A socket's stay in a room (the model).
struct Stay {
    room: usize,
    /// Its mark: 0 for a room it connected with, the room's newest id for one it joined.
    mark: u64,
    /// It wants the room's messages above this: its mark, or its start if higher.
    above: u64,
    /// How many messages had been queued to the socket when the stay began.
    from: usize,
    left: Option<Left>,
}

/// How a stay ended.
struct Left {
    /// How many messages had been queued to the socket.
    at: usize,
    /// Its emitted cursor.
    emitted: u64,
    /// The room's messages on their way to it: in its catch-up batch being queued, or being
    /// queued to it by the broadcaster at that very moment.
    in_flight: Vec<u64>,
}

struct Socket {
    sid: Sid,
    start: u64,
    buffer: Arc<Mutex<Buffer>>,
    emitted: Arc<EmittedCursor>,
    fell_behind: Arc<Notify>,
    subscription: Arc<Subscription>,
    /// The catch-up reader's cursor.
    cursor: u64,
    phase: Phase,
    /// What is left of the catch-up batch being queued (the real task waits for room).
    pending: Vec<SharedMessage>,
    /// Closed, but its task has not left the live set yet.
    closing: bool,
    acks: Vec<Ack>,
    /// Its stays in rooms, in the order they began.
    stays: Vec<Stay>,
    /// Its emitted cursor at the last check.
    seen_emitted: u64,
}

#[derive(Default)]
struct Client {
    read: Vec<u64>,
    socket: Option<Socket>,
    /// The rooms its last socket was in, with their marks (what a recovered session has).
    session: Option<Vec<(usize, u64)>>,
}

impl Client {
    /// Forgets its socket (its task left the live set), keeping its rooms as its session.
    fn drop_socket(&mut self) {
        if let Some(socket) = self.socket.take() {
            let rooms = socket.stays.iter().filter(|stay| stay.left.is_none());
            self.session = Some(rooms.map(|stay| (stay.room, stay.mark)).collect());
        }
    }
}

struct World {
    hub: Arc<Hub>,
    live: Arc<LiveSet<Sink>>,
    /// Every published message (the store): `stored[i]` has id `i + 1`.
    stored: Vec<SharedMessage>,
    /// The model: the room of every published message (`room_of[i]` of id `i + 1`), and each
    /// room's ids.
    room_of: Vec<usize>,
    room_ids: [Vec<u64>; ROOMS],
    clients: Vec<Client>,
    batch: usize,
    capacity: usize,
    mid_pass: Vec<Action>,
    /// While the broadcaster queues to a socket mid-pass: the socket, and the ids.
    in_queue: Option<(Sid, Vec<u64>)>,
    myself: Option<std::sync::Weak<Mutex<World>>>,
}

fn message(id: u64, room: usize) -> SharedMessage {
    Arc::new(Message {
        id: MessageId(id),
        content: format!("m{id}"),
        author: None,
        user: None,
        event: None,
        time: id,
        room: key(room),
    })
}

fn poll_once(future: Pin<&mut (dyn Future<Output = ()> + Send)>) -> bool {
    let mut context = Context::from_waker(Waker::noop());
    matches!(future.poll(&mut context), Poll::Ready(()))
}

/// The room of message `id`, by the model.
fn room_of(rooms: &[usize], id: u64) -> Option<usize> {
    let index = usize::try_from(id.checked_sub(1)?).ok()?;
    rooms.get(index).copied()
}

/// `CatchUp::read_through`: the next batch of the socket's rooms' messages in
/// `(cursor, through]`, empty once the cursor reached `through`.
fn read_through(
    hub: &Hub,
    stored: &[SharedMessage],
    batch: usize,
    socket: &mut Socket,
    through: u64,
) -> Vec<SharedMessage> {
    while socket.cursor < through {
        let Some(cached) = hub.replay_from_tail(socket.cursor, through, batch, 1 << 20) else {
            break;
        };
        let Some(last) = cached.last() else {
            break;
        };
        socket.cursor = last.id.0;
        let wanted: Vec<SharedMessage> = cached
            .into_iter()
            .filter(|message| socket.subscription.wants(message))
            .collect();
        if !wanted.is_empty() {
            return wanted;
        }
    }
    if socket.cursor >= through {
        return Vec::new();
    }
    // `StoreReader::read_rooms` over the rooms' cursors, on the stored messages.
    let cursors = socket.subscription.cursors(socket.cursor);
    let rows: Vec<SharedMessage> = stored
        .iter()
        .take_while(|message| message.id.0 <= through)
        .filter(|message| {
            cursors
                .iter()
                .any(|cursor| cursor.room == message.room && message.id.0 > cursor.after)
        })
        .take(batch)
        .cloned()
        .collect();
    socket.cursor = rows.last().map_or(through, |last| last.id.0);
    rows
}

/// Queues what fits of the socket's catch-up batch, advancing its cursor past it.
fn emit_pending(socket: &mut Socket) {
    if let Ok(n) = queue(&socket.buffer, &socket.pending) {
        let sent: Vec<SharedMessage> = socket.pending.drain(..n).collect();
        if let Some(last) = sent.last() {
            socket.emitted.advance(last.id.0);
        }
    }
}

impl World {
    fn last(&self) -> u64 {
        self.stored.len() as u64
    }

    fn room_last(&self, room: usize) -> u64 {
        self.room_ids[room].last().copied().unwrap_or(0)
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Publish(n, rooms) => {
                let first = self.last() + 1;
                let mut fresh = Vec::new();
                for (k, id) in (first..first + u64::from(n % 8) + 1).enumerate() {
                    let room = room_in(rooms, k);
                    self.room_of.push(room);
                    self.room_ids[room].push(id);
                    fresh.push(message(id, room));
                }
                self.stored.extend(fresh.iter().cloned());
                self.hub.publish(fresh);
            }
            Action::Broadcast(_) => {}
            Action::Deliver(c) => self.deliver(usize::from(c) % CLIENTS),
            Action::Read(c, n) => {
                let client = &mut self.clients[usize::from(c) % CLIENTS];
                if let Some(socket) = &client.socket {
                    let mut buffer = lock(&socket.buffer);
                    let n = usize::from(n % 8 + 1).min(buffer.queued.len());
                    client.read.extend(buffer.queued.drain(..n));
                }
            }
            Action::Close(c, leave_now) => {
                let client = &mut self.clients[usize::from(c) % CLIENTS];
                if let Some(socket) = &mut client.socket {
                    let mut buffer = lock(&socket.buffer);
                    // What the client had not read is lost with the connection.
                    buffer.queued.clear();
                    buffer.closed = true;
                    drop(buffer);
                    socket.closing = true;
                    if leave_now {
                        self.live.leave(socket.sid);
                        client.drop_socket();
                    }
                }
            }
            Action::Connect(c, mask, recover) => {
                self.connect(usize::from(c) % CLIENTS, mask, recover)
            }
            Action::Wait(c, k) => {
                let client = &mut self.clients[usize::from(c) % CLIENTS];
                if let Some(socket) = &mut client.socket {
                    let id = socket.emitted.get() + u64::from(k % 4);
                    let emitted = socket.emitted.clone();
                    socket.acks.push((
                        id,
                        Box::pin(async move { emitted.reached(id).await }),
                        false,
                    ));
                }
            }
            Action::Join(c, room) => self.join(usize::from(c) % CLIENTS, usize::from(room) % ROOMS),
            Action::Leave(c, room) => {
                self.leave(usize::from(c) % CLIENTS, usize::from(room) % ROOMS);
            }
        }
    }

    fn connect(&mut self, c: usize, mask: u8, recover: bool) {
        let capacity = self.capacity;
        let replay_until = self.last();
        let client = &mut self.clients[c];
        if client.socket.is_some() {
            return;
        }
        let start = client.read.last().copied().unwrap_or(0);
        let rooms: Vec<(usize, u64)> = match &client.session {
            Some(session) if recover => session.clone(),
            _ => (0..ROOMS)
                .filter(|room| mask >> room & 1 == 1)
                .map(|room| (room, 0))
                .collect(),
        };
        let subscription =
            Subscription::with_marks(rooms.iter().map(|&(room, mark)| (key(room), mark)));
        let stays = rooms
            .iter()
            .map(|&(room, mark)| Stay {
                room,
                mark,
                above: mark.max(start),
                from: 0,
                left: None,
            })
            .collect();
        client.socket = Some(Socket {
            sid: Sid::new(),
            start,
            buffer: Arc::new(Mutex::new(Buffer {
                capacity,
                queued: Vec::new(),
                history: Vec::new(),
                closed: false,
            })),
            emitted: Arc::new(EmittedCursor::new(start)),
            fell_behind: Arc::new(Notify::new()),
            subscription: Arc::new(subscription),
            cursor: start,
            phase: Phase::CatchingUp {
                through: replay_until,
            },
            pending: Vec::new(),
            closing: false,
            acks: Vec::new(),
            stays,
            seen_emitted: start,
        });
    }

    /// `socket::rooms::join`: a room the subscription has keeps its mark; otherwise
    /// `join_room`, whose mark is recorded.
    fn join(&mut self, c: usize, room: usize) {
        let newest = self.room_last(room);
        let Some(socket) = &mut self.clients[c].socket else {
            return;
        };
        let stay = socket
            .stays
            .iter()
            .find(|stay| stay.room == room && stay.left.is_none());
        if let Some(mark) = socket.subscription.mark(&key(room)) {
            assert_eq!(
                stay.map(|stay| stay.mark),
                Some(mark),
                "client {c} is in room {room} at mark {mark}"
            );
            return;
        }
        assert!(
            stay.is_none(),
            "client {c} is in room {room}: its subscription says not"
        );
        let mark = self
            .live
            .join_room(socket.sid, &socket.subscription, key(room));
        assert_eq!(
            mark, newest,
            "client {c} joined room {room}: the mark is its newest id"
        );
        let from = lock(&socket.buffer).history.len();
        socket.stays.push(Stay {
            room,
            mark: newest,
            above: newest.max(socket.start),
            from,
            left: None,
        });
    }

    /// `socket::rooms::leave`: `leave_room`.
    fn leave(&mut self, c: usize, room: usize) {
        let Some(socket) = &mut self.clients[c].socket else {
            return;
        };
        let was_in = self
            .live
            .leave_room(socket.sid, &socket.subscription, &key(room));
        let stay = socket
            .stays
            .iter_mut()
            .find(|stay| stay.room == room && stay.left.is_none());
        assert_eq!(
            was_in,
            stay.is_some(),
            "client {c} left room {room}: leave_room says it was in it"
        );
        let Some(stay) = stay else {
            return;
        };
        let of_room = |id: &u64| room_of(&self.room_of, *id) == Some(room);
        let mut in_flight: Vec<u64> = socket
            .pending
            .iter()
            .map(|message| message.id.0)
            .filter(of_room)
            .collect();
        if let Some((sid, ids)) = &self.in_queue
            && *sid == socket.sid
        {
            in_flight.extend(ids.iter().copied().filter(of_room));
        }
        stay.left = Some(Left {
            at: lock(&socket.buffer).history.len(),
            emitted: socket.emitted.get(),
            in_flight,
        });
    }

    /// One turn of a socket's delivery task, as `socket_task::deliver` takes them.
    fn deliver(&mut self, c: usize) {
        let world = self.myself();
        let Some(socket) = &mut self.clients[c].socket else {
            return;
        };
        if socket.closing {
            // Its task notices the close and leaves.
            self.live.leave(socket.sid);
            self.clients[c].drop_socket();
            return;
        }
        match socket.phase {
            Phase::Live => {
                let mut told = std::pin::pin!(socket.fell_behind.notified());
                let mut context = Context::from_waker(Waker::noop());
                if told.as_mut().poll(&mut context).is_ready() {
                    // Out of the live set: what reached it live is skipped, then it catches
                    // up to whatever the set says when it tries to join again.
                    socket.cursor = socket.cursor.max(socket.emitted.get());
                    socket.phase = Phase::CatchingUp {
                        through: socket.cursor,
                    };
                }
            }
            Phase::CatchingUp { through } => {
                if !socket.pending.is_empty() {
                    // The rest of its batch, as room allows (the real task waits for room;
                    // here it comes back on its next turn).
                    emit_pending(socket);
                    return;
                }
                let batch = read_through(&self.hub, &self.stored, self.batch, socket, through);
                if !batch.is_empty() {
                    socket.pending = batch;
                    emit_pending(socket);
                    return;
                }
                // Everything of its rooms up to `through` is queued.
                socket.emitted.advance(socket.cursor);
                let member = Member {
                    sid: socket.sid,
                    subscription: socket.subscription.clone(),
                    sink: Sink {
                        sid: socket.sid,
                        buffer: socket.buffer.clone(),
                        world: world.unwrap_or_else(|| panic!("the world is gone")),
                        fell_behind: socket.fell_behind.clone(),
                    },
                    emitted: socket.emitted.clone(),
                };
                match self.live.try_join(member) {
                    Err(Refused { sent_through, .. }) => {
                        assert!(
                            socket.emitted.get() < sent_through,
                            "refused although it has everything up to {sent_through}"
                        );
                        socket.phase = Phase::CatchingUp {
                            through: sent_through,
                        };
                    }
                    Ok(()) => socket.phase = Phase::Live,
                }
            }
        }
    }

    fn myself(&self) -> Option<Arc<Mutex<World>>> {
        self.myself.as_ref().and_then(std::sync::Weak::upgrade)
    }

    /// `sent_through`, as a join of a socket that has been queued nothing is told it.
    fn sent_through(&self) -> u64 {
        let Some(world) = self.myself() else {
            return 0;
        };
        let sid = Sid::new();
        let probe = Member {
            sid,
            subscription: Arc::new(Subscription::default()),
            emitted: Arc::new(EmittedCursor::new(0)),
            sink: Sink {
                sid,
                buffer: Arc::new(Mutex::new(Buffer {
                    capacity: 0,
                    queued: Vec::new(),
                    history: Vec::new(),
                    closed: true,
                })),
                world,
                fell_behind: Arc::new(Notify::new()),
            },
        };
        match self.live.try_join(probe) {
            Err(Refused { sent_through, .. }) => sent_through,
            Ok(()) => {
                self.live.leave(sid);
                0
            }
        }
    }

    fn check(&mut self) {
        let last = self.last();
        for (c, client) in self.clients.iter_mut().enumerate() {
            assert!(
                client.read.windows(2).all(|pair| pair[0] < pair[1]),
                "client {c} read {:?}: out of order or twice",
                client.read
            );
            let Some(socket) = &mut client.socket else {
                continue;
            };
            let emitted = socket.emitted.get();
            let buffer = lock(&socket.buffer);
            check_queued(
                c,
                socket,
                &buffer.history,
                emitted,
                last,
                &self.room_of,
                &self.room_ids,
            );
            drop(buffer);
            socket.seen_emitted = emitted;
            for (id, ack, done) in &mut socket.acks {
                if *done {
                    continue;
                }
                *done = poll_once(ack.as_mut());
                assert_eq!(
                    *done,
                    emitted >= *id,
                    "an ack for {id} with {emitted} queued: woken {done}"
                );
            }
        }
    }
}

/// What was queued to client `c`'s socket (`history`) against the model.
fn check_queued(
    c: usize,
    socket: &Socket,
    history: &[u64],
    emitted: u64,
    last: u64,
    rooms: &[usize],
    room_ids: &[Vec<u64>; ROOMS],
) {
    let start = socket.start;
    let mut previous = start;
    for &id in history {
        assert!(
            id > previous,
            "client {c}'s socket from {start} was queued {history:?}: out of order, twice or \
             not after its start"
        );
        previous = id;
    }
    assert!(
        emitted >= socket.seen_emitted,
        "client {c}'s emitted cursor moved back from {} to {emitted}",
        socket.seen_emitted
    );
    assert!(
        emitted >= previous,
        "client {c}'s emitted cursor {emitted} is behind {previous}, queued"
    );
    assert!(emitted <= last, "emitted {emitted} was never published");
    // Each message queued, to the stay it was queued for.
    let mut got: Vec<Vec<u64>> = socket.stays.iter().map(|_| Vec::new()).collect();
    for (i, &id) in history.iter().enumerate() {
        let room = room_of(rooms, id);
        let stay = socket.stays.iter().position(|stay| {
            Some(stay.room) == room
                && id > stay.above
                && i >= stay.from
                && stay
                    .left
                    .as_ref()
                    .is_none_or(|left| i < left.at || left.in_flight.contains(&id))
        });
        let Some(stay) = stay else {
            panic!(
                "client {c}'s socket was queued {id} (room {room:?}) as its message number {i}, \
                 which it did not want then; its stays (room, mark, above, from): {:?}",
                socket
                    .stays
                    .iter()
                    .map(|stay| (stay.room, stay.mark, stay.above, stay.from))
                    .collect::<Vec<_>>()
            );
        };
        got[stay].push(id);
    }
    // Each stay got its room's messages above its mark with no gap, up to its cursor at least.
    for (stay, got) in socket.stays.iter().zip(&got) {
        let until = stay.left.as_ref().map_or(emitted, |left| left.emitted);
        let until = got.last().map_or(until, |&newest| newest.max(until));
        let ids = &room_ids[stay.room];
        let from = ids.partition_point(|&id| id <= stay.above);
        let to = ids.partition_point(|&id| id <= until).max(from);
        assert_eq!(
            got.as_slice(),
            &ids[from..to],
            "client {c}'s socket in room {} above {} (left: {}) got these of the room's \
             messages up to {until}",
            stay.room,
            stay.above,
            stay.left.is_some()
        );
    }
}

fn turns(n: usize) {
    RUNTIME.with(|rt| {
        rt.block_on(async {
            for _ in 0..n {
                tokio::task::yield_now().await;
            }
        });
    });
}

fn run(input: &mut Unstructured) -> arbitrary::Result<()> {
    let initial = u64::from(u8::arbitrary(input)? % 8);
    let initial_rooms = u16::arbitrary(input)?;
    // Mostly a tiny hub, so the broadcaster lags and resets; now and then one large enough
    // for the broadcaster to fall more than a batch behind without lagging.
    let hub_capacity = match u8::arbitrary(input)? {
        255 => 1024,
        raw => usize::from(raw % 8) + 1,
    };
    let capacity = usize::from(u8::arbitrary(input)? % 8) + 1;
    let batch = usize::from(u8::arbitrary(input)? % 4) + 1;
    let tail = TailLimits {
        // 0: no cache, every catch-up reads the store.
        max_messages: usize::from(u8::arbitrary(input)? % 17),
        max_bytes: 1 << 16,
    };
    let mut masks = [0u8; CLIENTS];
    for mask in &mut masks {
        *mask = u8::arbitrary(input)?;
    }
    let mut room_of = Vec::new();
    let mut room_ids: [Vec<u64>; ROOMS] = Default::default();
    let mut stored = Vec::new();
    for (k, id) in (1..=initial).enumerate() {
        let room = room_in(initial_rooms, k);
        room_of.push(room);
        room_ids[room].push(id);
        stored.push(message(id, room));
    }
    let newest = room_ids
        .iter()
        .enumerate()
        .filter_map(|(room, ids)| Some((key(room), *ids.last()?)));
    let hub = Arc::new(Hub::with_rooms(
        initial,
        newest,
        hub_capacity,
        tail,
        stored.iter().cloned(),
    ));
    let stop = CancellationToken::new();
    let (live, broadcaster) = LiveSet::<Sink>::start(hub.clone(), stop.clone());
    let broadcaster = RUNTIME.with(|rt| rt.spawn(broadcaster));
    let world = Arc::new(Mutex::new(World {
        hub,
        live,
        stored,
        room_of,
        room_ids,
        clients: (0..CLIENTS).map(|_| Client::default()).collect(),
        batch,
        capacity,
        mid_pass: Vec::new(),
        in_queue: None,
        myself: None,
    }));
    lock(&world).myself = Some(Arc::downgrade(&world));
    for (c, mask) in masks.into_iter().enumerate() {
        lock(&world).connect(c, mask, false);
    }

    for _ in 0..MAX_OPS {
        // An exhausted input would go on yielding default operations: stop instead.
        if input.is_empty() {
            break;
        }
        let Ok(op) = Op::arbitrary(input) else { break };
        match op.action {
            Action::Broadcast(n) => turns(usize::from(n % 4) + 1),
            action if op.mid_pass => lock(&world).mid_pass.insert(0, action),
            action => lock(&world).apply(action),
        }
        lock(&world).check();
    }

    // The end: nothing more is published, every client connects (again: in the rooms of its
    // last socket), reads all it is sent and its task runs, until every socket is live, the
    // set has sent everything and every client has read all it was sent.
    let mut rounds = 0;
    loop {
        {
            let mut world = lock(&world);
            world.mid_pass.clear();
            for c in 0..CLIENTS {
                world.connect(c, u8::MAX, true);
                world.apply(Action::Read(c as u8, u8::MAX));
                world.apply(Action::Deliver(c as u8));
                world.apply(Action::Read(c as u8, u8::MAX));
            }
            world.check();
        }
        turns(2);
        let mut world = lock(&world);
        for c in 0..CLIENTS as u8 {
            world.apply(Action::Read(c, u8::MAX));
            // It notices now if the broadcaster took it out.
            world.apply(Action::Deliver(c));
        }
        world.check();
        let done = world.sent_through() == world.last()
            && world.clients.iter().all(|client| match &client.socket {
                None => false,
                Some(socket) => {
                    matches!(socket.phase, Phase::Live)
                        && socket.pending.is_empty()
                        && lock(&socket.buffer).queued.is_empty()
                }
            });
        if done {
            break;
        }
        rounds += 1;
        assert!(rounds < 10_000, "delivery does not converge");
    }
    {
        let world = lock(&world);
        for (c, client) in world.clients.iter().enumerate() {
            let Some(socket) = &client.socket else {
                continue;
            };
            for stay in socket.stays.iter().filter(|stay| stay.left.is_none()) {
                let ids = &world.room_ids[stay.room];
                for id in &ids[ids.partition_point(|&id| id <= stay.above)..] {
                    assert!(
                        client.read.binary_search(id).is_ok(),
                        "client {c} is caught up but misses {id} of room {} (above {})",
                        stay.room,
                        stay.above
                    );
                }
            }
        }
    }
    stop.cancel();
    RUNTIME
        .with(|rt| rt.block_on(broadcaster))
        .unwrap_or_else(|e| panic!("broadcaster: {e}"));
    // Break the cycle: members' sinks hold the world.
    let mut world = lock(&world);
    for client in &world.clients {
        if let Some(socket) = &client.socket {
            world.live.leave(socket.sid);
        }
    }
    world.clients.clear();
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
