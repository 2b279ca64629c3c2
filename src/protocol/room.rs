//! Room names: 1 to 64 characters from `a-z`, `0-9`, `-` and `_`, starting with a letter or a
//! digit. Pure; errors carry the text a client sees.

use serde_json::Value;

use super::json_type_name;

/// The longest room name, in characters (all ASCII, so bytes too).
pub const MAX_ROOM_CHARS: usize = 64;

/// The rule, as errors quote it.
pub const ROOM_RULE: &str =
    "1 to 64 characters from a-z, 0-9, '-' and '_', starting with a letter or a digit";

/// Why a room name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    /// Not a string.
    #[error("a room name must be a string, got {0}")]
    NotString(&'static str),
    /// A string that breaks the rule.
    #[error("invalid room name {0:?}: {ROOM_RULE}")]
    Invalid(String),
}

/// A valid room name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoomName(String);

impl RoomName {
    /// `name` if it follows the rule.
    pub fn parse(name: &str) -> Result<Self, RoomNameError> {
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|first| first.is_ascii_lowercase() || first.is_ascii_digit())
            && name.len() <= MAX_ROOM_CHARS
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if valid {
            Ok(Self(name.to_string()))
        } else {
            // Quoted in the error as given, but bounded: it is the client's input.
            let shown: String = name.chars().take(MAX_ROOM_CHARS + 8).collect();
            Err(RoomNameError::Invalid(shown))
        }
    }

    /// A JSON value that should be a room name.
    pub fn from_value(value: &Value) -> Result<Self, RoomNameError> {
        match value {
            Value::String(name) => Self::parse(name),
            other => Err(RoomNameError::NotString(json_type_name(other))),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RoomName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_the_rule() {
        for good in ["general", "dev", "a", "9lives", "room_1-b", &"x".repeat(64)] {
            assert_eq!(
                RoomName::parse(good).map(|r| r.to_string()),
                Ok(good.to_string())
            );
        }
        for bad in [
            "",
            "-dev",
            "_dev",
            "Dev",
            "dév",
            "dev ops",
            "a.b",
            "a/b",
            &"x".repeat(65),
        ] {
            let error = RoomName::parse(bad).err().map(|e| e.to_string());
            assert!(
                error.as_deref().is_some_and(|e| e.contains(ROOM_RULE)),
                "{bad:?}: {error:?}"
            );
        }
        assert_eq!(
            RoomName::from_value(&json!(7)),
            Err(RoomNameError::NotString("number"))
        );
        // A long bad name is quoted, but not all of it.
        let long = "X".repeat(10_000);
        let error = RoomName::parse(&long)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.len() < 300, "{}", error.len());
    }
}
