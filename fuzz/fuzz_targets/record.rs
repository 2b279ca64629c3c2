//! Stored record decoding. What it checks:
//! - any bytes decode to a record or fail with a typed error, never a panic; an unknown
//!   version byte is refused as such;
//! - every record encodes and decodes to itself;
//! - every record, room events and tombstones included, encodes and decodes to itself;
//! - a version-1 row (no author), a version-2 row (no room), a version-3 row (no user) and a
//!   version-4 row (no room event), as files hold them, decode to the same record with no
//!   author (version 1), the default room (versions 1 and 2), an anonymous sender (1 to 3)
//!   and no room event (1 to 4);
//! - whatever decodes re-encodes, at version 5 with a room event, 4 with a verified sender
//!   and 3 otherwise, to bytes that decode to the same record, and those bytes are canonical
//!   (decoding and encoding them again gives them back). Not to the bytes it was decoded
//!   from: postcard accepts overlong varints, and older rows are rewritten at the version
//!   their fields need (tests/fuzz_regressions.rs).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use tidings::access::{Role, RoomEvent};
use tidings::storage::record::{
    RECORD_FORMAT_VERSION, RecordError, StoredMessage, decode_record, encode_record,
};

#[derive(Debug, Arbitrary)]
enum Input {
    /// Whatever a damaged or foreign row could hold.
    Bytes(Vec<u8>),
    /// The current version byte followed by anything.
    Versioned(Vec<u8>),
    /// The version-1 byte followed by anything.
    Version1(Vec<u8>),
    /// The version-2 byte followed by anything.
    Version2(Vec<u8>),
    /// A real record.
    Record {
        content: String,
        client_offset: Option<String>,
        received_at_ms: u64,
        author: Option<String>,
        room: Option<String>,
        user: Option<String>,
        event: Option<Event>,
    },
    /// A real version-4 record, as verified senders' messages are written.
    V4 {
        content: String,
        client_offset: Option<String>,
        received_at_ms: u64,
        author: Option<String>,
        room: Option<String>,
        user: Option<String>,
    },
    /// A real version-2 record, as files written before rooms existed hold them.
    V2 {
        content: String,
        client_offset: Option<String>,
        received_at_ms: u64,
        author: Option<String>,
    },
    /// A real version-1 record, as files written before authors existed hold them.
    V1 {
        content: String,
        client_offset: Option<String>,
        received_at_ms: u64,
    },
    /// A real version-3 record, as files written before identities existed hold them.
    V3 {
        content: String,
        client_offset: Option<String>,
        received_at_ms: u64,
        author: Option<String>,
        room: Option<String>,
    },
}

/// A room event, as the fuzzer builds one.
#[derive(Debug, Arbitrary)]
enum Event {
    Created { private: bool, read_only: bool },
    RoleSet { user: String, moderator: bool },
    Invited(String),
    Kicked(String),
    Banned(String),
    Unbanned(String),
    Muted(String),
    Unmuted(String),
    Deleted { id: u64, dedup: Option<[u8; 16]> },
    Erased(Option<[u8; 16]>),
}

impl From<Event> for RoomEvent {
    fn from(event: Event) -> Self {
        match event {
            Event::Created { private, read_only } => RoomEvent::Created { private, read_only },
            Event::RoleSet { user, moderator } => RoomEvent::RoleSet {
                user,
                role: if moderator { Role::Moderator } else { Role::Member },
            },
            Event::Invited(user) => RoomEvent::Invited { user },
            Event::Kicked(user) => RoomEvent::Kicked { user },
            Event::Banned(user) => RoomEvent::Banned { user },
            Event::Unbanned(user) => RoomEvent::Unbanned { user },
            Event::Muted(user) => RoomEvent::Muted { user },
            Event::Unmuted(user) => RoomEvent::Unmuted { user },
            Event::Deleted { id, dedup } => RoomEvent::Deleted { id, dedup },
            Event::Erased(dedup) => RoomEvent::Erased { dedup },
        }
    }
}

/// The version-4 layout, written here independently of the decoder's copy.
#[derive(Serialize)]
struct V4<'a> {
    content: &'a str,
    client_offset: Option<&'a str>,
    received_at_ms: u64,
    author: Option<&'a str>,
    room: Option<&'a str>,
    user: Option<&'a str>,
}

/// The version-3 layout, written here independently of the decoder's copy.
#[derive(Serialize)]
struct V3<'a> {
    content: &'a str,
    client_offset: Option<&'a str>,
    received_at_ms: u64,
    author: Option<&'a str>,
    room: Option<&'a str>,
}

/// The version-1 layout, written here independently of the decoder's copy.
#[derive(Serialize)]
struct V1<'a> {
    content: &'a str,
    client_offset: Option<&'a str>,
    received_at_ms: u64,
}

/// The version-2 layout, likewise.
#[derive(Serialize)]
struct V2<'a> {
    content: &'a str,
    client_offset: Option<&'a str>,
    received_at_ms: u64,
    author: Option<&'a str>,
}

