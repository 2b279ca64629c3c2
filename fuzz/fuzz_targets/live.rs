//! The live set's join rule and the emitted cursor, with the real hub, live set and
//! broadcaster on a current-thread runtime, and sockets simulated the way
//! `delivery::socket_task` drives them: catch up to `through` from what is stored, try to
//! join, and catch up again when told they fell behind. Clients read slowly (bounded buffers),
//! disconnect (losing what they had not read) and reconnect from their last id; messages are
//! published between and in the middle of the broadcaster's passes, and the broadcaster may
//! lag behind the hub.
//!
//! After every step: each socket has been queued a gap-free, duplicate-free run of ids from
//! its start, and its emitted cursor is the last of them; each client has read a gap-free,
//! duplicate-free run from id 1; an ack waiting on the cursor is woken exactly when its id has
//! been queued. At the end, once the clients read everything and nothing more is published,
//! every connected client has every message.
#![no_main]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use socketioxide::socket::Sid;
use tidings::fuzzing::EmittedCursor;
use tidings::fuzzing::{ChatSink, LiveSet, Member, PassBatch, Refused};
use tidings::fuzzing::NotQueued;
use tidings::fuzzing::{Hub, Subscription, TailLimits};
use tidings::message::{Message, MessageId, SharedMessage};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const CLIENTS: usize = 3;
const MAX_OPS: usize = 96;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Action {
    /// The writer publishes `n` new messages.
    Publish(u8),
    /// The broadcaster gets `n` turns.
    Broadcast(u8),
    /// A client's delivery task gets a turn (a catch-up batch, or a try to join, or noticing
    /// it fell behind).
    Deliver(u8),
    /// A client reads up to `n` queued messages, making room.
    Read(u8, u8),
    /// A client's socket closes; its task leaves the live set now or on its next turn.
    Close(u8, bool),
    /// A client connects again (from the last id it read).
    Connect(u8),
    /// An ack for the `k`-th next message of a client starts waiting on its cursor.
    Wait(u8, u8),
}

