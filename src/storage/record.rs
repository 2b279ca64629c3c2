//! The byte encoding of one row of the `messages` table: a format-version byte, then a
//! postcard body of [`StoredMessage`].
//!
//! Owns the byte format only; it does no I/O, so unit tests and fuzz targets call
//! [`encode_record`] and [`decode_record`] directly. The record type itself is in
//! [`crate::message`], apart from what clients see, so the stored format can evolve (through
//! [`RECORD_FORMAT_VERSION`]) without touching the wire.

use serde::Deserialize;

pub use crate::message::StoredMessage;

/// The newest version byte written in front of a record (see [`version_for`]); a decoder
/// seeing an unknown value refuses it rather than guessing. Versions 1 (no author), 2 (no
/// room: the default room), 3 (no user: anonymous) and 4 (no room event) are still read, and
/// 3 and 4 are still written for chat messages: only room events and tombstones need 5.
pub const RECORD_FORMAT_VERSION: u8 = 5;

/// The version-1 layout, decoded for files written before authors existed.
#[derive(Deserialize)]
struct StoredMessageV1 {
    content: String,
    client_offset: Option<String>,
    received_at_ms: u64,
}

impl From<StoredMessageV1> for StoredMessage {
    fn from(v1: StoredMessageV1) -> Self {
        Self {
            content: v1.content,
            client_offset: v1.client_offset,
            received_at_ms: v1.received_at_ms,
            author: None,
            room: None,
            user: None,
            event: None,
        }
    }
}

/// The version-2 layout, decoded for files written before rooms existed (every message is
/// the default room's).
#[derive(Deserialize)]
struct StoredMessageV2 {
    content: String,
    client_offset: Option<String>,
    received_at_ms: u64,
    author: Option<String>,
}

impl From<StoredMessageV2> for StoredMessage {
    fn from(v2: StoredMessageV2) -> Self {
        Self {
            content: v2.content,
            client_offset: v2.client_offset,
            received_at_ms: v2.received_at_ms,
            author: v2.author,
            room: None,
            user: None,
            event: None,
        }
    }
}

/// The version-3 layout, decoded for files written before identities existed (every sender is
/// anonymous).
#[derive(Deserialize)]
struct StoredMessageV3 {
    content: String,
    client_offset: Option<String>,
    received_at_ms: u64,
    author: Option<String>,
    room: Option<String>,
}

impl From<StoredMessageV3> for StoredMessage {
    fn from(v3: StoredMessageV3) -> Self {
        Self {
            content: v3.content,
            client_offset: v3.client_offset,
            received_at_ms: v3.received_at_ms,
            author: v3.author,
            room: v3.room,
            user: None,
            event: None,
        }
    }
}

/// The version-4 layout, decoded for chat messages of verified senders (room events did not
/// exist).
#[derive(Deserialize)]
struct StoredMessageV4 {
    content: String,
    client_offset: Option<String>,
    received_at_ms: u64,
    author: Option<String>,
    room: Option<String>,
    user: Option<String>,
}

impl From<StoredMessageV4> for StoredMessage {
    fn from(v4: StoredMessageV4) -> Self {
        Self {
            content: v4.content,
            client_offset: v4.client_offset,
            received_at_ms: v4.received_at_ms,
            author: v4.author,
            room: v4.room,
            user: v4.user,
            event: None,
        }
    }
}

/// Why a stored record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// The row is empty: not even a version byte.
    #[error("stored record is empty")]
    Empty,
    /// The row was written by a format this build does not know.
    #[error("stored record has format version {found}, this build reads versions 1 to {expected}")]
    UnknownVersion {
        /// The version byte found.
        found: u8,
        /// The version this build writes and reads.
        expected: u8,
    },
    /// The body does not decode as a record of the known version.
    #[error("stored record is malformed: {0}")]
    Malformed(String),
}

/// The version a record is written in: [`RECORD_FORMAT_VERSION`] for a room event or a
/// tombstone, 4 for a verified sender's message, 3 for any other, so that a build from before
/// identities (which reads versions 1 to 3) still reads every message a server without
/// `--auth` writes, and one from before room events every chat message: the nodes of a
/// cluster can be upgraded one at a time.
pub fn version_for(message: &StoredMessage) -> u8 {
    if message.event.is_some() {
        RECORD_FORMAT_VERSION
    } else if message.user.is_some() {
        4
    } else {
        3
    }
}

/// The version-3 layout, borrowed, for writing.
#[derive(serde::Serialize)]
struct StoredMessageV3Ref<'a> {
    content: &'a str,
    client_offset: Option<&'a str>,
    received_at_ms: u64,
    author: Option<&'a str>,
    room: Option<&'a str>,
}

