//! An event encoded once ([`Socket::encode_event`]) and queued to several sockets
//! ([`Socket::try_send_encoded`]) is the packet `emit` would send; a socket whose buffer is
//! full, or closed, says so; `buffer_capacity` counts the free slots.
use socketioxide::{SocketError, SocketIo, extract::SocketRef};
use tokio::sync::mpsc;

#[tokio::test]
async fn encoded_events_are_emitted_packets_and_report_full_and_closed_sockets() {
    let (_svc, io) = SocketIo::builder().max_buffer_size(4).build_svc();
    let (sockets_tx, mut sockets) = mpsc::unbounded_channel::<SocketRef>();
    io.ns("/", async move |socket: SocketRef| {
        sockets_tx.send(socket).unwrap();
    });
    let (_a_tx, mut a_rx) = io.new_dummy_sock("/", ()).await;
    let (_b_tx, mut b_rx) = io.new_dummy_sock("/", ()).await;
    let (a, b) = (sockets.recv().await.unwrap(), sockets.recv().await.unwrap());
    a_rx.recv().await.unwrap(); // CONNECT
    b_rx.recv().await.unwrap();

    // The same packet as emit, to both sockets.
    a.emit("chat", &("hello", 1)).unwrap();
    let emitted = a_rx.recv().await.unwrap();
    let encoded = a.encode_event("chat", &("hello", 1)).unwrap();
    a.try_send_encoded(&encoded).unwrap();
    b.try_send_encoded(&encoded).unwrap();
    assert_eq!(a_rx.recv().await.unwrap(), emitted);
    assert_eq!(b_rx.recv().await.unwrap(), emitted);

    // A full buffer is reported, and counted, per socket (the dummy client reads nothing more:
    // fill until the pipe behind the buffer is full too, then count down).
    let mut queued = 0;
    while b.try_send_encoded(&encoded).is_ok() {
        queued += 1;
        assert!(queued < 1000, "the buffer never filled");
        tokio::task::yield_now().await;
    }
    assert!(matches!(
        b.try_send_encoded(&encoded),
        Err(SocketError::InternalChannelFull)
    ));
    assert_eq!(b.buffer_capacity(), 0);
    assert_eq!(a.buffer_capacity(), 4, "the other socket is unaffected");

    // A closed socket says so.
    a.clone().disconnect().unwrap();
    assert!(matches!(
        a.try_send_encoded(&encoded),
        Err(SocketError::Closed)
    ));
}
