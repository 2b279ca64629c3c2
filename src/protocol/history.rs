//! `history ({ room, before, limit }, ack)`: validation of a request for older messages.
//! Pure.

use serde_json::Value;

use super::json_type_name;
use super::room::RoomName;

/// Default `history` page size.
pub const HISTORY_DEFAULT_LIMIT: u64 = 50;
/// Largest `history` page.
pub const HISTORY_MAX_LIMIT: u64 = 200;

/// A `history ({ room, before, limit })` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRequest {
    /// The room (`None`: the default room).
    pub room: Option<RoomName>,
    /// Messages with ids below this (`None`: the newest).
    pub before: Option<u64>,
    /// At most this many.
    pub limit: u64,
}

/// Why a `history` request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// Not `({ before?, limit? })`.
    #[error("expected history ({{ before, limit }}), got {0}")]
    Shape(String),
    /// `before` is not an id.
    #[error("invalid before: expected a message id, got {0}")]
    Before(String),
    /// `limit` is out of range.
    #[error("invalid limit: expected an integer from 1 to 200, got {0}")]
    Limit(String),
    /// `room` is not a room name.
    #[error("invalid room: {0}")]
    Room(String),
}

/// Validates the arguments of a `history` event.
pub fn parse_history_request(args: &[Value]) -> Result<HistoryRequest, HistoryError> {
    let query = match args {
        [] | [Value::Null] => {
            return Ok(HistoryRequest {
                room: None,
                before: None,
                limit: HISTORY_DEFAULT_LIMIT,
            });
        }
        [Value::Object(query)] => query,
        other => {
            let shown: Vec<&str> = other.iter().map(json_type_name).collect();
            return Err(HistoryError::Shape(shown.join(", ")));
        }
    };
    let room = match query.get("room") {
        None | Some(Value::Null) => None,
        Some(value) => {
            Some(RoomName::from_value(value).map_err(|e| HistoryError::Room(e.to_string()))?)
        }
    };
    let before = match query.get("before") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64() {
            Some(id) => Some(id),
            None => return Err(HistoryError::Before(value.to_string())),
        },
    };
    let limit = match query.get("limit") {
        None | Some(Value::Null) => HISTORY_DEFAULT_LIMIT,
        Some(value) => match value.as_u64() {
            Some(n) if (1..=HISTORY_MAX_LIMIT).contains(&n) => n,
            _ => return Err(HistoryError::Limit(value.to_string())),
        },
    };
    Ok(HistoryRequest {
        room,
        before,
        limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn history_requests() {
        assert_eq!(
            parse_history_request(&[]),
            Ok(HistoryRequest {
                room: None,
                before: None,
                limit: 50
            })
        );
        assert_eq!(
            parse_history_request(&[json!({ "before": 10, "limit": 5 })]),
            Ok(HistoryRequest {
                room: None,
                before: Some(10),
                limit: 5
            })
        );
        let request = parse_history_request(&[json!({ "room": "dev", "limit": 5 })]);
        assert_eq!(
            request.map(|r| r.room.map(|r| r.to_string())),
            Ok(Some("dev".into()))
        );
        for bad in [
            vec![json!(5)],
            vec![json!({ "before": -1 })],
            vec![json!({ "limit": 0 })],
            vec![json!({ "limit": 201 })],
            vec![json!({ "room": "Dev" })],
            vec![json!({ "room": 5 })],
            vec![json!({}), json!({})],
        ] {
            assert!(parse_history_request(&bad).is_err(), "{bad:?}");
        }
    }
}