/// The version-4 layout, borrowed, for writing.
#[derive(serde::Serialize)]
struct StoredMessageV4Ref<'a> {
    content: &'a str,
    client_offset: Option<&'a str>,
    received_at_ms: u64,
    author: Option<&'a str>,
    room: Option<&'a str>,
    user: Option<&'a str>,
}

/// Encodes a record as `[version] ++ postcard(record)`, in the version [`version_for`] picks.
pub fn encode_record(message: &StoredMessage) -> Vec<u8> {
    let version = version_for(message);
    let mut bytes = Vec::with_capacity(message.content.len() + 32);
    bytes.push(version);
    // Serializing owned strings and integers into a Vec cannot fail; fall back to an empty
    // body rather than panic if postcard ever disagrees (the decoder then reports it).
    let encoded = match version {
        RECORD_FORMAT_VERSION => postcard::to_extend(message, bytes),
        4 => postcard::to_extend(
            &StoredMessageV4Ref {
                content: &message.content,
                client_offset: message.client_offset.as_deref(),
                received_at_ms: message.received_at_ms,
                author: message.author.as_deref(),
                room: message.room.as_deref(),
                user: message.user.as_deref(),
            },
            bytes,
        ),
        _ => postcard::to_extend(
            &StoredMessageV3Ref {
                content: &message.content,
                client_offset: message.client_offset.as_deref(),
                received_at_ms: message.received_at_ms,
                author: message.author.as_deref(),
                room: message.room.as_deref(),
            },
            bytes,
        ),
    };
    encoded.unwrap_or_else(|_| vec![version])
}

/// Decodes exactly one `T` from `body`: trailing bytes are an error.
fn decode_exact<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, RecordError> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(body).map_err(|e| RecordError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(RecordError::Malformed(format!(
            "{} trailing bytes after the record",
            rest.len()
        )));
    }
    Ok(value)
}

