//! The wire protocol's pure half: what clients may send and what they are answered.
//!
//! - [`handshake`]: the CONNECT `auth` object (`serverOffset`, `nickname`, `latest`, `epoch`).
//! - [`chat`]: `chat message` validation and the ack bodies.
//! - [`history`]: `history` requests.
//! - [`moderation`]: `create room`, `set role`, `invite`, `kick`, `ban`, `mute`, `delete message`.
//! - [`nickname`]: the nickname rules shared by the three above.
//! - [`args`]: decoding an event's arguments.
//! - [`event`]: the event names.
//!
//! Everything here is a pure function over decoded JSON values: no sockets, no storage, so the
//! socket layer, unit tests and fuzz targets all call the same code. Errors carry the message a
//! client sees (the `connect_error` message or the ack's `error` field).

pub mod args;
pub mod chat;
pub mod handshake;
pub mod history;
pub mod moderation;
pub mod nickname;
pub mod room;

pub use args::EventArgs;
pub use chat::{AckReply, Limits, PayloadError, validate_chat_message};
pub use handshake::{
    AuthError, Handshake, MAX_SERVER_OFFSET, RecoveryRequest, parse_handshake, parse_server_offset,
};
pub use history::{HistoryError, HistoryRequest, parse_history_request};
pub use nickname::{NicknameError, validate_nickname};

use serde_json::Value;

/// The event names, both directions.
pub mod event {
    /// The tutorial's event: `chat message (content, clientOffset?, meta?)` from clients,
    /// `chat message (content, id, { author, time })` to them.
    pub const CHAT_MESSAGE: &str = "chat message";
    /// Pages of older messages: `history ({ before, limit }, ack)`.
    pub const HISTORY: &str = "history";
    /// Sent once after the replay: `sync ({ epoch, from, to, complete })`.
    pub const SYNC: &str = "sync";
    /// Who is online, and who came and went: `presence ({ count, users, joined, joinedCount,
    /// left, leftCount })`.
    pub const PRESENCE: &str = "presence";
    /// `user renamed ({ from, to })`.
    pub const USER_RENAMED: &str = "user renamed";
    /// `typing (bool)` from clients, `typing ({ nickname, typing })` to the others.
    pub const TYPING: &str = "typing";
    /// `nickname (name, ack)`: change the nickname shown in presence.
    pub const NICKNAME: &str = "nickname";
    /// `join (room, ack)`: receive a room's messages from now on.
    pub const JOIN: &str = "join";
    /// `leave (room, ack)`: stop receiving a room's messages.
    pub const LEAVE: &str = "leave";
    /// `rooms (ack)` / `rooms ({ after }, ack)`: the rooms that exist.
    pub const ROOMS: &str = "rooms";
    /// `refresh token (token, ack)`: a new token for the connection's user.
    pub const REFRESH_TOKEN: &str = "refresh token";
    /// `token expiring ({ exp, graceMs })`: the connection's token expired; sends are
    /// refused until a `refresh token` within the grace.
    pub const TOKEN_EXPIRING: &str = "token expiring";
    /// `token expired ({ exp, error })`: no refresh came; the server disconnects the socket.
    pub const TOKEN_EXPIRED: &str = "token expired";
    /// `create room ({ room, private, readOnly }, ack)` → `{ room, ok: true, last: 0 }`.
    pub const CREATE_ROOM: &str = "create room";
    /// `set role ({ room, user, role }, ack)`: the owner makes a moderator or a member.
    pub const SET_ROLE: &str = "set role";
    /// `invite ({ room, user }, ack)`: a member of a private room.
    pub const INVITE: &str = "invite";
    /// `kick ({ room, user }, ack)`: every socket of the user leaves the room now.
    pub const KICK: &str = "kick";
    /// `ban ({ room, user }, ack)`: a kick, and no joining again until `unban`.
    pub const BAN: &str = "ban";
    /// `unban ({ room, user }, ack)`.
    pub const UNBAN: &str = "unban";
    /// `mute ({ room, user }, ack)`: the user cannot post in the room.
    pub const MUTE: &str = "mute";
    /// `unmute ({ room, user }, ack)`.
    pub const UNMUTE: &str = "unmute";
    /// `delete message ({ room, id }, ack)`: the author or a moderator removes a message.
    pub const DELETE_MESSAGE: &str = "delete message";
    /// `room changed ({ room, action, user, by, offset })` to a room's members.
    pub const ROOM_CHANGED: &str = "room changed";
    /// `message deleted ({ room, id, by, offset })` to a room's members.
    pub const MESSAGE_DELETED: &str = "message deleted";
}

/// Binary attachments a client may send in one packet before it is refused (we accept none
/// as a message, but socketioxide buffers them before our handler sees them).
pub const MAX_INCOMING_BINARIES: usize = 4;

/// The largest engine.io payload (and websocket frame) the server takes: worst-case JSON
/// escaping is 6 bytes per content byte (`\u00XX`), plus the frame; at least 100 kB. Binary
/// attachments are bounded by it too.
pub fn payload_limit(limits: &Limits) -> usize {
    ((limits.max_message_bytes + limits.max_client_offset_bytes) * 6 + 4096).max(100_000)
}

/// Names a JSON value's type the way a JavaScript developer would.
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
