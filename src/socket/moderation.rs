//! The requests that change a room's access or delete a message (`create room`, `set role`,
//! `invite`, `kick`, `ban`, `unban`, `mute`, `unmute`, `delete message`), each answered `{ ok:
//! true }` (`create room`: `{ room, ok: true, last: 0 }`) or `{ error }`; and the task that
//! takes kicked users' sockets out of their room. (The checks a join, a post, a history read
//! and a connect pass are [`super::rooms`]'s.)
//!
//! A request is checked against this node's state ([`crate::access`]'s rules) and becomes an
//! entry of the log; it is answered once the entry is stored and applied here (in a cluster:
//! acked by the stream and applied by this node). Every node applies the entry in log order,
//! and its [`enforce_forever`] task makes the sockets of a kicked or banned user leave the
//! room. With `--auth off` there are no identities: the rules are off and every request is
//! refused.

use std::future::Future;

use futures_util::future::Either;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Event, Extension, SocketRef, State, TryData};

use super::rooms::{JoinError, actor};
use super::{ChatState, Connection, refuse, room_sockets, send_ack};
use crate::access::{Denied, RoomEvent};
use crate::delivery::RoomKey;
use crate::ingest::AppendError;
use crate::message::{AppendOutcome, ChatInput, MessageId};
use crate::metrics;
use crate::protocol::EventArgs;
use crate::protocol::event::{
    BAN, CREATE_ROOM, DELETE_MESSAGE, INVITE, KICK, MUTE, ROOM_CHANGED, SET_ROLE, UNBAN, UNMUTE,
};
use crate::protocol::moderation::{
    ModerationError, parse_create_room, parse_delete_message, parse_set_role, parse_user_request,
};

/// Why a request was refused; the text is the ack's `error`.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error(transparent)]
    Invalid(#[from] ModerationError),
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("no such room")]
    NoRoom,
    #[error("room exists")]
    Exists,
    #[error("no such message in this room")]
    NoMessage,
    #[error("invite is for private rooms: anyone may join this one")]
    Public,
    #[error("token expired")]
    Expired,
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error("not stored, try again: {0}")]
    Unavailable(String),
}

/// The handler of every request this module answers (the event name says which).
pub(super) fn on_request(
    socket: SocketRef,
    Event(event): Event,
    TryData(args): TryData<EventArgs>,
    ack: AckSender,
    State(state): State<ChatState>,
    Extension(connection): Extension<Connection>,
) -> impl Future<Output = ()> {
    match connection.take_allowance() {
        Ok(()) => Either::Left(async move {
            let reply = match request(&socket, &event, args, &state, &connection).await {
                Ok(reply) => reply,
                Err(e) => {
                    tracing::debug!(sid = %socket.id, %event, "refused: {e}");
                    json!({ "error": e.to_string() })
                }
            };
            send_ack(&socket, ack, &reply, &connection).await;
        }),
        Err(refusal) => Either::Right(refuse(&socket, ack, refusal, &state, &connection)),
    }
}

async fn request(
    socket: &SocketRef,
    event: &str,
    args: Result<EventArgs, socketioxide::ParserError>,
    state: &ChatState,
    connection: &Connection,
) -> Result<Value, RequestError> {
    if !state.auth.is_on() {
        return Err(Denied::NoIdentities.into());
    }
    if connection.verified.as_ref().is_some_and(|v| v.expired()) {
        return Err(RequestError::Expired);
    }
    let args = args.map(|EventArgs(args)| args).unwrap_or_default();
    let (room, event) = match event {
        CREATE_ROOM => return create_room(socket, &args, state, connection).await,
        DELETE_MESSAGE => return delete_message(&args, state, connection).await,
        SET_ROLE => {
            let request = parse_set_role(&args)?;
            let role = request.role.ok_or(ModerationError::Role)?;
            (
                request.room,
                RoomEvent::RoleSet {
                    user: request.user,
                    role,
                },
            )
        }
        _ => {
            let (name, make): (&'static str, fn(String) -> RoomEvent) = match event {
                INVITE => (INVITE, |user| RoomEvent::Invited { user }),
                KICK => (KICK, |user| RoomEvent::Kicked { user }),
                BAN => (BAN, |user| RoomEvent::Banned { user }),
                UNBAN => (UNBAN, |user| RoomEvent::Unbanned { user }),
                MUTE => (MUTE, |user| RoomEvent::Muted { user }),
                _ => (UNMUTE, |user| RoomEvent::Unmuted { user }),
            };
            let request = parse_user_request(&args, name)?;
            (request.room, make(request.user))
        }
    };
    let key = state.rooms.key(&room);
    if !state.rooms.exists(state, &key) {
        return Err(RequestError::NoRoom);
    }
    let admins = &state.auth.admins;
    state.hub.access.with(&key, |access| {
        if matches!(event, RoomEvent::Invited { .. }) && !access.private {
            return Err(RequestError::Public);
        }
        Ok(access.may_change(actor(connection), &event, admins)?)
    })?;
    append(state, connection, key, event).await?;
    Ok(json!({ "ok": true }))
}

