//! Putting packets into a socket's bounded outgoing buffer without ever losing one that
//! matters.
//!
//! socketioxide's buffer (engine.io `max_buffer_size` packets) refuses a packet when full.
//! For chat messages that is fine: delivery waits and retries. But an ack is single-shot (a
//! refused `AckSender` is gone), and a ping that finds no room waits for one (engineioxide as
//! patched in `vendor/`; unpatched, it closed the connection). So every packet but a ping
//! leaves room behind it: chat messages and ephemeral events are queued only while
//! [`HEADROOM`] slots stay free after them (one for an ack, one for a ping), acks only while
//! one stays free (for the ping; engine.io has at most one ping in flight). The free space is
//! read from the buffer (`buffer_capacity`, a vendored patch); everyone who queues to a socket
//! holds its [`SendLock`], so between that read and the packets only a ping can come in, and
//! the headroom has room for it.
//!
//! The live broadcaster encodes each message once per batch ([`encode_chats`]) and queues the
//! same packet to every member ([`queue_encoded_leaving_headroom`]): the cost of a delivery is
//! then a reference-counted clone, not a serialization.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::ser::{Serialize, Serializer};
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::socket::EncodedEvent;
use socketioxide::{SendError, SocketError};

use super::live::PassBatch;
use crate::message::SharedMessage;
use crate::protocol::event::{CHAT_MESSAGE, MESSAGE_DELETED, ROOM_CHANGED};

/// Free slots chat delivery and ephemeral events leave for what must never be refused: an ack
/// and a ping.
pub const HEADROOM: usize = 2;

/// Free slots an ack leaves: one, for the heartbeat's ping.
const ACK_HEADROOM: usize = 1;

/// Held by whoever is queueing to one socket (the live broadcaster, the socket's delivery
/// task, an ack, an ephemeral event), from reading the free space to the last packet.
/// Without it, another sender could take the slot an ack found free before the ack is queued,
/// and the ack would be lost; with it, only engine.io's pings come in between, and the
/// headroom keeps a slot for them. Stored in the socket's extensions and beside its delivery state.
#[derive(Clone, Default)]
pub struct SendLock(Arc<Mutex<()>>);

impl SendLock {
    fn hold(&self) -> MutexGuard<'_, ()> {
        // Guards no data: a panic while held leaves nothing inconsistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a packet was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotQueued {
    /// Not enough free slots right now; try again later.
    Full,
    /// The socket is closed.
    Closed,
}

/// The third argument of a delivered `chat message`; tutorial clients ignore it.
#[derive(serde::Serialize)]
struct Meta<'a> {
    author: Option<&'a str>,
    /// The verified sender's user id, `null` for anonymous senders.
    user: Option<&'a str>,
    time: u64,
    room: &'a str,
}

/// A message id as a JSON string (`"17"`), written straight into the packet: the last
/// argument of a delivered `chat message` when connection state recovery is on, which the
/// client keeps as its offset.
struct IdString(u64);

impl Serialize for IdString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// The packets that fit in the socket's buffer while `headroom` slots stay free after them
/// (at least one, or `Full`); `Closed` if the socket is gone.
fn room(socket: &SocketRef, headroom: usize) -> Result<usize, NotQueued> {
    if !socket.connected() {
        return Err(NotQueued::Closed);
    }
    match socket.buffer_capacity().saturating_sub(headroom) {
        0 => Err(NotQueued::Full),
        room => Ok(room),
    }
}

/// `chat message (content, id, { author, user, time, room })`, with the id again as a string at the
/// end when `offsets` (connection state recovery); a message without a room is
/// `default_room`'s.
fn chat_args<'a>(
    message: &'a crate::message::Message,
    offsets: bool,
    default_room: &'a str,
) -> (&'a str, u64, Meta<'a>, Option<IdString>) {
    let meta = Meta {
        author: message.author.as_deref(),
        user: message.user.as_deref(),
        time: message.time,
        room: message.room.as_deref().unwrap_or(default_room),
    };
    let id = message.id.0;
    (&message.content, id, meta, offsets.then_some(IdString(id)))
}

/// Serializes a chat message's arguments as a list that ends where the offset is absent.
struct ChatArgs<'a>((&'a str, u64, Meta<'a>, Option<IdString>));

impl Serialize for ChatArgs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let (content, id, meta, offset) = &self.0;
        let mut tuple = serializer.serialize_tuple(3 + usize::from(offset.is_some()))?;
        tuple.serialize_element(content)?;
        tuple.serialize_element(id)?;
        tuple.serialize_element(meta)?;
        if let Some(offset) = offset {
            tuple.serialize_element(offset)?;
        }
        tuple.end()
    }
}

