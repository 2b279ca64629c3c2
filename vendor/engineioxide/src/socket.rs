//! ## A [`Socket`] represents a client connection to the server
//!
//! It can be used to :
//! * Emit binary or string data
//! * Get a reference to the request made to connect to the socket.io server
//! * Close the connection
//!
//! #### Example :
//! ```rust
//! # use bytes::Bytes;
//! # use engineioxide::service::EngineIoService;
//! # use engineioxide::handler::EngineIoHandler;
//! # use engineioxide::{Socket, DisconnectReason, Str};
//! # use std::sync::{Mutex, Arc};
//! # use std::sync::atomic::{AtomicUsize, Ordering};
//! // Global state
//! #[derive(Debug, Default)]
//! struct MyHandler {
//!     user_cnt: AtomicUsize,
//! }
//!
//! // Socket state
//! #[derive(Debug, Default)]
//! struct SocketState {
//!     id: Mutex<String>,
//! }
//!
//! impl EngineIoHandler for MyHandler {
//!     type Data = SocketState;
//!
//!     fn on_connect(self: Arc<Self>, socket: Arc<Socket<SocketState>>) {
//!         // Get the request made to initialize the connection
//!         // and check that the authorization header is correct
//!         let connected = socket.req_parts.headers.get("Authorization")
//!             .map(|a| a == "mysuperpassword!").unwrap_or_default();
//!         // Close the socket if the authentication is invalid
//!         if !connected {
//!             socket.close(DisconnectReason::TransportError);
//!             return;
//!         }
//!
//!         let cnt = self.user_cnt.fetch_add(1, Ordering::Relaxed) + 1;
//!         // Emit string data to the client
//!         socket.emit(cnt.to_string()).ok();
//!     }
//!     fn on_disconnect(&self, socket: Arc<Socket<SocketState>>, reason: DisconnectReason) {
//!         let cnt = self.user_cnt.fetch_sub(1, Ordering::Relaxed) - 1;
//!     }
//!     fn on_message(self: &Arc<Self>, msg: Str, socket: Arc<Socket<SocketState>>) {
//!         *socket.data.id.lock().unwrap() = msg.into(); // bind a provided user id to a socket
//!     }
//!     fn on_binary(self: &Arc<Self>, data: Bytes, socket: Arc<Socket<SocketState>>) { }
//! }
//!
//! let svc = EngineIoService::new(Arc::new(MyHandler::default()));
//! ```
#[cfg(any(feature = "v3", feature = "__test_harness"))]
use std::sync::Arc;
#[cfg(feature = "v3")]
use std::time::Duration;
use std::{
    collections::VecDeque,
    fmt::Debug,
    sync::atomic::{AtomicBool, AtomicU8, Ordering},
};

use crate::{config::EngineIoConfig, errors::Error, send_buffer::SendBuffer};
use bytes::Bytes;
use engineioxide_core::{Packet, PacketBuf, ProtocolVersion, Str, TransportType};
#[cfg(feature = "v3")]
use futures_util::FutureExt;
use http::request::Parts;
use smallvec::{SmallVec, smallvec};
use tokio::sync::{Mutex, Notify, futures::Notified, mpsc::error::TrySendError};

pub use engineioxide_core::Sid;
#[cfg(feature = "v3")]
use tokio_util::future::FutureExt as _;
use tokio_util::sync::CancellationToken;

/// A [`DisconnectReason`] represents the reason why a [`Socket`] was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client gracefully closed the connection
    TransportClose,
    /// The client sent multiple polling requests at the same time (it is forbidden according to the engine.io protocol)
    MultipleHttpPollingError,
    /// The client sent a bad request / the packet could not be parsed correctly
    PacketParsingError,
    /// An error occured in the transport layer
    /// (e.g. the client closed the connection without sending a close packet)
    TransportError,
    /// The client did not respond to the heartbeat
    HeartbeatTimeout,
    /// The server is being closed
    ClosingServer,
}