#[derive(Debug, Clone, Copy, Arbitrary)]
struct Op {
    action: Action,
    /// Run it inside the broadcaster's next pass (while it queues to some member) instead.
    mid_pass: bool,
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
    buffer: Arc<Mutex<Buffer>>,
    world: Arc<Mutex<World>>,
    fell_behind: Arc<Notify>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ChatSink for Sink {
    fn queue_chats(&self, batch: &PassBatch, picks: &[usize]) -> Result<usize, NotQueued> {
        // The broadcaster is mid-pass: run what the input scheduled for this moment.
        if let Ok(mut world) = self.world.try_lock()
            && let Some(op) = world.mid_pass.pop()
        {
            world.apply(op);
        }
        let picked: Vec<SharedMessage> =
            picks.iter().map(|&i| batch.messages()[i].clone()).collect();
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

struct Socket {
    sid: Sid,
    start: u64,
    buffer: Arc<Mutex<Buffer>>,
    emitted: Arc<EmittedCursor>,
    fell_behind: Arc<Notify>,
    /// The catch-up reader's cursor.
    cursor: u64,
    phase: Phase,
    /// Closed, but its task has not left the live set yet.
    closing: bool,
    acks: Vec<Ack>,
}

#[derive(Default)]
struct Client {
    read: Vec<u64>,
    socket: Option<Socket>,
}

struct World {
    hub: Arc<Hub>,
    live: Arc<LiveSet<Sink>>,
    /// Every published message (the store): `stored[i]` has id `i + 1`.
    stored: Vec<SharedMessage>,
    clients: Vec<Client>,
    batch: usize,
    capacity: usize,
    mid_pass: Vec<Action>,
    myself: Option<std::sync::Weak<Mutex<World>>>,
}

fn message(id: u64) -> SharedMessage {
    Arc::new(Message {
        id: MessageId(id),
        content: format!("m{id}"),
        author: None,
        time: id,
        room: None,
    })
}

fn poll_once(future: Pin<&mut (dyn Future<Output = ()> + Send)>) -> bool {
    let mut context = Context::from_waker(Waker::noop());
    matches!(future.poll(&mut context), Poll::Ready(()))
}

impl World {
    fn last(&self) -> u64 {
        self.stored.len() as u64
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Publish(n) => {
                let first = self.last() + 1;
                let fresh: Vec<SharedMessage> =
                    (first..first + u64::from(n % 8) + 1).map(message).collect();
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
                        client.socket = None;
                    }
                }
            }
            Action::Connect(c) => {
                let capacity = self.capacity;
                let replay_until = self.last();
                let client = &mut self.clients[usize::from(c) % CLIENTS];
                if client.socket.is_none() {
                    let start = client.read.last().copied().unwrap_or(0);
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
                        cursor: start,
                        phase: Phase::CatchingUp {
                            through: replay_until,
                        },
                        closing: false,
                        acks: Vec::new(),
                    });
                }
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
        }
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
            self.clients[c].socket = None;
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
                if socket.cursor < through {
                    // A batch of what is stored after the cursor, queued as room allows (the
                    // real task waits for room; here it comes back on its next turn).
                    let from = usize::try_from(socket.cursor).unwrap_or(usize::MAX);
                    let to = usize::try_from(through).unwrap_or(usize::MAX);
                    let batch = &self.stored[from..to.min(from + self.batch)];
                    if let Ok(n) = queue(&socket.buffer, batch) {
                        let last = batch[n - 1].id.0;
                        socket.emitted.advance(last);
                        socket.cursor = last;
                    }
                    return;
                }
                let member = Member {
                    sid: socket.sid,
                    // Every socket here is in the default room, as every message.
                    subscription: Arc::new(Subscription::new([None])),
                    sink: Sink {
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

    fn check(&mut self) {
        let last = self.last();
        for (c, client) in self.clients.iter_mut().enumerate() {
            let contiguous =
                |ids: &[u64], from: u64| ids.iter().zip(from + 1..).all(|(got, want)| *got == want);
            assert!(
                contiguous(&client.read, 0),
                "client {c} read {:?}: a gap or a duplicate",
                client.read
            );
            let Some(socket) = &mut client.socket else {
                continue;
            };
            let buffer = lock(&socket.buffer);
            assert!(
                contiguous(&buffer.history, socket.start),
                "client {c}'s socket from {} was queued {:?}: a gap or a duplicate",
                socket.start,
                buffer.history
            );
            let emitted = socket.emitted.get();
            let queued_through = buffer.history.last().copied().unwrap_or(socket.start);
            assert_eq!(emitted, queued_through, "client {c}'s emitted cursor");
            assert!(emitted <= last, "emitted {emitted} was never published");
            drop(buffer);
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
    let hub_capacity = usize::from(u8::arbitrary(input)? % 8) + 1;
    let capacity = usize::from(u8::arbitrary(input)? % 8) + 1;
    let batch = usize::from(u8::arbitrary(input)? % 4) + 1;
    let stored: Vec<SharedMessage> = (1..=initial).map(message).collect();
    let tail = TailLimits {
        max_messages: 16,
        max_bytes: 1 << 16,
    };
    let hub = Arc::new(Hub::new(
        initial,
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
        clients: (0..CLIENTS).map(|_| Client::default()).collect(),
        batch,
        capacity,
        mid_pass: Vec::new(),
        myself: None,
    }));
    lock(&world).myself = Some(Arc::downgrade(&world));
    for c in 0..CLIENTS as u8 {
        lock(&world).apply(Action::Connect(c));
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

    // The end: nothing more is published, every client connects (again), reads all it is
    // sent and its task runs: every client ends with every message.
    let mut rounds = 0;
    loop {
        {
            let mut world = lock(&world);
            world.mid_pass.clear();
            for c in 0..CLIENTS as u8 {
                world.apply(Action::Connect(c));
                world.apply(Action::Read(c, u8::MAX));
                world.apply(Action::Deliver(c));
                world.apply(Action::Read(c, u8::MAX));
            }
            world.check();
        }
        turns(2);
        let world = lock(&world);
        let last = world.last();
        let done = world.clients.iter().all(|client| match &client.socket {
            None => false,
            Some(socket) => {
                matches!(socket.phase, Phase::Live)
                    && socket.emitted.get() == last
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
            assert_eq!(
                client.read.len() as u64,
                world.last(),
                "client {c} is caught up but misses messages"
            );
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
