//! The wire protocol's pure half: handshake auth parsing, `chat message` payload validation
//! and the ack bodies the server sends back.
//!
//! Everything here is a pure function over decoded JSON values: no sockets, no storage, so the
//! socket layer, unit tests and fuzz targets all call the same code. Errors carry the message a
//! client sees (the `connect_error` message or the ack's `error` field).

use serde::Serialize;
use serde_json::Value;

/// The largest offset a JavaScript client can hold exactly (`Number.MAX_SAFE_INTEGER`).
pub const MAX_SERVER_OFFSET: u64 = (1 << 53) - 1;

/// A stored message's id: strictly increasing from 1, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct MessageId(pub u64);

/// A client's idempotency key for one message (the tutorial's `clientOffset`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientOffset(pub String);

/// Size limits applied to incoming messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted `content`, in UTF-8 bytes.
    pub max_message_bytes: usize,
    /// Largest accepted `clientOffset`, in UTF-8 bytes.
    pub max_client_offset_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 65_536,
            max_client_offset_bytes: 256,
        }
    }
}

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
}

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

/// A validated `chat message` from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatInput {
    /// The message text (1..=max bytes).
    pub content: String,
    /// The idempotency key, absent for clients that send only the content.
    pub client_offset: Option<ClientOffset>,
    /// The sender's nickname, from the optional third argument `{ author }`.
    pub author: Option<String>,
}

