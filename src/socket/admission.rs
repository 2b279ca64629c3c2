//! Admission: the connect middleware that checks a client's handshake and the connection cap,
//! and prepares the socket completely (its handlers, its delivery, its place in presence)
//! before the client learns it is connected; then the connect handler that starts its
//! delivery task.
//!
//! socketioxide spawns the connect handler after sending CONNECT, so anything registered there
//! could miss the client's first events; the middleware runs before CONNECT is sent.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{Event, SocketRef, State, TryData};
use socketioxide::handler::{
    ConnectHandler, FromMessageParts, MessageHandler, Value as SocketValue,
};
use socketioxide::socket::{DisconnectReason, Socket};

use super::presence::{self, Listed, Typing};
use super::rate::TokenBucket;
use super::{ChatState, Connection, ConnectionState, chat, history, identity, moderation, rooms};
use crate::delivery::CatchUp;
use crate::delivery::cursor::EmittedCursor;
use crate::delivery::outbox::SendLock;
use crate::delivery::socket_task::{Signals, SocketDelivery, SyncPlan, deliver};
use crate::delivery::{RoomKey, Subscription};
use crate::identity::TokenError;
use crate::metrics;
use crate::protocol::event::{
    BAN, CHAT_MESSAGE, CREATE_ROOM, DELETE_MESSAGE, HISTORY, INVITE, JOIN, KICK, LEAVE, MUTE,
    NICKNAME, REFRESH_TOKEN, ROOMS, SET_ROLE, TYPING, UNBAN, UNMUTE,
};
use crate::protocol::{AuthError, parse_handshake};

/// Registers admission and, through it, every handler on the default namespace.
pub fn register(io: &SocketIo) {
    io.ns("/", on_connect.with(admit));
}

/// Counts connected clients, in all and per client address (`--max-connections-per-ip`); a
/// slot is held for each and released on drop, whichever way the socket ends.
#[derive(Clone)]
pub struct ConnectionCount {
    current: Arc<AtomicUsize>,
    max: usize,
    /// Connections per client address, and the most one may have (0: no limit).
    per_address: PerAddress,
    max_per_address: usize,
}

/// Connections per client address (only addresses with one or more).
type PerAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

impl ConnectionCount {
    /// A counter allowing `max` connections, and `max_per_address` from one client address
    /// (0: any number).
    pub fn new(max: usize, max_per_address: usize) -> Self {
        Self {
            current: Arc::default(),
            max,
            per_address: Arc::default(),
            max_per_address,
        }
    }

    /// Connected clients now.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    fn try_acquire(&self, client: Option<IpAddr>) -> Result<ConnectionSlot, Refusal> {
        let address = match client.filter(|_| self.max_per_address > 0) {
            None => None,
            Some(address) => {
                let mut counts = self
                    .per_address
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let count = counts.entry(address).or_default();
                if *count >= self.max_per_address {
                    return Err(Refusal::AddressFull(self.max_per_address));
                }
                *count += 1;
                Some(address)
            }
        };
        // From here the slot exists: dropping it gives the address's place back too.
        let mut slot = ConnectionSlot {
            current: None,
            address: address.map(|address| (address, self.per_address.clone())),
        };
        let n = self
            .current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .map_err(|_| Refusal::Full(self.max))?;
        metrics::counter(metrics::CONNECTIONS_TOTAL).increment(1);
        metrics::gauge(metrics::CONNECTIONS).set((n + 1) as f64);
        slot.current = Some(self.current.clone());
        Ok(slot)
    }
}

/// One counted connection; dropping it frees the place (and its address's).
struct ConnectionSlot {
    current: Option<Arc<AtomicUsize>>,
    address: Option<(IpAddr, PerAddress)>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Some(current) = &self.current {
            let before = current.fetch_sub(1, Ordering::AcqRel);
            metrics::gauge(metrics::CONNECTIONS).set(before.saturating_sub(1) as f64);
        }
        if let Some((address, counts)) = &self.address {
            let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = counts.get_mut(address) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(address);
                }
            }
        }
    }
}

