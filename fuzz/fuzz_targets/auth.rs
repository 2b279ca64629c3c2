//! Handshake auth: any JSON yields an offset in range or a typed error naming the problem.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use tidings::protocol::{MAX_SERVER_OFFSET, parse_server_offset};
use tidings_fuzz::Json;

fuzz_target!(|input: (Json, Option<Json>)| {
    let (auth, offset) = input;
    let mut auth = auth.to_value();
    // Often put the interesting field where the parser looks.
    if let (Some(offset), Some(object)) = (offset, auth.as_object_mut()) {
        object.insert("serverOffset".into(), offset.to_value());
    }
    match parse_server_offset(&auth) {
        Ok(offset) => {
            assert!(offset <= MAX_SERVER_OFFSET);
            assert_eq!(
                parse_server_offset(&json!({ "serverOffset": offset })),
                Ok(offset)
            );
            assert_eq!(
                parse_server_offset(&json!({ "serverOffset": offset.to_string() })),
                Ok(offset)
            );
        }
        Err(error) => {
            let text = error.to_string();
            assert!(
                text.contains("serverOffset") || text.contains("auth"),
                "{text}"
            );
        }
    }
});
