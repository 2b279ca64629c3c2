//! A ping that finds the outgoing buffer full waits for room: a client that reads slowly is
//! not a dead client. Only a pong that does not come within the ping timeout (the wait for
//! room included) closes the session.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use engineioxide::{
    Str,
    config::EngineIoConfig,
    handler::EngineIoHandler,
    service::EngineIoService,
    socket::{DisconnectReason, Socket},
};
use tokio::sync::mpsc;

mod fixture;
use fixture::{create_polling_connection, send_req};

const BUFFER: usize = 4;

#[derive(Debug)]
struct FillingHandler {
    disconnect_tx: mpsc::UnboundedSender<DisconnectReason>,
}

impl EngineIoHandler for FillingHandler {
    type Data = ();
    fn on_connect(self: Arc<Self>, socket: Arc<Socket<()>>) {
        // Fill the buffer: the client has not read anything yet.
        let mut queued = 0;
        while socket.emit(format!("m{queued}")).is_ok() {
            queued += 1;
        }
        assert_eq!(queued, BUFFER, "the buffer holds {BUFFER} packets");
    }
    fn on_disconnect(&self, _: Arc<Socket<()>>, reason: DisconnectReason) {
        self.disconnect_tx.send(reason).unwrap();
    }
    fn on_message(self: &Arc<Self>, _: Str, _: Arc<Socket<()>>) {}
    fn on_binary(self: &Arc<Self>, _: Bytes, _: Arc<Socket<()>>) {}
}

fn create_server(
    ping_timeout: Duration,
) -> (
    EngineIoService<FillingHandler>,
    mpsc::UnboundedReceiver<DisconnectReason>,
) {
    let (disconnect_tx, disconnect_rx) = mpsc::unbounded_channel();
    let config = EngineIoConfig::builder()
        .ping_interval(Duration::from_millis(20))
        .ping_timeout(ping_timeout)
        .max_buffer_size(BUFFER)
        .build();
    let svc = EngineIoService::with_config(Arc::new(FillingHandler { disconnect_tx }), config);
    (svc, disconnect_rx)
}

#[tokio::test]
async fn a_ping_waits_for_room_in_a_full_buffer() {
    let (mut svc, mut disconnect_rx) = create_server(Duration::from_secs(5));
    let sid = create_polling_connection(&mut svc).await;
    // Several ping intervals go by while the buffer is full.
    let closed = tokio::time::timeout(Duration::from_millis(200), disconnect_rx.recv()).await;
    assert!(closed.is_err(), "closed while the buffer was full: {closed:?}");

    // The client reads: the queued messages, then the ping that waited; it answers.
    let params = format!("transport=polling&sid={sid}");
    let mut body = String::new();
    while !body.contains('2') {
        body += &send_req(&mut svc, params.clone(), http::Method::GET, None).await;
    }
    for n in 0..BUFFER {
        assert!(body.contains(&format!("m{n}")), "{body:?}");
    }
    send_req(&mut svc, params, http::Method::POST, Some("3".into())).await;
    let closed = tokio::time::timeout(Duration::from_millis(100), disconnect_rx.recv()).await;
    assert!(closed.is_err(), "closed after answering: {closed:?}");
}

#[tokio::test]
async fn a_client_that_never_reads_still_times_out() {
    let (mut svc, mut disconnect_rx) = create_server(Duration::from_millis(100));
    let _sid = create_polling_connection(&mut svc).await;
    let reason = tokio::time::timeout(Duration::from_secs(2), disconnect_rx.recv())
        .await
        .expect("the session should be closed")
        .unwrap();
    assert_eq!(reason, DisconnectReason::HeartbeatTimeout);
}
