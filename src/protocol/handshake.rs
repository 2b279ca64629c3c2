//! The handshake: what a client asks for in its CONNECT `auth` object (`serverOffset`, and the
//! `rooms`, `nickname`, `latest` and `epoch` extensions). Pure; errors carry the
//! `connect_error` text.

use serde_json::Value;

use super::json_type_name;
use super::nickname::{NicknameError, validate_nickname};
use super::room::RoomName;

/// The largest offset a JavaScript client can hold exactly (`Number.MAX_SAFE_INTEGER`).
pub const MAX_SERVER_OFFSET: u64 = crate::message::MessageId::MAX.0;

/// Why a handshake was refused; the text becomes the client's `connect_error` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// `auth` itself was not an object.
    #[error("invalid auth: expected an object like {{ serverOffset: 0 }}, got {0}")]
    NotAnObject(&'static str),
    /// `serverOffset` was present but is not a usable offset.
    #[error("invalid serverOffset: {0}")]
    BadServerOffset(String),
    /// `nickname` was present but is not usable.
    #[error("invalid nickname: {0}")]
    BadNickname(NicknameError),
    /// `latest` was present but out of range.
    #[error("invalid latest: {0}")]
    BadLatest(String),
    /// `epoch` was present but not a string.
    #[error("invalid epoch: {0}")]
    BadEpoch(String),
    /// `rooms` was present but not a list of room names.
    #[error("invalid rooms: {0}")]
    BadRooms(String),
}

/// Most entries `auth.rooms` may list before it is refused outright, whatever
/// `--max-rooms-per-connection` allows (the list is the client's input).
pub const MAX_LISTED_ROOMS: usize = 10_000;

/// Parses the handshake `auth` object into the offset to replay from (0 = from the start).
///
/// `serverOffset` may be missing, `null`, a non-negative integer up to 2^53-1, or a string of
/// decimal digits with such a value. Anything else is refused, so a client never silently gets
/// an empty replay because of a typo.
pub fn parse_server_offset(auth: &Value) -> Result<u64, AuthError> {
    let object = match auth {
        Value::Null => return Ok(0),
        Value::Object(object) => object,
        other => return Err(AuthError::NotAnObject(json_type_name(other))),
    };
    let bad = |why: String| Err(AuthError::BadServerOffset(why));
    let offset = match object.get("serverOffset") {
        None | Some(Value::Null) => return Ok(0),
        Some(Value::Number(number)) => {
            if let Some(n) = number.as_u64() {
                n
            } else if let Some(n) = number.as_i64() {
                return bad(format!("{n} is negative, expected an integer >= 0"));
            } else {
                let f = number.as_f64().unwrap_or(f64::NAN);
                if f.fract() != 0.0 || !f.is_finite() {
                    return bad(format!("{number} is not an integer"));
                }
                if f < 0.0 {
                    return bad(format!("{number} is negative, expected an integer >= 0"));
                }
                if f > MAX_SERVER_OFFSET as f64 {
                    return bad(format!("{number} is larger than 2^53-1"));
                }
                // Integral, in range: exact as a u64.
                f as u64
            }
        }
        Some(Value::String(text)) => {
            if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_digit()) {
                let shown: String = text.chars().take(32).collect();
                return bad(format!(
                    "{shown:?} is not a non-negative integer (digits only)"
                ));
            }
            match text.parse::<u64>() {
                Ok(n) => n,
                Err(e) => return bad(format!("{text:?}: {e}")),
            }
        }
        Some(other) => {
            return bad(format!(
                "expected a non-negative integer, got {}",
                json_type_name(other)
            ));
        }
    };
    if offset > MAX_SERVER_OFFSET {
        return bad(format!("{offset} is larger than 2^53-1"));
    }
    Ok(offset)
}

/// Most messages a fresh page may ask to see first (`auth.latest`) and per history page.
pub const MAX_PAGE: u64 = 1000;

/// What a client asked for when connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// Replay ids above this (0: from the start).
    pub offset: u64,
    /// The nickname shown in presence, if given.
    pub nickname: Option<String>,
    /// Replay at most this many of the newest messages (`auth.latest`).
    pub latest: Option<u64>,
    /// The epoch of the database the offset came from (`auth.epoch`, from a `sync` event).
    pub epoch: Option<String>,
    /// The rooms to be in (`auth.rooms`), each once, in the order given; `None` when absent
    /// (the default room).
    pub rooms: Option<Vec<RoomName>>,
    /// What a client asking for connection state recovery sent (`auth.pid`, `auth.offset`,
    /// merged in by socket.io-client after a CONNECT that carried a pid).
    pub recovery: Option<RecoveryRequest>,
}

