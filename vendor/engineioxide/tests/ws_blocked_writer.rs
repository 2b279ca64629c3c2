//! A websocket client that stops reading blocks the server's writes. When its session is
//! closed (here by the heartbeat: it answers no ping), the writer must give up after a grace
//! period, so that the handler hears of the disconnect; a writer blocked for good would hold
//! the session's receive lock, and `on_disconnect` would never be called.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use engineioxide::{
    ProtocolVersion, Str,
    config::EngineIoConfig,
    handler::EngineIoHandler,
    service::EngineIoService,
    socket::{DisconnectReason, Socket},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::mpsc,
};

const BUFFER: usize = 8;

#[derive(Debug)]
struct FillingHandler {
    disconnect_tx: mpsc::UnboundedSender<DisconnectReason>,
}

impl EngineIoHandler for FillingHandler {
    type Data = ();
    fn on_connect(self: Arc<Self>, socket: Arc<Socket<()>>) {
        // More than the client will ever take: the writer blocks on it.
        while socket.emit("x".repeat(1024)).is_ok() {}
    }
    fn on_disconnect(&self, _: Arc<Socket<()>>, reason: DisconnectReason) {
        self.disconnect_tx.send(reason).unwrap();
    }
    fn on_message(self: &Arc<Self>, _: Str, _: Arc<Socket<()>>) {}
    fn on_binary(self: &Arc<Self>, _: Bytes, _: Arc<Socket<()>>) {}
}

/// The server's side of a connection to a client that sends nothing and reads only the
/// first `budget` bytes: past them, every write is pending for ever (a full TCP window).
struct StalledClient {
    budget: usize,
}

impl AsyncRead for StalledClient {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for StalledClient {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.budget == 0 {
            return Poll::Pending;
        }
        let n = buf.len().min(self.budget);
        self.budget -= n;
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.budget == 0 {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_at_its_heartbeat() {
    let (disconnect_tx, mut disconnect_rx) = mpsc::unbounded_channel();
    let config = EngineIoConfig::builder()
        .ping_interval(Duration::from_millis(50))
        .ping_timeout(Duration::from_millis(50))
        .max_buffer_size(BUFFER)
        .build();
    let svc = EngineIoService::with_config(Arc::new(FillingHandler { disconnect_tx }), config);
    let parts = http::Request::builder()
        .uri("ws://127.0.0.1/engine.io/?EIO=4&transport=websocket")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    // Room for the open packet and a little more, then nothing.
    let stalled = StalledClient { budget: 4096 };
    tokio::spawn(svc.ws_init(stalled, ProtocolVersion::V4, None, parts));
    let reason = tokio::time::timeout(Duration::from_secs(5), disconnect_rx.recv())
        .await
        .expect("the handler hears of the disconnect")
        .unwrap();
    assert_eq!(reason, DisconnectReason::HeartbeatTimeout);
}
