//! A small Socket.IO v4 client over a websocket, for the integration tests and tools.
//!
//! It speaks just enough of engine.io v4 and socket.io v5 framing (text packets, namespace
//! `/`) to connect with an `auth` object, emit events with or without an ack, and receive
//! events, acks and `connect_error`s. [`Client::send_raw`] sends any text frame as-is, for tests
//! of malformed input. It is not a general-purpose client: no polling, no binary, no
//! reconnection (tests reconnect explicitly, which is what they need to observe).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
pub use tokio_tungstenite::tungstenite::Message;

/// What went wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The websocket could not be opened or broke.
    #[error("websocket: {0}")]
    Transport(String),
    /// The server answered with something this client does not understand.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The server refused the namespace connection (`connect_error`); holds its message.
    #[error("connection refused: {0}")]
    Refused(String),
    /// The connection closed.
    #[error("connection closed")]
    Closed,
    /// No answer within the time allowed.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

/// Something the server sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// An event: its name and arguments.
    Event(String, Vec<Value>),
    /// The server disconnected this socket from the namespace.
    Disconnected,
}

/// Ack waiters by ack id; `None` once the connection has ended (no ack can come any more).
type Acks = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Vec<Value>>>>>>;

/// Registers a waiter for ack `id`; fails if the connection has already ended (a waiter
/// added then would wait for ever).
fn await_ack(acks: &Acks, id: u64) -> Result<oneshot::Receiver<Vec<Value>>, ClientError> {
    let (tx, rx) = oneshot::channel();
    acks.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_mut()
        .ok_or(ClientError::Closed)?
        .insert(id, tx);
    Ok(rx)
}

/// A connected Socket.IO client. Dropping it closes the connection.
pub struct Client {
    outgoing: mpsc::Sender<Message>,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    acks: Acks,
    next_ack: u64,
    /// The socket id the server assigned.
    pub sid: String,
    /// The private session id of the CONNECT reply (connection state recovery), if any.
    pub pid: Option<String>,
}

