//! `history ({ before, limit }, ack)`: validation of a request for older messages. Pure.

use serde_json::Value;

use super::json_type_name;

/// Default `history` page size.
pub const HISTORY_DEFAULT_LIMIT: u64 = 50;
/// Largest `history` page.
pub const HISTORY_MAX_LIMIT: u64 = 200;

/// A `history ({ before, limit })` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRequest {
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
}

/// Validates the arguments of a `history` event.
pub fn parse_history_request(args: &[Value]) -> Result<HistoryRequest, HistoryError> {
    let query = match args {
        [] | [Value::Null] => {
            return Ok(HistoryRequest {
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
    Ok(HistoryRequest { before, limit })
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
                before: None,
                limit: 50
            })
        );
        assert_eq!(
            parse_history_request(&[json!({ "before": 10, "limit": 5 })]),
            Ok(HistoryRequest {
                before: Some(10),
                limit: 5
            })
        );
        for bad in [
            vec![json!(5)],
            vec![json!({ "before": -1 })],
            vec![json!({ "limit": 0 })],
            vec![json!({ "limit": 201 })],
            vec![json!({}), json!({})],
        ] {
            assert!(parse_history_request(&bad).is_err(), "{bad:?}");
        }
    }
}