/// A client's request to recover its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryRequest {
    /// A well-formed private session id and the offset of the last event it processed (a
    /// message id).
    Resume {
        /// The private session id the server gave it.
        pid: String,
        /// The last message id it processed.
        offset: u64,
    },
    /// A pid without a usable offset: the client has processed no event since it got the pid
    /// (socket.io-client sends the offset only once it stored one), or sent something else.
    NoOffset,
    /// Something that is not a pid this server could have issued.
    Malformed,
}

/// Longest private session id accepted (the server issues 32 hex digits).
const MAX_PID_CHARS: usize = 64;

fn parse_recovery(auth: &Value) -> Option<RecoveryRequest> {
    let object = auth.as_object()?;
    let pid = object.get("pid")?;
    let pid = match pid {
        Value::String(pid)
            if !pid.is_empty()
                && pid.len() <= MAX_PID_CHARS
                && pid.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            pid.clone()
        }
        _ => return Some(RecoveryRequest::Malformed),
    };
    let offset = match object.get("offset") {
        Some(Value::String(text))
            if !text.is_empty() && text.len() <= 16 && text.bytes().all(|b| b.is_ascii_digit()) =>
        {
            text.parse::<u64>().ok().filter(|n| *n <= MAX_SERVER_OFFSET)
        }
        _ => None,
    };
    Some(match offset {
        Some(offset) => RecoveryRequest::Resume { pid, offset },
        None => RecoveryRequest::NoOffset,
    })
}

/// Parses the handshake `auth` object: [`parse_server_offset`] plus the optional `nickname`
/// and `latest` extensions (tutorial clients send neither).
pub fn parse_handshake(auth: &Value) -> Result<Handshake, AuthError> {
    let offset = parse_server_offset(auth)?;
    let field = |name| {
        auth.as_object()
            .and_then(|o| o.get(name))
            .filter(|v| !v.is_null())
    };
    let nickname = field("nickname")
        .map(validate_nickname)
        .transpose()
        .map_err(AuthError::BadNickname)?;
    let latest = match field("latest") {
        None => None,
        Some(value) => match value.as_u64() {
            Some(n) if (1..=MAX_PAGE).contains(&n) => Some(n),
            _ => {
                return Err(AuthError::BadLatest(format!(
                    "expected an integer from 1 to {MAX_PAGE}, got {value}"
                )));
            }
        },
    };
    let epoch = match field("epoch") {
        None => None,
        Some(Value::String(epoch)) if !epoch.is_empty() && epoch.len() <= 64 => Some(epoch.clone()),
        Some(other) => {
            return Err(AuthError::BadEpoch(format!(
                "expected the string from a sync event, got {}",
                json_type_name(other)
            )));
        }
    };
    let rooms = field("rooms").map(parse_rooms).transpose()?;
    Ok(Handshake {
        offset,
        nickname,
        latest,
        epoch,
        rooms,
        recovery: parse_recovery(auth),
    })
}

