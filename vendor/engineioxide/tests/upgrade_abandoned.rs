//! An upgrade to websocket that fails or times out drops the websocket, not the session: the
//! session goes on over polling, as with the reference engine.io server, which closes the
//! probe transport and keeps the socket. The heartbeat, paused while the upgrade runs,
//! resumes, so a session whose client is gone is still reclaimed.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use engineioxide::{
    Str,
    config::EngineIoConfig,
    handler::EngineIoHandler,
    service::EngineIoService,
    socket::{DisconnectReason, Socket},
};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

mod fixture;
use fixture::{create_polling_connection, create_ws_upgrade_connection, send_req, send_req_raw};

/// Echoes every message; reports every disconnection.
#[derive(Debug)]
struct EchoHandler {
    disconnect_tx: mpsc::UnboundedSender<DisconnectReason>,
}

impl EngineIoHandler for EchoHandler {
    type Data = ();
    fn on_connect(self: Arc<Self>, _: Arc<Socket<()>>) {}
    fn on_disconnect(&self, _: Arc<Socket<()>>, reason: DisconnectReason) {
        self.disconnect_tx.send(reason).unwrap();
    }
    fn on_message(self: &Arc<Self>, msg: Str, socket: Arc<Socket<()>>) {
        socket.emit(msg).ok();
    }
    fn on_binary(self: &Arc<Self>, _: Bytes, _: Arc<Socket<()>>) {}
}

fn create_server(
    ping_interval: Duration,
    ping_timeout: Duration,
    upgrade_timeout: Duration,
) -> (
    EngineIoService<EchoHandler>,
    mpsc::UnboundedReceiver<DisconnectReason>,
) {
    let (disconnect_tx, disconnect_rx) = mpsc::unbounded_channel();
    let config = EngineIoConfig::builder()
        .ping_interval(ping_interval)
        .ping_timeout(ping_timeout)
        .upgrade_timeout(upgrade_timeout)
        .build();
    let svc = EngineIoService::with_config(Arc::new(EchoHandler { disconnect_tx }), config);
    (svc, disconnect_rx)
}

/// Sends a message over polling and polls until its echo comes back: the session is served
/// over polling. Panics if it is not within 50 polls (a session still upgrading answers every
/// poll with a NOOP; a closed one with "Session ID unknown").
async fn echo_over_polling(svc: &mut EngineIoService<EchoHandler>, sid: &str) {
    let params = format!("transport=polling&sid={sid}");
    send_req(
        svc,
        params.clone(),
        http::Method::POST,
        Some("4hello".into()),
    )
    .await;
    let mut bodies = Vec::new();
    for _ in 0..50 {
        let body = tokio::time::timeout(
            Duration::from_secs(5),
            send_req(svc, params.clone(), http::Method::GET, None),
        )
        .await
        .expect("a poll of a served session answers");
        if body.contains("hello") {
            return;
        }
        bodies.push(body);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the echo never came back over polling; the polls answered {bodies:?}");
}

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn an_upgrade_that_times_out_leaves_the_session_on_polling() {
    let (mut svc, mut disconnect_rx) = create_server(LONG, LONG, Duration::from_millis(200));
    let sid = create_polling_connection(&mut svc).await;
    // A websocket for the session that never sends the probe (a client that stalls, or a
    // proxy that never relays the 101).
    let _ws = create_ws_upgrade_connection(&mut svc, sid.parse().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        disconnect_rx.try_recv().is_err(),
        "the session was closed when its upgrade timed out"
    );
    echo_over_polling(&mut svc, &sid).await;
    assert!(disconnect_rx.try_recv().is_err());
}

#[tokio::test]
async fn a_failed_probe_leaves_the_session_on_polling() {
    let (mut svc, mut disconnect_rx) = create_server(LONG, LONG, Duration::from_secs(10));
    let sid = create_polling_connection(&mut svc).await;
    let mut ws = create_ws_upgrade_connection(&mut svc, sid.parse().unwrap()).await;
    ws.send(Message::Text("2probe".into())).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the probe is answered")
        .expect("the websocket is open")
        .unwrap();
    assert_eq!(answer, Message::Text("3probe".into()));
    // Not the upgrade packet: the upgrade fails.
    ws.send(Message::Text("4oops".into())).await.unwrap();
    echo_over_polling(&mut svc, &sid).await;
    assert!(
        disconnect_rx.try_recv().is_err(),
        "the session was closed when its upgrade failed"
    );
}

#[tokio::test]
async fn a_session_abandoned_during_its_upgrade_is_reclaimed_by_the_heartbeat() {
    let interval = Duration::from_millis(300);
    let (mut svc, mut disconnect_rx) = create_server(
        interval,
        Duration::from_millis(200),
        Duration::from_millis(200),
    );
    let sid = create_polling_connection(&mut svc).await;
    let params = format!("transport=polling&sid={sid}");
    // The first ping, answered: the heartbeat now waits for its next tick, and it keeps
    // waiting while the upgrade runs.
    let body = send_req_raw(&mut svc, params.clone(), http::Method::GET, None).await;
    assert_eq!(body, "2", "the first poll holds the ping");
    send_req(&mut svc, params, http::Method::POST, Some("3".into())).await;
    // Then an upgrade that is never completed, and a client that never polls again.
    let _ws = create_ws_upgrade_connection(&mut svc, sid.parse().unwrap()).await;

    let reason = tokio::time::timeout(Duration::from_secs(3), disconnect_rx.recv())
        .await
        .expect("the abandoned session was not reclaimed (a leak)")
        .unwrap();
    assert_eq!(reason, DisconnectReason::HeartbeatTimeout);
}
