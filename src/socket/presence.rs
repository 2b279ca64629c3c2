//! The ephemeral events, room by room: presence (who is in a room, who came and went),
//! renames, typing, nickname changes. The rosters themselves are [`super::roster::Rosters`];
//! this is their socket glue.
//!
//! Presence costs O(members) per second at worst for each room that changed, however many
//! clients connect or leave: joins and leaves only mark their room's roster, and one task
//! sends each changed room's snapshot, with the names that came and went, to that room's
//! members at most once per [`PRESENCE_INTERVAL`]. A socket that enters a room gets its
//! current snapshot at once. Every event names its room (`presence ({ room, ... })`,
//! `typing ({ room, nickname, typing })`); `typing (bool)` from a client means the default
//! room.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use tokio_util::sync::CancellationToken;

use crate::delivery::{RoomKey, Subscription};
use crate::every::Every;

use super::rate::{RateLimit, TokenBucket, Verdict};
use super::roster::{NodeRoster, Rosters, Snapshot};
use super::{ChatState, Connection, send_ack};
use crate::delivery::outbox::{broadcast_ephemeral, emit_ephemeral};
use crate::protocol::event::{PRESENCE, TYPING, USER_RENAMED};
use crate::protocol::{EventArgs, NicknameError, validate_nickname};

/// How often the rosters are checked for changes and each changed room's sent to its members.
/// Coalescing keeps a connection storm from costing one broadcast per connection.
pub const PRESENCE_INTERVAL: Duration = Duration::from_secs(1);

/// Typing notices a client may pass on: about two per second.
const TYPING_LIMIT: RateLimit = RateLimit {
    per_second: 2.0,
    burst: 2.0,
};

/// The shared rosters.
#[derive(Clone, Default)]
pub struct SharedRoster(Arc<Mutex<Rosters>>);

impl SharedRoster {
    fn lock(&self) -> MutexGuard<'_, Rosters> {
        // Roster updates are single map operations: a panic cannot leave one half done.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sockets in `room`, on every node.
    pub fn count(&self, room: &RoomKey) -> usize {
        self.lock().count(room)
    }

    /// Rooms with anyone in them, on any node.
    pub fn rooms(&self) -> Vec<RoomKey> {
        self.lock().rooms().cloned().collect()
    }

    /// At least as many rooms as [`SharedRoster::rooms`] lists (see [`Rosters::room_count`]).
    pub fn room_count(&self) -> usize {
        self.lock().room_count()
    }

    /// Up to `limit` names of rooms with anyone in them, the default room apart, in order
    /// after `after`.
    pub fn names_after(&self, after: &str, limit: usize) -> Vec<String> {
        self.lock().names_after(after, limit)
    }

    /// This node's part of every room's roster (cluster mode tells the other nodes).
    pub fn local(&self) -> std::collections::BTreeMap<String, NodeRoster> {
        self.lock().local()
    }

    /// Another node's part, room by room, as it just said.
    pub fn set_remote(&self, node: &str, rooms: std::collections::BTreeMap<String, NodeRoster>) {
        self.lock().set_remote(node, rooms, Instant::now());
    }

    /// Forgets the nodes not heard of for `ttl`.
    pub fn expire_remote(&self, ttl: Duration) {
        if let Some(before) = Instant::now().checked_sub(ttl) {
            self.lock().expire_remote(before);
        }
    }
}