/// How long [`Client::connect`] waits for the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    /// Connects to `base` (`http://host:port`) on namespace `/` with the given `auth` object.
    pub async fn connect(base: &str, auth: &Value) -> Result<Self, ClientError> {
        let url = format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            base.replacen("http", "ws", 1)
        );
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let (mut sink, mut stream) = ws.split();

        let connected = async {
            let open = next_text(&mut stream).await?;
            if !open.starts_with('0') {
                return Err(ClientError::Protocol(format!(
                    "expected engine.io open, got {open:?}"
                )));
            }
            sink.send(Message::text(format!("40{auth}")))
                .await
                .map_err(|e| ClientError::Transport(e.to_string()))?;
            loop {
                let text = next_text(&mut stream).await?;
                if text == "2" {
                    sink.send(Message::text("3"))
                        .await
                        .map_err(|e| ClientError::Transport(e.to_string()))?;
                } else if let Some(body) = text.strip_prefix("40") {
                    let reply = serde_json::from_str::<Value>(body).unwrap_or(Value::Null);
                    let field =
                        |name: &str| reply.get(name).and_then(Value::as_str).map(String::from);
                    return Ok((field("sid").unwrap_or_default(), field("pid")));
                } else if let Some(body) = text.strip_prefix("44") {
                    let message = serde_json::from_str::<Value>(body)
                        .ok()
                        .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
                        .unwrap_or_else(|| body.to_string());
                    return Err(ClientError::Refused(message));
                } else {
                    return Err(ClientError::Protocol(format!(
                        "expected a connect answer, got {text:?}"
                    )));
                }
            }
        };
        let (sid, pid) = tokio::time::timeout(HANDSHAKE_TIMEOUT, connected)
            .await
            .map_err(|_| ClientError::Timeout("the handshake"))??;

        let (outgoing, mut to_send) = mpsc::channel::<Message>(1024);
        let (deliver, incoming) = mpsc::unbounded_channel();
        let acks: Acks = Arc::new(Mutex::new(Some(HashMap::new())));
        tokio::spawn(async move {
            while let Some(message) = to_send.recv().await {
                let close = matches!(message, Message::Close(_));
                if sink.send(message).await.is_err() || close {
                    break;
                }
            }
        });
        let pong = outgoing.clone();
        let pending = acks.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                match parse_packet(text.as_str()) {
                    Some(Packet::Ping) if pong.send(Message::text("3")).await.is_err() => break,
                    Some(Packet::Ping) => {}
                    Some(Packet::Event(name, args)) => {
                        let _ = deliver.send(Incoming::Event(name, args));
                    }
                    Some(Packet::Ack(id, args)) => {
                        let waiter = pending
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .as_mut()
                            .and_then(|waiters| waiters.remove(&id));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(args);
                        }
                    }
                    Some(Packet::Disconnect) => {
                        let _ = deliver.send(Incoming::Disconnected);
                    }
                    Some(Packet::Close) => break,
                    None => {}
                }
            }
            // Waiters for acks that can no longer come fail now instead of timing out, and
            // so do those registered from now on.
            pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let _ = deliver.send(Incoming::Disconnected);
        });
        Ok(Self {
            outgoing,
            incoming,
            acks,
            next_ack: 0,
            sid,
            pid,
        })
    }

    /// Sends one raw text frame (an engine.io packet) exactly as given.
    pub async fn send_raw(&self, text: impl Into<String>) -> Result<(), ClientError> {
        self.outgoing
            .send(Message::text(text.into()))
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Sends raw frames (text or binary) that carry an ack request with the id passed to
    /// `frames`, and waits up to `timeout` for that ack's arguments.
    pub async fn send_frames_with_ack(
        &mut self,
        frames: impl FnOnce(u64) -> Vec<Message>,
        timeout: Duration,
    ) -> Result<Vec<Value>, ClientError> {
        let id = self.next_ack;
        self.next_ack += 1;
        let rx = await_ack(&self.acks, id)?;
        for frame in frames(id) {
            self.outgoing
                .send(frame)
                .await
                .map_err(|_| ClientError::Closed)?;
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(args)) => Ok(args),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                if let Some(waiters) = self
                    .acks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_mut()
                {
                    waiters.remove(&id);
                }
                Err(ClientError::Timeout("an ack"))
            }
        }
    }

    /// Emits `event` with `args`, asking no ack.
    pub async fn emit(&self, event: &str, args: &[Value]) -> Result<(), ClientError> {
        self.send_raw(format!("42{}", event_json(event, args)))
            .await
    }

    /// Emits `event` with `args` and waits up to `timeout` for the ack's arguments.
    pub async fn emit_with_ack(
        &mut self,
        event: &str,
        args: &[Value],
        timeout: Duration,
    ) -> Result<Vec<Value>, ClientError> {
        let json = event_json(event, args);
        self.send_frames_with_ack(|id| vec![Message::text(format!("42{id}{json}"))], timeout)
            .await
    }

    /// Emits `event` with `args` asking an ack and returns the ack with every event that
    /// arrived before it, in order (the reader hands events over before it resolves the ack
    /// that follows them, so none that preceded the ack can be missing).
    pub async fn emit_collecting_until_ack(
        &mut self,
        event: &str,
        args: &[Value],
        timeout: Duration,
    ) -> Result<(Vec<(String, Vec<Value>)>, Vec<Value>), ClientError> {
        let ack = self.emit_with_ack(event, args, timeout).await?;
        let mut events = Vec::new();
        while let Ok(incoming) = self.incoming.try_recv() {
            if let Incoming::Event(name, args) = incoming {
                events.push((name, args));
            }
        }
        Ok((events, ack))
    }

    /// Emits `event` with `args` asking an ack, without waiting for it: the returned
    /// receiver gets the ack's arguments (so many messages can be in flight at once).
    pub async fn emit_pipelined(
        &mut self,
        event: &str,
        args: &[Value],
    ) -> Result<oneshot::Receiver<Vec<Value>>, ClientError> {
        let id = self.next_ack;
        self.next_ack += 1;
        let rx = await_ack(&self.acks, id)?;
        self.send_raw(format!("42{id}{}", event_json(event, args)))
            .await?;
        Ok(rx)
    }

    /// The next thing the server sent, waiting up to `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<Incoming, ClientError> {
        match tokio::time::timeout(timeout, self.incoming.recv()).await {
            Ok(Some(incoming)) => Ok(incoming),
            Ok(None) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout("an event")),
        }
    }

    /// The arguments of the next event named `name` within `timeout`, skipping others.
    pub async fn next_named(
        &mut self,
        name: &str,
        timeout: Duration,
    ) -> Result<Vec<Value>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Incoming::Event(event, args) if event == name => return Ok(args),
                Incoming::Event(..) => continue,
                Incoming::Disconnected => return Err(ClientError::Closed),
            }
        }
    }

    /// The next `chat message (content, id)`, skipping other events; fails on anything that
    /// does not have that shape.
    pub async fn next_chat(&mut self, timeout: Duration) -> Result<(String, u64), ClientError> {
        loop {
            match self.next(timeout).await? {
                Incoming::Event(name, args) if name == "chat message" => {
                    return match args.as_slice() {
                        [Value::String(content), id, ..] if id.is_u64() => {
                            Ok((content.clone(), id.as_u64().unwrap_or_default()))
                        }
                        _ => Err(ClientError::Protocol(format!(
                            "malformed chat message arguments {args:?}"
                        ))),
                    };
                }
                Incoming::Event(..) => continue,
                Incoming::Disconnected => return Err(ClientError::Closed),
            }
        }
    }

    /// Waits up to `timeout` and fails if any `chat message` arrives meanwhile.
    pub async fn expect_silence(&mut self, timeout: Duration) -> Result<(), ClientError> {
        match self.next_chat(timeout).await {
            Err(ClientError::Timeout(_)) => Ok(()),
            Ok((content, id)) => Err(ClientError::Protocol(format!(
                "expected no message, got {id}: {content:?}"
            ))),
            Err(e) => Err(e),
        }
    }

    /// Closes the websocket.
    pub async fn close(self) {
        let _ = self.outgoing.send(Message::Close(None)).await;
    }
}