/// Stores `event` as an entry of room `key` by the connection's user; resolves with its id
/// once it is applied here.
async fn append(
    state: &ChatState,
    connection: &Connection,
    key: RoomKey,
    event: RoomEvent,
) -> Result<MessageId, RequestError> {
    let verified = connection.verified.as_ref();
    let entry = ChatInput {
        content: String::new(),
        client_offset: None,
        author: verified.map(|v| v.name.clone()),
        room: key,
        user: verified.map(|v| v.user.clone()),
        event: Some(event),
    };
    let outcome = match state.log.submit(entry).await {
        Ok(receipt) => receipt.await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(AppendOutcome::Stored(id) | AppendOutcome::Duplicate(id)) => {
            metrics::counter(metrics::ROOM_EVENTS).increment(1);
            Ok(id)
        }
        Err(e) => {
            match &e {
                AppendError::Unavailable(_) => tracing::warn!("room event not stored: {e}"),
                _ => tracing::error!("room event not stored: {e}"),
            }
            Err(RequestError::Unavailable(e.to_string()))
        }
    }
}

/// `create room ({ room, private, readOnly }, ack)`: a signed-in user creates a room that does
/// not exist yet, owns it and is in it.
async fn create_room(
    socket: &SocketRef,
    args: &[Value],
    state: &ChatState,
    connection: &Connection,
) -> Result<Value, RequestError> {
    let request = parse_create_room(args)?;
    if actor(connection).is_none() {
        return Err(Denied::Anonymous.into());
    }
    let key = state.rooms.key(&request.room);
    // The default room always exists: everyone is in it unless they ask otherwise.
    if key.is_none() || state.rooms.exists(state, &key) {
        return Err(RequestError::Exists);
    }
    state
        .rooms
        .admit_new_rooms(state, 1)
        .map_err(JoinError::Server)?;
    let event = RoomEvent::Created {
        private: request.private,
        read_only: request.read_only,
    };
    let id = append(state, connection, key.clone(), event).await?;
    // Two creations of one name at once (on two nodes, say): the first in the log wins.
    if state.hub.access.with(&key, |access| access.created) != id.0 {
        return Err(RequestError::Exists);
    }
    super::rooms::join_room(socket, &request.room, state, connection).await?;
    Ok(json!({ "room": request.room.as_str(), "ok": true, "last": 0 }))
}

/// `delete message ({ room, id }, ack)`: its author or a moderator deletes a message.
async fn delete_message(
    args: &[Value],
    state: &ChatState,
    connection: &Connection,
) -> Result<Value, RequestError> {
    let request = parse_delete_message(args)?;
    let key = state.rooms.key(&request.room);
    let reader = state.reader.clone();
    let id = request.id;
    let row = tokio::task::spawn_blocking(move || reader.read_range(id - 1, id, 1, usize::MAX))
        .await
        .map_err(|e| RequestError::Unavailable(e.to_string()))?
        .map_err(|e| RequestError::Unavailable(e.to_string()))?
        .into_iter()
        .find(|row| row.id.0 == id)
        .filter(|row| row.message.room == key && row.message.event.is_none())
        .ok_or(RequestError::NoMessage)?;
    let author = row.message.user.as_deref();
    state.hub.access.with(&key, |access| {
        access.may_delete(actor(connection), author, &state.auth.admins)
    })?;
    let event = RoomEvent::Deleted {
        id,
        dedup: row.message.dedup_key().map(|key| key.0),
    };
    append(state, connection, key, event).await?;
    // Its content is erased here already (the entry's commit); in a cluster, from the
    // stream too.
    state.log.erase(MessageId(id)).await;
    Ok(json!({ "ok": true }))
}

/// Makes the sockets of kicked and banned users leave the room on this node, as the writer
/// applies those entries (in a cluster, whichever node took the request): each such socket
/// is in the room's socketioxide room, so the cost is the room's members, not every socket.
pub async fn enforce_forever(io: SocketIo, state: ChatState) {
    loop {
        let removals = tokio::select! {
            removals = state.hub.access.removals() => removals,
            () = state.shutdown.cancelled() => return,
        };
        for removal in removals {
            let room = state.rooms.name(&removal.room).to_string();
            for socket in room_sockets(&io, vec![room.clone()]) {
                let Some(connection) = socket.extensions.get::<Connection>() else {
                    continue;
                };
                if actor(&connection) != Some(removal.user.as_str()) {
                    continue;
                }
                let already_told = connection.emitted.get() >= removal.id;
                if !super::rooms::leave_room(&socket, &removal.room, &state, &connection).await {
                    continue;
                }
                tracing::info!(sid = %socket.id, room, user = removal.user, "removed from the room");
                // The notice, if the broadcaster had not queued it to this socket yet (it no
                // longer will: the socket has left the room).
                if !already_told {
                    let notice = json!({
                        "room": room,
                        "action": removal.action,
                        "user": removal.user,
                        "by": removal.by,
                        "offset": removal.id,
                    });
                    crate::delivery::outbox::emit_ephemeral(&socket, ROOM_CHANGED, &notice);
                }
            }
        }
    }
}
