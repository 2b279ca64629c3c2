//! `chat message (content, clientOffset?, meta?)`: validation of what a client sends, and the
//! ack bodies it gets back. Pure; errors carry the ack's `error` text.

use serde::Serialize;
use serde_json::Value;

use super::json_type_name;
use super::nickname::{NicknameError, validate_nickname};
use super::room::{RoomName, RoomNameError};
use crate::message::{ChatInput, ClientOffset, MessageId};

/// Size limits applied to incoming messages (`--max-message-bytes`,
/// `--max-client-offset-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted `content`, in UTF-8 bytes.
    pub max_message_bytes: usize,
    /// Largest accepted `clientOffset`, in UTF-8 bytes.
    pub max_client_offset_bytes: usize,
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
    /// `meta.room` is not a room name.
    #[error("invalid room: {0}")]
    BadRoom(RoomNameError),
}

/// Validates the arguments of a `chat message` event (the ack callback is not among them):
/// `(content, clientOffset?, meta?)` with `meta = { author?, room? }` (other meta fields are
/// ignored, so newer clients can add some). The input's room is the name given, `None` when
/// none was (the socket layer turns the default room's name into `None` too).
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
    let (author, room) = match args.get(2) {
        None | Some(Value::Null) => (None, None),
        Some(Value::Object(meta)) => {
            let author = match meta.get("author") {
                None | Some(Value::Null) => None,
                Some(author) => Some(validate_nickname(author).map_err(PayloadError::BadAuthor)?),
            };
            let room = match meta.get("room") {
                None | Some(Value::Null) => None,
                Some(room) => Some(
                    RoomName::from_value(room)
                        .map_err(PayloadError::BadRoom)?
                        .to_string(),
                ),
            };
            (author, room)
        }
        Some(other) => return Err(PayloadError::MetaNotObject(json_type_name(other))),
    };
    Ok(ChatInput {
        content: content.clone(),
        client_offset,
        author,
        room,
        // Set by the socket layer from the connection's verified identity, never from input.
        user: None,
        event: None,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: Limits = Limits {
        max_message_bytes: 65_536,
        max_client_offset_bytes: 256,
    };

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
            user: None,
            event: None,
            room: None,
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
        let limits = LIMITS;
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
