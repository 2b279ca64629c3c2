//! Who a connection is (`--auth`): the token check at connect, the verified user a connection
//! carries for its whole life, the expiry of its token while it stays connected, and
//! `refresh token`.
//!
//! A token is checked when the client connects (a refusal is its `connect_error`), and its
//! expiry is watched for as long as the socket lives (by one task for the whole server, over a
//! schedule of every signed-in connection's next deadline): at `exp` plus the leeway the server
//! emits `token expiring ({ exp, graceMs })`, refuses the socket's sends with `token expired`
//! and, unless a `refresh token (token, ack)` for the same user arrives within the grace,
//! emits `token expired ({ exp })` and disconnects it. Socket.IO's own middleware pattern
//! checks a token once; this is the difference.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use socketioxide::socket::Sid;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{ChatState, Connection, refuse, send_ack};
use crate::access::Admins;
use crate::config::AuthMode;
use crate::delivery::outbox::emit_ephemeral;
use crate::every::{LogBudget, since_epoch};
use crate::identity::{Identity, TokenError, Verifier};
use crate::protocol::EventArgs;
use crate::protocol::event::{TOKEN_EXPIRED, TOKEN_EXPIRING};

/// Refused tokens logged per minute at most; the rest are counted and the count logged with
/// the next line, so a flood of bad tokens cannot fill the log.
const REFUSALS_LOGGED_PER_MINUTE: u32 = 10;

/// Longest single wait for a token's expiry: the deadline is read again after it (a clock
/// step, a far-future `exp`).
const LONGEST_WAIT: Duration = Duration::from_secs(3600);

/// The server's token policy.
pub struct Auth {
    mode: AuthMode,
    verifier: Option<Verifier>,
    grace: Duration,
    refusals: LogBudget,
    /// When each signed-in connection's token needs looking at.
    pub deadlines: Deadlines,
    /// The server admins (`--server-admin`), who act as owners of every room.
    pub admins: Admins,
}

impl Auth {
    /// `mode` with `verifier` (`None` only with [`AuthMode::Off`]) and `grace` after expiry.
    pub fn new(mode: AuthMode, verifier: Option<Verifier>, grace: Duration) -> Self {
        let mode = if verifier.is_none() {
            AuthMode::Off
        } else {
            mode
        };
        Self {
            mode,
            verifier,
            grace,
            refusals: LogBudget::new(REFUSALS_LOGGED_PER_MINUTE),
            deadlines: Deadlines::default(),
            admins: Admins::default(),
        }
    }

    /// With `admins` as the server admins.
    pub fn with_admins(self, admins: Admins) -> Self {
        Self { admins, ..self }
    }

    /// Seconds of clock skew allowed after `exp`.
    fn leeway(&self) -> u64 {
        self.verifier.as_ref().map_or(0, Verifier::leeway)
    }

    /// Whether identities exist at all (`--auth optional` or `required`).
    pub fn is_on(&self) -> bool {
        self.mode != AuthMode::Off
    }

    /// The verified user of a client connecting with the handshake `auth` (`None`:
    /// anonymous); refused as `--auth` says. With `--auth off` a token is ignored.
    pub fn admit(&self, auth: &Value) -> Result<Option<Verified>, TokenError> {
        let Some(verifier) = self.verifier.as_ref().filter(|_| self.is_on()) else {
            return Ok(None);
        };
        let token = match auth.get("token") {
            None | Some(Value::Null) if self.mode == AuthMode::Optional => return Ok(None),
            None | Some(Value::Null) => return Err(TokenError::Missing),
            Some(Value::String(token)) => token,
            Some(other) => {
                return Err(TokenError::NotAString(crate::protocol::json_type_name(
                    other,
                )));
            }
        };
        let identity = verifier.verify(token, since_epoch().as_secs())?;
        Ok(Some(Verified::new(identity)))
    }

    /// Logs a refused token, within the per-minute budget.
    pub fn log_refusal(&self, error: &TokenError) {
        let Some(suppressed) = self.refusals.take() else {
            return;
        };
        if suppressed > 0 {
            tracing::warn!(
                not_logged = suppressed,
                "connection refused: {error} (and {suppressed} more refused tokens not logged)"
            );
        } else {
            tracing::warn!("connection refused: {error}");
        }
    }
}

/// A connection's verified user, and the expiry of the token that proved it.
pub struct Verified {
    /// The user id (the token's `sub`).
    pub user: String,
    /// The display name (the token's `name`, else `sub`), for the connection's whole life.
    pub name: String,
    /// The current token's `exp`; a refresh replaces it.
    exp: AtomicU64,
    /// Past `exp` plus the leeway, not refreshed yet: sends are refused.
    expired: AtomicBool,
    /// Its entry in [`Deadlines`] (0: none); changed under the deadlines' lock only.
    scheduled: AtomicU64,
}