/// `message deleted ({ room, id, by, offset })`: message `id` of `room` was deleted by `by`;
/// `offset` is the id of the deletion itself (the offset a client resumes after).
#[derive(serde::Serialize)]
struct DeletedNotice<'a> {
    room: &'a str,
    id: u64,
    by: Option<&'a str>,
    offset: u64,
}

/// `room changed ({ room, action, user, by, role, private, readOnly, offset })`: an access
/// change of `room` (`action`: create, role, invite, kick, ban, unban, mute, unmute) about
/// `user`, made by `by`; `role` for `role`, `private` and `readOnly` for `create`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ChangedNotice<'a> {
    room: &'a str,
    action: &'a str,
    user: Option<&'a str>,
    by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    read_only: Option<bool>,
    offset: u64,
}

/// A room event's notice as event arguments: the notice, then (with connection state
/// recovery) the entry's id as a string, which the client keeps as its offset.
struct NoticeArgs<T>(T, Option<IdString>);

impl<T: Serialize> Serialize for NoticeArgs<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(1 + usize::from(self.1.is_some()))?;
        tuple.serialize_element(&self.0)?;
        if let Some(offset) = &self.1 {
            tuple.serialize_element(offset)?;
        }
        tuple.end()
    }
}

/// What an entry of the log is sent as: a chat message as `chat message (content, id, meta
/// [, "id"])`; a deletion as `message deleted`; an access change as `room changed`.
enum Packet<'a> {
    Chat(ChatArgs<'a>),
    Deleted(NoticeArgs<DeletedNotice<'a>>),
    Changed(NoticeArgs<ChangedNotice<'a>>),
}

impl<'a> Packet<'a> {
    fn of(message: &'a crate::message::Message, offsets: bool, default_room: &'a str) -> Self {
        use crate::access::RoomEvent;
        let Some(event) = &message.event else {
            return Packet::Chat(ChatArgs(chat_args(message, offsets, default_room)));
        };
        let room = message.room.as_deref().unwrap_or(default_room);
        let offset = message.id.0;
        let by = message.user.as_deref();
        let trailer = offsets.then_some(IdString(offset));
        match event {
            RoomEvent::Deleted { id, .. } => Packet::Deleted(NoticeArgs(
                DeletedNotice {
                    room,
                    id: *id,
                    by,
                    offset,
                },
                trailer,
            )),
            // A tombstone is never delivered (readers skip it); were one to come, it says
            // that its own id is deleted.
            RoomEvent::Erased { .. } => Packet::Deleted(NoticeArgs(
                DeletedNotice {
                    room,
                    id: offset,
                    by: None,
                    offset,
                },
                trailer,
            )),
            event => {
                let (private, read_only) = match event {
                    RoomEvent::Created { private, read_only } => (Some(*private), Some(*read_only)),
                    _ => (None, None),
                };
                Packet::Changed(NoticeArgs(
                    ChangedNotice {
                        room,
                        action: event.action().unwrap_or("change"),
                        user: event.target().or(by),
                        by,
                        role: match event {
                            RoomEvent::RoleSet { role, .. } => Some(role.name()),
                            _ => None,
                        },
                        private,
                        read_only,
                        offset,
                    },
                    trailer,
                ))
            }
        }
    }

    fn event(&self) -> &'static str {
        match self {
            Packet::Chat(_) => CHAT_MESSAGE,
            Packet::Deleted(_) => MESSAGE_DELETED,
            Packet::Changed(_) => ROOM_CHANGED,
        }
    }
}

/// A packet's arguments, as its variant writes them.
impl Serialize for Packet<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Packet::Chat(args) => args.serialize(serializer),
            Packet::Deleted(args) => args.serialize(serializer),
            Packet::Changed(args) => args.serialize(serializer),
        }
    }
}

/// Queues `message` (an entry of the log) to `socket` as its event.
fn emit_entry(
    socket: &SocketRef,
    message: &crate::message::Message,
    offsets: bool,
    default_room: &str,
) -> Result<(), SendError> {
    let packet = Packet::of(message, offsets, default_room);
    socket.emit(packet.event(), &packet)
}

/// `message` (an entry of the log) as its packet, encoded once for any socket.
fn encode_entry(
    socket: &SocketRef,
    message: &crate::message::Message,
    offsets: bool,
    default_room: &str,
) -> Option<EncodedEvent> {
    let packet = Packet::of(message, offsets, default_room);
    socket.encode_event(packet.event(), &packet).ok()
}

