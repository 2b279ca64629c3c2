//! The requests that change who may do what in a room: `create room`, `set role`, `invite`,
//! `kick`, `ban`, `unban`, `mute`, `unmute` and `delete message`. Pure parsing; each error is
//! the text of the ack's `error`.

use serde_json::{Map, Value};

use super::json_type_name;
use super::room::{RoomName, RoomNameError};
use crate::access::Role;

/// The longest user id a request may name, in bytes (a token's `sub` is at most this long in
/// practice; the limit only bounds what a client can make the server store).
pub const MAX_USER_BYTES: usize = 256;

/// Why a request was refused before anything was looked up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModerationError {
    /// The first argument is not an object.
    #[error("expected {event} ({{ {fields} }}, ack), got {got}")]
    NotObject {
        /// The event.
        event: &'static str,
        /// Its fields, as the message names them.
        fields: &'static str,
        /// What came instead.
        got: &'static str,
    },
    /// The room is missing or not a room name.
    #[error("invalid room: {0}")]
    Room(#[from] RoomNameError),
    /// `user` is missing, not a string, empty or too long.
    #[error("invalid user: a user id is a string of 1 to {MAX_USER_BYTES} bytes")]
    User,
    /// `role` is not `moderator` or `member`.
    #[error("invalid role: \"moderator\" or \"member\"")]
    Role,
    /// `id` is not a message id.
    #[error("invalid id: a message id is a positive integer")]
    Id,
    /// `private` or `readOnly` is not a boolean.
    #[error("invalid {0}: true or false")]
    Flag(&'static str),
}

/// A request's room, by name.
fn room(request: &Map<String, Value>) -> Result<RoomName, ModerationError> {
    match request.get("room") {
        Some(value) => Ok(RoomName::from_value(value)?),
        None => Err(RoomNameError::NotString("nothing").into()),
    }
}

fn user(request: &Map<String, Value>) -> Result<String, ModerationError> {
    match request.get("user") {
        Some(Value::String(user)) if !user.is_empty() && user.len() <= MAX_USER_BYTES => {
            Ok(user.clone())
        }
        _ => Err(ModerationError::User),
    }
}

fn flag(request: &Map<String, Value>, name: &'static str) -> Result<bool, ModerationError> {
    match request.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(value)) => Ok(*value),
        Some(_) => Err(ModerationError::Flag(name)),
    }
}

fn object<'a>(
    args: &'a [Value],
    event: &'static str,
    fields: &'static str,
) -> Result<&'a Map<String, Value>, ModerationError> {
    match args.first() {
        Some(Value::Object(request)) => Ok(request),
        other => Err(ModerationError::NotObject {
            event,
            fields,
            got: other.map_or("nothing", json_type_name),
        }),
    }
}

/// `create room ({ room, private, readOnly }, ack)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRoom {
    /// Its name.
    pub room: RoomName,
    /// Members only.
    pub private: bool,
    /// Only moderators post.
    pub read_only: bool,
}

/// Parses `create room`'s arguments.
pub fn parse_create_room(args: &[Value]) -> Result<CreateRoom, ModerationError> {
    let request = object(args, "create room", "room, private, readOnly")?;
    Ok(CreateRoom {
        room: room(request)?,
        private: flag(request, "private")?,
        read_only: flag(request, "readOnly")?,
    })
}

/// `{ room, user }` (and `role` for `set role`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRequest {
    /// The room.
    pub room: RoomName,
    /// The user it is about.
    pub user: String,
    /// `set role`'s role.
    pub role: Option<Role>,
}

/// Parses the arguments of `invite`, `kick`, `ban`, `unban`, `mute` or `unmute` (`event`).
pub fn parse_user_request(
    args: &[Value],
    event: &'static str,
) -> Result<UserRequest, ModerationError> {
    let request = object(args, event, "room, user")?;
    Ok(UserRequest {
        room: room(request)?,
        user: user(request)?,
        role: None,
    })
}

/// Parses `set role ({ room, user, role }, ack)`.
pub fn parse_set_role(args: &[Value]) -> Result<UserRequest, ModerationError> {
    let request = object(args, "set role", "room, user, role")?;
    let role = match request.get("role") {
        Some(Value::String(role)) => Role::settable(role).ok_or(ModerationError::Role)?,
        _ => return Err(ModerationError::Role),
    };
    Ok(UserRequest {
        room: room(request)?,
        user: user(request)?,
        role: Some(role),
    })
}

/// `delete message ({ room, id }, ack)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteMessage {
    /// The room.
    pub room: RoomName,
    /// The message.
    pub id: u64,
}

/// Parses `delete message`'s arguments.
pub fn parse_delete_message(args: &[Value]) -> Result<DeleteMessage, ModerationError> {
    let request = object(args, "delete message", "room, id")?;
    let id = request
        .get("id")
        .and_then(Value::as_u64)
        .filter(|id| *id > 0)
        .ok_or(ModerationError::Id)?;
    Ok(DeleteMessage {
        room: room(request)?,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_parse_and_errors_name_what_was_wrong() {
        let create = parse_create_room(&[json!({ "room": "ops", "private": true })]);
        assert_eq!(
            create.map(|c| (c.room.as_str().to_string(), c.private, c.read_only)),
            Ok(("ops".to_string(), true, false))
        );
        assert_eq!(
            parse_create_room(&[json!({ "room": "ops", "readOnly": "yes" })]),
            Err(ModerationError::Flag("readOnly"))
        );
        assert!(matches!(
            parse_create_room(&[json!("ops")]),
            Err(ModerationError::NotObject { got: "string", .. })
        ));
        assert!(matches!(
            parse_create_room(&[json!({ "room": "Not A Room" })]),
            Err(ModerationError::Room(_))
        ));
        let kick = parse_user_request(&[json!({ "room": "ops", "user": "bob" })], "kick");
        assert_eq!(kick.map(|k| k.user), Ok("bob".to_string()));
        assert_eq!(
            parse_user_request(&[json!({ "room": "ops", "user": "" })], "kick"),
            Err(ModerationError::User)
        );
        assert_eq!(
            parse_user_request(&[json!({ "room": "ops", "user": "x".repeat(257) })], "ban"),
            Err(ModerationError::User)
        );
        assert_eq!(
            parse_set_role(&[json!({ "room": "ops", "user": "bob", "role": "owner" })]),
            Err(ModerationError::Role)
        );
        assert_eq!(
            parse_set_role(&[json!({ "room": "ops", "user": "bob", "role": "moderator" })])
                .map(|r| r.role),
            Ok(Some(Role::Moderator))
        );
        assert_eq!(
            parse_delete_message(&[json!({ "room": "ops", "id": 7 })]).map(|d| d.id),
            Ok(7)
        );
        for id in [json!(0), json!(-1), json!(1.5), json!("7")] {
            assert_eq!(
                parse_delete_message(&[json!({ "room": "ops", "id": id })]),
                Err(ModerationError::Id)
            );
        }
    }
}