impl Verified {
    fn new(identity: Identity) -> Self {
        Self {
            user: identity.user,
            name: identity.name,
            exp: AtomicU64::new(identity.exp),
            expired: AtomicBool::new(false),
            scheduled: AtomicU64::new(0),
        }
    }

    /// Whether its token expired (sends are refused until it is refreshed).
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::Acquire)
    }
}

/// When each signed-in connection's token next needs looking at (its expiry, then the end of
/// its grace), for the whole server: one entry per connection, kept by one task
/// ([`watch_expiries`]), rather than a task per connection.
#[derive(Default)]
pub struct Deadlines {
    /// `(seconds since the Unix epoch, socket)`, earliest first.
    queue: Mutex<BTreeSet<(u64, Sid)>>,
    /// Wakes the task when an earlier deadline than the one it waits for is set.
    earlier: Notify,
}

impl Deadlines {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<(u64, Sid)>> {
        // Single set operations: a panic cannot leave one half done.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks at `sid`'s token at `at` (and no longer at the time set before).
    fn set(&self, sid: Sid, verified: &Verified, at: u64) {
        let mut queue = self.lock();
        let before = verified.scheduled.swap(at, Ordering::AcqRel);
        if before != 0 {
            queue.remove(&(before, sid));
        }
        let first = queue.first().map(|(t, _)| *t);
        queue.insert((at, sid));
        drop(queue);
        if first.is_none_or(|first| at < first) {
            self.earlier.notify_one();
        }
    }

    /// Forgets `sid` (its socket closed).
    pub fn forget(&self, sid: Sid, verified: &Verified) {
        let mut queue = self.lock();
        let before = verified.scheduled.swap(0, Ordering::AcqRel);
        if before != 0 {
            queue.remove(&(before, sid));
        }
    }

    /// The earliest deadline.
    fn next(&self) -> Option<u64> {
        self.lock().first().map(|(t, _)| *t)
    }

    /// Takes the sockets whose deadline is at or before `now`.
    fn due(&self, now: u64) -> Vec<Sid> {
        let mut queue = self.lock();
        let mut due = Vec::new();
        while let Some(&(t, sid)) = queue.first() {
            if t > now {
                break;
            }
            queue.pop_first();
            due.push(sid);
        }
        due
    }

    /// How many connections are watched.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Starts watching a newly connected socket's token.
pub fn watch(state: &ChatState, sid: Sid, verified: &Verified) {
    let at = verified
        .exp
        .load(Ordering::Acquire)
        .saturating_add(state.auth.leeway());
    state.auth.deadlines.set(sid, verified, at);
}

/// Watches every signed-in connection's token (see the module docs) until `stop`: at its
/// expiry plus the leeway, `token expiring` and sends refused; at the end of the grace, unless
/// refreshed, `token expired` and a disconnect.
pub async fn watch_expiries(io: SocketIo, state: ChatState, stop: CancellationToken) {
    let deadlines = &state.auth.deadlines;
    loop {
        let earlier = deadlines.earlier.notified();
        tokio::pin!(earlier);
        // Registered before the queue is read: a deadline set in between still wakes this.
        earlier.as_mut().enable();
        let now = since_epoch();
        let wait = deadlines.next().map_or(LONGEST_WAIT, |t| {
            Duration::from_secs(t).saturating_sub(now).min(LONGEST_WAIT)
        });
        if !wait.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = earlier => {}
                () = stop.cancelled() => return,
            }
            continue;
        }
        for sid in deadlines.due(now.as_secs()) {
            look_at(&io, &state, sid, now.as_secs());
        }
    }
}

/// `sid`'s deadline came: its token expired now, or its grace ended.
fn look_at(io: &SocketIo, state: &ChatState, sid: Sid, now: u64) {
    let Some(socket) = io.of("/").and_then(|ns| ns.get_socket(sid)) else {
        return; // closed meanwhile
    };
    let Some(connection) = socket.extensions.get::<Connection>() else {
        return;
    };
    let Some(verified) = connection.verified.as_deref() else {
        return;
    };
    let deadlines = &state.auth.deadlines;
    let exp = verified.exp.load(Ordering::Acquire);
    if !verified.expired() {
        let at = exp.saturating_add(state.auth.leeway());
        if at > now {
            // Refreshed since this deadline was taken.
            deadlines.set(sid, verified, at);
            return;
        }
        verified.expired.store(true, Ordering::Release);
        let grace = state.auth.grace;
        tracing::info!(sid = %socket.id, user = %verified.user, exp, "token expired: sends refused, refresh awaited");
        emit_ephemeral(
            &socket,
            TOKEN_EXPIRING,
            &json!({ "exp": exp, "graceMs": u64::try_from(grace.as_millis()).unwrap_or(u64::MAX) }),
        );
        deadlines.set(sid, verified, now.saturating_add(grace.as_secs()));
        return;
    }
    tracing::info!(sid = %socket.id, user = %verified.user, "token expired and not refreshed: disconnecting");
    emit_ephemeral(
        &socket,
        TOKEN_EXPIRED,
        &json!({ "exp": exp, "error": "token expired" }),
    );
    crate::delivery::socket_task::disconnect(&socket, &connection.signals, &state.live);
}

