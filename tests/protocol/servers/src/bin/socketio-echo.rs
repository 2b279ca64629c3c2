//! The socket.io server the official socket.io protocol test suite expects
//! (github.com/socketio/socket.io-protocol, `test-suite/`, Readme "Test suite"): on `/` and
//! `/custom` it emits `auth` with the CONNECT payload; on `/` it answers `message` with
//! `message-back` and the same arguments, and acknowledges `message-with-ack` with its
//! arguments. `pingInterval` 300 ms, `pingTimeout` 200 ms, `maxPayload` 1,000,000 bytes,
//! `connectTimeout` 1 s: the reference server's settings, and upstream socketioxide's
//! `e2e/socketioxide/socketioxide.rs` (which also sets the ack timeout to 200 ms), on the
//! vendored socketioxide.
//!
//! One deviation from the reference server: `auth` is emitted 50 ms after the CONNECT reply
//! instead of at once (`SOCKETIO_ECHO_AUTH_DELAY_MS`, 0 for none). The suite waits for each
//! message with a one-shot listener added after the previous message was handled, so of two
//! WebSocket frames that arrive in one TCP read (ws emits them synchronously) it loses the
//! second; engineioxide writes what is queued together, so the CONNECT reply and `auth`
//! often arrive in one read, and "should connect then disconnect from a custom namespace"
//! then waits for an `auth` it already dropped (it failed 15 runs of 15 without the delay).
//! See tests/protocol/README.md.
//!
//!     socketio-echo [ADDRESS:PORT]     (default 127.0.0.1:0: a free port, printed)

use std::{fmt, sync::OnceLock, time::Duration};

use rmpv::Value;
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{SeqAccess, Visitor},
    ser::SerializeTuple,
};
use socketioxide::{
    SocketIo,
    extract::{AckSender, Data, SocketRef},
};

/// All the arguments of an event, however many (the suite sends one to three, some binary).
/// socketioxide treats a tuple-like type as the list of an event's arguments, in both
/// directions, and anything else as its first argument: this one reads and writes itself as
/// a tuple of any length. `rmpv::Value` keeps binary attachments binary.
struct Args(Vec<Value>);

impl Serialize for Args {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for arg in &self.0 {
            tuple.serialize_element(arg)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgsVisitor;
        impl<'de> Visitor<'de> for ArgsVisitor {
            type Value = Args;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the arguments of an event")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Args, A::Error> {
                let mut args = Vec::new();
                while let Some(arg) = seq.next_element()? {
                    args.push(arg);
                }
                Ok(Args(args))
            }
        }
        deserializer.deserialize_tuple(usize::MAX, ArgsVisitor)
    }
}

/// Emits `auth` with the CONNECT payload, once the CONNECT reply has gone out on its own (see
/// the module's comment).
async fn emit_auth(socket: &SocketRef, auth: &Value) {
    static DELAY: OnceLock<Duration> = OnceLock::new();
    let delay = *DELAY.get_or_init(|| {
        let ms = std::env::var("SOCKETIO_ECHO_AUTH_DELAY_MS").map_or(50, |v| {
            v.parse()
                .expect("SOCKETIO_ECHO_AUTH_DELAY_MS: milliseconds")
        });
        Duration::from_millis(ms)
    });
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    socket.emit("auth", auth).ok();
}

async fn on_connect(socket: SocketRef, Data(auth): Data<Value>) {
    socket.on(
        "message",
        async |socket: SocketRef, Data(args): Data<Args>| {
            socket.emit("message-back", &args).ok();
        },
    );
    socket.on(
        "message-with-ack",
        async |Data(args): Data<Args>, ack: AckSender| {
            ack.send(&args).ok();
        },
    );
    emit_auth(&socket, &auth).await;
}

async fn on_custom_connect(socket: SocketRef, Data(auth): Data<Value>) {
    emit_auth(&socket, &auth).await;
}

// One thread, as the reference server (Node) has: the suites send requests on separate
// connections at once and expect them handled in the order they were sent (see
// tests/protocol/README.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let (svc, io) = SocketIo::builder()
        .ping_interval(Duration::from_millis(300))
        .ping_timeout(Duration::from_millis(200))
        .ack_timeout(Duration::from_millis(200))
        .connect_timeout(Duration::from_secs(1))
        .max_payload(1_000_000)
        .build_svc();
    io.ns("/", on_connect);
    io.ns("/custom", on_custom_connect);
    tidings_protocol_servers::serve(tidings_protocol_servers::listen_addr(), svc).await
}
