//! Who a connection is (`--auth`): the token check at connect, the verified user a connection
//! carries for its whole life, the expiry of its token while it stays connected, and
//! `refresh token`.
//!
//! A token is checked when the client connects (a refusal is its `connect_error`), and its
//! expiry is watched for as long as the socket lives: at `exp` plus the leeway the server
//! emits `token expiring ({ exp, graceMs })`, refuses the socket's sends with `token expired`
//! and, unless a `refresh token (token, ack)` for the same user arrives within the grace,
//! emits `token expired ({ exp })` and disconnects it. Socket.IO's own middleware pattern
//! checks a token once; this is the difference.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use tokio::sync::watch;

use super::{ChatState, Connection, refuse, send_ack};
use crate::config::AuthMode;
use crate::delivery::outbox::emit_ephemeral;
use crate::every::since_epoch;
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
    refusals: Mutex<LogBudget>,
}

/// Refusal log lines left in the current minute, and those not logged.
struct LogBudget {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
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
            refusals: Mutex::new(LogBudget {
                window_start: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
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
        let mut budget = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        if budget.window_start.elapsed() >= Duration::from_secs(60) {
            budget.window_start = Instant::now();
            budget.logged = 0;
        }
        if budget.logged >= REFUSALS_LOGGED_PER_MINUTE {
            budget.suppressed += 1;
            return;
        }
        budget.logged += 1;
        let suppressed = std::mem::take(&mut budget.suppressed);
        drop(budget);
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
    /// The current token's `exp`; a refresh sends the new one.
    exp: watch::Sender<u64>,
    /// Past `exp` plus the leeway, not refreshed yet: sends are refused.
    expired: AtomicBool,
}

impl Verified {
    fn new(identity: Identity) -> Self {
        Self {
            user: identity.user,
            name: identity.name,
            exp: watch::Sender::new(identity.exp),
            expired: AtomicBool::new(false),
        }
    }

    /// Whether its token expired (sends are refused until it is refreshed).
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::Acquire)
    }
}

/// Watches a verified connection's token for as long as the socket lives (see the module
/// docs); returns when the socket closes or has been disconnected.
pub async fn watch_expiry(socket: SocketRef, state: ChatState, connection: Connection) {
    let Some(verified) = connection.verified.clone() else {
        return;
    };
    let leeway = state.auth.verifier.as_ref().map_or(0, Verifier::leeway);
    let grace = state.auth.grace;
    let mut exp_changes = verified.exp.subscribe();
    loop {
        let exp = *exp_changes.borrow_and_update();
        let deadline = Duration::from_secs(exp.saturating_add(leeway));
        let wait = deadline.saturating_sub(since_epoch());
        if !wait.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(wait.min(LONGEST_WAIT)) => {}
                changed = exp_changes.changed() => if changed.is_err() { return },
                () = connection.signals.closed() => return,
            }
            continue;
        }
        verified.expired.store(true, Ordering::Release);
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        tracing::info!(sid = %socket.id, user = %verified.user, exp, "token expired: sends refused, refresh awaited");
        emit_ephemeral(
            &socket,
            TOKEN_EXPIRING,
            &json!({ "exp": exp, "graceMs": grace_ms }),
        );
        tokio::select! {
            () = tokio::time::sleep(grace) => {}
            changed = exp_changes.changed() => {
                if changed.is_err() { return }
                continue;
            }
            () = connection.signals.closed() => return,
        }
        tracing::info!(sid = %socket.id, user = %verified.user, "token expired and not refreshed: disconnecting");
        emit_ephemeral(
            &socket,
            TOKEN_EXPIRED,
            &json!({ "exp": exp, "error": "token expired" }),
        );
        crate::delivery::socket_task::disconnect(&socket, &connection.signals, &state.live);
        return;
    }
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
    let reply = match refresh(&args, &state, &connection) {
        Ok(()) => json!({ "ok": true }),
        Err(error) => json!({ "error": error }),
    };
    send_ack(&socket, ack, &reply, &connection).await;
}

fn refresh(
    args: &Result<EventArgs, socketioxide::ParserError>,
    state: &ChatState,
    connection: &Connection,
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
    verified.expired.store(false, Ordering::Release);
    verified.exp.send_replace(identity.exp);
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
    fn refusals_are_logged_ten_a_minute_and_the_rest_counted() {
        let verifier =
            Verifier::from_secret(&[7u8; 32], None, ClaimRules::default()).expect("a verifier");
        let auth = Auth::new(AuthMode::Required, Some(verifier), Duration::from_secs(30));
        for _ in 0..25 {
            auth.log_refusal(&TokenError::BadSignature);
        }
        let budget = |auth: &Auth| {
            let b = auth.refusals.lock().unwrap_or_else(PoisonError::into_inner);
            (b.logged, b.suppressed)
        };
        assert_eq!(budget(&auth), (10, 15));
        // A minute later the next refusal is logged, with the count of those that were not.
        {
            let mut b = auth.refusals.lock().unwrap_or_else(PoisonError::into_inner);
            b.window_start -= Duration::from_secs(61);
        }
        auth.log_refusal(&TokenError::Expired);
        assert_eq!(budget(&auth), (1, 0));
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
