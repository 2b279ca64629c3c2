//! The ephemeral events: presence, joined/left/renamed notices, typing, nickname changes.
//! The roster itself is [`crate::presence::Roster`]; this is its socket glue.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use tokio_util::sync::CancellationToken;

use super::outgoing::emit_ephemeral;
use super::{ChatState, EventArgs};
use crate::presence::Roster;
use crate::protocol::validate_nickname;
use crate::rate::{RateLimit, TokenBucket, Verdict};

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
}

/// Per-socket typing state.
#[derive(Clone)]
pub(super) struct Typing(Arc<Mutex<TypingState>>);

pub(super) struct TypingState {
    bucket: TokenBucket,
    typing: bool,
}

impl Typing {
    pub(super) fn new() -> Self {
        Self(Arc::new(Mutex::new(TypingState {
            bucket: TokenBucket::new(TYPING_LIMIT, Instant::now()),
            typing: false,
        })))
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

/// Sends an ephemeral event to every other connected socket.
fn to_others<T: Serialize + ?Sized>(socket: &SocketRef, event: &str, data: &T) {
    for other in socket.broadcast().sockets() {
        emit_ephemeral(&other, event, data);
    }
}

/// A socket is connected: list it, and tell the others if it has a name.
pub(super) fn joined(socket: &SocketRef, roster: &SharedRoster, nickname: Option<String>) {
    if let Some(name) = &nickname {
        to_others(socket, "user joined", name);
    }
    let snapshot = {
        let mut roster = roster.lock();
        roster.join(socket.id.as_str(), nickname);
        roster.snapshot()
    };
    // The newcomer learns who is here at once; the others on the next coalesced tick.
    emit_ephemeral(socket, "presence", &snapshot);
}

/// A socket left: unlist it, end its typing, and tell the others.
pub(super) fn left(socket: &SocketRef, roster: &SharedRoster, typing: Option<&Typing>) {
    let nickname = roster.lock().leave(socket.id.as_str());
    if let Some(name) = nickname {
        let was_typing = typing.is_some_and(|t| std::mem::take(&mut t.lock().typing));
        if was_typing {
            to_others(
                socket,
                "typing",
                &TypingNotice {
                    nickname: &name,
                    typing: false,
                },
            );
        }
        to_others(socket, "user left", &name);
    }
}

/// `typing (bool)`: relayed to the others, for named sockets, about twice a second at most.
pub(super) async fn on_typing(
    socket: SocketRef,
    TryData(args): TryData<EventArgs>,
    State(state): State<ChatState>,
    Extension(typing): Extension<Typing>,
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
        let mut state = typing.lock();
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
        "typing",
        &TypingNotice {
            nickname: &name,
            typing: *now_typing,
        },
    );
}

/// `nickname (name, ack)`: change the name shown in presence.
pub(super) async fn on_nickname(
    socket: SocketRef,
    TryData(args): TryData<EventArgs>,
    ack: AckSender,
    State(state): State<ChatState>,
) {
    let name = match args.as_ref().ok().and_then(|EventArgs(a)| a.first()) {
        Some(value) => validate_nickname(value),
        None => Err(crate::protocol::NicknameError::NotString("nothing")),
    };
    let reply = match name {
        Ok(name) => {
            let old = state.roster.lock().rename(socket.id.as_str(), name.clone());
            match old {
                Some(old) if old != name => {
                    to_others(
                        &socket,
                        "user renamed",
                        &Renamed {
                            from: &old,
                            to: &name,
                        },
                    );
                }
                Some(_) => {}
                None => to_others(&socket, "user joined", &name),
            }
            serde_json::json!({ "ok": true })
        }
        Err(e) => serde_json::json!({ "error": format!("invalid nickname: {e}") }),
    };
    // An ephemeral answer: if the buffer is full it is dropped like other presence traffic.
    let _ = ack.send(&reply);
}

/// Sends the roster to everyone whenever it changed, at most once per interval.
pub async fn broadcast_presence(io: SocketIo, roster: SharedRoster, stop: CancellationToken) {
    let mut tick = tokio::time::interval(PRESENCE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let Some(snapshot) = roster.lock().take_changes() else {
            continue;
        };
        for socket in io.sockets() {
            emit_ephemeral(&socket, "presence", &snapshot);
        }
    }
}