/// Convert an [`Error`] to a [`DisconnectReason`] if possible
/// This is used to notify the [`Handler`](crate::handler::EngineIoHandler) of the reason why a [`Socket`] was closed
/// If the error cannot be converted to a [`DisconnectReason`] it means that the error was not fatal and the [`Socket`] can be kept alive
impl From<&Error> for Option<DisconnectReason> {
    fn from(err: &Error) -> Self {
        use Error::*;
        match err {
            WsTransport(_) => Some(DisconnectReason::TransportError),
            BadPacket(_) | PacketParse(_) => Some(DisconnectReason::PacketParsingError),
            HeartbeatTimeout => Some(DisconnectReason::HeartbeatTimeout),
            _ => None,
        }
    }
}

/// One item of a socket's send buffer: a message or a binary payload inline, anything else
/// (a heartbeat ping, a close, adjacent packets that must be sent together) boxed.
///
/// The send buffer holds up to `max_buffer_size` of them: 40 bytes here, against 168 for a
/// [`PacketBuf`] (a `SmallVec` of two 80-byte [`Packet`]s, `Open` being the large variant).
/// (When the buffer was tokio's bounded channel, which allocates a first block of 32 slots
/// for every socket, that was the difference between a 1.3 KB and a 5.4 KB block.)
#[derive(Debug)]
pub(crate) enum QueuedPacket {
    /// A text message (`Packet::Message`).
    Message(Str),
    /// A binary payload (`Packet::Binary`).
    Binary(Bytes),
    /// Any other packet, or several that must be sent together.
    Other(Box<PacketBuf>),
}

impl From<Packet> for QueuedPacket {
    #[inline]
    fn from(packet: Packet) -> Self {
        match packet {
            Packet::Message(msg) => QueuedPacket::Message(msg),
            Packet::Binary(data) => QueuedPacket::Binary(data),
            packet => QueuedPacket::Other(Box::new(smallvec![packet])),
        }
    }
}

impl From<PacketBuf> for QueuedPacket {
    #[inline]
    fn from(mut packets: PacketBuf) -> Self {
        match packets.len() {
            1 => packets
                .pop()
                .map_or(QueuedPacket::Other(Box::default()), Self::from),
            _ => QueuedPacket::Other(Box::new(packets)),
        }
    }
}

impl QueuedPacket {
    /// Takes the next packet out of `queued`, leaving the rest of several boxed together in
    /// place; `None` once it is empty. A writer holds the item (40 bytes) while it waits for
    /// the connection, instead of a [`PacketBuf`] (168) and an iterator over it.
    pub(crate) fn next_packet(queued: &mut Option<QueuedPacket>) -> Option<Packet> {
        match queued.take()? {
            QueuedPacket::Message(msg) => Some(Packet::Message(msg)),
            QueuedPacket::Binary(data) => Some(Packet::Binary(data)),
            QueuedPacket::Other(mut packets) => {
                if packets.is_empty() {
                    return None;
                }
                let first = packets.remove(0);
                if !packets.is_empty() {
                    *queued = Some(QueuedPacket::Other(packets));
                }
                Some(first)
            }
        }
    }
}

impl From<QueuedPacket> for PacketBuf {
    #[inline]
    fn from(packet: QueuedPacket) -> Self {
        match packet {
            QueuedPacket::Message(msg) => smallvec![Packet::Message(msg)],
            QueuedPacket::Binary(data) => smallvec![Packet::Binary(data)],
            QueuedPacket::Other(packets) => *packets,
        }
    }
}

/// A permit to emit a message to the client.
/// A permit holds a place in the internal channel to send one packet to the client.
pub struct Permit<'a> {
    inner: crate::send_buffer::Permit<'a, QueuedPacket>,
}
impl Permit<'_> {
    /// Consume the permit and emit a message to the client.
    #[inline]
    pub fn emit(self, msg: Str) {
        self.inner.send(QueuedPacket::Message(msg));
    }
    /// Consume the permit and emit a binary message to the client.
    #[inline]
    pub fn emit_binary(self, data: Bytes) {
        self.inner.send(QueuedPacket::Binary(data));
    }

    /// Consume the permit and emit a message with multiple binary data to the client.
    ///
    /// It can be used to ensure atomicity when sending a string packet with adjacent binary packets.
    pub fn emit_many(self, msg: Str, data: VecDeque<Bytes>) {
        let mut packets = SmallVec::with_capacity(data.len() + 1);
        packets.push(Packet::Message(msg));
        for d in data {
            packets.push(Packet::Binary(d));
        }
        self.inner.send(QueuedPacket::from(packets));
    }

    /// Consume the permit and emit a message with multiple binary data to the client.
    ///
    /// It can be used to ensure atomicity when sending a string packet with adjacent binary packets.
    pub fn emit_many_binary(self, bin: Bytes, data: Vec<Bytes>) {
        let mut packets = SmallVec::with_capacity(data.len() + 1);
        packets.push(Packet::Binary(bin));
        for d in data {
            packets.push(Packet::Binary(d));
        }
        self.inner.send(QueuedPacket::from(packets));
    }
}

