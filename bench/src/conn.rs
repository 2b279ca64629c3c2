//! A lean Socket.IO v4 websocket connection for load generation: raw engine.io/socket.io text
//! frames, one task per connection, no JSON trees, no per-frame channel hops.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::frame::{self, Frame};

/// How long opening a connection (TCP, websocket upgrade, namespace connect) may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Per-connection websocket buffers.
#[derive(Debug, Clone, Copy)]
pub enum Buffers {
    /// tungstenite's defaults (128 KiB read buffer): for busy connections.
    Busy,
    /// A small read buffer: for many idle connections.
    Small,
}

/// One connected Socket.IO client on namespace `/`.
pub struct Conn {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// The websocket URL of a server's Socket.IO endpoint, from its `http://host:port` base.
pub fn ws_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let base = base
        .strip_prefix("http://")
        .map(|rest| format!("ws://{rest}"))
        .unwrap_or_else(|| base.to_string());
    format!("{base}/socket.io/?EIO=4&transport=websocket")
}

impl Conn {
    /// Opens a websocket to `ws_url` (see [`ws_url`]) with TCP_NODELAY and connects to
    /// namespace `/` with `auth = {"serverOffset": offset}`.
    pub async fn connect(ws_url: &str, offset: u64, buffers: Buffers) -> anyhow::Result<Self> {
        Self::connect_auth(ws_url, &format!("{{\"serverOffset\":{offset}}}"), buffers).await
    }

    /// Like [`Conn::connect`] with any `auth` object (raw JSON text), e.g.
    /// `{"serverOffset":0,"latest":1}` (tidings replays only the newest message then).
    pub async fn connect_auth(ws_url: &str, auth: &str, buffers: Buffers) -> anyhow::Result<Self> {
        tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            Self::connect_inner(ws_url, auth, buffers),
        )
        .await
        .context("handshake timed out")?
    }

    async fn connect_inner(ws_url: &str, auth: &str, buffers: Buffers) -> anyhow::Result<Self> {
        let config = match buffers {
            Buffers::Busy => None,
            Buffers::Small => Some(WebSocketConfig::default().read_buffer_size(4096)),
        };
        let (ws, _) = tokio_tungstenite::connect_async_with_config(ws_url, config, true)
            .await
            .context("websocket connect")?;
        let mut conn = Self { ws };
        let open = conn
            .next_text()
            .await?
            .context("closed before engine.io open")?;
        if !open.as_str().starts_with('0') {
            bail!("expected an engine.io open packet, got {:?}", open.as_str());
        }
        conn.send_owned(format!("40{auth}")).await?;
        loop {
            let text = conn.next_text().await?.context("closed during connect")?;
            match frame::parse(text.as_str()) {
                Frame::Connected => return Ok(conn),
                Frame::ConnectError(body) => bail!("connect_error: {body}"),
                Frame::Ping => conn.pong().await?,
                _ => bail!("unexpected frame during connect: {:?}", text.as_str()),
            }
        }
    }

    /// The next text frame, or `None` once the connection closed. Engine.io pings are
    /// answered here and not returned.
    pub async fn recv(&mut self) -> anyhow::Result<Option<Utf8Bytes>> {
        loop {
            let Some(text) = self.next_text().await? else {
                return Ok(None);
            };
            if text.as_str() == "2" {
                self.pong().await?;
                continue;
            }
            return Ok(Some(text));
        }
    }

    async fn next_text(&mut self) -> anyhow::Result<Option<Utf8Bytes>> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => return Ok(Some(text)),
                Some(Ok(Message::Close(_))) | None => return Ok(None),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e).context("websocket read"),
            }
        }
    }

    async fn pong(&mut self) -> anyhow::Result<()> {
        self.ws
            .send(Message::text("3"))
            .await
            .context("websocket write")
    }

    /// Sends one raw text frame (a socket.io packet the caller built).
    pub async fn send_owned(&mut self, text: String) -> anyhow::Result<()> {
        self.ws
            .send(Message::text(text))
            .await
            .context("websocket write")
    }

    /// Emits `chat message (content, client_offset)`, with an ack request when `ack_id` is
    /// given. `content` and `client_offset` must need no JSON escaping (the bench's own
    /// strings are ASCII without quotes or backslashes).
    pub async fn emit_chat(
        &mut self,
        content: &str,
        client_offset: &str,
        ack_id: Option<u64>,
    ) -> anyhow::Result<()> {
        debug_assert!(!content.contains(['"', '\\']) && !client_offset.contains(['"', '\\']));
        // One allocation per message: the frame's bytes are handed to tungstenite as they are.
        let mut text = String::with_capacity(content.len() + client_offset.len() + 40);
        text.push_str("42");
        if let Some(id) = ack_id {
            let _ = write!(text, "{id}");
        }
        let _ = write!(text, "[\"chat message\",\"{content}\",\"{client_offset}\"]");
        self.send_owned(text).await
    }

    /// Emits `chat message (content, client_offset, { room })` (tidings' rooms shape), with an
    /// ack request when `ack_id` is given. The strings need no JSON escaping (see
    /// [`Conn::emit_chat`]; room names are `[a-z0-9_-]`).
    pub async fn emit_chat_to(
        &mut self,
        content: &str,
        client_offset: &str,
        room: &str,
        ack_id: Option<u64>,
    ) -> anyhow::Result<()> {
        debug_assert!(!content.contains(['"', '\\']) && !client_offset.contains(['"', '\\']));
        debug_assert!(!room.contains(['"', '\\']));
        let mut text = String::with_capacity(content.len() + client_offset.len() + room.len() + 56);
        text.push_str("42");
        if let Some(id) = ack_id {
            let _ = write!(text, "{id}");
        }
        let _ = write!(
            text,
            "[\"chat message\",\"{content}\",\"{client_offset}\",{{\"room\":\"{room}\"}}]"
        );
        self.send_owned(text).await
    }

    /// Closes the websocket politely (best effort).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::ws_url;

    #[test]
    fn websocket_url_from_base() {
        assert_eq!(
            ws_url("http://127.0.0.1:3000/"),
            "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            ws_url("ws://127.0.0.1:1"),
            "ws://127.0.0.1:1/socket.io/?EIO=4&transport=websocket"
        );
    }
}
