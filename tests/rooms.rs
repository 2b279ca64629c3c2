//! Rooms on one node, through a real server and raw Socket.IO clients: each room's messages
//! reach its members only, in id order; `join` answers `{ room, last }` and what follows
//! `last` comes live while `history` has the rest, with no gap and no duplicate; `leave`;
//! sending to a room one is not in; exactly-once per room; the directory; the limits;
//! presence and typing per room; recovery back into every room; and the replay's
//! completeness per room under retention.

mod common;

use std::time::Duration;

use common::client::{Client, ClientError};
use common::*;
use serde_json::{Value, json};
use tidings::Config;

fn config(dir: &tempfile::TempDir) -> Config {
    Config {
        rate_limit: 0.0,
        ..Config::with_db(dir.path().join("chat.redb"))
    }
}

/// Sends `content` to `room` with `offset`; the ack.
async fn send_to(client: &mut Client, room: &str, content: &str, offset: &str) -> Value {
    let ack = client
        .emit_with_ack(
            "chat message",
            &[json!(content), json!(offset), json!({ "room": room })],
            WAIT,
        )
        .await
        .expect("an ack");
    ack.into_iter().next().unwrap_or(Value::Null)
}

/// The next `chat message`'s (content, id, room).
async fn next_in_room(client: &mut Client) -> (String, u64, String) {
    let args = client
        .next_named("chat message", WAIT)
        .await
        .expect("a message");
    (
        args[0].as_str().unwrap_or_default().to_string(),
        args[1].as_u64().unwrap_or(0),
        args[2]["room"].as_str().unwrap_or_default().to_string(),
    )
}

async fn connect(server: &TestServer, auth: Value) -> Client {
    server.connect_auth(auth).await.expect("connect")
}

