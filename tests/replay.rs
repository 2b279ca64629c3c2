//! Replay on connect: every stored id above `serverOffset`, ascending, then live.

mod common;

use common::client::Client;
use common::*;
use serde_json::json;

async fn seed(server: &TestServer, n: u64) {
    let mut writer = server.connect(0).await;
    for i in 1..=n {
        assert_eq!(
            send_ok(&mut writer, &format!("m{i}"), Some(&format!("s-{i}"))).await,
            i
        );
    }
    writer.close().await;
}

fn expected(from: u64, to: u64) -> Vec<(String, u64)> {
    (from..=to).map(|i| (format!("m{i}"), i)).collect()
}

#[tokio::test]
async fn replays_from_several_offsets() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    seed(&server, 20).await;
    for offset in [0, 1, 7, 19] {
        let mut client = server.connect(offset).await;
        assert_eq!(
            receive(&mut client, (20 - offset) as usize).await,
            expected(offset + 1, 20),
            "offset {offset}"
        );
        client
            .expect_silence(std::time::Duration::from_millis(200))
            .await?;
    }
    // Caught up: nothing to replay, then live messages arrive.
    let mut current = server.connect(20).await;
    current
        .expect_silence(std::time::Duration::from_millis(200))
        .await?;
    let mut writer = server.connect(20).await;
    assert_eq!(send_ok(&mut writer, "m21", None).await, 21);
    assert_eq!(current.next_chat(WAIT).await?, ("m21".into(), 21));
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn offset_forms_missing_null_and_string() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    seed(&server, 5).await;
    for (auth, from) in [
        (json!({}), 1),
        (json!({ "serverOffset": null }), 1),
        (json!({ "serverOffset": "3" }), 4),
        (json!({ "serverOffset": 3 }), 4),
    ] {
        let mut client = Client::connect(&server.url, &auth).await?;
        assert_eq!(
            receive(&mut client, (6 - from) as usize).await,
            expected(from, 5),
            "{auth}"
        );
    }
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn offset_from_another_database_gets_the_whole_history() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    seed(&server, 4).await;
    let mut client = server.connect(1000).await;
    assert_eq!(receive(&mut client, 4).await, expected(1, 4));
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn two_clients_see_the_same_order() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let mut a = server.connect(0).await;
    let mut b = server.connect(0).await;
    let (mut sa, mut sb) = (server.connect(0).await, server.connect(0).await);
    // Interleaved concurrent senders.
    let one = async {
        for i in 0..30 {
            send_ok(&mut sa, &format!("a{i}"), Some(&format!("a-{i}"))).await;
        }
    };
    let two = async {
        for i in 0..30 {
            send_ok(&mut sb, &format!("b{i}"), Some(&format!("b-{i}"))).await;
        }
    };
    tokio::join!(one, two);
    let seen_a = receive(&mut a, 60).await;
    let seen_b = receive(&mut b, 60).await;
    assert_eq!(seen_a, seen_b);
    let ids: Vec<u64> = seen_a.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids, (1..=60).collect::<Vec<_>>());
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn long_replay_streams_in_batches() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = tidings::Config::with_db(dir.path().join("chat.redb"));
    config.replay_batch = 7;
    config.rate_limit = 0.0;
    let server = TestServer::start_with(config).await;
    let mut writer = server.connect(0).await;
    // Unacked bursts: the writer groups them into few commits.
    let n = 3000u64;
    for i in 1..=n {
        writer
            .emit(
                "chat message",
                &[json!(format!("m{i}")), json!(format!("s-{i}"))],
            )
            .await?;
    }
    let got = receive(&mut writer, n as usize).await;
    assert_eq!(got, expected(1, n));
    let mut late = server.connect(0).await;
    assert_eq!(receive(&mut late, n as usize).await, expected(1, n));
    server.stop().await;
    Ok(())
}