/// Passes the ephemeral events of this node's clients (typing, renames) to the other nodes of
/// a cluster, which show them to their own clients in `rooms`.
pub trait Relay: Send + Sync {
    /// Sends `event (data)` to the other nodes' clients in any of `rooms` (names).
    fn relay(&self, event: &'static str, data: Value, rooms: Vec<String>);
}

/// Per-socket typing state (in the socket's [`Connection`]): its allowance of notices, and
/// the rooms it is typing in.
pub(super) struct Typing(Mutex<TypingState>);

pub(super) struct TypingState {
    bucket: TokenBucket,
    rooms: HashSet<RoomKey>,
}

impl Typing {
    pub(super) fn new() -> Self {
        Self(Mutex::new(TypingState {
            bucket: TokenBucket::new(TYPING_LIMIT, Instant::now()),
            rooms: HashSet::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, TypingState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Serialize)]
struct TypingNotice<'a> {
    room: &'a str,
    nickname: &'a str,
    typing: bool,
}

#[derive(Serialize)]
struct Renamed<'a> {
    from: &'a str,
    to: &'a str,
}

/// A room's presence: its name, then the snapshot's fields.
#[derive(Serialize)]
struct RoomPresence<'a> {
    room: &'a str,
    #[serde(flatten)]
    snapshot: &'a Snapshot,
}

/// Sends an ephemeral event to the other sockets in `rooms` (each once), on this node and,
/// through the relay, on the others.
fn to_others<T: Serialize + ?Sized>(
    socket: &SocketRef,
    state: &ChatState,
    rooms: Vec<String>,
    event: &'static str,
    data: &T,
) {
    if rooms.is_empty() {
        return;
    }
    broadcast_ephemeral(&socket.to(rooms.clone()).sockets(), event, data);
    if let Some(relay) = state.relay.as_deref()
        && let Ok(data) = serde_json::to_value(data)
    {
        relay.relay(event, data, rooms);
    }
}

/// A socket listed in the rosters by admission, before the client learns it is connected: the
/// client may send `typing` the moment it is told, before the connect handler runs, and that
/// notice must find its name. Dropped before [`Listed::connected`] (the socket never
/// connected, so no disconnect handler will run), it unlists the socket.
pub(super) struct Listed {
    roster: SharedRoster,
    /// Cleared once connected: from then on the disconnect handler unlists it.
    sid: Option<String>,
    rooms: Vec<RoomKey>,
}

/// Lists a socket about to be connected in `rooms` (their members hear of it on the next
/// tick).
pub(super) fn list(
    roster: &SharedRoster,
    socket: &SocketRef,
    nickname: Option<String>,
    rooms: Vec<RoomKey>,
) -> Listed {
    roster.lock().connect(socket.id.as_str(), nickname, &rooms);
    Listed {
        roster: roster.clone(),
        sid: Some(socket.id.to_string()),
        rooms,
    }
}

impl Listed {
    /// The socket is connected: tell it who is in each of its rooms.
    pub(super) fn connected(mut self, socket: &SocketRef, state: &ChatState) {
        self.sid = None;
        for room in &self.rooms {
            let snapshot = self.roster.lock().snapshot(room);
            let presence = RoomPresence {
                room: state.rooms.name(room),
                snapshot: &snapshot,
            };
            emit_ephemeral(socket, PRESENCE, &presence);
        }
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        if let Some(sid) = self.sid.take() {
            self.roster.lock().disconnect(&sid, &self.rooms);
        }
    }
}

/// A socket entered `room` (a `join`): put it in the room's Socket.IO room (for typing),
/// list it there and tell it who is in it; unless, by now, it has left the room again or
/// disconnected (the join awaited its session's save, and a `leave` or the disconnect ran
/// meanwhile). Checked under the roster's lock, which `leave` (after taking the room out of
/// `subscription`) and the disconnect take too, so either they come after this and undo it,
/// or this sees them and does nothing.
pub(super) fn entered(
    socket: &SocketRef,
    state: &ChatState,
    subscription: &Subscription,
    room: &RoomKey,
) {
    let name = state.rooms.name(room);
    let snapshot = {
        let mut rosters = state.roster.lock();
        if !subscription.contains(room) || !rosters.enter(socket.id.as_str(), room) {
            return;
        }
        socket.join(name.to_string());
        rosters.snapshot(room)
    };
    let presence = RoomPresence {
        room: name,
        snapshot: &snapshot,
    };
    emit_ephemeral(socket, PRESENCE, &presence);
}

/// A socket left `room` (a `leave`): unlist it there, and end its typing there.
pub(super) fn exited(
    socket: &SocketRef,
    state: &ChatState,
    connection: &Connection,
    room: &RoomKey,
) {
    let nickname = state.roster.lock().exit(socket.id.as_str(), room);
    let was_typing = connection.typing.lock().rooms.remove(room);
    if let (Some(name), true) = (nickname, was_typing) {
        let room = state.rooms.name(room);
        let notice = TypingNotice {
            room,
            nickname: &name,
            typing: false,
        };
        to_others(socket, state, vec![room.to_string()], TYPING, &notice);
    }
}

/// A socket disconnected from `rooms`: unlist it (their members hear of it on the next tick)
/// and end its typing.
pub(super) fn left(socket: &SocketRef, state: &ChatState, typing: &Typing, rooms: &[RoomKey]) {
    let nickname = state.roster.lock().disconnect(socket.id.as_str(), rooms);
    let typing_in = std::mem::take(&mut typing.lock().rooms);
    let Some(name) = nickname else { return };
    for room in typing_in {
        let room = state.rooms.name(&room);
        let notice = TypingNotice {
            room,
            nickname: &name,
            typing: false,
        };
        to_others(socket, state, vec![room.to_string()], TYPING, &notice);
    }
}

/// `typing (bool)` (the default room) or `typing ({ room, typing })`: relayed to the room's
/// others, for named sockets in that room, about twice a second at most.
pub(super) async fn on_typing(
    socket: SocketRef,
    TryData(args): TryData<EventArgs>,
    State(state): State<ChatState>,
    Extension(connection): Extension<Connection>,
) {
    let Ok(EventArgs(args)) = args else { return };
    let (room, now_typing) = match args.first() {
        Some(Value::Bool(typing)) => (None, *typing),
        Some(Value::Object(notice)) => {
            let Some(Value::Bool(typing)) = notice.get("typing") else {
                return;
            };
            let Ok(room) = state.rooms.key_of(notice.get("room")) else {
                return;
            };
            (room, *typing)
        }
        _ => return,
    };
    if !connection.subscription.contains(&room) {
        return;
    }
    let Some(name) = state
        .roster
        .lock()
        .nickname(socket.id.as_str())
        .map(String::from)
    else {
        return;
    };
    {
        let mut typing = connection.typing.lock();
        let was = typing.rooms.contains(&room);
        if let Verdict::Limited { .. } = typing.bucket.take(Instant::now()) {
            // Except for "stopped typing", which must not be lost to the limit.
            if now_typing || !was {
                return;
            }
        }
        if now_typing {
            typing.rooms.insert(room.clone());
        } else {
            typing.rooms.remove(&room);
        }
    }
    let room = state.rooms.name(&room);
    let notice = TypingNotice {
        room,
        nickname: &name,
        typing: now_typing,
    };
    to_others(&socket, &state, vec![room.to_string()], TYPING, &notice);
}

/// `nickname (name, ack)`: change the nickname shown in presence, in every room of the
/// socket. Counts against the connection's rate limit; the ack is queued like every ack
/// (under the socket's send lock, leaving a slot for the heartbeat).
pub(super) fn on_nickname(
    socket: SocketRef,
    TryData(args): TryData<EventArgs>,
    ack: AckSender,
    State(state): State<ChatState>,
    Extension(connection): Extension<Connection>,
) -> impl std::future::Future<Output = ()> {
    use futures_util::future::Either;
    match connection.take_allowance() {
        Ok(()) => Either::Left(rename(socket, args, ack, state, connection)),
        Err(refusal) => Either::Right(super::refuse(&socket, ack, refusal, &state, &connection)),
    }
}

async fn rename(
    socket: SocketRef,
    args: Result<EventArgs, socketioxide::ParserError>,
    ack: AckSender,
    state: ChatState,
    connection: Connection,
) {
    if connection.verified.is_some() {
        let reply = json!({ "error": super::identity::NAME_FROM_TOKEN });
        send_ack(&socket, ack, &reply, &connection).await;
        return;
    }
    let name = match args.as_ref().ok().and_then(|EventArgs(a)| a.first()) {
        Some(value) => validate_nickname(value),
        None => Err(NicknameError::NotString("nothing")),
    };
    let reply = match name {
        Ok(name) => {
            let rooms: Vec<RoomKey> = connection
                .subscription
                .rooms()
                .into_iter()
                .map(|(room, _)| room)
                .collect();
            let old = state
                .roster
                .lock()
                .rename(socket.id.as_str(), name.clone(), &rooms);
            if let Some(old) = old
                && old != name
            {
                let renamed = Renamed {
                    from: &old,
                    to: &name,
                };
                let names = rooms
                    .iter()
                    .map(|room| state.rooms.name(room).to_string())
                    .collect();
                to_others(&socket, &state, names, USER_RENAMED, &renamed);
            }
            json!({ "ok": true })
        }
        Err(e) => json!({ "error": format!("invalid nickname: {e}") }),
    };
    send_ack(&socket, ack, &reply, &connection).await;
}

/// Sends `event (data)` to every socket of this node in any of `rooms` (an event relayed from
/// another node).
pub fn to_rooms(io: &SocketIo, rooms: Vec<String>, event: &str, data: &Value) {
    if !rooms.is_empty() {
        broadcast_ephemeral(&super::room_sockets(io, rooms), event, data);
    }
}

/// Sends each changed room's roster, with who came and went, to its members, at most once per
/// interval.
pub async fn broadcast_presence(
    io: SocketIo,
    roster: SharedRoster,
    rooms: super::rooms::Rooms,
    stop: CancellationToken,
) {
    let mut every = Every::new(PRESENCE_INTERVAL, stop);
    while every.tick().await {
        let changes = roster.lock().take_changes();
        for (room, snapshot) in changes {
            let name = rooms.name(&room);
            let presence = RoomPresence {
                room: name,
                snapshot: &snapshot,
            };
            broadcast_ephemeral(
                &super::room_sockets(&io, vec![name.to_string()]),
                PRESENCE,
                &presence,
            );
        }
    }
}