/// What the transport reading a socket's send buffer keeps between reads; its lock
/// ([`Socket::internal_rx`]) is what makes that transport the buffer's one receiver.
#[derive(Debug, Default)]
pub(crate) struct InternalRx {
    pub peeked_packet: Option<PacketBuf>,
}

/// The volatile packets not written yet: only the latest, a volatile emit replaces those that
/// were not written. Read by whichever transport holds [`Socket::internal_rx`].
///
/// Nothing is allocated until the first volatile emit (a `watch` channel allocated ~520 bytes
/// for every socket, most of which never send a volatile packet).
#[derive(Debug, Default)]
pub(crate) struct VolatileSlot {
    latest: std::sync::Mutex<Option<Box<PacketBuf>>>,
    filled: Notify,
}

impl VolatileSlot {
    /// Replaces the packets not written yet.
    fn put(&self, packets: PacketBuf) {
        *self.lock() = Some(Box::new(packets));
        self.filled.notify_one();
    }

    /// The packets not written yet, if any.
    pub(crate) fn take(&self) -> Option<PacketBuf> {
        self.lock().take().map(|packets| *packets)
    }

    /// Completes once packets may have been put since the last [`take`](Self::take) that
    /// followed a completed wait: a wake-up may find the slot empty.
    pub(crate) fn filled(&self) -> Notified<'_> {
        self.filled.notified()
    }

    /// Waits for packets and takes them.
    pub(crate) async fn next(&self) -> PacketBuf {
        loop {
            self.filled().await;
            if let Some(packets) = self.take() {
                return packets;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Box<PacketBuf>>> {
        // The slot holds plain data: a panic while it was locked cannot leave it inconsistent.
        self.latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A [`Socket`] represents a client connection to the server.
/// It is agnostic to the [`TransportType`].
///
/// It handles :
/// * the packet communication between with the `Engine`
///   and the user defined [`Handler`](crate::handler::EngineIoHandler).
/// * the user defined [`Data`](crate::handler::EngineIoHandler::Data) bound to the socket.
/// * the state the heartbeat needs to verify that the connection is still up (the engine's
///   heartbeat driver pings v4 sessions periodically; a v3 session has a task of its own).
pub struct Socket<D>
where
    D: Default + Send + Sync + 'static,
{
    /// The socket id
    pub id: Sid,

    /// The protocol version used by the socket
    pub protocol: ProtocolVersion,

    /// The transport type represented as a bitfield
    /// It is represented as a bitfield to allow the use of an [`AtomicU8`] so it can be shared between threads
    /// without any mutex
    transport: AtomicU8,

    /// Whether the socket is currently upgrading to a new transport.
    upgrading: AtomicBool,

    /// The right to receive from [`Socket::send_buffer`]
    ///
    /// It is used and managed by the [`EngineIo`](crate::engine) struct depending on the transport type
    ///
    /// It is locked if [`EngineIo`](crate::engine) is currently reading from it :
    /// * In case of polling transport it will be locked and released for each request
    /// * In case of websocket transport it will always be locked until the connection is closed
    ///
    /// Closing behavior is driven by the [`Socket::cancellation_token`].
    ///
    /// The channel is made of a [`SmallVec`] of [`Packet`]s so that adjacent packets can be sent atomically.
    pub(crate) internal_rx: Mutex<InternalRx>,

    /// The packets to send to the connection, queued by any task, received by the transport
    /// holding [`Socket::internal_rx`]
    pub(crate) send_buffer: SendBuffer<QueuedPacket>,

    /// Volatile [PacketBuf]s that bypass the internal buffer: only the latest is retained;
    /// subsequent volatile sends overwrite the previous one.
    pub(crate) volatile: VolatileSlot,

    /// Signalled by the transports when the client's heartbeat arrives (a Pong packet in the
    /// v4 protocol, a Ping in v3). A signal nobody waits for is kept (one at most) until
    /// taken: by the engine's heartbeat driver at its checks (v4), by the session's heartbeat
    /// job, which waits for it (v3).
    pub(crate) client_heartbeat: Notify,

    /// A cancellation token that will be triggered when the socket is being closed.
    pub(crate) cancellation_token: CancellationToken,

    /// Function to call when the socket is closed
    close_fn: Box<dyn Fn(Sid, DisconnectReason) + Send + Sync>,
    /// User data bound to the socket
    pub data: D,

    /// Http Request data used to create a socket
    pub req_parts: Parts,

    /// If the client supports binary packets (via polling XHR2)
    pub(crate) supports_binary: bool,
}

impl<D> Socket<D>
where
    D: Default + Send + Sync + 'static,
{
    pub(crate) fn new(
        protocol: ProtocolVersion,
        transport: TransportType,
        config: &EngineIoConfig,
        req_parts: Parts,
        close_fn: Box<dyn Fn(Sid, DisconnectReason) + Send + Sync>,
        supports_binary: bool,
    ) -> Self {
        Self {
            id: Sid::new(),
            protocol,
            transport: AtomicU8::new(transport as u8),
            upgrading: AtomicBool::new(false),

            internal_rx: Mutex::new(InternalRx::default()),
            send_buffer: SendBuffer::new(config.max_buffer_size),

            volatile: VolatileSlot::default(),

            client_heartbeat: Notify::new(),
            cancellation_token: CancellationToken::new(),

            close_fn,

            data: D::default(),
            req_parts,

            supports_binary,
        }
    }

    /// Sends a packet to the connection.
    pub(crate) fn send(&self, packet: Packet) -> Result<(), TrySendError<Packet>> {
        #[cfg(feature = "tracing")]
        tracing::debug!(?packet, "sending packet");

        self.send_buffer
            .try_send(QueuedPacket::from(packet))
            .map_err(|p| match p {
                TrySendError::Full(p) => TrySendError::Full(PacketBuf::from(p).pop().unwrap()),
                TrySendError::Closed(p) => TrySendError::Closed(PacketBuf::from(p).pop().unwrap()),
            })?;
        Ok(())
    }
    pub(crate) fn is_upgrading(&self) -> bool {
        self.upgrading.load(Ordering::Relaxed)
    }
    pub(crate) fn start_upgrade(&self) {
        self.upgrading.store(true, Ordering::Relaxed);
    }
    /// Ends an upgrade that did not complete: polling requests are served again and the
    /// heartbeat resumes.
    pub(crate) fn cancel_upgrade(&self) {
        self.upgrading.store(false, Ordering::Relaxed);
    }

    /// Spawns the heartbeat job of a v3 session (the client pings, the server answers; v4
    /// sessions are driven by the engine's [`Heartbeats`](crate::heartbeat::Heartbeats)).
    #[cfg(feature = "v3")]
    pub(crate) fn spawn_heartbeat(self: Arc<Self>, interval: Duration, timeout: Duration) {
        tokio::spawn(self.heartbeat(interval, timeout));
    }

    /// The heartbeat job's task: the job, until the socket is closed.
    ///
    /// `with_cancellation_token_owned` rather than `CancellationToken::run_until_cancelled_owned`:
    /// the latter is an `async fn` that keeps its argument, the job's future, twice (as its
    /// argument, then inside the future it awaits), and this task lives as long as its socket.
    #[cfg(feature = "v3")]
    fn heartbeat(
        self: Arc<Self>,
        interval: Duration,
        timeout: Duration,
    ) -> impl Future<Output = ()> + Send + 'static {
        let cancellation_token = self.cancellation_token.clone();
        async move {
            if let Err(_e) = self.heartbeat_job_v3(interval, timeout).await {
                self.close(DisconnectReason::HeartbeatTimeout);
                #[cfg(feature = "tracing")]
                tracing::debug!(id = ?self.id, "heartbeat error: {_e}");
            }
        }
        .with_cancellation_token_owned(cancellation_token)
        .map(|_v| {
            #[cfg(feature = "tracing")]
            tracing::debug!(aborted = _v.is_none(), "heartbeat job completed");
        })
    }

    #[cfg(feature = "v3")]
    async fn heartbeat_job_v3(&self, interval: Duration, timeout: Duration) -> Result<(), Error> {
        #[cfg(feature = "tracing")]
        tracing::debug!(sid = ?self.id, "heartbeat receiver routine started");

        loop {
            tokio::time::timeout(interval + timeout, self.client_heartbeat.notified())
                .await
                .map_err(|_| Error::HeartbeatTimeout)?;

            #[cfg(feature = "tracing")]
            tracing::trace!(sid = ?self.id, "ping received, sending pong");
            self.send_buffer
                .try_send(QueuedPacket::from(Packet::Pong))
                .map_err(|_| Error::HeartbeatTimeout)?;
        }
    }

    /// Returns true if the [`Socket`] has a websocket [`TransportType`]
    pub(crate) fn is_ws(&self) -> bool {
        self.transport.load(Ordering::Relaxed) == TransportType::Websocket as u8
    }
    /// returns true if the [`Socket`] has an HTTP [`TransportType`]
    pub(crate) fn is_http(&self) -> bool {
        self.transport.load(Ordering::Relaxed) == TransportType::Polling as u8
    }

    /// Sets the [`TransportType`] to WebSocket
    /// Used when the client upgrade the connection from HTTP to WebSocket
    pub(crate) fn upgrade_to_websocket(&self) {
        self.upgrading.store(false, Ordering::Relaxed);
        self.transport
            .store(TransportType::Websocket as u8, Ordering::Relaxed);
    }

    /// Returns the current [`TransportType`] of the [`Socket`]
    pub fn transport_type(&self) -> TransportType {
        TransportType::from(self.transport.load(Ordering::Relaxed))
    }

    /// Reserve `n` permits to emit multiple messages and ensure that there is enough
    /// space in the internal chan.
    ///
    /// If the internal chan is full, the function will return a [`TrySendError::Full`] error.
    /// If the socket is closed, the function will return a [`TrySendError::Closed`] error.
    #[inline]
    pub fn reserve(&self) -> Result<Permit<'_>, TrySendError<()>> {
        let permit = self.send_buffer.try_reserve()?;
        Ok(Permit { inner: permit })
    }

    /// Returns the number of packets that can be queued right now without the internal
    /// buffer being full (`max_buffer_size` minus the queued and reserved packets).
    ///
    /// Another sender (e.g. the heartbeat) may take a slot right after this call.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.send_buffer.capacity()
    }

    /// Emits a message to the client.
    ///
    /// If the transport is in websocket mode, the message is directly sent as a text frame.
    ///
    /// If the transport is in polling mode, the message is buffered and sent as a text frame to the next polling request.
    ///
    /// ⚠️ If the buffer is full or the socket is disconnected, an error will be returned with the original data
    pub fn emit(&self, msg: impl Into<Str>) -> Result<(), TrySendError<Str>> {
        self.send(Packet::Message(msg.into())).map_err(|e| match e {
            TrySendError::Full(p) => TrySendError::Full(p.into_message()),
            TrySendError::Closed(p) => TrySendError::Closed(p.into_message()),
        })
    }

    /// Immediately closes the socket and the underlying connection.
    /// The socket will be removed from the `Engine` and the [`Handler`](crate::handler::EngineIoHandler) will be notified.
    #[cfg_attr(feature = "tracing", tracing::instrument(skip(self)))]
    pub fn close(&self, reason: DisconnectReason) {
        // Try to send a close packet is the connection is still operational.
        self.send(Packet::Close).ok();

        (self.close_fn)(self.id, reason);
    }

    /// Returns true if the socket is closed
    /// It means that no more packets can be sent to the client
    pub fn is_closed(&self) -> bool {
        self.send_buffer.is_closed()
    }

    /// Wait for the socket to be fully closed
    pub async fn closed(&self) {
        self.send_buffer.closed().await
    }

    /// Emits a binary message to the client.
    ///
    /// If the transport is in websocket mode, the message is directly sent as a binary frame.
    ///
    /// If the transport is in polling mode, the message is buffered and sent as a text frame **encoded in base64** to the next polling request.
    ///
    /// ⚠️ If the buffer is full or the socket is disconnected, an error will be returned with the original data
    pub fn emit_binary<B: Into<Bytes>>(&self, data: B) -> Result<(), TrySendError<Bytes>> {
        if self.protocol == ProtocolVersion::V3 {
            self.send(Packet::BinaryV3(data.into()))
        } else {
            self.send(Packet::Binary(data.into()))
        }
        .map_err(|e| match e {
            TrySendError::Full(p) => TrySendError::Full(p.into_binary()),
            TrySendError::Closed(p) => TrySendError::Closed(p.into_binary()),
        })
    }

    /// Try to send a volatile message bypassing the internal buffer channel.
    /// Volatile messages may be dropped if the transport is not ready to
    /// receive them.
    ///
    /// Because volatile messages bypass the main mpsc buffer queue, they may
    /// arrive out of order relative to regular messages.
    ///
    /// Returns `true` if the message was queued for sending, `false` if it
    /// was dropped (channel full or transport shutting down).
    #[inline]
    pub fn emit_volatile(&self, msg: impl Into<Str>) -> bool {
        self.send_volatile(smallvec![Packet::Message(msg.into())])
    }

    /// Try to send a volatile binary message bypassing the internal buffer channel.
    /// Volatile messages may be dropped if the transport is not ready to
    /// receive them.
    ///
    /// Returns `true` if the message was queued for sending, `false` if it
    /// was dropped.
    #[inline]
    pub fn emit_binary_volatile<B: Into<Bytes>>(&self, data: B) -> bool {
        if self.protocol == ProtocolVersion::V3 {
            self.send_volatile(smallvec![Packet::BinaryV3(data.into())])
        } else {
            self.send_volatile(smallvec![Packet::Binary(data.into())])
        }
    }

    /// Try to send a volatile message with multiple adjacent binary payloads.
    /// The message and all binary payloads are sent atomically as a single
    /// volatile write.
    ///
    /// Returns `true` if the message was queued for sending, `false` if it
    /// was dropped.
    #[inline]
    pub fn emit_many_volatile(&self, msg: Str, data: VecDeque<Bytes>) -> bool {
        let mut packets = SmallVec::with_capacity(1 + data.len());
        packets.push(Packet::Message(msg));
        for bin in data {
            packets.push(Packet::Binary(bin));
        }
        self.send_volatile(packets)
    }

    pub(crate) fn send_volatile(&self, packets: PacketBuf) -> bool {
        self.volatile.put(packets);
        true
    }
}

impl<D: Default + Send + Sync + 'static> std::fmt::Debug for Socket<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("sid", &self.id)
            .field("protocol", &self.protocol)
            .field("conn", &self.transport)
            .field("internal_rx", &self.internal_rx)
            .field("send_buffer", &self.send_buffer)
            .field("volatile", &self.volatile)
            .field("client_heartbeat", &self.client_heartbeat)
            .field("cancellation_token", &self.cancellation_token)
            .field("req_data", &self.req_parts)
            .finish()
    }
}

