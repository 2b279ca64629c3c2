//! Handshake: a bad `serverOffset` is refused with a `connect_error` naming the problem.

mod common;

use common::client::{Client, ClientError};
use common::*;
use serde_json::json;

#[tokio::test]
async fn bad_server_offsets_are_refused_with_a_reason() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    // Each refusal names what was wrong (the field, then the problem with its value).
    let offset = "invalid serverOffset: ";
    let cases = [
        (json!({ "serverOffset": -1 }), offset, "-1 is negative"),
        (
            json!({ "serverOffset": 1.5 }),
            offset,
            "1.5 is not an integer",
        ),
        (
            json!({ "serverOffset": "abc" }),
            offset,
            "\"abc\" is not a non-negative integer",
        ),
        (json!({ "serverOffset": {} }), offset, "got object"),
        (json!({ "serverOffset": [] }), offset, "got array"),
        (json!({ "serverOffset": true }), offset, "got boolean"),
        (
            json!({ "serverOffset": 9007199254740994u64 }),
            offset,
            "larger than 2^53-1",
        ),
        (json!("just a string"), "invalid auth: ", "got string"),
    ];
    for (auth, names, want) in cases {
        match Client::connect(&server.url, &auth).await {
            Err(ClientError::Refused(message)) => {
                assert!(
                    message.starts_with(names),
                    "{auth}: {message:?} should start with {names:?}"
                );
                assert!(
                    message.contains(want),
                    "{auth}: {message:?} should contain {want:?}"
                );
            }
            Err(other) => panic!("{auth}: expected a connect_error, got {other}"),
            Ok(_) => panic!("{auth}: expected a refusal"),
        }
    }
    // The server still accepts good clients.
    let mut client = server.connect(0).await;
    assert_eq!(send_ok(&mut client, "fine", None).await, 1);
    server.stop().await;
    Ok(())
}
