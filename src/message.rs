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
//!   user, time, room })`, a `history` entry).
//!
//! - [`RetryKey`] and its hash [`DedupKey`]: what makes a message a retry of another (its
//!   room, its verified sender, its client offset and content).
//!
//! An entry of the log is a chat message or a [`RoomEvent`] (an access change, a deletion):
//! both take an id, are stored, replayed and delivered in one order; the `event` field of each
//! shape says which.
//!
//! It depends on nothing else in the crate but [`crate::access`]'s types, and does no I/O.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::access::RoomEvent;

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

/// What makes a message a retry of another: the same room, the same verified sender (none
/// for anonymous senders), the same client offset and the same content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryKey<'a> {
    /// The room; `None` is the default room.
    pub room: Option<&'a str>,
    /// The verified sender's user id (a token's `sub`); `None` for anonymous senders.
    pub user: Option<&'a str>,
    /// The client offset.
    pub offset: &'a str,
    /// The content.
    pub content: &'a str,
}

impl<'a> RetryKey<'a> {
    /// The key of an anonymous message of `room` (`None`: the default room).
    pub fn new(room: Option<&'a str>, offset: &'a str, content: &'a str) -> Self {
        Self {
            room,
            user: None,
            offset,
            content,
        }
    }

    /// Its hash, the dedup index's key ([`DedupKey`]). Anonymous senders keep the keys written
    /// before identities existed, and the default room those written before rooms existed.
    pub fn dedup_key(&self) -> DedupKey {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        // A verified sender's messages never collapse into another's (nor an anonymous one's).
        if let Some(user) = self.user {
            hash.update(b"tidings/user/1\0");
            hash.update((user.len() as u64).to_be_bytes());
            hash.update(user.as_bytes());
        }
        match self.room {
            None => hash.update(b"tidings/1\0"),
            Some(room) => {
                hash.update(b"tidings/room/1\0");
                hash.update((room.len() as u64).to_be_bytes());
                hash.update(room.as_bytes());
            }
        }
        hash.update((self.offset.len() as u64).to_be_bytes());
        hash.update(self.offset.as_bytes());
        hash.update(self.content.as_bytes());
        let digest = hash.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        DedupKey(bytes)
    }
}

/// The key deduplication looks a message up by: 16 bytes of SHA-256 over a tag, the verified
/// sender and the room when there are, the client offset (length first, so `("ab", "c")` is
/// not `("a", "bc")`) and the content ([`RetryKey::dedup_key`]). One index probe finds the
/// message a retry repeats, however many messages share its offset; a hash collision is told
/// apart by comparing the stored fields ([`StoredMessage::is_retried_by`]). The same key is a
/// cluster's `Nats-Msg-Id`, so a single node and a cluster apply one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DedupKey(pub [u8; 16]);

impl DedupKey {
    /// As one integer (the dedup table's key type).
    pub fn as_u128(self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    /// As 32 hex digits.
    pub fn hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A validated `chat message` from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatInput {
    /// The message text (1..=max bytes).
    pub content: String,
    /// The idempotency key, absent for clients that send only the content.
    pub client_offset: Option<ClientOffset>,
    /// The sender's nickname, from the optional third argument `{ author }`, or the name
    /// in its token.
    pub author: Option<String>,
    /// Its room; `None` is the default room (see [`StoredMessage::room`]).
    pub room: Option<String>,
    /// The verified sender's user id (its token's `sub`); `None` for anonymous senders.
    pub user: Option<String>,
    /// A room event instead of a chat message (`content` is empty then).
    pub event: Option<RoomEvent>,
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
    /// Its room, by name; `None` is the default room, whatever its name (`--default-room`,
    /// recorded in the file): every message stored before rooms existed, and every one sent to
    /// the default room since, so its name is written nowhere but once in the file (record
    /// version 3 on).
    pub room: Option<String>,
    /// The verified sender's user id; `None` for anonymous senders (record version 4 on).
    pub user: Option<String>,
    /// A room event (its author is `user`), or a deleted message's tombstone, instead of a
    /// chat message (record version 5; `content` is empty).
    pub event: Option<RoomEvent>,
}

impl ChatInput {
    /// What a retry of it repeats; `None` without a client offset (nothing can be a retry of
    /// it).
    pub fn retry_key(&self) -> Option<RetryKey<'_>> {
        Some(RetryKey {
            room: self.room.as_deref(),
            user: self.user.as_deref(),
            offset: &self.client_offset.as_ref()?.0,
            content: &self.content,
        })
    }

    /// Its dedup key; `None` without a client offset.
    pub fn dedup_key(&self) -> Option<DedupKey> {
        self.retry_key().map(|key| key.dedup_key())
    }
}

impl StoredMessage {
    /// What a retry of it repeats; `None` without a client offset.
    pub fn retry_key(&self) -> Option<RetryKey<'_>> {
        Some(RetryKey {
            room: self.room.as_deref(),
            user: self.user.as_deref(),
            offset: self.client_offset.as_deref()?,
            content: &self.content,
        })
    }

