//! Durable connection state recovery: `socket.recovered` that survives a restart, even a
//! `kill -9`.
//!
//! The protocol is Socket.IO's own (v4, protocol v5): the CONNECT reply carries a private
//! session id (`pid`); the client keeps it, tracks the last argument of every event that ends
//! in a string (`chat message` ends in its id, as a string), and when it reconnects it merges
//! `{ pid, offset }` into its auth. If the pid is one this server issued, seen within
//! `--recovery-window`, and every message after the offset is still stored, the CONNECT reply
//! carries the same pid (the client sets `socket.recovered = true`) and the client gets exactly
//! the messages after its offset, then live ones. Otherwise it gets a new pid and the usual
//! rules (`serverOffset`, `latest`, `epoch`).
//!
//! Sessions live in the database, written when issued (before CONNECT goes out), when their
//! socket closes and once a minute for the sockets still open, and deleted once they are older
//! than the window: never per message, since the offset comes from the client. A pid is 128
//! random bits and is never logged.

use std::sync::Arc;
use std::time::Duration;

use socketioxide::SocketIo;
use tokio_util::sync::CancellationToken;

use crate::every::{Every, now_ms};

use super::Connection;
use crate::delivery::{Hub, RoomKey};
use crate::ingest::WriterHandle;
use crate::metrics;
use crate::protocol::RecoveryRequest;
use crate::storage::StoreReader;

/// How often the sessions of the sockets still open are marked as seen, and expired ones
/// deleted.
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Everything recovery needs.
#[derive(Clone)]
pub struct Recovery {
    /// How long after its client was last seen a session can be recovered; zero turns
    /// recovery off (no pid is sent, so clients do not ask).
    pub window: Duration,
    /// Where sessions are saved.
    pub writer: WriterHandle,
    /// Where they are looked up, and what is still stored.
    pub reader: StoreReader,
    /// The log's end.
    pub hub: Arc<Hub>,
}

/// What admission does with a connecting client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The pid to send in the CONNECT reply (`None`: recovery is off, or the session could not
    /// be saved).
    pub pid: Option<String>,
    /// Recovered: replay the messages after this id (it wins over `serverOffset` and
    /// `latest`: it is the last event the client processed).
    pub resume_after: Option<u64>,
    /// The rooms the socket is in, with their join marks: the recovered session's, or the
    /// ones it asked for (from their start).
    pub rooms: Vec<(RoomKey, u64)>,
}

/// Why a recovery was refused (the label of `tidings_recoveries_total`).
fn refusal(request: &RecoveryRequest) -> Option<&'static str> {
    match request {
        RecoveryRequest::Resume { .. } => None,
        RecoveryRequest::NoOffset => Some("no_offset"),
        RecoveryRequest::Malformed => Some("malformed"),
    }
}

/// A new private session id: 128 bits from the OS's random source, as 32 hex digits.
pub fn new_pid() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Recovery {
    /// Decides on a connecting client's request and saves its session with its rooms
    /// (durably, before the CONNECT reply that names it goes out). A client that is not
    /// recovered is in `asked` (the rooms of its `auth`). `user` is the client's verified user
    /// (`None`: anonymous): a session is recovered only by the user it was issued to, so a
    /// pid alone never lets another user (or an anonymous client) into someone's rooms.
    pub async fn admit(
        &self,
        request: Option<RecoveryRequest>,
        asked: &[RoomKey],
        user: Option<&str>,
    ) -> Decision {
        let off = || Decision {
            pid: None,
            resume_after: None,
            rooms: asked.iter().map(|room| (room.clone(), 0)).collect(),
        };
        if self.window.is_zero() {
            return off();
        }
        let (pid, resume_after, recovered, outcome) = match &request {
            None => (None, None, None, "new"),
            Some(RecoveryRequest::Resume { pid, offset }) => {
                match self.check(pid, *offset, user).await {
                    Ok(rooms) => (Some(pid.clone()), Some(*offset), Some(rooms), "recovered"),
                    Err(reason) => (None, None, None, reason),
                }
            }
            Some(other) => (None, None, None, refusal(other).unwrap_or("refused")),
        };
        metrics::counter_with(metrics::RECOVERIES, "outcome", outcome).increment(1);
        // Refused: a new pid, never the old one.
        let Some(pid) = pid.or_else(new_pid) else {
            tracing::warn!("no random source for a session id: recovery off for this client");
            return off();
        };
        // A recovered session keeps its rooms; a new one records the ones asked for.
        let (rooms, saved) = match recovered {
            Some(rooms) => (rooms, Vec::new()),
            None => {
                let rooms = off().rooms;
                (rooms.clone(), rooms)
            }
        };
        let owner = user.map(String::from);
        if let Err(e) = self.writer.save_session(pid.clone(), saved, owner).await {
            tracing::warn!("session not saved, recovery off for this client: {e}");
            return off();
        }
        Decision {
            pid: Some(pid),
            resume_after,
            rooms,
        }
    }

    /// Whether session `pid` may resume after `offset` for `user`, and its rooms with their
    /// marks; the refusal's label otherwise.
    async fn check(
        &self,
        pid: &str,
        offset: u64,
        user: Option<&str>,
    ) -> Result<Vec<(RoomKey, u64)>, &'static str> {
        if self.hub.beyond_stream(offset).await {
            return Err("unknown_offset");
        }
        let (reader, pid) = (self.reader.clone(), pid.to_string());
        let looked_up = tokio::task::spawn_blocking(move || {
            let seen = reader.session(&pid)?;
            let owner = reader.session_user(&pid)?;
            let rooms = reader.session_rooms(&pid)?;
            // Whether retention deleted, in any of its rooms, a message it has not had.
            let lost = reader.lost_any(&rooms, offset)?;
            Ok::<_, crate::storage::StoreError>((seen, owner, rooms, lost))
        })
        .await;
        let (seen, owner, rooms, lost) = match looked_up {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::warn!("recovery lookup failed: {e}");
                return Err("unavailable");
            }
            Err(e) => {
                tracing::warn!("recovery lookup failed: {e}");
                return Err("unavailable");
            }
        };
        let Some(seen) = seen else {
            return Err("unknown_session");
        };
        if now_ms().saturating_sub(seen) > self.window.as_millis() as u64 {
            return Err("expired");
        }
        if owner.as_deref() != user {
            return Err("other_user");
        }
        // Each room records the highest id retention deleted from it: recovering would hide a
        // gap if that is above the offset (or the room's mark).
        if lost {
            return Err("messages_deleted");
        }
        Ok(rooms)
    }
}

/// Marks the sessions of the sockets still open as seen and deletes expired ones, every
/// [`TOUCH_EVERY`], until `stop`.
pub async fn keep_sessions(io: SocketIo, recovery: Recovery, stop: CancellationToken) {
    let mut every = Every::new(TOUCH_EVERY, stop);
    while every.tick().await {
        let pids: Vec<String> = super::chat_sockets(&io)
            .into_iter()
            .filter_map(|socket| {
                socket
                    .extensions
                    .get::<Connection>()
                    .and_then(|connection| connection.pid.clone())
            })
            .collect();
        if let Err(e) = recovery.writer.touch_sessions(pids).await {
            tracing::warn!("marking recovery sessions as seen: {e}");
        }
        match recovery.writer.expire_sessions(recovery.window).await {
            Ok(0) => {}
            Ok(expired) => tracing::debug!(expired, "recovery sessions expired"),
            Err(e) => tracing::warn!("expiring recovery sessions: {e}"),
        }
    }
}