/// Why a connection was refused; the text is the client's `connect_error` message.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("server is full: {0} clients connected, the limit")]
    Full(usize),
    #[error("too many connections from your address: {0}, the limit")]
    AddressFull(usize),
    #[error("invalid rooms: {asked} rooms, the limit is {limit} per connection")]
    TooManyRooms { asked: usize, limit: usize },
    #[error("invalid rooms: the server has {0} rooms, the limit")]
    ServerRooms(usize),
}

/// A socket's delivery, prepared by [`admit`] and started by [`on_connect`].
#[derive(Clone)]
struct PendingDelivery(Arc<Mutex<Option<Pending>>>);

struct Pending {
    delivery: SocketDelivery,
    /// Its place in presence, taken before CONNECT.
    listed: Listed,
}

/// The connect middleware: refuses a bad `auth` or a full server, otherwise prepares the
/// socket completely (event handlers, delivery, presence) before the client learns it is
/// connected.
async fn admit(
    socket: SocketRef,
    TryData(auth): TryData<Value>,
    State(state): State<ChatState>,
) -> Result<(), Refusal> {
    let auth = auth.map_err(|e| AuthError::BadServerOffset(format!("unreadable auth: {e}")))?;
    let handshake = parse_handshake(&auth)?;
    // Before anything is looked up or stored: a refused token costs the server nothing more.
    let verified = state.auth.admit(&auth).inspect_err(|e| {
        state.auth.log_refusal(e);
        metrics::counter_with(metrics::REJECTED, "reason", "token").increment(1);
    })?;
    let verified = verified.map(Arc::new);
    // An offset from another database (its epoch differs) means nothing here: replay all.
    let other_epoch = handshake
        .epoch
        .as_deref()
        .is_some_and(|epoch| epoch != &*state.epoch);
    // The rooms it asked for (missing: the default room), within the limits; those it may
    // not join (private, banned) are left out and named in its `sync`.
    let user = verified.as_ref().map(|v| v.user.as_str());
    let (asked, mut refused): (Vec<RoomKey>, Vec<RoomKey>) = match &handshake.rooms {
        None => vec![None],
        Some(names) => names.iter().map(|name| state.rooms.key(name)).collect(),
    }
    .into_iter()
    .partition(|room| rooms::may_join_as(&state, user, room).is_ok());
    if asked.len() > state.rooms.max_per_connection {
        return Err(Refusal::TooManyRooms {
            asked: asked.len(),
            limit: state.rooms.max_per_connection,
        });
    }
    let new = asked
        .iter()
        .filter(|room| !state.rooms.exists(&state, room))
        .count();
    if new > 0 {
        state
            .rooms
            .admit_new_rooms(&state, new)
            .map_err(Refusal::ServerRooms)?;
    }
    // The client's address, as the HTTP layer found it (behind a trusted proxy, the one it
    // names).
    let client = crate::client_addr::tagged(&socket.req_parts().uri);
    let slot = state.connections.try_acquire(client)?;
    // Saved before the CONNECT reply that names the session goes out.
    let recovery = state
        .recovery
        .admit(
            handshake.recovery.clone(),
            &asked,
            verified.as_ref().map(|v| v.user.as_str()),
        )
        .await;
    // A recovered session's rooms pass the same rules: a kick or a ban may have come since.
    let mut recovery = recovery;
    let (recovered, lost): (Vec<_>, Vec<_>) = std::mem::take(&mut recovery.rooms)
        .into_iter()
        .partition(|(room, _)| rooms::may_join_as(&state, user, room).is_ok());
    refused.extend(lost.into_iter().map(|(room, _)| room));
    recovery.rooms = recovered;
    let subscription = Arc::new(Subscription::with_marks(recovery.rooms.iter().cloned()));
    let rooms: Vec<RoomKey> = recovery.rooms.into_iter().map(|(room, _)| room).collect();
    let (start, latest, other_epoch) = match recovery.resume_after {
        // Recovered: the last event it processed is what counts.
        Some(after) => (after, None, false),
        None if other_epoch => (0, handshake.latest, true),
        // An offset beyond the log: another database's (a cluster node asks the stream).
        None if state.hub.beyond_stream(handshake.offset).await => (0, handshake.latest, true),
        None => (handshake.offset, handshake.latest, false),
    };
    if let Some(pid) = &recovery.pid {
        socket.set_pid(pid.clone());
    }
    // `latest`: the replay starts before the newest N messages of its rooms.
    let latest_after = match latest {
        None => None,
        Some(latest) => {
            let (reader, rooms) = (state.reader.clone(), rooms.clone());
            match tokio::task::spawn_blocking(move || reader.before_newest(&rooms, latest)).await {
                Ok(Ok(after)) => Some(after),
                Ok(Err(e)) => {
                    tracing::warn!(sid = %socket.id, "cannot find the newest messages, replaying all: {e}");
                    None
                }
                Err(e) => {
                    tracing::warn!(sid = %socket.id, "cannot find the newest messages, replaying all: {e}");
                    None
                }
            }
        }
    };
    let catch_up = CatchUp::new(
        state.hub.clone(),
        state.reader.clone(),
        subscription.clone(),
        start,
        latest_after,
        state.batch,
    );
    let emitted = Arc::new(EmittedCursor::new(catch_up.cursor()));
    let sending = SendLock::default();
    let signals = Arc::new(Signals::new(&state.shutdown));
    let connection = Connection(Arc::new(ConnectionState {
        emitted: emitted.clone(),
        signals: signals.clone(),
        bucket: Mutex::new(TokenBucket::new(state.rate_limit, Instant::now())),
        refusal_waiting: Default::default(),
        sending: sending.clone(),
        arrival: Arc::default(),
        typing: Typing::new(),
        subscription: subscription.clone(),
        pid: recovery.pid.clone(),
        verified: verified.clone(),
    }));
    // The socket's extensions stay at three entries at most (this, the send lock, the
    // pending delivery until it starts): four buckets in socketioxide's map, not eight.
    socket.extensions.insert(connection.clone());
    socket.extensions.insert(sending.clone());
    socket.on_fallback(ChatEvents);
    let session = recovery.pid.clone();
    // In an `Arc`: socketioxide wants the handler `Clone` (it runs one copy, once).
    let slot = Arc::new(slot);
    socket.on_disconnect(
        move |socket: SocketRef, reason: DisconnectReason, State(state): State<ChatState>| async move {
            // The connection is counted until its handler has run (or, at shutdown, when no
            // handler runs, until the socket is dropped).
            let _slot = slot;
            if let Some(verified) = &connection.verified {
                state.auth.deadlines.forget(socket.id, verified);
            }
            connection.signals.log_closed(&socket.id, &reason);
            connection.signals.close();
            // After `closed`: a catch-up task that joins after this sees it and leaves.
            state.live.leave(socket.id);
            let rooms: Vec<RoomKey> = connection
                .subscription
                .rooms()
                .into_iter()
                .map(|(room, _)| room)
                .collect();
            presence::left(&socket, &state, &connection.typing, &rooms);
            // The recovery window counts from now (only a stopped writer refuses this).
            let _ = state.recovery.writer.touch_sessions(session).await;
        },
    );
    tracing::info!(
        sid = %socket.id,
        client = client.map(tracing::field::display),
        user = verified.as_ref().map(|v| v.user.as_str()),
        offset = start,
        recovered = recovery.resume_after.is_some(),
        transport = ?socket.transport_type(),
        "connection opened"
    );
    let sync = SyncPlan {
        epoch: state.epoch.clone(),
        other_database: other_epoch,
        refused: refused
            .iter()
            .map(|room| state.rooms.name(room).to_string())
            .collect(),
    };
    let delivery = SocketDelivery {
        catch_up,
        emitted,
        signals,
        sync,
        live: state.live.clone(),
        sending,
        offsets: recovery.pid.is_some(),
        default_room: state.rooms.default_name().clone(),
        tasks: state.tasks.clone(),
    };
    // Its rooms in socketioxide's adapter too: presence and typing go to a room's sockets.
    for room in &rooms {
        socket.join(state.rooms.name(room).to_string());
    }
    socket
        .extensions
        .insert(PendingDelivery(Arc::new(Mutex::new(Some(Pending {
            delivery,
            // A verified user is listed by the name in its token, whatever `auth.nickname` says.
            listed: presence::list(
                &state.roster,
                &socket,
                verified
                    .as_ref()
                    .map(|v| v.name.clone())
                    .or(handshake.nickname),
                rooms,
            ),
        })))));
    Ok(())
}

