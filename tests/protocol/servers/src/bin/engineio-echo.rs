//! The engine.io server the official engine.io protocol test suite expects
//! (github.com/socketio/engine.io-protocol, `test-suite/`, README "Test suite"): it echoes
//! every message, text or binary, with `pingInterval` 300 ms, `pingTimeout` 200 ms and
//! `maxPayload` 1,000,000 bytes. The same settings as upstream socketioxide's
//! `e2e/engineioxide/engineioxide.rs`, on the vendored engineioxide.
//!
//!     engineio-echo [ADDRESS:PORT]     (default 127.0.0.1:0: a free port, printed)

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use engineioxide::{
    Str,
    config::EngineIoConfig,
    handler::EngineIoHandler,
    service::EngineIoService,
    socket::{DisconnectReason, Socket},
};

#[derive(Debug)]
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

// One thread, as the reference server (Node) has: the suites send requests on separate
// connections at once and expect them handled in the order they were sent (see
// tests/protocol/README.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let config = EngineIoConfig::builder()
        .ping_interval(Duration::from_millis(300))
        .ping_timeout(Duration::from_millis(200))
        .max_payload(1_000_000)
        .build();
    let svc = EngineIoService::with_config(Arc::new(Echo), config);
    tidings_protocol_servers::serve(tidings_protocol_servers::listen_addr(), svc).await
}
