//! Nicknames (the handshake's `nickname`, a message's `author`, the `nickname` event). Pure.

use serde_json::Value;

use super::json_type_name;

/// Longest nickname, in characters.
pub const MAX_NICKNAME_CHARS: usize = 32;

/// Why a nickname was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NicknameError {
    /// Not a string.
    #[error("a nickname must be a string, got {0}")]
    NotString(&'static str),
    /// Nothing left after trimming white space.
    #[error("a nickname cannot be empty")]
    Empty,
    /// Longer than [`MAX_NICKNAME_CHARS`].
    #[error("a nickname has at most 32 characters, got {0}")]
    TooLong(usize),
    /// Holds a control character (newlines, escapes...).
    #[error("a nickname cannot contain control characters")]
    Control,
}

/// Validates a nickname (or author) and returns it trimmed.
pub fn validate_nickname(value: &Value) -> Result<String, NicknameError> {
    let Value::String(text) = value else {
        return Err(NicknameError::NotString(json_type_name(value)));
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(NicknameError::Empty);
    }
    let chars = trimmed.chars().count();
    if chars > MAX_NICKNAME_CHARS {
        return Err(NicknameError::TooLong(chars));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(NicknameError::Control);
    }
    Ok(trimmed.to_string())
}
