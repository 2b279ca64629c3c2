//! A socket whose client does not read (its buffer is full) can still be disconnected: the
//! DISCONNECT packet cannot be queued, so the engine.io connection is closed instead, and the
//! disconnect handler runs at once.
use std::time::Duration;

use socketioxide::{SocketIo, extract::SocketRef, socket::DisconnectReason};
use tokio::sync::mpsc;

mod fixture;

use fixture::{create_polling_connection, send_req};

#[tokio::test]
async fn a_socket_whose_buffer_is_full_is_disconnected_all_the_same() {
    // Heartbeats far apart: nothing but the disconnect may end the session.
    let (svc, io) = SocketIo::builder()
        .ping_interval(Duration::from_secs(60))
        .ping_timeout(Duration::from_secs(60))
        .max_buffer_size(4)
        .build_svc();
    let (sockets_tx, mut sockets) = mpsc::unbounded_channel::<SocketRef>();
    let (reasons_tx, mut reasons) = mpsc::unbounded_channel::<DisconnectReason>();
    io.ns("/", async move |socket: SocketRef| {
        let reasons = reasons_tx.clone();
        socket.on_disconnect(async move |reason: DisconnectReason| {
            reasons.send(reason).unwrap();
        });
        sockets_tx.send(socket).unwrap();
    });
    // A polling client that never polls again after connecting: its buffer fills.
    let sid = create_polling_connection(&svc).await;
    let socket = sockets.recv().await.unwrap();
    let mut queued = 0;
    while socket.emit("flood", &queued).is_ok() {
        queued += 1;
        assert!(queued < 1000, "the buffer never filled");
    }
    assert_eq!(socket.buffer_capacity(), 0);

    socket
        .clone()
        .disconnect()
        .expect("disconnected though the client reads nothing");
    assert!(!socket.connected());
    let reason = tokio::time::timeout(Duration::from_secs(1), reasons.recv())
        .await
        .expect("the disconnect handler ran")
        .expect("a reason");
    assert_eq!(reason, DisconnectReason::ServerNSDisconnect);
    assert!(io.sockets().is_empty(), "the socket left its namespace");
    // The engine.io session is closed too: the client's next poll finds no session.
    let poll = tokio::time::timeout(
        Duration::from_secs(1),
        send_req(
            &svc,
            format!("transport=polling&sid={sid}"),
            http::Method::GET,
            None,
        ),
    )
    .await
    .expect("the poll is answered");
    assert!(poll.contains("Session ID unknown"), "{poll}");
}
