//! Rooms at the socket layer: names to keys and back (the default room's messages carry no
//! name), the limits (`--max-rooms-per-connection`, `--max-rooms`), and the `join`, `leave`
//! and `rooms` events.
//!
//! - `join (room, ack)` → `{ room, last }`: the socket gets the room's messages above `last`
//!   live, and reads older ones with `history ({ room, before: last + 1 })`. Saved with its
//!   recovery session before the ack.
//! - `leave (room, ack)` → `{ ok: true }`: nothing more of the room; saved before the ack.
//! - `rooms (ack)` / `rooms ({ after }, ack)` → `{ rooms: [{ name, members, last }] }`, 200
//!   per page by name.
//!
//! Each is a request against the connection's rate limit. The access rules a join passes (and a
//! post, a history read, a connect's rooms: [`may_join`], [`may_post`]) are checked here too.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::Either;
use serde::Serialize;
use serde_json::{Value, json};
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};

use super::presence::SharedRoster;
use super::{ChatState, Connection, refuse, send_ack};
use crate::access::Denied;
use crate::delivery::{Hub, RoomKey};
use crate::metrics;
use crate::protocol::EventArgs;
use crate::protocol::room::{RoomName, RoomNameError};

/// Most rooms a `rooms` answer lists.
pub const DIRECTORY_PAGE: usize = 200;

/// How long a count of the rooms that exist stands in for a new one (see
/// [`Rooms::admit_new_room`]).
const CENSUS_EVERY: Duration = Duration::from_secs(1);

/// The default room's name and the limits.
#[derive(Debug, Clone)]
pub struct Rooms {
    /// The default room's name.
    default: Arc<str>,
    /// `--max-rooms-per-connection`.
    pub max_per_connection: usize,
    /// `--max-rooms`.
    pub max_rooms: usize,
    /// The last count of the rooms that exist, for joins near `--max-rooms`.
    census: Arc<Mutex<Census>>,
}

/// A count of the rooms that exist, and the rooms admitted since.
#[derive(Debug, Default)]
struct Census {
    taken: Option<Instant>,
    rooms: usize,
    admitted_since: usize,
}

impl Rooms {
    /// Rooms with `default` as the default room's name.
    pub fn new(default: &str, max_per_connection: usize, max_rooms: usize) -> Self {
        Self {
            default: default.into(),
            max_per_connection,
            max_rooms,
            census: Arc::default(),
        }
    }

    /// The default room's name.
    pub fn default_name(&self) -> &Arc<str> {
        &self.default
    }

    /// The key of room `name` (`None` for the default room).
    pub fn key(&self, name: &RoomName) -> RoomKey {
        (name.as_str() != &*self.default).then(|| name.to_string())
    }

    /// The name of the room keyed `key`.
    pub fn name<'a>(&'a self, key: &'a RoomKey) -> &'a str {
        key.as_deref().unwrap_or(&self.default)
    }

    /// The key of the room an event names in its `room` field, the default room when it
    /// names none.
    pub fn key_of(&self, room: Option<&Value>) -> Result<RoomKey, RoomNameError> {
        match room {
            None | Some(Value::Null) => Ok(None),
            Some(value) => RoomName::from_value(value).map(|name| self.key(&name)),
        }
    }

    /// Whether room `key` exists: it holds messages or room events, has members, or has an
    /// access state of its own.
    pub fn exists(&self, state: &ChatState, key: &RoomKey) -> bool {
        state.hub.room_last(key) > 0 || state.roster.count(key) > 0 || state.hub.access.has(key)
    }

    /// Whether `new` more rooms may come into existence under `--max-rooms`; the error is
    /// how many exist. Cheap while the rooms with messages plus the rooms with members (at
    /// least as many as exist) stay under the limit; near it, the rooms are counted exactly
    /// at most once a [`CENSUS_EVERY`], and the rooms admitted since are added to that count:
    /// a join never pays for a pass over every room, and the limit holds (within the joins
    /// running at the same moment).
    pub fn admit_new_rooms(&self, state: &ChatState, new: usize) -> Result<(), usize> {
        if state.hub.room_count() + state.roster.room_count() + new <= self.max_rooms {
            return Ok(());
        }
        let mut census = self.census.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if census
            .taken
            .is_none_or(|taken| now.duration_since(taken) >= CENSUS_EVERY)
        {
            *census = Census {
                taken: Some(now),
                rooms: self.count(state),
                admitted_since: 0,
            };
        }
        let rooms = census.rooms + census.admitted_since;
        if rooms + new > self.max_rooms {
            return Err(rooms);
        }
        census.admitted_since += new;
        Ok(())
    }

    fn count(&self, state: &ChatState) -> usize {
        count_rooms(&state.hub, &state.roster)
    }
}

/// How many rooms exist: those that hold messages and those with members only (a pass over
/// the rooms with members).
pub fn count_rooms(hub: &Hub, roster: &SharedRoster) -> usize {
    let members_only = roster
        .rooms()
        .into_iter()
        .filter(|room| hub.room_last(room) == 0)
        .count();
    hub.room_count() + members_only
}

