//! The chat message itself, in each shape it takes on its way through the server, and the
//! conversions between them (in this one place).
//!
//! ```text
//! client ──ChatInput──▶ log ──StoredMessage (+ id = StoredRow)──▶ redb
//!                            └──Message──▶ hub ▶ live delivery, tail cache, replay, history
//! ```
//!
//! - [`ChatInput`]: a validated `chat message` from a client, before it has an id.
//! - [`StoredMessage`]: what one row of the database holds (the record; its byte encoding is
//!   `storage::record`'s job). [`StoredRow`] pairs it with its id.
//! - [`Message`]: a stored message as clients receive it (`chat message (content, id, { author,
//!   time })`, a `history` entry).
//!
//! A leaf module: it depends on nothing else in the crate and does no I/O.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A stored message's id: strictly increasing from 1, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct MessageId(pub u64);

impl MessageId {
    /// The largest id ever assigned: the largest integer a JavaScript client holds exactly
    /// (`Number.MAX_SAFE_INTEGER`, the handshake's largest `serverOffset`).
    pub const MAX: MessageId = MessageId((1 << 53) - 1);
}

/// A client's idempotency key for one message (the tutorial's `clientOffset`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientOffset(pub String);

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

/// One stored chat message: what a row of the `messages` table holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The message text exactly as the client sent it.
    pub content: String,
    /// The client's idempotency key, when it sent one (absent for step-7 clients).
    pub client_offset: Option<String>,
    /// Server receive time, milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// The sender's nickname, when it gave one (record version 2 on).
    pub author: Option<String>,
}

impl StoredMessage {
    /// The record of `input`, received at `received_at_ms`.
    pub fn from_input(input: &ChatInput, received_at_ms: u64) -> Self {
        Self {
            content: input.content.clone(),
            client_offset: input.client_offset.as_ref().map(|o| o.0.clone()),
            received_at_ms,
            author: input.author.clone(),
        }
    }
}

/// A stored message with its id, as read back from the database (or imported into it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    /// Its id.
    pub id: MessageId,
    /// Its record.
    pub message: StoredMessage,
}

/// A stored message as clients receive it: live, in replay and in `history` pages (where it
/// serializes as `{ id, content, author, time }`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Its id.
    pub id: MessageId,
    /// Its text.
    pub content: String,
    /// The sender's nickname, if given.
    pub author: Option<String>,
    /// Server receive time, milliseconds since the Unix epoch.
    pub time: u64,
}

impl Message {
    /// What clients see of `input`, stored under `id` at `time`.
    pub fn new(id: MessageId, input: ChatInput, time: u64) -> Self {
        Self {
            id,
            content: input.content,
            author: input.author,
            time,
        }
    }
}

impl From<StoredRow> for Message {
    fn from(row: StoredRow) -> Self {
        Self {
            id: row.id,
            content: row.message.content,
            author: row.message.author,
            time: row.message.received_at_ms,
        }
    }
}

/// What happened to one appended message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored under a new id.
    Stored(MessageId),
    /// Same client offset and same content as an already stored message: not stored again.
    Duplicate(MessageId),
}

/// Messages are shared, never copied, between the tail cache and every socket's delivery.
pub type SharedMessage = Arc<Message>;

/// Shorthands for the crate's unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A `chat message` with `content` and, if given, a client offset.
    pub(crate) fn input(content: &str, offset: Option<&str>) -> ChatInput {
        ChatInput {
            content: content.into(),
            client_offset: offset.map(|o| ClientOffset(o.into())),
            author: None,
        }
    }

    /// Stored message `id`, with `content`.
    pub(crate) fn message(id: u64, content: &str) -> SharedMessage {
        Arc::new(Message {
            id: MessageId(id),
            content: content.to_owned(),
            author: None,
            time: 0,
        })
    }

    /// Stored message `id`, with content `m{id}`.
    pub(crate) fn msg(id: u64) -> SharedMessage {
        message(id, &format!("m{id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_becomes_the_same_record_and_message() {
        let input = ChatInput {
            content: "hi".into(),
            client_offset: Some(ClientOffset("o-1".into())),
            author: Some("ada".into()),
        };
        let record = StoredMessage::from_input(&input, 7);
        assert_eq!(record.client_offset.as_deref(), Some("o-1"));
        let row = StoredRow {
            id: MessageId(3),
            message: record,
        };
        assert_eq!(Message::from(row), Message::new(MessageId(3), input, 7));
    }
}