/// `refresh token (token, ack)`: a new token for the connection's user; answers `{ ok: true }`
/// or `{ error }`.
pub(super) async fn on_refresh_token(
    socket: SocketRef,
    TryData(args): TryData<EventArgs>,
    ack: AckSender,
    State(state): State<ChatState>,
    Extension(connection): Extension<Connection>,
) {
    if let Err(refusal) = connection.take_allowance() {
        drop(args);
        refuse(&socket, ack, refusal, &state, &connection).await;
        return;
    }
    let reply = match refresh(&args, &state, &connection, socket.id) {
        Ok(()) => json!({ "ok": true }),
        Err(error) => json!({ "error": error }),
    };
    send_ack(&socket, ack, &reply, &connection).await;
}

fn refresh(
    args: &Result<EventArgs, socketioxide::ParserError>,
    state: &ChatState,
    connection: &Connection,
    socket_id: Sid,
) -> Result<(), String> {
    let (Some(verifier), Some(verified)) = (&state.auth.verifier, &connection.verified) else {
        return Err(if state.auth.is_on() {
            "not signed in: reconnect with a token".into()
        } else {
            "authentication is off on this server".into()
        });
    };
    let token = match args.as_ref().map(|EventArgs(args)| args.first()) {
        Ok(Some(Value::String(token))) => token,
        Ok(other) => {
            let got = other.map_or("nothing", crate::protocol::json_type_name);
            return Err(format!("invalid token: expected a string, got {got}"));
        }
        Err(e) => return Err(format!("invalid token: {e}")),
    };
    let identity = verifier
        .verify(token, since_epoch().as_secs())
        .map_err(|e| e.to_string())?;
    if identity.user != verified.user {
        return Err("token is for another user".into());
    }
    verified.exp.store(identity.exp, Ordering::Release);
    verified.expired.store(false, Ordering::Release);
    let at = identity.exp.saturating_add(state.auth.leeway());
    state.auth.deadlines.set(socket_id, verified, at);
    Ok(())
}

/// What a verified connection cannot do: rename itself.
pub const NAME_FROM_TOKEN: &str = "nickname changes are refused: the name comes from your token";

/// Shared handle, for [`ChatState`].
pub type SharedAuth = Arc<Auth>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ClaimRules;

    #[test]
    fn deadlines_keep_one_entry_per_connection_and_give_back_what_is_due() {
        let deadlines = Deadlines::default();
        let identity = |user: &str| Identity {
            user: user.into(),
            name: user.into(),
            exp: 100,
        };
        let (a, b) = (Verified::new(identity("a")), Verified::new(identity("b")));
        let (sid_a, sid_b) = (Sid::new(), Sid::new());
        deadlines.set(sid_a, &a, 100);
        deadlines.set(sid_b, &b, 50);
        // A refresh moves a's deadline: its old entry goes, however often it refreshes.
        for at in 200..300 {
            deadlines.set(sid_a, &a, at);
        }
        assert_eq!(deadlines.len(), 2);
        assert_eq!(deadlines.next(), Some(50));
        assert_eq!(deadlines.due(49), vec![]);
        // a's last deadline is 299.
        assert_eq!(deadlines.due(298), vec![sid_b]);
        assert_eq!(deadlines.due(298), vec![]);
        assert_eq!(deadlines.due(299), vec![sid_a]);
        // A closed socket's entry goes with it.
        deadlines.set(sid_b, &b, 400);
        deadlines.forget(sid_b, &b);
        assert_eq!(deadlines.len(), 0);
        assert_eq!(deadlines.next(), None);
    }

    #[test]
    fn with_auth_off_a_token_is_ignored_and_with_required_one_is_needed() {
        let off = Auth::new(AuthMode::Off, None, Duration::from_secs(30));
        assert!(!off.is_on());
        assert!(matches!(off.admit(&json!({ "token": 5 })), Ok(None)));
        let verifier =
            Verifier::from_secret(&[7u8; 32], None, ClaimRules::default()).expect("a verifier");
        let required = Auth::new(AuthMode::Required, Some(verifier.clone()), Duration::ZERO);
        assert_eq!(required.admit(&json!({})).err(), Some(TokenError::Missing));
        assert_eq!(
            required.admit(&json!({ "token": null })).err(),
            Some(TokenError::Missing)
        );
        let optional = Auth::new(AuthMode::Optional, Some(verifier), Duration::ZERO);
        assert!(matches!(optional.admit(&json!({})), Ok(None)));
        assert_eq!(
            optional.admit(&json!({ "token": ["x"] })).err(),
            Some(TokenError::NotAString("array"))
        );
    }
}