#[doc(hidden)]
#[cfg(feature = "__test_harness")]
impl<D> Drop for Socket<D>
where
    D: Default + Send + Sync + 'static,
{
    fn drop(&mut self) {
        #[cfg(feature = "tracing")]
        tracing::debug!("[sid={}] dropping socket", self.id);
    }
}

#[doc(hidden)]
#[cfg(feature = "__test_harness")]
impl<D> Socket<D>
where
    D: Default + Send + Sync + 'static,
{
    /// Create a dummy socket for testing purpose
    pub fn new_dummy(
        sid: Sid,
        close_fn: Box<dyn Fn(Sid, DisconnectReason) + Send + Sync>,
    ) -> Arc<Socket<D>> {
        let (s, mut rx) = Socket::new_dummy_piped(sid, close_fn, 1024);
        tokio::spawn(async move {
            while let Some(_el) = rx.recv().await {
                #[cfg(feature = "tracing")]
                tracing::debug!(?sid, ?_el, "emitting eio msg");
            }
        });
        s
    }

    /// Create a dummy socket for testing purpose with a
    /// receiver to get the packets sent to the client
    pub fn new_dummy_piped(
        sid: Sid,
        close_fn: Box<dyn Fn(Sid, DisconnectReason) + Send + Sync>,
        buffer_size: usize,
    ) -> (Arc<Socket<D>>, tokio::sync::mpsc::Receiver<Packet>) {
        let sock = Self {
            id: sid,
            protocol: ProtocolVersion::V4,
            transport: AtomicU8::new(TransportType::Websocket as u8),
            upgrading: AtomicBool::new(false),

            internal_rx: Mutex::new(InternalRx::default()),
            send_buffer: SendBuffer::new(buffer_size),

            volatile: VolatileSlot::default(),

            client_heartbeat: Notify::new(),
            cancellation_token: CancellationToken::new(),
            close_fn,

            data: D::default(),
            req_parts: http::Request::<()>::default().into_parts().0,

            supports_binary: true,
        };
        let sock = Arc::new(sock);

        let (tx, rx) = tokio::sync::mpsc::channel(buffer_size);
        let sock_clone = sock.clone();
        tokio::spawn(async move {
            let _internal_rx = sock_clone.internal_rx.try_lock().unwrap();
            while let Some(packets) = sock_clone.send_buffer.recv().await {
                for packet in PacketBuf::from(packets) {
                    tx.send(packet).await.unwrap();
                }
            }
        });

        (sock, rx)
    }
}