    /// Its dedup key; `None` without a client offset.
    pub fn dedup_key(&self) -> Option<DedupKey> {
        self.retry_key().map(|key| key.dedup_key())
    }

    /// Whether a message with `key` is a retry of this one. A tombstone keeps only the hash
    /// of what it erased, and answers a retry whose key hashes to it.
    pub fn is_retried_by(&self, key: &RetryKey<'_>) -> bool {
        match &self.event {
            Some(RoomEvent::Erased { dedup }) => *dedup == Some(key.dedup_key().0),
            _ => self.retry_key().as_ref() == Some(key),
        }
    }

    /// The key its dedup index entry is under: its dedup key, or the one a tombstone keeps.
    pub fn dedup_index_key(&self) -> Option<DedupKey> {
        match &self.event {
            Some(RoomEvent::Erased { dedup }) => dedup.map(DedupKey),
            _ => self.dedup_key(),
        }
    }

    /// Whether this row is a deleted message's tombstone.
    pub fn is_tombstone(&self) -> bool {
        matches!(self.event, Some(RoomEvent::Erased { .. }))
    }

    /// The tombstone that replaces it when it is deleted: its room, its id (the row) and its
    /// dedup key; nothing of its content, author or sender.
    pub fn tombstone(&self) -> StoredMessage {
        StoredMessage::erased(self.room.clone(), self.dedup_index_key())
    }

    /// A tombstone in `room`, keeping `dedup`.
    pub fn erased(room: Option<String>, dedup: Option<DedupKey>) -> StoredMessage {
        StoredMessage {
            content: String::new(),
            client_offset: None,
            received_at_ms: 0,
            author: None,
            room,
            user: None,
            event: Some(RoomEvent::Erased {
                dedup: dedup.map(|key| key.0),
            }),
        }
    }

