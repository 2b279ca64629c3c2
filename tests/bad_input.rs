//! The bad-input matrix over the wire: each row gets its documented outcome, and afterwards
//! a normal client still chats and nobody saw garbage. (Payload validation rows with clean
//! framing are in tests/ingest.rs; handshake offsets in tests/handshake.rs.)

mod common;

use std::time::Duration;

use common::client::{Client, ClientError, Incoming, Message};
use common::*;
use serde_json::{Value, json};

const QUIET: Duration = Duration::from_millis(300);

/// After a bad input: nothing was stored or broadcast but `stored` (the contents of ids 1..,
/// in order), and a normal client still chats. A fresh client's replay is exactly `stored`
/// followed by its own "normal" message; the observer's next message is "normal" (anything
/// stored by the bad input would have a lower id, so it would come first).
async fn still_healthy(server: &TestServer, observer: &mut Client, stored: &[&str]) {
    // A bad input handled late would show up here, or as a lower id than "normal" below.
    observer
        .expect_silence(QUIET)
        .await
        .expect("no garbage broadcast");
    let mut fresh = server.connect(0).await;
    let id = send_ok(&mut fresh, "normal", None).await;
    let n = stored.len() as u64;
    assert_eq!(id, n + 1, "the bad input stored nothing");
    let mut expected: Vec<(String, u64)> = (1..)
        .zip(stored)
        .map(|(id, content)| (content.to_string(), id))
        .collect();
    expected.push(("normal".into(), id));
    assert_eq!(
        receive(&mut fresh, expected.len()).await,
        expected,
        "the history is exactly what was stored, then the new message"
    );
    assert_eq!(
        observer.next_chat(WAIT).await.expect("normal"),
        ("normal".into(), id),
        "the observer saw nothing before the new message"
    );
}

async fn wait_closed(client: &mut Client) -> bool {
    loop {
        match client.next(WAIT).await {
            Ok(Incoming::Disconnected) | Err(ClientError::Closed) => return true,
            Ok(Incoming::Event(..)) => continue,
            Err(_) => return false,
        }
    }
}

fn error_of(ack: &[Value]) -> String {
    ack.first()
        .and_then(|a| a.get("error"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn oversized_frames_close_only_that_connection() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let mut observer = server.connect(0).await;
    for (content, offset) in [
        ("z".repeat(10 << 20), json!("big-1")), // 10 MB content
        ("ok".to_string(), json!("o".repeat(1 << 20))), // 1 MB clientOffset
    ] {
        let mut client = server.connect(0).await;
        client
            .emit("chat message", &[json!(content), offset])
            .await?;
        assert!(
            wait_closed(&mut client).await,
            "oversized frame closes the connection"
        );
    }
    // A huge auth object is refused the same way (the frame exceeds the payload limit).
    let huge_auth = json!({ "serverOffset": 0, "junk": "j".repeat(1 << 20) });
    assert!(Client::connect(&server.url, &huge_auth).await.is_err());
    // Extra auth fields within the limit are ignored.
    let mut chatty = Client::connect(
        &server.url,
        &json!({ "serverOffset": 0, "name": "x".repeat(10_000) }),
    )
    .await?;
    assert_eq!(send_ok(&mut chatty, "accepted", None).await, 1);
    assert_eq!(observer.next_chat(WAIT).await?, ("accepted".into(), 1));
    still_healthy(&server, &mut observer, &["accepted"]).await;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn binary_attachments_are_rejected_with_an_error_ack() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let mut observer = server.connect(0).await;
    let mut client = server.connect(0).await;
    // socket.io binary event: content is a placeholder for an attachment of invalid UTF-8.
    let ack = client
        .send_frames_with_ack(
            |id| {
                vec![
                    Message::text(format!(
                        r#"451-{id}["chat message",{{"_placeholder":true,"num":0}},"bin-1"]"#
                    )),
                    Message::binary(vec![0xff, 0xfe, 0x00, 0xc3]),
                ]
            },
            WAIT,
        )
        .await?;
    let error = error_of(&ack);
    assert!(error.contains("undecodable arguments"), "{ack:?}");
    still_healthy(&server, &mut observer, &[]).await;
    // The same connection keeps working.
    assert_eq!(send_ok(&mut client, "after binary", None).await, 2);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn lone_surrogates_are_rejected() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let mut observer = server.connect(0).await;
    let mut client = server.connect(0).await;
    // JSON.stringify("\ud800") from a browser: a lone surrogate escape, not valid UTF-16.
    let ack = client
        .send_frames_with_ack(
            |id| {
                vec![Message::text(format!(
                    r#"42{id}["chat message","a\ud800b","s-1"]"#
                ))]
            },
            WAIT,
        )
        .await?;
    assert!(error_of(&ack).contains("undecodable arguments"), "{ack:?}");
    still_healthy(&server, &mut observer, &[]).await;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn malformed_packets_close_only_their_connection() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let mut observer = server.connect(0).await;
    for garbage in ["", "9", "4", "49", "42", "42[", "42{}", "43x[]", "b!!!"] {
        let mut victim = server.connect(0).await;
        victim.send_raw(garbage).await?;
        assert!(
            wait_closed(&mut victim).await,
            "{garbage:?} closes the connection"
        );
    }
    still_healthy(&server, &mut observer, &[]).await;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn other_namespaces_are_refused_and_ignored() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let mut observer = server.connect(0).await;
    let mut client = server.connect(0).await;
    // Connecting to an unknown namespace is refused (CONNECT_ERROR on /admin); an event on a
    // namespace the socket never joined is dropped. The socket on / is unaffected.
    client.send_raw("40/admin,{}").await?;
    client
        .send_raw(r#"42/admin,["chat message","sneaky"]"#)
        .await?;
    assert_eq!(send_ok(&mut client, "on the main namespace", None).await, 1);
    assert_eq!(
        observer.next_chat(WAIT).await?,
        ("on the main namespace".into(), 1)
    );
    still_healthy(&server, &mut observer, &["on the main namespace"]).await;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn polling_with_a_bogus_sid_is_a_400() -> TestResult {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let host = server.url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&host).await?;
    let request = format!(
        "GET /socket.io/?EIO=4&transport=polling&sid=bogus HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("Session ID unknown"), "{response}");
    let mut observer = server.connect(0).await;
    still_healthy(&server, &mut observer, &[]).await;
    server.stop().await;
    Ok(())
}

#[test]
fn an_unwritable_location_is_refused_with_one_clear_line() {
    // /proc refuses new files even to root, which a chmod'ed directory would not.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["--port", "0", "--db", "/proc/tidings-test/chat.redb"])
        .env("RUST_LOG", "off")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot open database /proc/tidings-test/chat.redb"),
        "{stderr}"
    );
}