/// The connection's verified user id; `None` for an anonymous one.
pub(super) fn actor(connection: &Connection) -> Option<&str> {
    connection.verified.as_ref().map(|v| v.user.as_str())
}

/// Whether the connection may join (or stay in) room `key`: always with `--auth off`.
pub(super) fn may_join(
    state: &ChatState,
    connection: &Connection,
    key: &RoomKey,
) -> Result<(), Denied> {
    may_join_as(state, actor(connection), key)
}

/// Whether `user` (`None`: anonymous) may join room `key`: always with `--auth off`.
pub(super) fn may_join_as(
    state: &ChatState,
    user: Option<&str>,
    key: &RoomKey,
) -> Result<(), Denied> {
    if !state.auth.is_on() {
        return Ok(());
    }
    state
        .hub
        .access
        .with(key, |access| access.may_join(user, &state.auth.admins))
}

/// Whether the connection may post in room `key` (it is in it): always with `--auth off`.
pub(super) fn may_post(
    state: &ChatState,
    connection: &Connection,
    key: &RoomKey,
) -> Result<(), Denied> {
    if !state.auth.is_on() {
        return Ok(());
    }
    state.hub.access.with(key, |access| {
        access.may_post(actor(connection), &state.auth.admins)
    })
}

/// Why a room could not be joined; the text is the ack's `error`.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// Not a valid room name.
    #[error(transparent)]
    Name(#[from] RoomNameError),
    /// The connection is in as many rooms as it may be.
    #[error("too many rooms: this connection is in {0}, the limit")]
    PerConnection(usize),
    /// The server has as many rooms as it may have.
    #[error("too many rooms: the server has {0}, the limit")]
    Server(usize),
    /// The join could not be saved with the recovery session.
    #[error("the room could not be joined right now")]
    Unavailable,
    /// The room's access rules keep the connection out (a private room, a ban).
    #[error(transparent)]
    Denied(#[from] crate::access::Denied),
}

#[derive(Serialize)]
struct Joined<'a> {
    room: &'a str,
    last: u64,
}

/// `join (room, ack)`.
pub(super) fn on_join(
    socket: SocketRef,
    TryData(args): TryData<EventArgs>,
    ack: AckSender,
    State(state): State<ChatState>,
    Extension(connection): Extension<Connection>,
) -> impl Future<Output = ()> {
    match connection.take_allowance() {
        Ok(()) => Either::Left(async move {
            let reply = match join(&socket, args, &state, &connection).await {
                Ok((name, last)) => json!(Joined { room: &name, last }),
                Err(e) => json!({ "error": e.to_string() }),
            };
            send_ack(&socket, ack, &reply, &connection).await;
        }),
        Err(refusal) => Either::Right(refuse(&socket, ack, refusal, &state, &connection)),
    }
}

async fn join(
    socket: &SocketRef,
    args: Result<EventArgs, socketioxide::ParserError>,
    state: &ChatState,
    connection: &Connection,
) -> Result<(String, u64), JoinError> {
    let name = first_arg_room(args)?;
    join_room(socket, &name, state, connection).await
}

/// Puts the connection in room `name` (it may be in it already), saved with its recovery
/// session; resolves with the room's name and the connection's mark in it.
pub(super) async fn join_room(
    socket: &SocketRef,
    name: &RoomName,
    state: &ChatState,
    connection: &Connection,
) -> Result<(String, u64), JoinError> {
    let key = state.rooms.key(name);
    let subscription = &connection.subscription;
    if let Some(mark) = subscription.mark(&key) {
        return Ok((name.to_string(), mark));
    }
    may_join(state, connection, &key)?;
    if subscription.len() >= state.rooms.max_per_connection {
        return Err(JoinError::PerConnection(subscription.len()));
    }
    if !state.rooms.exists(state, &key) {
        state
            .rooms
            .admit_new_rooms(state, 1)
            .map_err(JoinError::Server)?;
    }
    let mark = state.live.join_room(socket.id, subscription, key.clone());
    if let Some(pid) = &connection.pid
        && let Err(e) = state
            .recovery
            .writer
            .save_room(pid.clone(), key.clone(), Some(mark))
            .await
    {
        tracing::warn!(sid = %socket.id, "a join could not be saved: {e}");
        state.live.leave_room(socket.id, subscription, &key);
        return Err(JoinError::Unavailable);
    }
    super::presence::entered(socket, state, subscription, &key);
    metrics::counter(metrics::ROOM_JOINS).increment(1);
    Ok((name.to_string(), mark))
}

/// `leave (room, ack)`.
pub(super) fn on_leave(
    socket: SocketRef,
    TryData(args): TryData<EventArgs>,
    ack: AckSender,
    State(state): State<ChatState>,
    Extension(connection): Extension<Connection>,
) -> impl Future<Output = ()> {
    match connection.take_allowance() {
        Ok(()) => Either::Left(async move {
            let reply = match leave(&socket, args, &state, &connection).await {
                Ok(()) => json!({ "ok": true }),
                Err(e) => json!({ "error": e.to_string() }),
            };
            send_ack(&socket, ack, &reply, &connection).await;
        }),
        Err(refusal) => Either::Right(refuse(&socket, ack, refusal, &state, &connection)),
    }
}

