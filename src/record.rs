//! The on-disk message record: what one row of the `messages` table holds, and its encoding.
//!
//! Owns the byte format only (a format-version byte followed by a postcard body); it does no
//! I/O, so unit tests and fuzz targets call [`encode_record`] and [`decode_record`] directly.
//! The wire types the clients see live in [`crate::protocol`]; this type is kept separate so the
//! stored format can evolve (through [`RECORD_FORMAT_VERSION`]) without touching the wire.

use serde::{Deserialize, Serialize};

/// The version byte written in front of every record; a decoder seeing another value refuses it
/// rather than guessing, so a future format can migrate old rows explicitly.
pub const RECORD_FORMAT_VERSION: u8 = 1;

/// One stored chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The message text exactly as the client sent it.
    pub content: String,
    /// The client's idempotency key, when it sent one (absent for step-7 clients).
    pub client_offset: Option<String>,
    /// Server receive time, milliseconds since the Unix epoch.
    pub received_at_ms: u64,
}

/// Why a stored record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// The row is empty: not even a version byte.
    #[error("stored record is empty")]
    Empty,
    /// The row was written by a format this build does not know.
    #[error("stored record has format version {found}, this build reads version {expected}")]
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

/// Encodes a record as `[RECORD_FORMAT_VERSION] ++ postcard(record)`.
pub fn encode_record(message: &StoredMessage) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(message.content.len() + 32);
    bytes.push(RECORD_FORMAT_VERSION);
    // Serializing owned strings and integers into a Vec cannot fail; fall back to an empty
    // body rather than panic if postcard ever disagrees (the decoder then reports it).
    match postcard::to_extend(message, bytes) {
        Ok(bytes) => bytes,
        Err(_) => vec![RECORD_FORMAT_VERSION],
    }
}

/// Decodes bytes written by [`encode_record`]. Trailing bytes after the record are an error:
/// a row is exactly one record.
pub fn decode_record(bytes: &[u8]) -> Result<StoredMessage, RecordError> {
    let (&version, body) = bytes.split_first().ok_or(RecordError::Empty)?;
    if version != RECORD_FORMAT_VERSION {
        return Err(RecordError::UnknownVersion {
            found: version,
            expected: RECORD_FORMAT_VERSION,
        });
    }
    let (message, rest) = postcard::take_from_bytes::<StoredMessage>(body)
        .map_err(|e| RecordError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(RecordError::Malformed(format!(
            "{} trailing bytes after the record",
            rest.len()
        )));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredMessage {
        StoredMessage {
            content: "héllo <b>\0".into(),
            client_offset: Some("undefined-0".into()),
            received_at_ms: 1_764_000_000_000,
        }
    }

    #[test]
    fn round_trips() {
        let m = sample();
        assert_eq!(decode_record(&encode_record(&m)), Ok(m));
        let step7 = StoredMessage {
            client_offset: None,
            ..sample()
        };
        assert_eq!(decode_record(&encode_record(&step7)), Ok(step7));
    }

    #[test]
    fn refuses_unknown_version() {
        let mut bytes = encode_record(&sample());
        bytes[0] = 2;
        assert_eq!(
            decode_record(&bytes),
            Err(RecordError::UnknownVersion {
                found: 2,
                expected: 1
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