async fn next_text<S>(stream: &mut S) -> Result<String, ClientError>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Message::Close(_))) | None => return Err(ClientError::Closed),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ClientError::Transport(e.to_string())),
        }
    }
}

fn event_json(event: &str, args: &[Value]) -> Value {
    let mut all = Vec::with_capacity(args.len() + 1);
    all.push(Value::String(event.to_string()));
    all.extend_from_slice(args);
    Value::Array(all)
}

enum Packet {
    Ping,
    Close,
    Disconnect,
    Event(String, Vec<Value>),
    Ack(u64, Vec<Value>),
}

/// Parses the engine.io/socket.io text packets a server sends on namespace `/`.
fn parse_packet(text: &str) -> Option<Packet> {
    match text.as_bytes().first()? {
        b'2' => return Some(Packet::Ping),
        b'1' => return Some(Packet::Close),
        b'4' => {}
        _ => return None,
    }
    let body = &text[1..];
    let kind = body.as_bytes().first()?;
    let rest = &body[1..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (id, json) = rest.split_at(digits);
    let args = || match serde_json::from_str::<Value>(json) {
        Ok(Value::Array(args)) => Some(args),
        _ => None,
    };
    match kind {
        b'1' => Some(Packet::Disconnect),
        b'2' => {
            let mut args = args()?;
            if args.is_empty() {
                return None;
            }
            let Value::String(name) = args.remove(0) else {
                return None;
            };
            Some(Packet::Event(name, args))
        }
        b'3' => Some(Packet::Ack(id.parse().ok()?, args()?)),
        _ => None,
    }
}