    /// The record of `input`, received at `received_at_ms`.
    pub fn from_input(input: &ChatInput, received_at_ms: u64) -> Self {
        Self {
            content: input.content.clone(),
            client_offset: input.client_offset.as_ref().map(|o| o.0.clone()),
            received_at_ms,
            author: input.author.clone(),
            room: input.room.clone(),
            user: input.user.clone(),
            event: input.event.clone(),
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
/// serializes as `{ id, content, author, user, time }`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Its id.
    pub id: MessageId,
    /// Its text.
    pub content: String,
    /// The sender's nickname, if given (for a verified sender, the name in its token).
    pub author: Option<String>,
    /// The verified sender's user id; `None` (`null`) for anonymous senders.
    pub user: Option<String>,
    /// Server receive time, milliseconds since the Unix epoch.
    pub time: u64,
    /// Its room; `None` is the default room (the socket layer knows its name).
    #[serde(skip)]
    pub room: Option<String>,
    /// A room event instead of a chat message: delivered as `room changed` or `message
    /// deleted`, never in `history`.
    #[serde(skip)]
    pub event: Option<RoomEvent>,
}

impl Message {
    /// What clients see of `input`, stored under `id` at `time`.
    pub fn new(id: MessageId, input: ChatInput, time: u64) -> Self {
        Self {
            id,
            content: input.content,
            author: input.author,
            user: input.user,
            time,
            room: input.room,
            event: input.event,
        }
    }
}

impl From<StoredRow> for Message {
    fn from(row: StoredRow) -> Self {
        Self {
            id: row.id,
            content: row.message.content,
            author: row.message.author,
            user: row.message.user,
            time: row.message.received_at_ms,
            room: row.message.room,
            event: row.message.event,
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
            room: None,
            user: None,
            event: None,
        }
    }

    /// A `chat message` to `room` (`None`: the default room).
    pub(crate) fn input_in(room: Option<&str>, content: &str, offset: Option<&str>) -> ChatInput {
        ChatInput {
            room: room.map(String::from),
            ..input(content, offset)
        }
    }

    /// Stored message `id`, with `content`.
    pub(crate) fn message(id: u64, content: &str) -> SharedMessage {
        Arc::new(Message {
            id: MessageId(id),
            content: content.to_owned(),
            author: None,
            user: None,
            time: 0,
            room: None,
            event: None,
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
            room: None,
            user: Some("u-1".into()),
            event: None,
        };
        let record = StoredMessage::from_input(&input, 7);
        assert_eq!(record.client_offset.as_deref(), Some("o-1"));
        let row = StoredRow {
            id: MessageId(3),
            message: record,
        };
        assert_eq!(Message::from(row), Message::new(MessageId(3), input, 7));
    }

    #[test]
    fn the_dedup_key_is_the_offset_and_the_content() {
        let key =
            |content: &str, offset: Option<&str>| test_support::input(content, offset).dedup_key();
        assert_eq!(key("hi", Some("o-1")), key("hi", Some("o-1")));
        assert_ne!(key("hi", Some("o-1")), key("other", Some("o-1")));
        assert_ne!(key("hi", Some("o-1")), key("hi", Some("o-2")));
        assert_ne!(key("c", Some("ab")), key("bc", Some("a")));
        assert_eq!(key("hi", None), None);
        let record = StoredMessage::from_input(&test_support::input("hi", Some("o-1")), 0);
        assert_eq!(record.dedup_key(), key("hi", Some("o-1")));
        assert!(record.is_retried_by(&RetryKey::new(None, "o-1", "hi")));
        assert!(!record.is_retried_by(&RetryKey::new(None, "o-1", "hi!")));
        assert!(!record.is_retried_by(&RetryKey::new(Some("dev"), "o-1", "hi")));
        let by = |user| RetryKey {
            user: Some(user),
            ..RetryKey::new(None, "o-1", "hi")
        };
        assert!(!record.is_retried_by(&by("alice")));
        // Verified senders' keys differ from each other's and from an anonymous sender's.
        assert_ne!(by("alice").dedup_key(), by("bob").dedup_key());
        assert_ne!(
            by("alice").dedup_key(),
            RetryKey::new(None, "o-1", "hi").dedup_key()
        );
        assert_ne!(
            RetryKey {
                user: Some("a"),
                ..RetryKey::new(None, "b", "c")
            }
            .dedup_key(),
            RetryKey {
                user: Some("ab"),
                ..RetryKey::new(None, "", "c")
            }
            .dedup_key()
        );
        // Rooms are part of the key; the default room keeps the keys it had before rooms.
        let key = |room, offset, content| RetryKey::new(room, offset, content).dedup_key();
        let in_dev = key(Some("dev"), "o-1", "hi");
        assert_ne!(in_dev, key(None, "o-1", "hi"));
        assert_ne!(in_dev, key(Some("dev2"), "o-1", "hi"));
        // Keys stay what they were: a cluster's message ids (and the files' index) use them.
        assert_eq!(
            key(None, "o-1", "hi").hex(),
            "5f9f90b9cd0fb4fb18caf475883ff312"
        );
    }
}