#[cfg(test)]
mod queued_packet_tests {
    use super::*;

    /// The send buffer holds up to `max_buffer_size` slots: keep the slot small.
    #[test]
    fn a_send_buffer_slot_stays_small() {
        let size = std::mem::size_of::<QueuedPacket>();
        assert!(size <= 40, "QueuedPacket is {size} bytes");
        assert!(size < std::mem::size_of::<PacketBuf>());
    }

    /// Whatever is queued comes out as the same packets, in the same order.
    #[test]
    fn every_shape_comes_back_unchanged() {
        let cases: Vec<PacketBuf> = vec![
            smallvec![Packet::Message("hello".into())],
            smallvec![Packet::Binary(Bytes::from_static(b"\x01\x02"))],
            smallvec![Packet::BinaryV3(Bytes::from_static(b"\x03"))],
            smallvec![Packet::Ping],
            smallvec![Packet::Noop],
            smallvec![Packet::Close],
            smallvec![
                Packet::Message("with attachments".into()),
                Packet::Binary(Bytes::from_static(b"a")),
                Packet::Binary(Bytes::from_static(b"b")),
            ],
            smallvec![],
        ];
        for packets in cases {
            let queued = QueuedPacket::from(packets.clone());
            assert_eq!(PacketBuf::from(queued), packets);
        }
        assert!(matches!(
            QueuedPacket::from(Packet::Message("inline".into())),
            QueuedPacket::Message(_)
        ));
        assert!(matches!(
            QueuedPacket::from(Packet::Binary(Bytes::new())),
            QueuedPacket::Binary(_)
        ));
    }