/// `auth.rooms`: a list of room names (possibly empty), each kept once.
fn parse_rooms(value: &Value) -> Result<Vec<RoomName>, AuthError> {
    let Value::Array(list) = value else {
        return Err(AuthError::BadRooms(format!(
            "expected a list of room names, got {}",
            json_type_name(value)
        )));
    };
    if list.len() > MAX_LISTED_ROOMS {
        return Err(AuthError::BadRooms(format!(
            "{} rooms listed, the most is {MAX_LISTED_ROOMS}",
            list.len()
        )));
    }
    let mut rooms: Vec<RoomName> = Vec::with_capacity(list.len());
    // A set, not `rooms.contains`: 10,000 names compared pairwise would cost a handshake ~50
    // million comparisons.
    let mut seen = std::collections::HashSet::with_capacity(list.len());
    for value in list {
        let room = RoomName::from_value(value).map_err(|e| AuthError::BadRooms(e.to_string()))?;
        if seen.insert(room.clone()) {
            rooms.push(room);
        }
    }
    Ok(rooms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn offsets_accepted() {
        for (auth, want) in [
            (json!(null), 0),
            (json!({}), 0),
            (json!({ "serverOffset": null }), 0),
            (json!({ "serverOffset": 0 }), 0),
            (json!({ "serverOffset": 42 }), 42),
            (json!({ "serverOffset": 42.0 }), 42),
            (json!({ "serverOffset": "42" }), 42),
            (
                json!({ "serverOffset": MAX_SERVER_OFFSET }),
                MAX_SERVER_OFFSET,
            ),
            (json!({ "serverOffset": 7, "other": true }), 7),
        ] {
            assert_eq!(parse_server_offset(&auth), Ok(want), "{auth}");
        }
    }

    #[test]
    fn offsets_refused_with_a_reason() {
        for auth in [
            json!({ "serverOffset": -1 }),
            json!({ "serverOffset": 1.5 }),
            json!({ "serverOffset": "abc" }),
            json!({ "serverOffset": "" }),
            json!({ "serverOffset": "-3" }),
            json!({ "serverOffset": " 3" }),
            json!({ "serverOffset": {} }),
            json!({ "serverOffset": [1] }),
            json!({ "serverOffset": true }),
            json!({ "serverOffset": MAX_SERVER_OFFSET + 1 }),
            json!({ "serverOffset": 1e300 }),
            json!({ "serverOffset": "99999999999999999999" }),
        ] {
            let err = parse_server_offset(&auth).expect_err(&auth.to_string());
            assert!(err.to_string().contains("serverOffset"), "{err}");
        }
        assert!(matches!(
            parse_server_offset(&json!("x")),
            Err(AuthError::NotAnObject("string"))
        ));
    }

    #[test]
    fn handshakes() {
        assert_eq!(
            parse_handshake(&json!({ "serverOffset": 3, "nickname": "bo", "latest": 50 })),
            Ok(Handshake {
                offset: 3,
                nickname: Some("bo".into()),
                latest: Some(50),
                epoch: None,
                rooms: None,
                recovery: None,
            })
        );
        assert_eq!(
            parse_handshake(&json!({})),
            Ok(Handshake {
                offset: 0,
                nickname: None,
                latest: None,
                epoch: None,
                rooms: None,
                recovery: None,
            })
        );
        for bad in [
            json!({ "nickname": "" }),
            json!({ "nickname": 3 }),
            json!({ "latest": 0 }),
            json!({ "latest": 1001 }),
            json!({ "latest": "5" }),
        ] {
            assert!(parse_handshake(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rooms_are_a_list_of_names() {
        let rooms = |auth: Value| {
            parse_handshake(&auth).map(|h| {
                h.rooms
                    .map(|rooms| rooms.iter().map(|r| r.to_string()).collect::<Vec<_>>())
            })
        };
        assert_eq!(rooms(json!({})), Ok(None));
        assert_eq!(rooms(json!({ "rooms": null })), Ok(None));
        assert_eq!(rooms(json!({ "rooms": [] })), Ok(Some(vec![])));
        assert_eq!(
            rooms(json!({ "rooms": ["general", "dev", "general"] })),
            Ok(Some(vec!["general".into(), "dev".into()]))
        );
        for (bad, says) in [
            (
                json!({ "rooms": "dev" }),
                "expected a list of room names, got string",
            ),
            (
                json!({ "rooms": ["dev", 3] }),
                "must be a string, got number",
            ),
            (json!({ "rooms": ["Dev"] }), "invalid room name \"Dev\""),
            (json!({ "rooms": [""] }), "invalid room name \"\""),
        ] {
            let error = parse_handshake(&bad).err().map(|e| e.to_string());
            assert!(
                error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("invalid rooms: ") && e.contains(says)),
                "{bad}: {error:?}"
            );
        }
        let many: Vec<String> = (0..=MAX_LISTED_ROOMS).map(|n| format!("r{n}")).collect();
        assert!(parse_handshake(&json!({ "rooms": many })).is_err());
    }

    #[test]
    fn recovery_requests() {
        let recovery = |auth: Value| parse_handshake(&auth).map(|h| h.recovery);
        assert_eq!(
            recovery(json!({ "pid": "0a1b2c", "offset": "17", "serverOffset": 3 })),
            Ok(Some(RecoveryRequest::Resume {
                pid: "0a1b2c".into(),
                offset: 17
            }))
        );
        assert_eq!(
            recovery(json!({ "pid": "0a1b2c" })),
            Ok(Some(RecoveryRequest::NoOffset))
        );
        for offset in [
            json!(17),
            json!("-1"),
            json!("x"),
            json!("99999999999999999"),
        ] {
            assert_eq!(
                recovery(json!({ "pid": "0a1b2c", "offset": offset })),
                Ok(Some(RecoveryRequest::NoOffset)),
                "{offset}"
            );
        }
        for pid in [
            json!(5),
            json!(""),
            json!("not hex!"),
            json!("a".repeat(65)),
        ] {
            assert_eq!(
                recovery(json!({ "pid": pid, "offset": "1" })),
                Ok(Some(RecoveryRequest::Malformed)),
                "{pid}"
            );
        }
        assert_eq!(recovery(json!({ "serverOffset": 3 })), Ok(None));
    }
}
