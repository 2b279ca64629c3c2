//! Inputs the fuzzers found, kept as regression tests (their bytes are also in the corpus).

use tidings::storage::record::{StoredMessage, decode_record, encode_record};

/// fuzz/corpus/record/overlong-varint: postcard accepts an overlong varint (`ff 00` for 127).
/// Such a row still decodes; re-encoding gives the canonical bytes of the same record, so the
/// fuzz property is "the record round-trips", not "the bytes round-trip".
#[test]
fn overlong_varints_decode_to_the_same_record_as_canonical_bytes() {
    // A version-1 row (no author); re-encoding writes the current version.
    let overlong = [1u8, 0, 0, 0xff, 0];
    let canonical = [2u8, 0, 0, 127, 0];
    let decoded = decode_record(&overlong).expect("postcard accepts it");
    assert_eq!(
        decoded,
        StoredMessage {
            content: String::new(),
            client_offset: None,
            received_at_ms: 127,
            author: None,
        }
    );
    assert_eq!(encode_record(&decoded), canonical);
    assert_eq!(decode_record(&canonical), Ok(decoded));
}
