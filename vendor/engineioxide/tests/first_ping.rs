//! The first heartbeat ping goes out `ping_interval` after the handshake, as the engine.io
//! reference server sends it (and as the official protocol test suites expect): before it, a
//! poll or a websocket only sees what the application sent.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use engineioxide::{
    Str,
    config::EngineIoConfig,
    handler::EngineIoHandler,
    service::EngineIoService,
    socket::{DisconnectReason, Socket},
};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

mod fixture;
use fixture::{create_polling_connection, create_ws_connection, send_req_raw};

const PING_INTERVAL: Duration = Duration::from_millis(300);
const PING_TIMEOUT: Duration = Duration::from_millis(200);

/// Echoes every message.
#[derive(Debug, Clone)]
struct Echo;

impl EngineIoHandler for Echo {
    type Data = ();
    fn on_connect(self: Arc<Self>, _socket: Arc<Socket<()>>) {}
    fn on_disconnect(&self, _socket: Arc<Socket<()>>, _reason: DisconnectReason) {}
    fn on_message(self: &Arc<Self>, msg: Str, socket: Arc<Socket<()>>) {
        socket.emit(msg).ok();
    }
    fn on_binary(self: &Arc<Self>, data: Bytes, socket: Arc<Socket<()>>) {
        socket.emit_binary(data).ok();
    }
}

fn create_server() -> EngineIoService<Echo> {
    let config = EngineIoConfig::builder()
        .ping_interval(PING_INTERVAL)
        .ping_timeout(PING_TIMEOUT)
        .build();
    EngineIoService::with_config(Arc::new(Echo), config)
}

#[tokio::test]
async fn polling_the_first_ping_comes_after_the_ping_interval() {
    let mut svc = create_server();
    let opened = Instant::now();
    let sid = create_polling_connection(&mut svc).await;
    let params = format!("transport=polling&sid={sid}");

    // Right after the handshake a poll holds the echo of a message, and no ping.
    let posted = send_req_raw(
        &mut svc,
        params.clone(),
        http::Method::POST,
        Some("4hello".into()),
    );
    assert_eq!(posted.await, "ok");
    let polled = send_req_raw(&mut svc, params.clone(), http::Method::GET, None).await;
    assert_eq!(
        polled, "4hello",
        "a ping was queued right after the handshake"
    );

    // The next poll waits for the ping, which comes once the interval has passed.
    let poll = send_req_raw(&mut svc, params.clone(), http::Method::GET, None);
    let ping = tokio::time::timeout(PING_INTERVAL * 5, poll)
        .await
        .expect("no ping within five ping intervals");
    assert_eq!(ping, "2");
    let elapsed = opened.elapsed();
    assert!(
        elapsed >= PING_INTERVAL,
        "the first ping came {elapsed:?} after the handshake, before the ping interval"
    );

    // Answered, the session goes on.
    let pong = send_req_raw(
        &mut svc,
        params.clone(),
        http::Method::POST,
        Some("3".into()),
    );
    assert_eq!(pong.await, "ok");
    let ping = send_req_raw(&mut svc, params, http::Method::GET, None);
    let ping = tokio::time::timeout(PING_INTERVAL * 5, ping)
        .await
        .expect("no second ping");
    assert_eq!(ping, "2");
}

#[tokio::test]
async fn websocket_the_first_ping_comes_after_the_ping_interval() {
    let mut svc = create_server();
    let opened = Instant::now();
    let mut ws = create_ws_connection(&mut svc).await;
    let open = ws.next().await.unwrap().unwrap();
    assert!(
        matches!(&open, Message::Text(t) if t.starts_with('0')),
        "{open:?}"
    );

    // Right after the handshake the echo of a message comes first, not a ping.
    ws.send(Message::Text("4hello".into())).await.unwrap();
    let next = ws.next().await.unwrap().unwrap();
    assert_eq!(
        next,
        Message::Text("4hello".into()),
        "a ping came right after the handshake"
    );

    let ping = tokio::time::timeout(PING_INTERVAL * 5, ws.next())
        .await
        .expect("no ping within five ping intervals")
        .unwrap()
        .unwrap();
    assert_eq!(ping, Message::Text("2".into()));
    let elapsed = opened.elapsed();
    assert!(
        elapsed >= PING_INTERVAL,
        "the first ping came {elapsed:?} after the handshake, before the ping interval"
    );
}

#[tokio::test]
async fn a_client_that_never_answers_is_closed_after_the_interval_and_the_timeout() {
    let mut svc = create_server();
    let opened = Instant::now();
    let mut ws = create_ws_connection(&mut svc).await;
    let _open = ws.next().await.unwrap().unwrap();
    let ping = ws.next().await.unwrap().unwrap();
    assert_eq!(ping, Message::Text("2".into()));
    // Not answered: the session is closed at the ping's deadline.
    let closed = tokio::time::timeout(PING_INTERVAL * 5 + PING_TIMEOUT * 5, async {
        while let Some(Ok(msg)) = ws.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the session was not closed");
    let elapsed = opened.elapsed();
    assert!(
        elapsed >= PING_INTERVAL + PING_TIMEOUT,
        "closed {elapsed:?} after the handshake, before the ping interval and timeout"
    );
}