/// Queues each of `messages` as its event ([`emit_entry`]) for as many as fit
/// while `HEADROOM` slots stay free, in order; returns how many were queued (at least one), or
/// `Full` if not even the first fits. With `offsets`, each ends with its id as a string too
/// (`(content, id, meta, "id")`, for connection state recovery); a message without a room is
/// `default_room`'s.
pub fn emit_chats_leaving_headroom(
    socket: &SocketRef,
    lock: &SendLock,
    messages: &[SharedMessage],
    offsets: bool,
    default_room: &str,
) -> Result<usize, NotQueued> {
    let _sending = lock.hold();
    let room = room(socket, HEADROOM)?;
    let mut queued = 0;
    for message in messages.iter().take(room) {
        match emit_entry(socket, message, offsets, default_room) {
            Ok(()) => queued += 1,
            // The rest waits for the next call; what was queued stays queued.
            Err(_) if queued > 0 => break,
            Err(e) => return Err(classify(e)),
        }
    }
    if queued == 0 {
        return Err(NotQueued::Full);
    }
    Ok(queued)
}

/// Each of `messages` as its packet ([`emit_entry`]), encoded once for every socket of the
/// namespace (`socket` is any of them).
pub fn encode_chats(
    socket: &SocketRef,
    messages: &[SharedMessage],
    offsets: bool,
    default_room: &str,
) -> Option<Vec<EncodedEvent>> {
    messages
        .iter()
        .map(|message| encode_entry(socket, message, offsets, default_room))
        .collect()
}

/// Queues pre-encoded packets like [`emit_chats_leaving_headroom`] does: as many as fit
/// while `HEADROOM` slots stay free, in order, at least one or `Full`.
pub fn queue_encoded_leaving_headroom<'a>(
    socket: &SocketRef,
    lock: &SendLock,
    encoded: impl IntoIterator<Item = &'a EncodedEvent>,
) -> Result<usize, NotQueued> {
    let _sending = lock.hold();
    let room = room(socket, HEADROOM)?;
    let mut queued = 0;
    for event in encoded.into_iter().take(room) {
        match socket.try_send_encoded(event) {
            Ok(()) => queued += 1,
            Err(_) if queued > 0 => break,
            Err(SocketError::InternalChannelFull) => return Err(NotQueued::Full),
            Err(_) => return Err(NotQueued::Closed),
        }
    }
    if queued == 0 {
        return Err(NotQueued::Full);
    }
    Ok(queued)
}

/// Queues any event if at least `HEADROOM + 1` slots are free.
pub fn emit_leaving_headroom<T: Serialize + ?Sized>(
    socket: &SocketRef,
    lock: &SendLock,
    event: &str,
    data: &T,
) -> Result<(), NotQueued> {
    let _sending = lock.hold();
    room(socket, HEADROOM)?;
    socket.emit(event, data).map_err(classify)
}

/// Queues an ephemeral event (presence, typing) if there is room; when the client is
/// backlogged it is simply not sent (it is not worth an ack or a ping).
pub fn emit_ephemeral<T: Serialize + ?Sized>(socket: &SocketRef, event: &str, data: &T) -> bool {
    // Every admitted socket has one; a socket still being admitted gets no events yet.
    let Some(lock) = socket.extensions.get::<SendLock>() else {
        return false;
    };
    emit_leaving_headroom(socket, &lock, event, data).is_ok()
}

/// Queues `event (data)` to every one of `sockets` as [`emit_ephemeral`] does, encoded once
/// for all of them (a presence list serialized per socket would cost every tick O(sockets x
/// names)); returns to how many it was queued.
pub fn broadcast_ephemeral<T: Serialize + ?Sized>(
    sockets: &[SocketRef],
    event: &str,
    data: &T,
) -> usize {
    let Some(first) = sockets.first() else {
        return 0;
    };
    let Ok(encoded) = first.encode_event(event, data) else {
        return 0;
    };
    sockets
        .iter()
        .filter(|socket| {
            socket.extensions.get::<SendLock>().is_some_and(|lock| {
                queue_encoded_leaving_headroom(socket, &lock, std::slice::from_ref(&encoded))
                    .is_ok()
            })
        })
        .count()
}