/// Decodes bytes written by [`encode_record`]. Trailing bytes after the record are an error:
/// a row is exactly one record.
pub fn decode_record(bytes: &[u8]) -> Result<StoredMessage, RecordError> {
    let (&version, body) = bytes.split_first().ok_or(RecordError::Empty)?;
    match version {
        RECORD_FORMAT_VERSION => decode_exact::<StoredMessage>(body),
        4 => decode_exact::<StoredMessageV4>(body).map(StoredMessage::from),
        3 => decode_exact::<StoredMessageV3>(body).map(StoredMessage::from),
        2 => decode_exact::<StoredMessageV2>(body).map(StoredMessage::from),
        1 => decode_exact::<StoredMessageV1>(body).map(StoredMessage::from),
        found => Err(RecordError::UnknownVersion {
            found,
            expected: RECORD_FORMAT_VERSION,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    fn sample() -> StoredMessage {
        StoredMessage {
            content: "héllo <b>\0".into(),
            client_offset: Some("undefined-0".into()),
            received_at_ms: 1_764_000_000_000,
            author: Some("ada".into()),
            user: Some("u-1".into()),
            room: Some("dev".into()),
            event: None,
        }
    }

    #[test]
    fn round_trips() {
        let m = sample();
        assert_eq!(decode_record(&encode_record(&m)), Ok(m));
        let step7 = StoredMessage {
            client_offset: None,
            author: None,
            room: None,
            user: None,
            ..sample()
        };
        assert_eq!(decode_record(&encode_record(&step7)), Ok(step7));
    }

    #[test]
    fn an_anonymous_message_is_written_as_version_3_which_older_builds_read() {
        let anonymous = StoredMessage {
            user: None,
            ..sample()
        };
        let bytes = encode_record(&anonymous);
        assert_eq!(bytes[0], 3);
        // Exactly the layout a build from before identities decodes, nothing left over.
        let old = decode_exact::<StoredMessageV3>(&bytes[1..]).map(StoredMessage::from);
        assert_eq!(old, Ok(anonymous.clone()));
        assert_eq!(decode_record(&bytes), Ok(anonymous));
        let signed = sample();
        assert_eq!(encode_record(&signed)[0], 4);
    }

    #[test]
    fn a_verified_sender_s_message_is_written_as_version_4_which_older_builds_read() {
        let bytes = encode_record(&sample());
        assert_eq!(bytes[0], 4);
        let old = decode_exact::<StoredMessageV4>(&bytes[1..]).map(StoredMessage::from);
        assert_eq!(old, Ok(sample()));
    }

    #[test]
    fn room_events_and_tombstones_are_version_5() {
        use crate::access::{Role, RoomEvent};
        for event in [
            RoomEvent::Created {
                private: true,
                read_only: false,
            },
            RoomEvent::RoleSet {
                user: "bob".into(),
                role: Role::Moderator,
            },
            RoomEvent::Banned { user: "bob".into() },
            RoomEvent::Deleted {
                id: 9,
                dedup: Some([7; 16]),
            },
        ] {
            let entry = StoredMessage {
                content: String::new(),
                client_offset: None,
                event: Some(event),
                ..sample()
            };
            let bytes = encode_record(&entry);
            assert_eq!(bytes[0], RECORD_FORMAT_VERSION);
            assert_eq!(decode_record(&bytes), Ok(entry));
        }
        let tombstone = sample().tombstone();
        assert!(tombstone.is_tombstone());
        assert_eq!(
            decode_record(&encode_record(&tombstone)),
            Ok(tombstone.clone())
        );
        // It keeps the key, so a retry of what it erased is still answered.
        assert_eq!(tombstone.dedup_index_key(), sample().dedup_key());
        let retry = sample();
        let key = retry.retry_key();
        assert!(key.is_some_and(|key| tombstone.is_retried_by(&key)));
        assert!(tombstone.content.is_empty() && tombstone.user.is_none());
    }

    #[test]
    fn refuses_unknown_version() {
        let mut bytes = encode_record(&sample());
        bytes[0] = 6;
        assert_eq!(
            decode_record(&bytes),
            Err(RecordError::UnknownVersion {
                found: 6,
                expected: 5
            })
        );
        assert!(
            decode_record(&bytes)
                .err()
                .is_some_and(|e| e.to_string().contains("format version 6"))
        );
    }

    #[test]
    fn reads_version_1_rows() {
        // Bytes as version 1 wrote them: content, client offset, receive time.
        #[derive(Serialize)]
        struct V1<'a> {
            content: &'a str,
            client_offset: Option<&'a str>,
            received_at_ms: u64,
        }
        let v1 = V1 {
            content: "old",
            client_offset: Some("o-1"),
            received_at_ms: 7,
        };
        let bytes = postcard::to_extend(&v1, vec![1u8]).unwrap_or_default();
        assert_eq!(
            decode_record(&bytes),
            Ok(StoredMessage {
                content: "old".into(),
                client_offset: Some("o-1".into()),
                received_at_ms: 7,
                author: None,
                user: None,
                room: None,
                event: None,
            })
        );
    }

    #[test]
    fn reads_version_2_rows_as_the_default_room() {
        #[derive(Serialize)]
        struct V2<'a> {
            content: &'a str,
            client_offset: Option<&'a str>,
            received_at_ms: u64,
            author: Option<&'a str>,
        }
        let v2 = V2 {
            content: "before rooms",
            client_offset: Some("o-2"),
            received_at_ms: 9,
            author: Some("ada"),
        };
        let bytes = postcard::to_extend(&v2, vec![2u8]).unwrap_or_default();
        assert_eq!(
            decode_record(&bytes),
            Ok(StoredMessage {
                content: "before rooms".into(),
                client_offset: Some("o-2".into()),
                received_at_ms: 9,
                author: Some("ada".into()),
                user: None,
                room: None,
                event: None,
            })
        );
    }

    #[test]
    fn reads_version_3_rows() {
        // Bytes as version 3 wrote them: version 2's fields and the room, no user.
        #[derive(Serialize)]
        struct V3<'a> {
            content: &'a str,
            client_offset: Option<&'a str>,
            received_at_ms: u64,
            author: Option<&'a str>,
            room: Option<&'a str>,
        }
        let v3 = V3 {
            content: "before identities",
            client_offset: Some("o-3"),
            received_at_ms: 11,
            author: Some("ada"),
            room: Some("dev"),
        };
        let bytes = postcard::to_extend(&v3, vec![3u8]).unwrap_or_default();
        assert_eq!(
            decode_record(&bytes),
            Ok(StoredMessage {
                content: "before identities".into(),
                client_offset: Some("o-3".into()),
                received_at_ms: 11,
                author: Some("ada".into()),
                room: Some("dev".into()),
                user: None,
                event: None,
            })
        );
    }

    #[test]
    fn refuses_empty_truncated_and_trailing() {
        assert_eq!(decode_record(&[]), Err(RecordError::Empty));
        let bytes = encode_record(&sample());
        assert!(matches!(
            decode_record(&bytes[..bytes.len() - 3]),
            Err(RecordError::Malformed(_))
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode_record(&long),
            Err(RecordError::Malformed(_))
        ));
    }
}