fn decoded_round_trips(bytes: &[u8]) {
    match decode_record(bytes) {
        Ok(message) => {
            let again = encode_record(&message);
            // Version 5 carries a room event, 4 a verified sender; the rest is written as 3.
            let version = if message.event.is_some() {
                RECORD_FORMAT_VERSION
            } else if message.user.is_some() {
                4
            } else {
                3
            };
            assert_eq!(again.first(), Some(&version));
            let decoded = decode_record(&again);
            assert_eq!(decoded.as_ref(), Ok(&message));
            assert_eq!(decoded.map(|m| encode_record(&m)), Ok(again), "canonical");
        }
        Err(RecordError::Empty) => assert!(bytes.is_empty()),
        Err(RecordError::UnknownVersion { found, expected }) => {
            assert_eq!(bytes.first(), Some(&found));
            assert!(!matches!(found, 1..=RECORD_FORMAT_VERSION));
            assert_eq!(expected, RECORD_FORMAT_VERSION);
        }
        Err(RecordError::Malformed(why)) => {
            assert!(
                matches!(bytes.first(), Some(&(1..=RECORD_FORMAT_VERSION))),
                "{why}"
            );
        }
    }
}

fuzz_target!(|input: Input| match input {
    Input::Bytes(bytes) => decoded_round_trips(&bytes),
    Input::Versioned(mut body) => {
        body.insert(0, RECORD_FORMAT_VERSION);
        decoded_round_trips(&body);
    }
    Input::Version1(mut body) => {
        body.insert(0, 1);
        if let Ok(message) = decode_record(&body) {
            assert_eq!(message.author, None, "version 1 has no author");
            assert_eq!(message.room, None, "version 1 is the default room's");
        }
        decoded_round_trips(&body);
    }
    Input::Version2(mut body) => {
        body.insert(0, 2);
        if let Ok(message) = decode_record(&body) {
            assert_eq!(message.room, None, "version 2 is the default room's");
        }
        decoded_round_trips(&body);
    }
    Input::Record {
        content,
        client_offset,
        received_at_ms,
        author,
        room,
        user,
        event,
    } => {
        let message = StoredMessage {
            content,
            client_offset,
            received_at_ms,
            author,
            room,
            user,
            event: event.map(RoomEvent::from),
        };
        let bytes = encode_record(&message);
        assert_eq!(decode_record(&bytes), Ok(message));
        decoded_round_trips(&bytes);
    }
    Input::V4 {
        content,
        client_offset,
        received_at_ms,
        author,
        room,
        user,
    } => {
        let v4 = V4 {
            content: &content,
            client_offset: client_offset.as_deref(),
            received_at_ms,
            author: author.as_deref(),
            room: room.as_deref(),
            user: user.as_deref(),
        };
        let bytes = postcard::to_extend(&v4, vec![4u8])
            .unwrap_or_else(|e| panic!("postcard cannot encode a version-4 row: {e}"));
        let want = StoredMessage {
            content,
            client_offset,
            received_at_ms,
            author,
            room,
            user,
            event: None,
        };
        assert_eq!(decode_record(&bytes), Ok(want));
        decoded_round_trips(&bytes);
    }
    Input::V1 {
        content,
        client_offset,
        received_at_ms,
    } => {
        let v1 = V1 {
            content: &content,
            client_offset: client_offset.as_deref(),
            received_at_ms,
        };
        let bytes = postcard::to_extend(&v1, vec![1u8])
            .unwrap_or_else(|e| panic!("postcard cannot encode a version-1 row: {e}"));
        let want = StoredMessage {
            content: content.clone(),
            client_offset: client_offset.clone(),
            received_at_ms,
            author: None,
            room: None,
            user: None,
            event: None,
        };
        assert_eq!(decode_record(&bytes), Ok(want));
        decoded_round_trips(&bytes);
    }
    Input::V2 {
        content,
        client_offset,
        received_at_ms,
        author,
    } => {
        let v2 = V2 {
            content: &content,
            client_offset: client_offset.as_deref(),
            received_at_ms,
            author: author.as_deref(),
        };
        let bytes = postcard::to_extend(&v2, vec![2u8])
            .unwrap_or_else(|e| panic!("postcard cannot encode a version-2 row: {e}"));
        let want = StoredMessage {
            content,
            client_offset,
            received_at_ms,
            author,
            room: None,
            user: None,
            event: None,
        };
        assert_eq!(decode_record(&bytes), Ok(want));
        decoded_round_trips(&bytes);
    }
    Input::V3 {
        content,
        client_offset,
        received_at_ms,
        author,
        room,
    } => {
        let v3 = V3 {
            content: &content,
            client_offset: client_offset.as_deref(),
            received_at_ms,
            author: author.as_deref(),
            room: room.as_deref(),
        };
        let bytes = postcard::to_extend(&v3, vec![3u8])
            .unwrap_or_else(|e| panic!("postcard cannot encode a version-3 row: {e}"));
        let want = StoredMessage {
            content,
            client_offset,
            received_at_ms,
            author,
            room,
            user: None,
            event: None,
        };
        assert_eq!(decode_record(&bytes), Ok(want));
        decoded_round_trips(&bytes);
    }
});
