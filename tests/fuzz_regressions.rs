//! Inputs the fuzzers found, kept as regression tests (their bytes are also in the corpus,
//! `fuzz/corpus/<target>/`, which CI replays).

use serde_json::{Value, json};
use tidings::message::{AppendOutcome, ChatInput, ClientOffset, MessageId, StoredRow};
use tidings::protocol::{Limits, validate_chat_message};
use tidings::storage::Store;
use tidings::storage::record::{StoredMessage, decode_record, encode_record};

const LIMITS: Limits = Limits {
    max_message_bytes: 65_536,
    max_client_offset_bytes: 256,
};

/// fuzz/corpus/payload/issue-15-author: the payload target's round trip re-sent the content
/// and the clientOffset but dropped the third argument, so every valid payload with an author
/// failed it (the product was right, the property wrong). Re-sent as a client sends it, with
/// `{ author }`, the input is accepted identically.
#[test]
fn a_payload_with_an_author_round_trips_with_all_three_arguments() {
    let args = [
        json!("[פJ%"),
        json!("!"),
        json!({ "author": "766890733356132398" }),
    ];
    let input = validate_chat_message(&args, &LIMITS);
    let want = ChatInput {
        content: "[פJ%".into(),
        client_offset: Some(ClientOffset("!".into())),
        author: Some("766890733356132398".into()),
        user: None,
        event: None,
        room: None,
    };
    assert_eq!(input, Ok(want.clone()));
    // What the old property sent again: the author is lost, so it is another input.
    let two = validate_chat_message(&args[..2], &LIMITS);
    assert_ne!(two, Ok(want.clone()));
    // What a client sends again.
    let three = [
        json!(want.content),
        json!("!"),
        json!({ "author": "766890733356132398" }),
    ];
    assert_eq!(validate_chat_message(&three, &LIMITS), Ok(want));
}

/// fuzz/corpus/payload/author-trimmed-no-offset: the same class without a clientOffset (the
/// second argument is null) and with an author that is trimmed and a meta field we ignore: the
/// accepted input is the trimmed author, and re-sending that is a fixed point.
#[test]
fn a_trimmed_author_without_an_offset_round_trips() {
    let args = [
        json!("hi"),
        Value::Null,
        json!({ "author": "  ada ", "color": 1 }),
    ];
    let want = ChatInput {
        content: "hi".into(),
        client_offset: None,
        author: Some("ada".into()),
        user: None,
        event: None,
        room: None,
    };
    assert_eq!(validate_chat_message(&args, &LIMITS), Ok(want.clone()));
    let again = [json!("hi"), Value::Null, json!({ "author": "ada" })];
    assert_eq!(validate_chat_message(&again, &LIMITS), Ok(want));
}

/// fuzz/corpus/store/import-id-beyond-2-53: importing a line whose id is u64::MAX overflowed
/// the next id (a panic with overflow checks, a wrapped id 0 without), and any id above
/// 2^53-1 is one no JavaScript client can hold (the handshake refuses it as an offset). Such a
/// line is stored under the next id instead, and ids go on from there.
#[test]
fn an_import_with_an_id_beyond_what_clients_hold_gets_the_next_id()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (reader, mut writer) = Store::open(&dir.path().join("i.redb"), 1 << 20)?;
    let row = |id: u64, content: &str| StoredRow {
        id: MessageId(id),
        message: StoredMessage {
            content: content.into(),
            client_offset: None,
            received_at_ms: 1,
            author: None,
            user: None,
            event: None,
            room: None,
        },
    };
    let summary = writer.import(&[
        row(u64::MAX, "huge"),
        row(MessageId::MAX.0 + 1, "too big"),
        row(5, "kept"),
    ])?;
    assert_eq!(
        (summary.kept_id, summary.new_id, summary.skipped),
        (1, 2, 0)
    );
    let ids: Vec<u64> = reader
        .read_range(0, u64::MAX, 100, usize::MAX)?
        .iter()
        .map(|r| r.id.0)
        .collect();
    assert_eq!(ids, vec![1, 2, 5]);
    assert_eq!(writer.last_id(), 5);
    let input = ChatInput {
        content: "after".into(),
        client_offset: None,
        author: None,
        user: None,
        event: None,
        room: None,
    };
    assert_eq!(
        writer.append_batch(&[input], 2)?,
        vec![AppendOutcome::Stored(MessageId(6))]
    );
    Ok(())
}

/// fuzz/corpus/record/overlong-varint: postcard accepts an overlong varint (`ff 00` for 127).
/// Such a row still decodes; re-encoding gives the canonical bytes of the same record, so the
/// fuzz property is "the record round-trips", not "the bytes round-trip".
#[test]
fn overlong_varints_decode_to_the_same_record_as_canonical_bytes() {
    // A version-1 row (no author); re-encoding writes version 3 (author and room, both
    // absent; no user: version 4 is written only for a verified sender).
    let overlong = [1u8, 0, 0, 0xff, 0];
    let canonical = [3u8, 0, 0, 127, 0, 0];
    let decoded = decode_record(&overlong).expect("postcard accepts it");
    assert_eq!(
        decoded,
        StoredMessage {
            content: String::new(),
            client_offset: None,
            received_at_ms: 127,
            author: None,
            user: None,
            event: None,
            room: None,
        }
    );
    assert_eq!(encode_record(&decoded), canonical);
    assert_eq!(decode_record(&canonical), Ok(decoded.clone()));
    // With a verified sender it is version 4.
    let signed = StoredMessage {
        user: Some("u".into()),
        ..decoded
    };
    assert_eq!(encode_record(&signed), [4u8, 0, 0, 127, 0, 0, 1, 1, b'u']);
    assert_eq!(decode_record(&encode_record(&signed)), Ok(signed));
}
