//! tidings' protocol extensions (tutorial clients never see a difference): authors and
//! server time on messages, `auth.latest`, `history` pages, presence, typing, nicknames.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::client::{Client, ClientError, Incoming};
use common::*;
use serde_json::{Value, json};

/// The next event named `name`, skipping others.
async fn next_named(client: &mut Client, name: &str) -> Result<Vec<Value>, ClientError> {
    client.next_named(name, WAIT).await
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[tokio::test]
async fn messages_carry_author_and_server_time_live_and_in_replay() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let mut ada = server.connect(0).await;
    let before = now_ms();
    let ack = ada
        .emit_with_ack(
            "chat message",
            &[json!("hello"), json!("a-1"), json!({ "author": "Ada" })],
            WAIT,
        )
        .await?;
    assert_eq!(ack, vec![json!({ "id": 1 })]);
    let args = next_named(&mut ada, "chat message").await?;
    assert_eq!(args[0], json!("hello"));
    assert_eq!(args[1], json!(1));
    assert_eq!(args[2]["author"], json!("Ada"));
    let time = args[2]["time"].as_u64().unwrap_or(0);
    assert!(time >= before && time <= now_ms(), "{time}");
    // A tutorial-style message has no author.
    send_ok(&mut ada, "anonymous", None).await;
    let args = next_named(&mut ada, "chat message").await?;
    assert_eq!(args[2]["author"], Value::Null);
    // Replay carries the same meta, from the database.
    let mut late = server.connect(0).await;
    let replayed = next_named(&mut late, "chat message").await?;
    assert_eq!(
        replayed[2],
        json!({ "author": "Ada", "user": null, "time": time, "room": "general" })
    );
    server.stop().await;
    // ... and so does a replay after a restart.
    let server = TestServer::start(&dir).await;
    let mut after = server.connect(0).await;
    let replayed = next_named(&mut after, "chat message").await?;
    assert_eq!(
        replayed[2],
        json!({ "author": "Ada", "user": null, "time": time, "room": "general" })
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn latest_limits_the_first_replay_and_history_pages_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = tidings::Config::with_db(dir.path().join("chat.redb"));
    config.rate_limit = 0.0;
    let server = TestServer::start_with(config).await;
    let mut writer = server.connect(0).await;
    for i in 1..=120u64 {
        assert_eq!(send_ok(&mut writer, &format!("m{i}"), None).await, i);
    }
    let mut page =
        Client::connect(&server.url, &json!({ "serverOffset": 0, "latest": 50 })).await?;
    let first = receive(&mut page, 50).await;
    assert_eq!(first.first().map(|m| m.1), Some(71));
    assert_eq!(first.last().map(|m| m.1), Some(120));
    page.expect_silence(Duration::from_millis(200)).await?;

    let mut before = 71u64;
    let mut older = Vec::new();
    loop {
        let ack = page
            .emit_with_ack("history", &[json!({ "before": before, "limit": 30 })], WAIT)
            .await?;
        let body = &ack[0];
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let ids: Vec<u64> = messages.iter().filter_map(|m| m["id"].as_u64()).collect();
        assert!(
            ids.windows(2).all(|w| w[0] + 1 == w[1]),
            "ascending: {ids:?}"
        );
        assert_eq!(ids.last().copied(), Some(before - 1));
        for m in &messages {
            assert_eq!(m["content"], json!(format!("m{}", m["id"])));
            assert!(m["time"].is_u64() && m.get("author").is_some());
        }
        older.splice(0..0, ids.iter().copied());
        before = ids[0];
        if body["hasMore"] == json!(false) {
            break;
        }
    }
    assert_eq!(older, (1..=70).collect::<Vec<u64>>());
    // `latest` never replays less than what the client is missing after its own offset.
    let mut back =
        Client::connect(&server.url, &json!({ "serverOffset": 100, "latest": 50 })).await?;
    assert_eq!(receive(&mut back, 20).await.first().map(|m| m.1), Some(101));
    // Bad requests get an error ack.
    for bad in [json!({ "limit": 0 }), json!({ "before": "x" }), json!(5)] {
        let ack = page
            .emit_with_ack("history", std::slice::from_ref(&bad), WAIT)
            .await?;
        assert!(ack[0]["error"].is_string(), "{bad}: {ack:?}");
    }
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn bad_nicknames_and_latest_are_refused_at_connect() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    for (auth, want) in [
        (json!({ "nickname": "" }), "invalid nickname"),
        (
            json!({ "nickname": "x".repeat(40) }),
            "at most 32 characters",
        ),
        (json!({ "latest": 0 }), "invalid latest"),
    ] {
        match Client::connect(&server.url, &auth).await {
            Err(ClientError::Refused(message)) => assert!(message.contains(want), "{message}"),
            other => panic!("{auth}: expected a refusal, got {:?}", other.map(|c| c.sid)),
        }
    }
    server.stop().await;
    Ok(())
}

/// The next `presence` event's object.
async fn next_presence(client: &mut Client) -> Result<Value, ClientError> {
    Ok(next_named(client, "presence").await?.remove(0))
}

/// `presence` events until `until` holds; returns the names announced as joined and left in
/// them, and the last one.
async fn presence_until(
    client: &mut Client,
    until: impl Fn(&Value) -> bool,
) -> Result<(Vec<String>, Vec<String>, Value), ClientError> {
    let (mut joined, mut left) = (Vec::new(), Vec::new());
    loop {
        let p = next_presence(client).await?;
        let names = |key: &str| -> Vec<String> {
            p[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        joined.extend(names("joined"));
        left.extend(names("left"));
        if until(&p) {
            return Ok((joined, left, p));
        }
    }
}

#[tokio::test]
async fn presence_news_renames_and_typing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let mut ada = Client::connect(&server.url, &json!({ "nickname": "ada" })).await?;
    let no_news = json!({
        "room": "general", "joined": [], "joinedCount": 0, "left": [], "leftCount": 0
    });
    let mut first = next_presence(&mut ada).await?;
    assert_eq!(first["count"], json!(1));
    assert_eq!(first["users"], json!(["ada"]));
    if let Some(object) = first.as_object_mut() {
        object.retain(|k, _| k != "count" && k != "users");
    }
    assert_eq!(first, no_news, "a newcomer's own snapshot carries no news");

    let mut bo = Client::connect(&server.url, &json!({ "nickname": "bo" })).await?;
    let (joined, _, _) = presence_until(&mut ada, |p| p["users"] == json!(["ada", "bo"])).await?;
    assert!(
        joined.contains(&"bo".to_string()),
        "ada hears bo joined: {joined:?}"
    );
    // An anonymous tutorial client counts but is not listed and announces nothing.
    let _anonymous = server.connect(0).await;
    let (joined, left, p) = presence_until(&mut bo, |p| p["count"] == json!(3)).await?;
    assert_eq!(p["users"], json!(["ada", "bo"]));
    assert!(
        !joined.iter().any(|n| n != "ada" && n != "bo"),
        "{joined:?}"
    );
    assert!(left.is_empty(), "{left:?}");
    assert_eq!((&p["joined"], &p["joinedCount"]), (&json!([]), &json!(0)));

    // Typing goes to the others only.
    bo.emit("typing", &[json!(true)]).await?;
    assert_eq!(
        next_named(&mut ada, "typing").await?,
        vec![json!({ "room": "general", "nickname": "bo", "typing": true })]
    );
    // Rename; everything bo receives up to its ack holds no typing notice of its own.
    let (events, ack) = bo
        .emit_collecting_until_ack("nickname", &[json!("bob")], WAIT)
        .await?;
    assert_eq!(ack, vec![json!({ "ok": true })]);
    assert!(
        !events.iter().any(|(name, _)| name == "typing"),
        "bo was sent its own typing notice: {events:?}"
    );
    assert_eq!(
        next_named(&mut ada, "user renamed").await?,
        vec![json!({ "from": "bo", "to": "bob" })]
    );
    let ack = bo.emit_with_ack("nickname", &[json!("")], WAIT).await?;
    assert!(ack[0]["error"].is_string(), "{ack:?}");
    // Leaving while typing: the others learn both.
    bo.emit("typing", &[json!(true)]).await?;
    let typing = next_named(&mut ada, "typing").await?;
    assert_eq!(typing[0]["nickname"], json!("bob"));
    bo.close().await;
    assert_eq!(
        next_named(&mut ada, "typing").await?,
        vec![json!({ "room": "general", "nickname": "bob", "typing": false })]
    );
    let (_, left, _) = presence_until(&mut ada, |p| p["count"] == json!(2)).await?;
    assert_eq!(left, vec!["bob"]);
    // Nothing was stored by any of it.
    let mut fresh = server.connect(0).await;
    fresh.expect_silence(Duration::from_millis(300)).await?;
    server.stop().await;
    Ok(())
}

/// Joins and leaves are news in the coalesced `presence` tick, never one event per joiner
/// to every socket: when every page reconnects at once (after a restart), each client gets
/// O(1) events per second, not one per other client (that was O(N^2) emits in all).
#[tokio::test]
async fn a_connection_storm_costs_each_client_one_presence_per_tick() -> TestResult {
    const N: usize = 40;
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let mut clients = Vec::with_capacity(N);
    let started = Instant::now();
    for n in 0..N {
        let auth = json!({ "nickname": format!("user{n:02}") });
        clients.push(Client::connect(&server.url, &auth).await?);
    }
    // Wait until the first client's presence lists everyone, counting what it was sent.
    let first = &mut clients[0];
    let mut presence_events = 0;
    let mut announced = std::collections::BTreeSet::new();
    loop {
        match first.next(WAIT).await? {
            Incoming::Event(name, args) if name == "presence" => {
                presence_events += 1;
                for joined in args[0]["joined"].as_array().into_iter().flatten() {
                    announced.insert(joined.as_str().unwrap_or_default().to_string());
                }
                if args[0]["count"] == json!(N) {
                    break;
                }
            }
            Incoming::Event(name, _) if name == "sync" => {}
            Incoming::Event(name, _) => panic!("unexpected {name:?}: joins are presence news"),
            Incoming::Disconnected => return Err("disconnected".into()),
        }
    }
    let ticks = started.elapsed().as_secs() as usize + 2;
    assert!(
        presence_events <= ticks + 1,
        "{presence_events} presence events in {ticks} ticks: not coalesced"
    );
    // The same news goes to everyone (a page leaves out its own name).
    let everyone: std::collections::BTreeSet<String> =
        (0..N).map(|n| format!("user{n:02}")).collect();
    assert!(
        announced.len() >= N - 1 && announced.is_subset(&everyone),
        "{announced:?}"
    );
    server.stop().await;
    Ok(())
}

/// About two typing notices per second per client (a bucket of 2, refilled at 2/s), a final
/// "stopped" never dropped. 20 `true`s then one `false`: the others get the burst of 2, at
/// most 2 more per second the whole exchange took (measured, not a fixed window), and then
/// the `false`, which ends the count (it comes after every `true` relayed before it).
#[tokio::test]
async fn typing_is_rate_limited() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let mut ada = Client::connect(&server.url, &json!({ "nickname": "ada" })).await?;
    let bo = Client::connect(&server.url, &json!({ "nickname": "bo" })).await?;
    let started = Instant::now();
    for _ in 0..20 {
        bo.emit("typing", &[json!(true)]).await?;
    }
    bo.emit("typing", &[json!(false)]).await?;
    let mut relayed = 0u64;
    loop {
        let notice = next_named(&mut ada, "typing").await?;
        match notice[0]["typing"].as_bool() {
            Some(true) => relayed += 1,
            Some(false) => break,
            None => return Err(format!("malformed typing notice {notice:?}").into()),
        }
        assert_eq!(notice[0]["nickname"], json!("bo"));
    }
    let took = started.elapsed().as_secs_f64();
    // Whatever the machine's speed: 2 at once, then at most 2 per second of the exchange.
    let most = 2 + (2.0 * took).ceil() as u64;
    assert!(
        (2..=most).contains(&relayed),
        "relayed {relayed} of 20 in {took:.2}s (2 to {most} allowed)"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn sync_reports_epoch_range_and_completeness() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let mut writer = server.connect(0).await;
    let sync = next_named(&mut writer, "sync").await?;
    let epoch = sync[0]["epoch"].as_str().unwrap_or_default().to_string();
    assert_eq!(epoch.len(), 16, "{sync:?}");
    assert_eq!(sync[0]["complete"], json!(true));
    for i in 1..=5 {
        send_ok(&mut writer, &format!("m{i}"), None).await;
    }
    // From offset 2: ids 3..=5, then sync, then live.
    let mut client = server.connect(2).await;
    assert_eq!(receive(&mut client, 3).await.last().map(|m| m.1), Some(5));
    let sync = next_named(&mut client, "sync").await?;
    assert_eq!(
        sync[0],
        json!({ "epoch": epoch, "from": 3, "to": 5, "complete": true })
    );
    // Same offset, another database's epoch: the whole history, marked incomplete.
    let mut stranger = Client::connect(
        &server.url,
        &json!({ "serverOffset": 2, "epoch": "0000000000000001" }),
    )
    .await?;
    assert_eq!(
        receive(&mut stranger, 5).await.first().map(|m| m.1),
        Some(1)
    );
    let sync = next_named(&mut stranger, "sync").await?;
    assert_eq!(
        (sync[0]["from"].clone(), sync[0]["complete"].clone()),
        (json!(1), json!(false))
    );
    // An offset beyond the newest id is another database too.
    let mut ahead = server.connect(99).await;
    assert_eq!(receive(&mut ahead, 5).await.len(), 5);
    assert_eq!(
        next_named(&mut ahead, "sync").await?[0]["complete"],
        json!(false)
    );
    // The epoch survives restarts.
    server.stop().await;
    let server = TestServer::start(&dir).await;
    let mut again = server.connect(5).await;
    assert_eq!(
        next_named(&mut again, "sync").await?[0]["epoch"],
        json!(epoch)
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn retention_deletes_old_messages_and_says_so() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = tidings::Config::with_db(dir.path().join("chat.redb"));
    config.retain_messages = Some(3);
    config.rate_limit = 0.0;
    let server = TestServer::start_with(config.clone()).await;
    let mut writer = server.connect(0).await;
    for i in 1..=8 {
        send_ok(&mut writer, &format!("m{i}"), Some(&format!("o{i}"))).await;
    }
    server.stop().await;
    // Retention runs at start and then every few seconds.
    let server = TestServer::start_with(config).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let mut fresh = server.connect(0).await;
        let first = fresh.next_chat(WAIT).await?;
        if first.1 == 6 {
            assert_eq!(receive(&mut fresh, 2).await.last().map(|m| m.1), Some(8));
            let sync = next_named(&mut fresh, "sync").await?;
            assert_eq!(
                sync[0]["complete"],
                json!(false),
                "1..=5 are gone: {sync:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "retention did not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A client that already had them is complete.
    let mut current = server.connect(7).await;
    assert_eq!(
        next_named(&mut current, "sync").await?[0]["complete"],
        json!(true)
    );
    server.stop().await;
    Ok(())
}
