//! Ingest: store, broadcast to everyone (sender included, before its ack), ack with the id;
//! exactly-once retries; the offset-collision case; step-7 clients; invalid payloads.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn message_is_broadcast_to_all_then_acked_with_its_id() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let mut alice = server.connect(0).await;
    let mut bob = server.connect(0).await;

    let id = send_ok(&mut alice, "hello", Some("alice-1")).await;
    assert_eq!(id, 1);
    assert_eq!(alice.next_chat(WAIT).await?, ("hello".into(), 1));
    assert_eq!(bob.next_chat(WAIT).await?, ("hello".into(), 1));

    let id = send_ok(&mut bob, "hi alice", Some("bob-1")).await;
    assert_eq!(id, 2);
    assert_eq!(alice.next_chat(WAIT).await?, ("hi alice".into(), 2));
    assert_eq!(bob.next_chat(WAIT).await?, ("hi alice".into(), 2));
    server.stop().await;
    Ok(())
}

/// The sender's own copy of its message is emitted before its ack: when the ack arrives, the
/// copy (with the acked id) is already among what the client received, for every message,
/// while another client floods (with the smallest socket buffer, so the sender keeps falling
/// out of live delivery and its copies come from the catch-up reader, the slow path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_senders_own_copy_arrives_before_its_ack() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = tidings::Config::with_db(dir.path().join("chat.redb"));
    config.rate_limit = 0.0;
    config.socket_buffer = 16;
    let server = TestServer::start_with(config).await;
    let mut alice = server.connect(0).await;
    let bob = server.connect(0).await;
    let noise = tokio::spawn(async move {
        for i in 0..2000 {
            bob.emit("chat message", &[json!(format!("bob {i}"))])
                .await
                .expect("bob sends");
        }
        bob
    });
    for i in 0..60 {
        let content = format!("alice {i}");
        let (events, ack) = alice
            .emit_collecting_until_ack(
                "chat message",
                &[json!(content), json!(format!("alice-{i}"))],
                WAIT,
            )
            .await?;
        let id = ack
            .first()
            .and_then(|a| a.get("id"))
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("ack without id: {ack:?}"))?;
        let copies = events
            .iter()
            .filter(|(name, args)| name == "chat message" && args.first() == Some(&json!(content)))
            .map(|(_, args)| args.get(1).cloned())
            .collect::<Vec<_>>();
        assert_eq!(
            copies,
            vec![Some(json!(id))],
            "message {i}: its ack ({id}) came before its own copy; events before the ack: \
             {events:?}"
        );
    }
    drop(noise.await?);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn retry_with_same_offset_is_stored_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let mut alice = server.connect(0).await;
    let mut observer = server.connect(0).await;

    let id = send_ok(&mut alice, "once", Some("k-1")).await;
    let retry = send(&mut alice, "once", Some("k-1")).await;
    assert_eq!(retry, json!({ "id": id, "duplicate": true }));
    assert_eq!(observer.next_chat(WAIT).await?, ("once".into(), id));
    let next = send_ok(&mut alice, "after", Some("k-2")).await;
    assert_eq!(next, id + 1, "the retry consumed no id");
    assert_eq!(observer.next_chat(WAIT).await?, ("after".into(), next));
    // A retry from another connection (the client reconnected) is still a duplicate.
    let mut again = server.connect(next).await;
    let retry = send(&mut again, "once", Some("k-1")).await;
    assert_eq!(retry, json!({ "id": id, "duplicate": true }));
    observer.expect_silence(QUIET).await?;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn same_offset_with_different_content_is_a_new_message() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let mut first = server.connect(0).await;
    let mut second = server.connect(0).await;
    // The tutorial's offline clients all use `undefined-0`.
    let a = send_ok(&mut first, "from first", Some("undefined-0")).await;
    let b = send_ok(&mut second, "from second", Some("undefined-0")).await;
    assert_ne!(a, b);
    assert_eq!(
        receive(&mut first, 2).await,
        vec![("from first".into(), a), ("from second".into(), b)]
    );
    // And each is still deduplicated against its own content.
    assert_eq!(
        send(&mut second, "from second", Some("undefined-0")).await,
        json!({ "id": b, "duplicate": true })
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn step7_client_sending_only_content_is_stored_and_broadcast() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let old = common::client::Client::connect(&server.url, &json!({})).await?;
    let mut observer = server.connect(0).await;
    old.emit("chat message", &[json!("no offset, no ack")])
        .await?;
    assert_eq!(
        observer.next_chat(WAIT).await?,
        ("no offset, no ack".into(), 1)
    );
    // The same text again is a new message: without an offset there is nothing to dedup on.
    old.emit("chat message", &[json!("no offset, no ack")])
        .await?;
    assert_eq!(
        observer.next_chat(WAIT).await?,
        ("no offset, no ack".into(), 2)
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn invalid_payloads_get_an_error_ack_and_store_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let mut client = server.connect(0).await;
    let mut observer = server.connect(0).await;
    let big = "x".repeat(65_537);
    let cases: Vec<(Vec<Value>, &str)> = vec![
        (vec![], "missing content"),
        (vec![json!(42)], "content must be a string, got number"),
        (vec![json!(null)], "content must be a string, got null"),
        (vec![json!(true)], "content must be a string, got boolean"),
        (vec![json!([1, 2])], "content must be a string, got array"),
        (
            vec![json!({ "a": 1 })],
            "content must be a string, got object",
        ),
        (vec![json!("")], "content is empty"),
        (
            vec![json!(big)],
            "content is 65537 bytes, the limit is 65536",
        ),
        (
            vec![json!("ok"), json!(7)],
            "clientOffset must be a string, got number",
        ),
        (
            vec![json!("ok"), json!({})],
            "clientOffset must be a string, got object",
        ),
        (vec![json!("ok"), json!("")], "clientOffset is empty"),
        (
            vec![json!("ok"), json!("o".repeat(257))],
            "clientOffset is 257 bytes, the limit is 256",
        ),
        (
            vec![json!("ok"), json!("o"), json!("junk")],
            "meta must be an object like { author }, got string",
        ),
        (
            vec![json!("ok"), json!("o"), json!({ "author": "a\nb" })],
            "invalid author: a nickname cannot contain control characters",
        ),
        (
            vec![json!("ok"), json!("o"), json!({}), json!("junk")],
            "4 arguments, expected at most 3",
        ),
    ];
    for (args, want) in cases {
        let ack = client
            .emit_with_ack("chat message", &args, WAIT)
            .await
            .map_err(|e| format!("{args:?}: {e}"))?;
        let error = ack
            .first()
            .and_then(|a| a.get("error"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        assert!(error.contains(want), "{args:?}: got {ack:?}, want {want:?}");
    }
    // Exactly at the limit is fine.
    let limit = "y".repeat(65_536);
    let id = send_ok(&mut client, &limit, Some("limit")).await;
    assert_eq!(id, 1, "nothing before was stored");
    assert_eq!(observer.next_chat(WAIT).await?, (limit, 1));
    // The same connection keeps working.
    assert_eq!(send_ok(&mut client, "still here", None).await, 2);
    assert_eq!(observer.next_chat(WAIT).await?, ("still here".into(), 2));
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn text_is_stored_and_delivered_verbatim() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let mut client = server.connect(0).await;
    let texts = [
        "<script>alert(1)</script>",
        "nul\u{0}byte",
        "emoji 🎉 rtl \u{202e}abc zero\u{200b}width",
        "quotes \" and \\ backslash",
    ];
    for (i, text) in texts.iter().enumerate() {
        let id = send_ok(&mut client, text, Some(&format!("v-{i}"))).await;
        assert_eq!(client.next_chat(WAIT).await?, (text.to_string(), id));
    }
    let mut late = server.connect(0).await;
    let replayed: Vec<String> = receive(&mut late, texts.len())
        .await
        .into_iter()
        .map(|(content, _)| content)
        .collect();
    assert_eq!(replayed, texts);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn unknown_events_and_raw_garbage_leave_the_connection_usable() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let mut client = server.connect(0).await;
    client.emit("no such event", &[json!(1)]).await?;
    client.emit("chat message ", &[json!("near miss")]).await?;
    let id = send_ok(&mut client, "fine", None).await;
    assert_eq!(id, 1);
    assert_eq!(client.next_chat(WAIT).await?, ("fine".into(), 1));

    // A malformed socket.io packet closes only that connection; others keep chatting.
    let mut other = server.connect(0).await;
    assert_eq!(other.next_chat(WAIT).await?, ("fine".into(), 1));
    let broken = server.connect(0).await;
    broken.send_raw("42[\"chat message\", {oops").await?;
    broken.send_raw("4garbage").await?;
    assert_eq!(send_ok(&mut other, "after garbage", None).await, 2);
    assert_eq!(other.next_chat(WAIT).await?, ("after garbage".into(), 2));
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn messages_sent_the_instant_connect_completes_are_not_lost() -> TestResult {
    // A client flushes its offline buffer as soon as CONNECT arrives; handlers must already
    // be in place then (regression: they were registered after CONNECT was sent).
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let mut observer = server.connect(0).await;
    for round in 0..20 {
        let client = common::client::Client::connect(&server.url, &json!({})).await?;
        client
            .emit("chat message", &[json!(format!("first-{round}"))])
            .await?;
        let (content, _) = observer.next_chat(WAIT).await?;
        assert_eq!(content, format!("first-{round}"));
    }
    server.stop().await;
    Ok(())
}