    /// A writer taking packets one at a time gets each shape's packets, in order, and then
    /// nothing.
    #[test]
    fn packets_come_out_one_at_a_time_in_order() {
        let cases: Vec<PacketBuf> = vec![
            smallvec![Packet::Message("hello".into())],
            smallvec![Packet::Binary(Bytes::from_static(b"\x01"))],
            smallvec![Packet::Ping],
            smallvec![Packet::Noop],
            smallvec![
                Packet::Message("with attachments".into()),
                Packet::Binary(Bytes::from_static(b"a")),
                Packet::Binary(Bytes::from_static(b"b")),
            ],
            smallvec![],
        ];
        for packets in cases {
            let mut queued = Some(QueuedPacket::from(packets.clone()));
            let mut out = PacketBuf::new();
            while let Some(packet) = QueuedPacket::next_packet(&mut queued) {
                out.push(packet);
            }
            assert_eq!(out, packets);
            assert!(queued.is_none(), "nothing is left behind");
        }
    }
}

#[cfg(test)]
mod allocation_tests {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::FutureExt;

    use super::*;

    /// Counts the bytes allocated by the current thread, so that other tests running at the
    /// same time do not count.
    struct CountingAllocator;

    thread_local! {
        static ALLOCATED: Cell<usize> = const { Cell::new(0) };
    }

