//! Stored record decoding: any bytes decode or fail cleanly; any record round-trips.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tidings::storage::record::{RECORD_FORMAT_VERSION, StoredMessage, decode_record, encode_record};

#[derive(Debug, Arbitrary)]
enum Input {
    /// Whatever a damaged or foreign row could hold.
    Bytes(Vec<u8>),
    /// A well-formed version byte followed by anything.
    Versioned(Vec<u8>),
    /// A real record.
    Record {
        content: String,
        client_offset: Option<String>,
        received_at_ms: u64,
        author: Option<String>,
    },
}

fuzz_target!(|input: Input| match input {
    Input::Bytes(bytes) => {
        let _ = decode_record(&bytes);
    }
    Input::Versioned(mut body) => {
        body.insert(0, RECORD_FORMAT_VERSION);
        if let Ok(message) = decode_record(&body) {
            // postcard accepts overlong varints, so the bytes need not come back identical
            // (tests/record_regressions.rs); the record must.
            assert_eq!(decode_record(&encode_record(&message)), Ok(message));
        }
    }
    Input::Record {
        content,
        client_offset,
        received_at_ms,
        author,
    } => {
        let message = StoredMessage {
            content,
            client_offset,
            received_at_ms,
            author,
        };
        assert_eq!(decode_record(&encode_record(&message)), Ok(message));
    }
});
