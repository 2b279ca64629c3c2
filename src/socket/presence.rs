//! The ephemeral events: presence (who is online, who came and went), renames, typing,
//! nickname changes. The roster itself is [`super::roster::Roster`]; this is its socket glue.
//!
//! Presence costs O(connections) per second at worst, however many clients connect or leave:
//! joins and leaves only mark the roster, and one task sends the snapshot, with the names that
//! came and went, to everyone at most once per [`PRESENCE_INTERVAL`]. A newcomer gets the
//! current snapshot at once.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use tokio_util::sync::CancellationToken;

use crate::every::Every;

use super::rate::{RateLimit, TokenBucket, Verdict};
use super::roster::{NodeRoster, Roster};
use super::{ChatState, Connection, send_ack};
use crate::delivery::outbox::{broadcast_ephemeral, emit_ephemeral};
use crate::protocol::event::{PRESENCE, TYPING, USER_RENAMED};
use crate::protocol::{EventArgs, NicknameError, validate_nickname};

/// How often the roster is checked for changes and, if changed, sent to everyone. Coalescing
/// keeps a connection storm from costing one broadcast per connection.
pub const PRESENCE_INTERVAL: Duration = Duration::from_secs(1);

/// Typing notices a client may pass on: about two per second.
const TYPING_LIMIT: RateLimit = RateLimit {
    per_second: 2.0,
    burst: 2.0,
};

/// The shared roster.
#[derive(Clone, Default)]
pub struct SharedRoster(Arc<Mutex<Roster>>);

impl SharedRoster {
    fn lock(&self) -> MutexGuard<'_, Roster> {
        // Roster updates are single map operations: a panic cannot leave one half done.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connected clients now.
    pub fn count(&self) -> usize {
        self.lock().snapshot().count
    }

    /// This node's part of the roster (cluster mode tells the other nodes).
    pub fn local(&self) -> NodeRoster {
        self.lock().local()
    }

    /// Another node's part, as it just said.
    pub fn set_remote(&self, node: &str, roster: NodeRoster) {
        self.lock().set_remote(node, roster, Instant::now());
    }

    /// Forgets the nodes not heard of for `ttl`.
    pub fn expire_remote(&self, ttl: Duration) {
        if let Some(before) = Instant::now().checked_sub(ttl) {
            self.lock().expire_remote(before);
        }
    }
}