/// The events a chat socket answers, dispatched by name from socketioxide's fallback handler.
///
/// One handler rather than one `socket.on` per event: socketioxide keeps a socket's named
/// handlers in a map of its own, about 350 bytes per connection for four entries, while the
/// fallback is one slot and this type has no size. Each event's handler extracts its own
/// arguments, exactly as if it had been registered by name; other events are ignored, as they
/// are without a handler.
struct ChatEvents;

/// [`ChatEvents`]' marker for socketioxide's handler trait.
struct ByName;

impl MessageHandler<LocalAdapter, ByName> for ChatEvents {
    fn call(&self, socket: Arc<Socket<LocalAdapter>>, mut data: SocketValue, ack: Option<i64>) {
        let Ok(Event(event)) = Event::from_message_parts(&socket, &mut data, &ack) else {
            return;
        };
        match event.as_str() {
            CHAT_MESSAGE => MessageHandler::call(&chat::on_chat_message, socket, data, ack),
            HISTORY => MessageHandler::call(&history::on_history, socket, data, ack),
            TYPING => MessageHandler::call(&presence::on_typing, socket, data, ack),
            NICKNAME => MessageHandler::call(&presence::on_nickname, socket, data, ack),
            JOIN => MessageHandler::call(&rooms::on_join, socket, data, ack),
            LEAVE => MessageHandler::call(&rooms::on_leave, socket, data, ack),
            ROOMS => MessageHandler::call(&rooms::on_rooms, socket, data, ack),
            REFRESH_TOKEN => MessageHandler::call(&identity::on_refresh_token, socket, data, ack),
            CREATE_ROOM | SET_ROLE | INVITE | KICK | BAN | UNBAN | MUTE | UNMUTE
            | DELETE_MESSAGE => MessageHandler::call(&moderation::on_request, socket, data, ack),
            _ => tracing::debug!(sid = %socket.id, %event, "event without a handler ignored"),
        }
    }
}

/// Runs once the client has been told it is connected: sends it who is here and starts its
/// delivery task.
async fn on_connect(socket: SocketRef, State(state): State<ChatState>) {
    let pending = socket
        .extensions
        // Removed, not read: the socket keeps its extensions for its whole life.
        .remove::<PendingDelivery>()
        .and_then(|p| p.0.lock().unwrap_or_else(PoisonError::into_inner).take());
    let Some(Pending { delivery, listed }) = pending else {
        tracing::error!(sid = %socket.id, "connected without a prepared delivery");
        let _ = socket.disconnect();
        return;
    };
    listed.connected(&socket, &state);
    if let Some(connection) = socket.extensions.get::<Connection>()
        && let Some(verified) = &connection.verified
    {
        identity::watch(&state, socket.id, verified);
    }
    state.tasks.spawn(deliver(socket, delivery));
}