/// Why a `chat message` was rejected; the text becomes the ack's `error` field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The event carried no arguments at all.
    #[error("missing content: expected chat message (content, clientOffset?)")]
    MissingContent,
    /// The arguments could not be decoded (e.g. binary attachments or invalid UTF-16).
    #[error("undecodable arguments: {0}")]
    Undecodable(String),
    /// `content` was not a string.
    #[error("content must be a string, got {0}")]
    ContentNotString(&'static str),
    /// `content` was the empty string.
    #[error("content is empty")]
    EmptyContent,
    /// `content` exceeded the configured limit.
    #[error("content is {size} bytes, the limit is {limit}")]
    ContentTooLarge {
        /// Size in UTF-8 bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// `clientOffset` was neither a string nor null.
    #[error("clientOffset must be a string, got {0}")]
    OffsetNotString(&'static str),
    /// `clientOffset` was the empty string.
    #[error("clientOffset is empty")]
    EmptyOffset,
    /// `clientOffset` exceeded the configured limit.
    #[error("clientOffset is {size} bytes, the limit is {limit}")]
    OffsetTooLarge {
        /// Size in UTF-8 bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// More arguments than (content, clientOffset, meta).
    #[error("{0} arguments, expected at most 3: chat message (content, clientOffset?, meta?)")]
    TooManyArguments(usize),
    /// The third argument was neither an object nor null.
    #[error("meta must be an object like {{ author }}, got {0}")]
    MetaNotObject(&'static str),
    /// `meta.author` is not a usable nickname.
    #[error("invalid author: {0}")]
    BadAuthor(NicknameError),
}

/// Validates the arguments of a `chat message` event (the ack callback is not among them):
/// `(content, clientOffset?, meta?)` with `meta = { author? }` (other meta fields are ignored,
/// so newer clients can add some).
pub fn validate_chat_message(args: &[Value], limits: &Limits) -> Result<ChatInput, PayloadError> {
    if args.len() > 3 {
        return Err(PayloadError::TooManyArguments(args.len()));
    }
    let content = match args.first() {
        None => return Err(PayloadError::MissingContent),
        Some(Value::String(text)) => text,
        Some(other) => return Err(PayloadError::ContentNotString(json_type_name(other))),
    };
    if content.is_empty() {
        return Err(PayloadError::EmptyContent);
    }
    if content.len() > limits.max_message_bytes {
        return Err(PayloadError::ContentTooLarge {
            size: content.len(),
            limit: limits.max_message_bytes,
        });
    }
    let client_offset = match args.get(1) {
        // JavaScript's `undefined` in an argument list arrives as null.
        None | Some(Value::Null) => None,
        Some(Value::String(offset)) if offset.is_empty() => {
            return Err(PayloadError::EmptyOffset);
        }
        Some(Value::String(offset)) if offset.len() > limits.max_client_offset_bytes => {
            return Err(PayloadError::OffsetTooLarge {
                size: offset.len(),
                limit: limits.max_client_offset_bytes,
            });
        }
        Some(Value::String(offset)) => Some(ClientOffset(offset.clone())),
        Some(other) => return Err(PayloadError::OffsetNotString(json_type_name(other))),
    };
    let author = match args.get(2) {
        None | Some(Value::Null) => None,
        Some(Value::Object(meta)) => match meta.get("author") {
            None | Some(Value::Null) => None,
            Some(author) => Some(validate_nickname(author).map_err(PayloadError::BadAuthor)?),
        },
        Some(other) => return Err(PayloadError::MetaNotObject(json_type_name(other))),
    };
    Ok(ChatInput {
        content: content.clone(),
        client_offset,
        author,
    })
}

/// Longest nickname, in characters.
pub const MAX_NICKNAME_CHARS: usize = 32;

/// Why a nickname was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NicknameError {
    /// Not a string.
    #[error("a nickname must be a string, got {0}")]
    NotString(&'static str),
    /// Nothing left after trimming white space.
    #[error("a nickname cannot be empty")]
    Empty,
    /// Longer than [`MAX_NICKNAME_CHARS`].
    #[error("a nickname has at most 32 characters, got {0}")]
    TooLong(usize),
    /// Holds a control character (newlines, escapes...).
    #[error("a nickname cannot contain control characters")]
    Control,
}

/// Validates a nickname (or author) and returns it trimmed.
pub fn validate_nickname(value: &Value) -> Result<String, NicknameError> {
    let Value::String(text) = value else {
        return Err(NicknameError::NotString(json_type_name(value)));
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(NicknameError::Empty);
    }
    let chars = trimmed.chars().count();
    if chars > MAX_NICKNAME_CHARS {
        return Err(NicknameError::TooLong(chars));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(NicknameError::Control);
    }
    Ok(trimmed.to_string())
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
    Ok(Handshake {
        offset,
        nickname,
        latest,
        epoch,
    })
}

/// Default and largest `history` page.
pub const HISTORY_DEFAULT_LIMIT: u64 = 50;
/// Largest `history` page.
pub const HISTORY_MAX_LIMIT: u64 = 200;

/// A `history ({ before, limit })` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRequest {
    /// Messages with ids below this (`None`: the newest).
    pub before: Option<u64>,
    /// At most this many.
    pub limit: u64,
}

/// Why a `history` request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// Not `({ before?, limit? })`.
    #[error("expected history ({{ before, limit }}), got {0}")]
    Shape(String),
    /// `before` is not an id.
    #[error("invalid before: expected a message id, got {0}")]
    Before(String),
    /// `limit` is out of range.
    #[error("invalid limit: expected an integer from 1 to 200, got {0}")]
    Limit(String),
}

/// Validates the arguments of a `history` event.
pub fn parse_history_request(args: &[Value]) -> Result<HistoryRequest, HistoryError> {
    let query = match args {
        [] | [Value::Null] => {
            return Ok(HistoryRequest {
                before: None,
                limit: HISTORY_DEFAULT_LIMIT,
            });
        }
        [Value::Object(query)] => query,
        other => {
            let shown: Vec<&str> = other.iter().map(json_type_name).collect();
            return Err(HistoryError::Shape(shown.join(", ")));
        }
    };
    let before = match query.get("before") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64() {
            Some(id) => Some(id),
            None => return Err(HistoryError::Before(value.to_string())),
        },
    };
    let limit = match query.get("limit") {
        None | Some(Value::Null) => HISTORY_DEFAULT_LIMIT,
        Some(value) => match value.as_u64() {
            Some(n) if (1..=HISTORY_MAX_LIMIT).contains(&n) => n,
            _ => return Err(HistoryError::Limit(value.to_string())),
        },
    };
    Ok(HistoryRequest { before, limit })
}

/// The body of a `chat message` ack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AckReply {
    /// Stored under `id` (new), or already stored under `id` (`duplicate: true`).
    Stored {
        /// The message's id.
        id: MessageId,
        /// Present and true when this was a retry of an already stored message.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
    },
    /// Over the connection's send rate; nothing was stored. Retry after `retryAfterMs`.
    RateLimited {
        /// Always "rate limited".
        error: &'static str,
        /// Milliseconds until a send will be accepted.
        #[serde(rename = "retryAfterMs")]
        retry_after_ms: u64,
    },
    /// Rejected; nothing was stored. A retrying client should stop.
    Rejected {
        /// What was wrong.
        error: String,
    },
}