    // SAFETY: every call is forwarded to `System` unchanged; the counter is a const-initialized
    // thread-local `Cell`, which neither allocates nor re-enters the allocator.
    unsafe impl GlobalAlloc for CountingAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCATED.with(|n| n.set(n.get() + layout.size()));
            // SAFETY: the caller's contract is `System::alloc`'s.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the caller's contract is `System::dealloc`'s.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: CountingAllocator = CountingAllocator;

    fn allocated_here() -> usize {
        ALLOCATED.with(Cell::get)
    }

    /// What a socket allocates when it is created (its `Arc` aside): its cancellation token.
    /// The send buffer allocates as it fills; the heartbeat's signal and the volatile slot
    /// allocate nothing. As tokio channels they took 2,880 bytes more.
    #[test]
    fn a_new_socket_allocates_only_its_cancellation_token() {
        let config = EngineIoConfig::default();
        let before = allocated_here();
        let channels = (
            tokio::sync::mpsc::channel::<QueuedPacket>(config.max_buffer_size),
            tokio::sync::mpsc::channel::<()>(1),
            tokio::sync::watch::channel::<Option<PacketBuf>>(None),
        );
        println!(
            "the send buffer, heartbeat and volatile channels took {} bytes",
            allocated_here() - before
        );
        drop(channels);

        let new_socket = || {
            Socket::<()>::new(
                ProtocolVersion::V4,
                TransportType::Websocket,
                &config,
                http::Request::<()>::default().into_parts().0,
                Box::new(|_, _| ()),
                false,
            )
        };
        // The first one also sets up this thread's random generator (for its id).
        drop(new_socket());
        let parts = http::Request::<()>::default().into_parts().0;
        let before = allocated_here();
        let socket = Socket::<()>::new(
            ProtocolVersion::V4,
            TransportType::Websocket,
            &config,
            parts,
            Box::new(|_, _| ()),
            false,
        );
        let bytes = allocated_here() - before;
        println!("a new socket allocated {bytes} bytes");
        assert!(bytes <= 256, "a new socket allocated {bytes} bytes");
        drop(socket);
    }