/// Passes the ephemeral events of this node's clients (typing, renames) to the other nodes of
/// a cluster, which show them to their own clients.
pub trait Relay: Send + Sync {
    /// Sends `event (data)` to the other nodes' clients.
    fn relay(&self, event: &'static str, data: Value);
}

/// Per-socket typing state (in the socket's [`Connection`]).
pub(super) struct Typing(Mutex<TypingState>);

pub(super) struct TypingState {
    bucket: TokenBucket,
    typing: bool,
}

impl Typing {
    pub(super) fn new() -> Self {
        Self(Mutex::new(TypingState {
            bucket: TokenBucket::new(TYPING_LIMIT, Instant::now()),
            typing: false,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, TypingState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Serialize)]
struct TypingNotice<'a> {
    nickname: &'a str,
    typing: bool,
}

#[derive(Serialize)]
struct Renamed<'a> {
    from: &'a str,
    to: &'a str,
}

/// Sends an ephemeral event to every other connected socket, on this node and, through the
/// relay, on the others.
fn to_others<T: Serialize + ?Sized>(
    socket: &SocketRef,
    relay: Option<&dyn Relay>,
    event: &'static str,
    data: &T,
) {
    broadcast_ephemeral(&socket.broadcast().sockets(), event, data);
    if let Some(relay) = relay
        && let Ok(data) = serde_json::to_value(data)
    {
        relay.relay(event, data);
    }
}

/// A socket listed in the roster by admission, before the client learns it is connected: the
/// client may send `typing` the moment it is told, before the connect handler runs, and that
/// notice must find its name. Dropped before [`Listed::connected`] (the socket never
/// connected, so no disconnect handler will run), it unlists the socket.
pub(super) struct Listed {
    roster: SharedRoster,
    /// Cleared once connected: from then on the disconnect handler unlists it.
    sid: Option<String>,
}

/// Lists a socket about to be connected (the others hear of it on the next tick).
pub(super) fn list(roster: &SharedRoster, socket: &SocketRef, nickname: Option<String>) -> Listed {
    roster.lock().join(socket.id.as_str(), nickname);
    Listed {
        roster: roster.clone(),
        sid: Some(socket.id.to_string()),
    }
}

impl Listed {
    /// The socket is connected: tell it who is here.
    pub(super) fn connected(mut self, socket: &SocketRef) {
        self.sid = None;
        let snapshot = self.roster.lock().snapshot();
        emit_ephemeral(socket, PRESENCE, &snapshot);
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        if let Some(sid) = self.sid.take() {
            self.roster.lock().leave(&sid);
        }
    }
}

/// A socket left: unlist it (the others hear of it on the next tick) and end its typing.
pub(super) fn left(socket: &SocketRef, state: &ChatState, typing: &Typing) {
    let nickname = state.roster.lock().leave(socket.id.as_str());
    let was_typing = std::mem::take(&mut typing.lock().typing);
    if let (Some(name), true) = (nickname, was_typing) {
        to_others(
            socket,
            state.relay.as_deref(),
            TYPING,
            &TypingNotice {
                nickname: &name,
                typing: false,
            },
        );
    }
}

/// `typing (bool)`: relayed to the others, for named sockets, about twice a second at most.
pub(super) async fn on_typing(
    socket: SocketRef,
    TryData(args): TryData<EventArgs>,
    State(state): State<ChatState>,
    Extension(connection): Extension<Connection>,
) {
    let Ok(EventArgs(args)) = args else { return };
    let Some(Value::Bool(now_typing)) = args.first() else {
        return;
    };
    let Some(name) = state
        .roster
        .lock()
        .nickname(socket.id.as_str())
        .map(String::from)
    else {
        return;
    };
    {
        let mut state = connection.typing.lock();
        if let Verdict::Limited { .. } = state.bucket.take(Instant::now()) {
            // Except for "stopped typing", which must not be lost to the limit.
            if *now_typing || !state.typing {
                return;
            }
        }
        state.typing = *now_typing;
    }
    to_others(
        &socket,
        state.relay.as_deref(),
        TYPING,
        &TypingNotice {
            nickname: &name,
            typing: *now_typing,
        },
    );
}

/// `nickname (name, ack)`: change the name shown in presence. Counts against the
/// connection's rate limit; the ack is queued like every ack (under the socket's send lock,
/// leaving a slot for the heartbeat).
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
    let name = match args.as_ref().ok().and_then(|EventArgs(a)| a.first()) {
        Some(value) => validate_nickname(value),
        None => Err(NicknameError::NotString("nothing")),
    };
    let reply = match name {
        Ok(name) => {
            let old = state.roster.lock().rename(socket.id.as_str(), name.clone());
            if let Some(old) = old
                && old != name
            {
                let renamed = Renamed {
                    from: &old,
                    to: &name,
                };
                to_others(&socket, state.relay.as_deref(), USER_RENAMED, &renamed);
            }
            json!({ "ok": true })
        }
        Err(e) => json!({ "error": format!("invalid nickname: {e}") }),
    };
    send_ack(&socket, ack, &reply, &connection).await;
}

/// Sends `event (data)` to every socket of this node (an event relayed from another node).
pub fn to_everyone(io: &SocketIo, event: &str, data: &Value) {
    broadcast_ephemeral(&super::chat_sockets(io), event, data);
}

/// Sends the roster, with who came and went, to everyone whenever it changed, at most once
/// per interval.
pub async fn broadcast_presence(io: SocketIo, roster: SharedRoster, stop: CancellationToken) {
    let mut every = Every::new(PRESENCE_INTERVAL, stop);
    while every.tick().await {
        let Some(snapshot) = roster.lock().take_changes() else {
            continue;
        };
        broadcast_ephemeral(&super::chat_sockets(&io), PRESENCE, &snapshot);
    }
}