/// Sends an ack if a slot stays free after it (for a ping); gives the sender back when the
/// buffer is too full so the caller can retry (a refused `AckSender::send` would consume it).
pub fn try_ack<T: Serialize + ?Sized>(
    socket: &SocketRef,
    lock: &SendLock,
    ack: AckSender,
    reply: &T,
) -> Result<(), (NotQueued, Option<AckSender>)> {
    // Nobody else queues to this socket while we hold its lock, so only the heartbeat
    // competes: of the slots found free here, a ping may take one before the next line, and
    // one is still there for the ack.
    let _sending = lock.hold();
    match room(socket, ACK_HEADROOM) {
        Ok(_) => ack.send(reply).map_err(|e| (classify(e), None)),
        Err(NotQueued::Full) => Err((NotQueued::Full, Some(ack))),
        Err(NotQueued::Closed) => Err((NotQueued::Closed, None)),
    }
}

/// Where the live broadcaster queues one socket's `chat message`s: under its send lock,
/// leaving the headroom.
#[derive(Clone)]
pub struct SocketOutbox {
    /// The socket.
    pub socket: SocketRef,
    /// Its send lock.
    pub lock: SendLock,
    /// Whether messages end with their id as a string (connection state recovery).
    pub offsets: bool,
    /// The default room's name, for the messages that carry none.
    pub default_room: Arc<str>,
}

impl SocketOutbox {
    /// Queues the batch's messages at `picks` as [`super::live::ChatSink::queue_chats`] says.
    pub fn queue_chats(&self, batch: &PassBatch, picks: &[usize]) -> Result<usize, NotQueued> {
        match batch.encoded(self.offsets, |messages| {
            encode_chats(&self.socket, messages, self.offsets, &self.default_room)
        }) {
            Some(encoded) => queue_encoded_leaving_headroom(
                &self.socket,
                &self.lock,
                picks.iter().map(|&i| &encoded[i]),
            ),
            // Encoding cannot fail for our own values; if it ever did, serialize per socket.
            None => {
                let messages: Vec<SharedMessage> =
                    picks.iter().map(|&i| batch.messages()[i].clone()).collect();
                emit_chats_leaving_headroom(
                    &self.socket,
                    &self.lock,
                    &messages,
                    self.offsets,
                    &self.default_room,
                )
            }
        }
    }
}