    #[tokio::test]
    async fn the_volatile_slot_keeps_the_latest_packets_and_wakes_its_reader() {
        let slot = VolatileSlot::default();
        assert!(slot.take().is_none());
        slot.put(smallvec![Packet::Message("dropped".into())]);
        slot.put(smallvec![Packet::Message("kept".into())]);
        let packets = slot.next().await;
        assert_eq!(packets.as_slice(), [Packet::Message("kept".into())]);
        assert!(slot.take().is_none());

        // A reader waiting on an empty slot wakes when packets are put.
        let slot = Arc::new(slot);
        let reader = tokio::spawn({
            let slot = slot.clone();
            async move { slot.next().await }
        });
        tokio::task::yield_now().await;
        slot.put(smallvec![Packet::Message("later".into())]);
        let packets = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the reader woke")
            .expect("the reader did not panic");
        assert_eq!(packets.as_slice(), [Packet::Message("later".into())]);
    }

    #[tokio::test]
    async fn a_client_heartbeat_that_comes_first_is_kept_once() {
        let signal = Notify::new();
        signal.notify_one();
        signal.notify_one();
        // The first wait takes the kept signal at once, the second one waits.
        assert!(signal.notified().now_or_never().is_some());
        assert!(signal.notified().now_or_never().is_none());
    }
}