#[tokio::test]
async fn a_room_s_messages_reach_its_members_only_in_one_id_order() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_with(config(&dir)).await;
    let mut dev = connect(&server, json!({ "rooms": ["dev"] })).await;
    let mut ops = connect(&server, json!({ "rooms": ["ops"] })).await;
    let mut both = connect(&server, json!({ "rooms": ["dev", "ops"] })).await;
    let mut lobby = connect(&server, json!({})).await;
    assert_eq!(
        send_to(&mut dev, "dev", "d1", "o1").await,
        json!({ "id": 1 })
    );
    assert_eq!(
        send_to(&mut ops, "ops", "p2", "o2").await,
        json!({ "id": 2 })
    );
    assert_eq!(
        send_to(&mut both, "dev", "d3", "o3").await,
        json!({ "id": 3 })
    );
    // A tutorial client sends to the default room.
    send_ok(&mut lobby, "g4", Some("o4")).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_in_room(&mut both).await);
    }
    assert_eq!(
        got,
        [
            ("d1".into(), 1, "dev".into()),
            ("p2".into(), 2, "ops".into()),
            ("d3".into(), 3, "dev".into())
        ]
    );
    assert_eq!(next_in_room(&mut dev).await, ("d1".into(), 1, "dev".into()));
    assert_eq!(next_in_room(&mut dev).await, ("d3".into(), 3, "dev".into()));
    assert_eq!(next_in_room(&mut ops).await, ("p2".into(), 2, "ops".into()));
    assert_eq!(
        next_in_room(&mut lobby).await,
        ("g4".into(), 4, "general".into())
    );
    for client in [&mut dev, &mut ops, &mut both] {
        client.expect_silence(Duration::from_millis(200)).await?;
    }
    // Sending to a room one is not in stores nothing.
    let refused = send_to(&mut dev, "ops", "nope", "o5").await;
    assert_eq!(
        refused,
        json!({ "error": "not in room ops: join it first" })
    );
    let refused = send_to(&mut dev, "Ops!", "nope", "o5").await;
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("invalid room: ")),
        "{refused}"
    );
    assert_eq!(
        send_to(&mut ops, "ops", "p5", "o5").await,
        json!({ "id": 5 })
    );
    // A reconnect replays its rooms only, in id order.
    let mut again = connect(
        &server,
        json!({ "rooms": ["ops", "general"], "serverOffset": 0 }),
    )
    .await;
    let ids: Vec<u64> = [
        next_in_room(&mut again).await,
        next_in_room(&mut again).await,
        next_in_room(&mut again).await,
    ]
    .iter()
    .map(|(_, id, _)| *id)
    .collect();
    assert_eq!(ids, [2, 4, 5]);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_join_answers_last_then_live_and_history_meet_without_gap_or_duplicate() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_with(config(&dir)).await;
    let mut writer = connect(&server, json!({ "rooms": ["dev", "general"] })).await;
    for n in 1..=5 {
        send_to(&mut writer, "dev", &format!("d{n}"), &format!("o{n}")).await;
        send_ok(&mut writer, &format!("g{n}"), None).await;
    }
    // dev holds 1, 3, 5, 7, 9; a socket in the default room joins it.
    let mut joiner = connect(&server, json!({ "serverOffset": 10 })).await;
    let ack = joiner.emit_with_ack("join", &[json!("dev")], WAIT).await?;
    assert_eq!(ack, vec![json!({ "room": "dev", "last": 9 })]);
    let again = joiner.emit_with_ack("join", &[json!("dev")], WAIT).await?;
    assert_eq!(
        again,
        vec![json!({ "room": "dev", "last": 9 })],
        "the same shape again"
    );
    // What follows comes live; what precedes, by history.
    send_to(&mut writer, "dev", "d6", "o6").await;
    assert_eq!(
        next_in_room(&mut joiner).await,
        ("d6".into(), 11, "dev".into())
    );
    let page = joiner
        .emit_with_ack("history", &[json!({ "room": "dev", "before": 10 })], WAIT)
        .await?;
    let ids: Vec<u64> = page[0]["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["id"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(ids, [1, 3, 5, 7, 9]);
    assert_eq!(page[0]["messages"][0]["room"], json!("dev"));
    assert_eq!(page[0]["hasMore"], json!(false));
    // The default room's history by default.
    let page = joiner
        .emit_with_ack("history", &[json!({ "limit": 2 })], WAIT)
        .await?;
    assert_eq!(page[0]["messages"][1]["id"], json!(10));
    assert_eq!(page[0]["messages"][1]["room"], json!("general"));
    // Leave: nothing more of dev.
    let ack = joiner.emit_with_ack("leave", &[json!("dev")], WAIT).await?;
    assert_eq!(ack, vec![json!({ "ok": true })]);
    let ack = joiner.emit_with_ack("leave", &[json!("dev")], WAIT).await?;
    assert_eq!(
        ack,
        vec![json!({ "ok": true })],
        "leaving a room one is not in"
    );
    send_to(&mut writer, "dev", "d7", "o7").await;
    joiner.expect_silence(Duration::from_millis(300)).await?;
    // Bad names are refused, naming the rule.
    for bad in [json!("Dev"), json!(""), json!(7), json!("x".repeat(65))] {
        let ack = joiner
            .emit_with_ack("join", std::slice::from_ref(&bad), WAIT)
            .await?;
        assert!(
            ack[0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("room name")),
            "{bad}: {ack:?}"
        );
    }
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_same_offset_and_content_in_two_rooms_are_two_messages() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_with(config(&dir)).await;
    let mut client = connect(&server, json!({ "rooms": ["dev", "ops"] })).await;
    assert_eq!(
        send_to(&mut client, "dev", "hi", "o-1").await,
        json!({ "id": 1 })
    );
    assert_eq!(
        send_to(&mut client, "ops", "hi", "o-1").await,
        json!({ "id": 2 })
    );
    assert_eq!(
        send_to(&mut client, "dev", "hi", "o-1").await,
        json!({ "id": 1, "duplicate": true })
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_directory_lists_rooms_with_members_and_last_ids_by_name() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_with(config(&dir)).await;
    let mut a = connect(&server, json!({ "rooms": ["dev", "ops"] })).await;
    let b = connect(&server, json!({ "rooms": ["dev", "empty"] })).await;
    send_to(&mut a, "ops", "p1", "o1").await;
    send_to(&mut a, "dev", "d2", "o2").await;
    let listed = a.emit_with_ack("rooms", &[], WAIT).await?;
    assert_eq!(
        listed[0],
        json!({ "rooms": [
            { "name": "dev", "members": 2, "last": 2 },
            { "name": "empty", "members": 1, "last": 0 },
            { "name": "ops", "members": 1, "last": 1 },
        ] })
    );
    let after = a
        .emit_with_ack("rooms", &[json!({ "after": "empty" })], WAIT)
        .await?;
    assert_eq!(
        after[0],
        json!({ "rooms": [{ "name": "ops", "members": 1, "last": 1 }] })
    );
    // An empty room without messages is forgotten once its last member leaves.
    let ack = a.emit_with_ack("leave", &[json!("ops")], WAIT).await?;
    assert_eq!(ack[0], json!({ "ok": true }));
    b.close().await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let listed = a.emit_with_ack("rooms", &[], WAIT).await?;
        let names: Vec<&str> = listed[0]["rooms"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        if names == ["dev", "ops"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{listed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
    Ok(())
}

/// A `leave` or a disconnect that comes while the socket's `join` of the room is still being
/// saved with its recovery session wins: the socket is not left behind in the room's presence
/// (before, it stayed listed for good, and the room with it).
#[tokio::test]
async fn a_leave_or_a_disconnect_during_a_join_s_save_leaves_nobody_behind() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_with(config(&dir)).await;
    let mut watcher = connect(&server, json!({ "rooms": ["dev"] })).await;
    for _ in 0..10 {
        let mut leaver = connect(&server, json!({ "rooms": [] })).await;
        let joined = leaver.emit_pipelined("join", &[json!("dev")]).await?;
        let left = leaver.emit_pipelined("leave", &[json!("dev")]).await?;
        assert_eq!(joined.await?[0]["room"], json!("dev"));
        assert_eq!(left.await?[0], json!({ "ok": true }));
        let mut closer = connect(&server, json!({ "rooms": [] })).await;
        let _joining = closer.emit_pipelined("join", &[json!("dev")]).await?;
        closer.close().await;
    }
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let listed = watcher.emit_with_ack("rooms", &[], WAIT).await?;
        let dev = listed[0]["rooms"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|room| room["name"] == "dev")
            .cloned();
        if dev.as_ref().is_some_and(|dev| dev["members"] == 1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dev should have the watcher only: {dev:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
    Ok(())
}

/// A `leave` during the socket's replay: nothing of the room comes after the leave's ack,
/// though the replay had already read a batch of the room's messages (before, the rest of
/// that batch still came).
#[tokio::test]
async fn nothing_of_a_room_comes_after_its_leave_s_ack_even_mid_replay() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_with(config(&dir)).await;
    let mut sender = connect(&server, json!({ "rooms": ["dev"] })).await;
    let mut acks = Vec::new();
    for n in 0..10_000 {
        let args = [
            json!(format!("d{n}")),
            json!(format!("o{n}")),
            json!({ "room": "dev" }),
        ];
        acks.push(sender.emit_pipelined("chat message", &args).await?);
    }
    for ack in acks {
        ack.await?;
    }
    let mut replaying = connect(&server, json!({ "serverOffset": 0, "rooms": ["dev"] })).await;
    let (before, ack) = replaying
        .emit_collecting_until_ack("leave", &[json!("dev")], WAIT)
        .await?;
    assert_eq!(ack[0], json!({ "ok": true }));
    let replayed = before
        .iter()
        .filter(|(name, _)| name == "chat message")
        .count();
    assert!(
        replayed < 10_000,
        "the leave should come mid-replay: {replayed} replayed first"
    );
    replaying.expect_silence(Duration::from_secs(1)).await?;
    server.stop().await;
    Ok(())
}

/// The names in a `rooms` answer.
fn listed_names(answer: &[Value]) -> Vec<String> {
    answer[0]["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str().map(String::from))
        .collect()
}

#[tokio::test]
async fn the_directory_pages_by_name_through_rooms_with_members_or_messages() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_with(Config {
        max_rooms_per_connection: 300,
        ..config(&dir)
    })
    .await;
    let mut client = connect(&server, json!({ "rooms": ["zz"] })).await;
    // zz: messages and no member; m000..m249: members, every tenth with a message; the
    // default room (general): both; it sorts among the others by its name.
    send_to(&mut client, "zz", "last words", "o-zz").await;
    let ack = client.emit_with_ack("leave", &[json!("zz")], WAIT).await?;
    assert_eq!(ack[0], json!({ "ok": true }));
    for n in 0..250 {
        let room = format!("m{n:03}");
        let ack = client.emit_with_ack("join", &[json!(room)], WAIT).await?;
        assert_eq!(ack[0]["room"], json!(room));
        if n % 10 == 0 {
            send_to(&mut client, &room, "hi", &format!("o-{room}")).await;
        }
    }
    let mut general = connect(&server, json!({})).await;
    send_to(&mut general, "general", "hello", "o-g").await;
    let first = client.emit_with_ack("rooms", &[], WAIT).await?;
    let mut expected: Vec<String> = std::iter::once("general".to_string())
        .chain((0..199).map(|n| format!("m{n:03}")))
        .collect();
    assert_eq!(listed_names(&first), expected);
    assert_eq!(
        first[0]["rooms"][0],
        json!({ "name": "general", "members": 1, "last": 27 })
    );
    assert_eq!(
        first[0]["rooms"][1],
        json!({ "name": "m000", "members": 1, "last": 2 })
    );
    assert_eq!(
        first[0]["rooms"][2],
        json!({ "name": "m001", "members": 1, "last": 0 })
    );
    let second = client
        .emit_with_ack("rooms", &[json!({ "after": "m198" })], WAIT)
        .await?;
    expected = (199..250)
        .map(|n| format!("m{n:03}"))
        .chain(std::iter::once("zz".to_string()))
        .collect();
    assert_eq!(listed_names(&second), expected);
    assert_eq!(
        second[0]["rooms"][51],
        json!({ "name": "zz", "members": 0, "last": 1 })
    );
    let none = client
        .emit_with_ack("rooms", &[json!({ "after": "zz" })], WAIT)
        .await?;
    assert_eq!(none[0], json!({ "rooms": [] }));
    let bad = client
        .emit_with_ack("rooms", &[json!({ "after": "Not A Name" })], WAIT)
        .await?;
    assert!(
        bad[0]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("invalid after: invalid room name")),
        "{bad:?}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn rooms_are_limited_per_connection_and_per_server() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_with(Config {
        max_rooms_per_connection: 2,
        max_rooms: 3,
        ..config(&dir)
    })
    .await;
    match server
        .connect_auth(json!({ "rooms": ["a", "b", "c"] }))
        .await
    {
        Err(ClientError::Refused(message)) => assert_eq!(
            message,
            "invalid rooms: 3 rooms, the limit is 2 per connection"
        ),
        other => panic!("expected a refusal, got {:?}", other.map(|c| c.sid)),
    }
    match server.connect_auth(json!({ "rooms": "a" })).await {
        Err(ClientError::Refused(message)) => assert_eq!(
            message,
            "invalid rooms: expected a list of room names, got string"
        ),
        other => panic!("expected a refusal, got {:?}", other.map(|c| c.sid)),
    }
    let mut client = connect(&server, json!({ "rooms": ["a", "b"] })).await;
    let ack = client.emit_with_ack("join", &[json!("c")], WAIT).await?;
    assert_eq!(
        ack[0],
        json!({ "error": "too many rooms: this connection is in 2, the limit" })
    );
    // The server holds a and b; c makes 3; d would make 4.
    let mut other = connect(&server, json!({ "rooms": ["c"] })).await;
    let ack = other.emit_with_ack("join", &[json!("d")], WAIT).await?;
    assert_eq!(
        ack[0],
        json!({ "error": "too many rooms: the server has 3, the limit" })
    );
    // A room that exists may always be joined.
    let ack = other.emit_with_ack("join", &[json!("a")], WAIT).await?;
    assert_eq!(ack[0], json!({ "room": "a", "last": 0 }));
    // An empty list: in no room until it joins one.
    let mut nowhere = connect(&server, json!({ "rooms": [] })).await;
    send_to(&mut client, "a", "hello", "o1").await;
    nowhere.expect_silence(Duration::from_millis(200)).await?;
    // A room without messages is forgotten once everyone left it, and makes space for
    // another (a, with a message, and b, c, still with members, stay: 3 rooms).
    let ack = other.emit_with_ack("leave", &[json!("c")], WAIT).await?;
    assert_eq!(ack[0], json!({ "ok": true }));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let ack = nowhere.emit_with_ack("join", &[json!("d")], WAIT).await?;
        if ack[0] == json!({ "room": "d", "last": 0 }) {
            break;
        }
        assert_eq!(
            ack[0],
            json!({ "error": "too many rooms: the server has 3, the limit" })
        );
        assert!(
            std::time::Instant::now() < deadline,
            "c was never forgotten"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ack = other.emit_with_ack("join", &[json!("e")], WAIT).await?;
    assert_eq!(
        ack[0],
        json!({ "error": "too many rooms: the server has 3, the limit" })
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn presence_and_typing_are_per_room() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_with(config(&dir)).await;
    let mut ada = connect(&server, json!({ "rooms": ["dev"], "nickname": "ada" })).await;
    let first = ada.next_named("presence", WAIT).await?;
    assert_eq!(first[0]["room"], json!("dev"));
    assert_eq!(first[0]["users"], json!(["ada"]));
    let mut bo = connect(&server, json!({ "rooms": ["ops"], "nickname": "bo" })).await;
    let own = bo.next_named("presence", WAIT).await?;
    assert_eq!(
        (&own[0]["room"], &own[0]["users"]),
        (&json!("ops"), &json!(["bo"]))
    );
    // Bo joins dev: ada hears of it in dev's presence; bo gets dev's snapshot at once.
    bo.emit_with_ack("join", &[json!("dev")], WAIT).await?;
    let snapshot = bo.next_named("presence", WAIT).await?;
    assert_eq!(snapshot[0]["room"], json!("dev"));
    loop {
        let presence = ada.next_named("presence", WAIT).await?;
        assert_eq!(presence[0]["room"], json!("dev"), "{presence:?}");
        if presence[0]["users"] == json!(["ada", "bo"]) {
            let joined = presence[0]["joined"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(joined.contains(&json!("bo")), "{presence:?}");
            break;
        }
    }
    // Typing in dev reaches dev's members; typing (bool) is the default room's, which bo
    // is not in: nobody hears it.
    bo.emit("typing", &[json!({ "room": "dev", "typing": true })])
        .await?;
    assert_eq!(
        ada.next_named("typing", WAIT).await?,
        vec![json!({ "room": "dev", "nickname": "bo", "typing": true })]
    );
    bo.emit("typing", &[json!(true)]).await?;
    let quiet =
        tokio::time::timeout(Duration::from_millis(300), ada.next_named("typing", WAIT)).await;
    assert!(
        quiet.is_err(),
        "a typing notice for a room bo is not in: {quiet:?}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_recovered_socket_is_back_in_every_room_with_exactly_what_it_missed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_with(config(&dir)).await;
    let mut writer = connect(&server, json!({ "rooms": ["dev", "ops", "general"] })).await;
    send_to(&mut writer, "dev", "d1", "o1").await;
    // A client in general joins dev (mark 1) and gets a session.
    let mut client = Client::connect(&server.url, &json!({})).await?;
    let pid = client.pid.clone().ok_or("recovery gives a pid")?;
    client.emit_with_ack("join", &[json!("dev")], WAIT).await?;
    send_to(&mut writer, "dev", "d2", "o2").await;
    assert_eq!(
        next_in_room(&mut client).await,
        ("d2".into(), 2, "dev".into())
    );
    client.close().await;
    // Meanwhile: dev, ops (not its room) and general.
    send_to(&mut writer, "dev", "d3", "o3").await;
    send_to(&mut writer, "ops", "p4", "o4").await;
    send_ok(&mut writer, "g5", None).await;
    let mut back = Client::connect(
        &server.url,
        &json!({ "pid": pid, "offset": "2", "rooms": [] }),
    )
    .await?;
    assert_eq!(back.pid.as_deref(), Some(pid.as_str()), "recovered");
    assert_eq!(
        next_in_room(&mut back).await,
        ("d3".into(), 3, "dev".into())
    );
    assert_eq!(
        next_in_room(&mut back).await,
        ("g5".into(), 5, "general".into())
    );
    back.expect_silence(Duration::from_millis(200)).await?;
    // And after a restart too (the session and its rooms are on disk).
    back.close().await;
    server.stop().await;
    let server = TestServer::start_with(config(&dir)).await;
    let mut writer = connect(&server, json!({ "rooms": ["dev"] })).await;
    send_to(&mut writer, "dev", "d6", "o6").await;
    let mut back = Client::connect(&server.url, &json!({ "pid": pid, "offset": "5" })).await?;
    assert_eq!(
        back.pid.as_deref(),
        Some(pid.as_str()),
        "recovered after a restart"
    );
    assert_eq!(
        next_in_room(&mut back).await,
        ("d6".into(), 6, "dev".into())
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_replay_is_complete_unless_one_of_its_rooms_lost_what_it_asked_for() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_with(Config {
        retain_messages: Some(2),
        ..config(&dir)
    })
    .await;
    let mut writer = connect(&server, json!({ "rooms": ["dev", "ops"] })).await;
    // ops gets 1, 2; dev gets 3..=6: retention keeps dev's newest 2 (5, 6) and all of ops.
    send_to(&mut writer, "ops", "p1", "o1").await;
    send_to(&mut writer, "ops", "p2", "o2").await;
    for n in 3..=6 {
        send_to(&mut writer, "dev", &format!("d{n}"), &format!("o{n}")).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut reader = connect(&server, json!({ "rooms": ["dev"], "serverOffset": 0 })).await;
        let first = next_in_room(&mut reader).await;
        if first.1 == 5 {
            let sync = reader.next_named("sync", WAIT).await?;
            assert_eq!(sync[0]["complete"], json!(false), "dev lost 3 and 4");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "retention never ran");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // ops lost nothing: its replay from 0 is complete, whatever dev lost.
    let mut ops = connect(&server, json!({ "rooms": ["ops"], "serverOffset": 0 })).await;
    assert_eq!(next_in_room(&mut ops).await.1, 1);
    assert_eq!(next_in_room(&mut ops).await.1, 2);
    let sync = ops.next_named("sync", WAIT).await?;
    assert_eq!(sync[0]["complete"], json!(true), "{sync:?}");
    // `latest` counts across the listed rooms.
    let mut latest = connect(&server, json!({ "rooms": ["dev", "ops"], "latest": 3 })).await;
    let ids: Vec<u64> = [
        next_in_room(&mut latest).await.1,
        next_in_room(&mut latest).await.1,
        next_in_room(&mut latest).await.1,
    ]
    .to_vec();
    assert_eq!(ids, [2, 5, 6]);
    server.stop().await;
    Ok(())
}

/// A join in the middle of a flood: the room's messages above `last` all arrive live, those
/// at or below it all come by `history`, none twice, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_during_a_flood_splits_the_room_between_history_and_live_exactly() -> TestResult {
    const TOTAL: u64 = 400;
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_with(config(&dir)).await;
    let mut writer = connect(&server, json!({ "rooms": ["dev", "ops"] })).await;
    let flood = tokio::spawn(async move {
        let mut pending = Vec::new();
        for n in 0..TOTAL {
            // Two rooms interleaved: dev's ids are not contiguous.
            let room = if n % 3 == 0 { "ops" } else { "dev" };
            let args = [
                json!(format!("{room}-{n}")),
                json!(format!("o{n}")),
                json!({ "room": room }),
            ];
            pending.push(
                writer
                    .emit_pipelined("chat message", &args)
                    .await
                    .expect("emit"),
            );
        }
        for ack in pending {
            tokio::time::timeout(WAIT, ack)
                .await
                .expect("ack")
                .expect("connected");
        }
        writer
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut joiner = connect(&server, json!({ "rooms": [], "serverOffset": 0 })).await;
    let ack = joiner.emit_with_ack("join", &[json!("dev")], WAIT).await?;
    let last = ack[0]["last"].as_u64().ok_or("last")?;
    let writer = flood.await?;
    // Everything of dev, from the writer's own view (it is in dev too).
    let dev_total = (0..TOTAL).filter(|n| n % 3 != 0).count();
    let mut history = Vec::new();
    let mut before = last + 1;
    loop {
        let page = joiner
            .emit_with_ack(
                "history",
                &[json!({ "room": "dev", "before": before, "limit": 200 })],
                WAIT,
            )
            .await?;
        let ids: Vec<u64> = page[0]["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| m["id"].as_u64().unwrap_or(0))
            .collect();
        let Some(&oldest) = ids.first() else { break };
        history.splice(0..0, ids);
        before = oldest;
        if page[0]["hasMore"] != json!(true) {
            break;
        }
    }
    let mut live = Vec::new();
    while history.len() + live.len() < dev_total {
        let (content, id, room) = next_in_room(&mut joiner).await;
        assert_eq!(room, "dev", "{content}");
        live.push(id);
    }
    joiner.expect_silence(Duration::from_millis(200)).await?;
    assert!(
        history.iter().all(|id| *id <= last),
        "history stops at last"
    );
    assert!(live.iter().all(|id| *id > last), "live starts after last");
    let mut all = history.clone();
    all.extend(&live);
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "one order, no duplicate"
    );
    assert_eq!(
        all.len(),
        dev_total,
        "nothing missing ({} history, {} live)",
        history.len(),
        live.len()
    );
    drop(writer);
    server.stop().await;
    Ok(())
}

/// Runs the binary with `args`; its (success, stdout, stderr).
fn run_binary(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(binary())
        .args(args)
        .env_remove("TIDINGS_DEFAULT_ROOM")
        .output()
        .expect("run tidings");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A room whose messages retention deleted, and that has no member, is forgotten: it leaves
/// the directory and no longer counts towards `--max-rooms` (before, it stayed for good).
#[tokio::test]
async fn a_room_whose_messages_retention_deleted_is_forgotten() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("chat.redb");
    let lines = dir.path().join("old.jsonl");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    std::fs::write(
        &lines,
        format!(
            "{}\n{}\n",
            json!({ "id": 1, "content": "ancient", "time": 1000, "room": "old" }),
            json!({ "id": 2, "content": "recent", "time": now, "room": "new" }),
        ),
    )?;
    let (db_arg, lines_arg) = (db.display().to_string(), lines.display().to_string());
    let (ok, _, err) = run_binary(&["import", "--db", &db_arg, &lines_arg]);
    assert!(ok, "{err}");
    let server = TestServer::start_with(Config {
        rate_limit: 0.0,
        retain_days: Some(1),
        max_rooms: 2,
        ..Config::with_db(db)
    })
    .await;
    let mut client = connect(&server, json!({ "rooms": [] })).await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let listed = client.emit_with_ack("rooms", &[], WAIT).await?;
        let names: Vec<String> = listed_names(&listed);
        if names == ["new"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{names:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // "old" no longer counts: with a limit of 2 rooms, a new one fits beside "new".
    let ack = client
        .emit_with_ack("join", &[json!("fresh")], WAIT)
        .await?;
    assert_eq!(ack[0], json!({ "room": "fresh", "last": 0 }));
    server.stop().await;
    Ok(())
}

/// The `room` of each line of an export.
fn rooms_of(export: &str) -> Vec<String> {
    export
        .lines()
        .map(|line| {
            let line: Value = serde_json::from_str(line).expect("an export line is JSON");
            line["room"].as_str().unwrap_or("<none>").to_string()
        })
        .collect()
}

#[test]
fn export_import_and_stats_carry_the_room() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("chat.redb");
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let server = TestServer::start_with(config(&dir)).await;
        let mut client = connect(&server, json!({ "rooms": ["general", "dev", "ops"] })).await;
        for (room, content, offset) in [
            ("general", "hello", "o-1"),
            ("dev", "build is red", "o-2"),
            ("ops", "disk at 80%", "o-3"),
            ("dev", "fixed", "o-4"),
            // The same offset and content in another room: another message.
            ("ops", "build is red", "o-2"),
        ] {
            let ack = send_to(&mut client, room, content, offset).await;
            assert!(ack["id"].as_u64().is_some(), "{ack}");
        }
        drop(client);
        server.stop().await;
    });
    let db_arg = db.to_str().ok_or("utf-8 path")?;

    // stats: the default room the file records, the rooms that hold messages, each with --rooms.
    let (ok, out, err) = run_binary(&["stats", "--db", db_arg, "--rooms"]);
    assert!(ok, "{err}");
    let stats: Value = serde_json::from_str(&out)?;
    assert_eq!(stats["defaultRoom"], json!("general"));
    assert_eq!(stats["rooms"], json!(3));
    assert_eq!(
        stats["byRoom"],
        json!([
            { "name": "dev", "messages": 2, "lastId": 4, "prunedThrough": 0 },
            { "name": "general", "messages": 1, "lastId": 1, "prunedThrough": 0 },
            { "name": "ops", "messages": 2, "lastId": 5, "prunedThrough": 0 },
        ])
    );
    let (ok, out, _) = run_binary(&["stats", "--db", db_arg]);
    assert!(ok && !out.contains("byRoom"), "{out}");

    // export names every message's room, the default room's too; --room picks rooms.
    let (ok, all, err) = run_binary(&["export", "--db", db_arg]);
    assert!(ok, "{err}");
    assert_eq!(rooms_of(&all), ["general", "dev", "ops", "dev", "ops"]);
    let (ok, some, err) = run_binary(&[
        "export", "--db", db_arg, "--room", "dev", "--room", "general",
    ]);
    assert!(ok, "{err}");
    assert_eq!(rooms_of(&some), ["general", "dev", "dev"]);
    let (ok, err) = {
        let (ok, _, err) = run_binary(&["export", "--db", db_arg, "--room", "Dev"]);
        (ok, err)
    };
    assert!(!ok && err.contains("invalid room name \"Dev\""), "{err}");

    // Into a file whose default room is another: every message keeps its room by name, and a
    // second import adds nothing (the dedup key includes the room).
    let export = dir.path().join("all.jsonl");
    std::fs::write(&export, &all)?;
    let export_arg = export.to_str().ok_or("utf-8 path")?;
    let copy = dir.path().join("copy.redb");
    let copy_arg = copy.to_str().ok_or("utf-8 path")?;
    let (ok, _, err) = run_binary(&[
        "import",
        "--db",
        copy_arg,
        "--default-room",
        "lobby",
        export_arg,
    ]);
    assert!(
        ok && err.contains("imported 5 messages (5 kept their ids"),
        "{err}"
    );
    let (ok, _, err) = run_binary(&[
        "import",
        "--db",
        copy_arg,
        "--default-room",
        "lobby",
        export_arg,
    ]);
    assert!(
        ok && err.contains("imported 0 messages") && err.contains("skipped 5"),
        "{err}"
    );
    let (ok, out, _) = run_binary(&["stats", "--db", copy_arg, "--rooms"]);
    assert!(ok);
    let stats: Value = serde_json::from_str(&out)?;
    assert_eq!(stats["defaultRoom"], json!("lobby"));
    let names: Vec<&str> = stats["byRoom"]
        .as_array()
        .map(|rooms| rooms.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["dev", "general", "ops"]);
    let (ok, again, _) = run_binary(&["export", "--db", copy_arg]);
    assert!(ok);
    assert_eq!(again, all, "an export of the import is the export");

    // The file recorded its default room: an import with another is refused, naming both.
    let (ok, _, err) = run_binary(&["import", "--db", copy_arg, export_arg]);
    assert!(
        !ok && err.contains("default room \"lobby\"") && err.contains("--default-room lobby"),
        "{err}"
    );

    // A line from before rooms goes to the default room; a bad room name names its line.
    let old = dir.path().join("old.jsonl");
    std::fs::write(
        &old,
        "{\"id\":100,\"content\":\"from 2025\",\"time\":1}\n\
         {\"id\":101,\"content\":\"x\",\"time\":1,\"room\":\"No Spaces\"}\n",
    )?;
    let (ok, _, err) = run_binary(&[
        "import",
        "--db",
        copy_arg,
        "--default-room",
        "lobby",
        old.to_str().ok_or("utf-8 path")?,
    ]);
    assert!(
        !ok && err.contains("line 2") && err.contains("invalid room name"),
        "{err}"
    );
    std::fs::write(&old, "{\"id\":100,\"content\":\"from 2025\",\"time\":1}\n")?;
    let (ok, _, err) = run_binary(&[
        "import",
        "--db",
        copy_arg,
        "--default-room",
        "lobby",
        old.to_str().ok_or("utf-8 path")?,
    ]);
    assert!(ok, "{err}");
    let (ok, out, _) = run_binary(&["export", "--db", copy_arg, "--since", "5"]);
    assert!(ok);
    assert_eq!(rooms_of(&out), ["lobby"]);
    Ok(())
}

#[tokio::test]
async fn metrics_count_rooms_memberships_joins_and_leaves_without_a_label_per_room() -> TestResult {
    // Its own process: the metrics recorder is one per process, and this file's other tests
    // join rooms too.
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let mut server = ServerProcess::spawn(
        server_command(port, &dir.path().join("chat.redb"))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped()),
    );
    server.wait_listening();
    let url = format!("http://127.0.0.1:{port}");
    let mut ada = Client::connect(&url, &json!({ "rooms": ["general", "dev"] })).await?;
    let mut bo = Client::connect(&url, &json!({ "rooms": ["dev"] })).await?;
    send_to(&mut ada, "general", "hi", "o1").await;
    for room in ["ops", "qa"] {
        let ack = bo.emit_with_ack("join", &[json!(room)], WAIT).await?;
        assert_eq!(ack[0]["room"], json!(room));
    }
    // Joining a room one is in again, and leaving one is not in, change nothing.
    bo.emit_with_ack("join", &[json!("ops")], WAIT).await?;
    bo.emit_with_ack("leave", &[json!("nowhere")], WAIT).await?;
    let ack = bo.emit_with_ack("leave", &[json!("qa")], WAIT).await?;
    assert_eq!(ack[0], json!({ "ok": true }));
    // general (messages, a member), dev (members), ops (a member); qa is forgotten once its
    // roster's last snapshot went out.
    let deadline = std::time::Instant::now() + WAIT;
    let text = loop {
        let text = get(&url, "/metrics").await.1;
        if counter(&text, "tidings_rooms") == 3 {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(counter(&text, "tidings_room_memberships"), 4, "{text}");
    assert_eq!(counter(&text, "tidings_room_joins_total"), 2, "{text}");
    assert_eq!(counter(&text, "tidings_room_leaves_total"), 1, "{text}");
    assert!(
        !text
            .lines()
            .any(|line| line.starts_with("tidings_room") && line.contains('{')),
        "no label per room: {text}"
    );
    ada.close().await;
    bo.close().await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = get(&url, "/metrics").await.1;
        if counter(&text, "tidings_room_memberships") == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.terminate();
    Ok(())
}