fn classify(error: SendError) -> NotQueued {
    match error {
        SendError::Socket(SocketError::InternalChannelFull) => NotQueued::Full,
        _ => NotQueued::Closed,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use socketioxide::extract::AckSender;
    use socketioxide::{SocketIo, SocketIoBuilder};
    use tokio::sync::mpsc;

    use super::*;
    use crate::message::{Message, MessageId};

    const BUFFER: usize = 8;

    /// A socket with nothing read by its client, whose outgoing buffer has exactly `free`
    /// slots left, and a way to get ack senders of it.
    struct Rig {
        socket: SocketRef,
        lock: SendLock,
        /// Packets the "client" has not read (the dummy socket's pipe behind the buffer).
        from_server: mpsc::Receiver<engineioxide::Packet>,
        to_server: mpsc::Sender<engineioxide::Packet>,
        acks: mpsc::UnboundedReceiver<AckSender>,
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    impl Rig {
        async fn new() -> Self {
            let (_svc, io): (_, SocketIo) =
                SocketIoBuilder::new().max_buffer_size(BUFFER).build_svc();
            let (sockets_tx, mut sockets) = mpsc::unbounded_channel();
            let (acks_tx, acks) = mpsc::unbounded_channel();
            io.ns("/", async move |socket: SocketRef| {
                let acks_tx = acks_tx.clone();
                socket.on("ask", async move |ack: AckSender| {
                    let _ = acks_tx.send(ack);
                });
                let _ = sockets_tx.send(socket);
            });
            let (to_server, mut from_server) = io.new_dummy_sock("/", ()).await;
            let socket = sockets.recv().await.expect("connected");
            // CONNECT, read.
            from_server.recv().await.expect("connect packet");
            Self {
                socket,
                lock: SendLock::default(),
                from_server,
                to_server,
                acks,
            }
        }

        /// Fills everything behind the buffer, then the buffer, then lets the client read
        /// `free` packets: the buffer then has exactly `free` slots left.
        async fn leave_free(&mut self, free: usize) {
            loop {
                while self.socket.emit("filler", &()).is_ok() {}
                settle().await;
                if self.socket.emit("filler", &()).is_err() {
                    break;
                }
            }
            for _ in 0..free {
                self.from_server.recv().await.expect("a queued packet");
            }
            settle().await;
        }

        async fn ack_sender(&mut self) -> AckSender {
            let ask = engineioxide::Packet::Message(r#"21["ask"]"#.into());
            self.to_server.send(ask).await.expect("the client sends");
            self.acks.recv().await.expect("an ack sender")
        }
    }

    fn messages(n: u64) -> Vec<SharedMessage> {
        (1..=n)
            .map(|id| {
                Arc::new(Message {
                    id: MessageId(id),
                    content: format!("m{id}"),
                    author: None,
                    user: None,
                    event: None,
                    time: 0,
                    room: None,
                })
            })
            .collect()
    }

    #[tokio::test]
    async fn chat_messages_leave_the_headroom_free() {
        let mut rig = Rig::new().await;
        rig.leave_free(5).await;
        let queued =
            emit_chats_leaving_headroom(&rig.socket, &rig.lock, &messages(10), false, "general");
        assert_eq!(
            queued,
            Ok(5 - HEADROOM),
            "a run stops with the headroom free"
        );
        assert_eq!(
            emit_chats_leaving_headroom(&rig.socket, &rig.lock, &messages(1), true, "general"),
            Err(NotQueued::Full)
        );
        assert_eq!(
            emit_leaving_headroom(&rig.socket, &rig.lock, "sync", &()),
            Err(NotQueued::Full)
        );
        rig.socket.extensions.insert(rig.lock.clone());
        assert!(!emit_ephemeral(&rig.socket, "presence", &()));
        // The two slots are really there: one ack, one ping.
        assert!(rig.socket.emit("ack-stand-in", &()).is_ok());
        assert!(rig.socket.emit("ping-stand-in", &()).is_ok());
        assert!(rig.socket.emit("one-too-many", &()).is_err());
    }

    #[tokio::test]
    async fn encoded_once_is_what_emit_sends_and_leaves_the_same_headroom() {
        let mut rig = Rig::new().await;
        let batch = messages(10);
        for offsets in [false, true] {
            assert_eq!(
                emit_chats_leaving_headroom(
                    &rig.socket,
                    &rig.lock,
                    &batch[..1],
                    offsets,
                    "general"
                ),
                Ok(1)
            );
            let encoded =
                encode_chats(&rig.socket, &batch[..1], offsets, "general").expect("encodes");
            assert_eq!(
                queue_encoded_leaving_headroom(&rig.socket, &rig.lock, &encoded),
                Ok(1)
            );
            let emitted = rig.from_server.recv().await.expect("the emitted packet");
            let queued = rig.from_server.recv().await.expect("the encoded packet");
            assert_eq!(format!("{emitted:?}"), format!("{queued:?}"));
            let text = format!("{queued:?}");
            assert!(text.contains("m1"), "{text}");
            assert_eq!(
                text.contains(r#"\"1\""#),
                offsets,
                "the offset ends it: {text}"
            );
        }
        rig.leave_free(5).await;
        let encoded = encode_chats(&rig.socket, &batch, true, "general").expect("encodes");
        assert_eq!(
            queue_encoded_leaving_headroom(&rig.socket, &rig.lock, &encoded),
            Ok(5 - HEADROOM)
        );
        assert_eq!(
            queue_encoded_leaving_headroom(&rig.socket, &rig.lock, &encoded),
            Err(NotQueued::Full)
        );
    }

    #[tokio::test]
    async fn an_ack_leaves_one_slot_and_comes_back_when_it_cannot() {
        let mut rig = Rig::new().await;
        let (first, second) = (rig.ack_sender().await, rig.ack_sender().await);
        rig.leave_free(2).await;
        assert!(try_ack(&rig.socket, &rig.lock, first, &"one").is_ok());
        // One slot left, for the ping: the second ack waits, its sender is given back.
        let outcome = try_ack(&rig.socket, &rig.lock, second, &"two");
        assert!(
            matches!(outcome, Err((NotQueued::Full, Some(_)))),
            "expected Full with the sender back"
        );
        assert!(rig.socket.emit("ping-stand-in", &()).is_ok());
    }

    #[tokio::test]
    async fn a_closed_socket_is_reported_as_closed() {
        let mut rig = Rig::new().await;
        let ack = rig.ack_sender().await;
        rig.socket.clone().disconnect().expect("disconnect");
        settle().await;
        assert_eq!(
            emit_chats_leaving_headroom(&rig.socket, &rig.lock, &messages(1), true, "general"),
            Err(NotQueued::Closed)
        );
        assert!(matches!(
            try_ack(&rig.socket, &rig.lock, ack, &"late"),
            Err((NotQueued::Closed, _))
        ));
    }
}