async fn leave(
    socket: &SocketRef,
    args: Result<EventArgs, socketioxide::ParserError>,
    state: &ChatState,
    connection: &Connection,
) -> Result<(), JoinError> {
    let name = first_arg_room(args)?;
    leave_room(socket, &state.rooms.key(&name), state, connection).await;
    Ok(())
}

/// Takes the connection out of room `key`, saved with its recovery session; false if it was
/// not in it.
pub(super) async fn leave_room(
    socket: &SocketRef,
    key: &RoomKey,
    state: &ChatState,
    connection: &Connection,
) -> bool {
    let key = key.clone();
    if !state
        .live
        .leave_room(socket.id, &connection.subscription, &key)
    {
        return false;
    }
    socket.leave(state.rooms.name(&key).to_string());
    super::presence::exited(socket, state, connection, &key);
    metrics::counter(metrics::ROOM_LEAVES).increment(1);
    if let Some(pid) = &connection.pid
        && let Err(e) = state
            .recovery
            .writer
            .save_room(pid.clone(), key, None)
            .await
    {
        // Left here; a recovery might bring the room back (a room it may no longer join is
        // refused then). Say so in the log only: the client has left.
        tracing::warn!(sid = %socket.id, "a leave could not be saved: {e}");
    }
    true
}

/// The room named by an event's first argument.
fn first_arg_room(
    args: Result<EventArgs, socketioxide::ParserError>,
) -> Result<RoomName, JoinError> {
    let args = args.map_err(|_| RoomNameError::NotString("undecodable arguments"))?;
    match args.0.first() {
        Some(value) => Ok(RoomName::from_value(value)?),
        None => Err(RoomNameError::NotString("nothing").into()),
    }
}

#[derive(Serialize)]
struct Listed {
    /// Members only (the directory lists a private room to those who may join it); absent
    /// for a public room.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    private: bool,
    /// Only moderators post; absent when anyone may.
    #[serde(rename = "readOnly", skip_serializing_if = "std::ops::Not::not")]
    read_only: bool,
    /// The asking user's role in it (`owner`, `moderator`, `member`); absent for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    name: String,
    members: usize,
    last: u64,
}

/// `rooms (ack)` / `rooms ({ after }, ack)`: the rooms that exist, by name.
pub(super) fn on_rooms(
    socket: SocketRef,
    TryData(args): TryData<EventArgs>,
    ack: AckSender,
    State(state): State<ChatState>,
    Extension(connection): Extension<Connection>,
) -> impl Future<Output = ()> {
    match connection.take_allowance() {
        Ok(()) => Either::Left(async move {
            let reply = match directory(args, &state, &connection) {
                Ok(rooms) => json!({ "rooms": rooms }),
                Err(e) => json!({ "error": e }),
            };
            send_ack(&socket, ack, &reply, &connection).await;
        }),
        Err(refusal) => Either::Right(refuse(&socket, ack, refusal, &state, &connection)),
    }
}

/// One page of the directory: rooms with messages or members, by name after `after`; private
/// rooms only to those who may join them.
fn directory(
    args: Result<EventArgs, socketioxide::ParserError>,
    state: &ChatState,
    connection: &Connection,
) -> Result<Vec<Listed>, String> {
    let after = match args
        .ok()
        .and_then(|EventArgs(args)| args.into_iter().next())
    {
        None | Some(Value::Null) => None,
        Some(Value::Object(request)) => match request.get("after") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                RoomName::from_value(value)
                    .map_err(|e| format!("invalid after: {e}"))?
                    .to_string(),
            ),
        },
        Some(other) => {
            return Err(format!(
                "expected rooms ({{ after }}, ack), got {}",
                crate::protocol::json_type_name(&other)
            ));
        }
    };
    // The first page's worth of names from the rooms with messages and from those with
    // members, merged; the default room, keyed apart, by its name.
    let after = after.unwrap_or_default();
    let mut names: BTreeSet<String> = state
        .hub
        .room_names_after(&after, DIRECTORY_PAGE)
        .into_iter()
        .collect();
    names.extend(state.roster.names_after(&after, DIRECTORY_PAGE));
    let default = state.rooms.default_name();
    if **default > *after && state.rooms.exists(state, &None) {
        names.insert(default.to_string());
    }
    // A page may come out short of private rooms left out; `after` its last name goes on.
    Ok(names
        .into_iter()
        .take(DIRECTORY_PAGE)
        .filter_map(|name| {
            let key = (*name != **default).then(|| name.clone());
            let (private, read_only, role) = state.hub.access.with(&key, |access| {
                let role = actor(connection).and_then(|user| access.standing(user).role);
                (
                    access.private,
                    access.read_only,
                    role.map(crate::access::Role::name),
                )
            });
            if private && may_join(state, connection, &key).is_err() {
                return None;
            }
            Some(Listed {
                private,
                read_only,
                role,
                members: state.roster.count(&key),
                last: state.hub.room_last(&key),
                name,
            })
        })
        .collect())
}