/// Names a JSON value's type the way a JavaScript developer would.
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
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
    fn payloads() {
        let limits = Limits {
            max_message_bytes: 8,
            max_client_offset_bytes: 4,
        };
        let ok = |content: &str, offset: Option<&str>| ChatInput {
            content: content.into(),
            client_offset: offset.map(|o| ClientOffset(o.into())),
            author: None,
        };
        assert_eq!(
            validate_chat_message(&[json!("hi")], &limits),
            Ok(ok("hi", None))
        );
        assert_eq!(
            validate_chat_message(&[json!("hi"), json!("a-1")], &limits),
            Ok(ok("hi", Some("a-1")))
        );
        assert_eq!(
            validate_chat_message(&[json!("hi"), json!(null)], &limits),
            Ok(ok("hi", None))
        );
        assert_eq!(
            validate_chat_message(&[json!("12345678")], &limits),
            Ok(ok("12345678", None))
        );
        use PayloadError::*;
        for (args, want) in [
            (vec![], MissingContent),
            (vec![json!(42)], ContentNotString("number")),
            (vec![json!(null)], ContentNotString("null")),
            (vec![json!({})], ContentNotString("object")),
            (vec![json!("")], EmptyContent),
            (
                vec![json!("123456789")],
                ContentTooLarge { size: 9, limit: 8 },
            ),
            (vec![json!("hi"), json!(7)], OffsetNotString("number")),
            (vec![json!("hi"), json!("")], EmptyOffset),
            (
                vec![json!("hi"), json!("12345")],
                OffsetTooLarge { size: 5, limit: 4 },
            ),
            (
                vec![json!("hi"), json!("a"), json!({}), json!(1)],
                TooManyArguments(4),
            ),
            (
                vec![json!("hi"), json!("a"), json!("b")],
                MetaNotObject("string"),
            ),
            (
                vec![json!("hi"), json!("a"), json!({ "author": "" })],
                BadAuthor(NicknameError::Empty),
            ),
            (
                vec![json!("hi"), json!("a"), json!({ "author": 5 })],
                BadAuthor(NicknameError::NotString("number")),
            ),
        ] {
            assert_eq!(validate_chat_message(&args, &limits), Err(want), "{args:?}");
        }
    }

    #[test]
    fn authors_and_nicknames() {
        let limits = Limits::default();
        let input = validate_chat_message(
            &[
                json!("hi"),
                json!("o"),
                json!({ "author": "  Ada ", "color": "red" }),
            ],
            &limits,
        );
        assert_eq!(input.map(|i| i.author), Ok(Some("Ada".to_string())));
        let input = validate_chat_message(&[json!("hi"), json!(null), json!(null)], &limits);
        assert_eq!(input.map(|i| i.author), Ok(None));
        assert_eq!(
            validate_nickname(&json!("x".repeat(33))),
            Err(NicknameError::TooLong(33))
        );
        assert_eq!(
            validate_nickname(&json!("a\nb")),
            Err(NicknameError::Control)
        );
        assert_eq!(
            validate_nickname(&json!("é".repeat(32))),
            Ok("é".repeat(32))
        );
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
            })
        );
        assert_eq!(
            parse_handshake(&json!({})),
            Ok(Handshake {
                offset: 0,
                nickname: None,
                latest: None,
                epoch: None,
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
    fn history_requests() {
        assert_eq!(
            parse_history_request(&[]),
            Ok(HistoryRequest {
                before: None,
                limit: 50
            })
        );
        assert_eq!(
            parse_history_request(&[json!({ "before": 10, "limit": 5 })]),
            Ok(HistoryRequest {
                before: Some(10),
                limit: 5
            })
        );
        for bad in [
            vec![json!(5)],
            vec![json!({ "before": -1 })],
            vec![json!({ "limit": 0 })],
            vec![json!({ "limit": 201 })],
            vec![json!({}), json!({})],
        ] {
            assert!(parse_history_request(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ack_bodies() {
        let stored = AckReply::Stored {
            id: MessageId(3),
            duplicate: false,
        };
        assert_eq!(serde_json::to_value(&stored).ok(), Some(json!({ "id": 3 })));
        let dup = AckReply::Stored {
            id: MessageId(3),
            duplicate: true,
        };
        assert_eq!(
            serde_json::to_value(&dup).ok(),
            Some(json!({ "id": 3, "duplicate": true }))
        );
        let limited = AckReply::RateLimited {
            error: "rate limited",
            retry_after_ms: 50,
        };
        assert_eq!(
            serde_json::to_value(&limited).ok(),
            Some(json!({ "error": "rate limited", "retryAfterMs": 50 }))
        );
        let rejected = AckReply::Rejected {
            error: "content is empty".into(),
        };
        assert_eq!(
            serde_json::to_value(&rejected).ok(),
            Some(json!({ "error": "content is empty" }))
        );
    }
}
