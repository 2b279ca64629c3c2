//! Persistence: history and id allocation survive a restart on the same file.

mod common;

use common::*;

#[tokio::test]
async fn history_and_ids_survive_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("chat.redb");
    let server = TestServer::start_on(&db).await;
    let mut client = server.connect(0).await;
    for i in 1..=5u64 {
        assert_eq!(
            send_ok(&mut client, &format!("m{i}"), Some(&format!("p-{i}"))).await,
            i
        );
    }
    client.close().await;
    server.stop().await;

    let server = TestServer::start_on(&db).await;
    let mut client = server.connect(2).await;
    let got = receive(&mut client, 3).await;
    assert_eq!(
        got,
        vec![("m3".into(), 3), ("m4".into(), 4), ("m5".into(), 5)]
    );
    // Retries of messages stored before the restart are still recognised.
    assert_eq!(
        send(&mut client, "m2", Some("p-2")).await,
        serde_json::json!({ "id": 2, "duplicate": true })
    );
    // New ids continue after the old ones.
    assert_eq!(send_ok(&mut client, "m6", Some("p-6")).await, 6);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_second_server_on_the_same_file_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("chat.redb");
    let server = TestServer::start_on(&db).await;
    let second = tokio::task::spawn_blocking({
        let db = db.clone();
        move || tidings::Server::open(tidings::Config::with_db(db)).map(|_| ())
    })
    .await?;
    let message = second.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("already in use by another process"),
        "{message:?}"
    );
    server.stop().await;
    Ok(())
}
