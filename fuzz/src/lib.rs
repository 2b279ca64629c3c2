//! Shared pieces of the fuzz targets: an `Arbitrary` JSON value (serde_json's `Value` has no
//! `Arbitrary` impl) and the limits the server runs with by default.

use arbitrary::Arbitrary;
use serde_json::{Map, Number, Value};

/// Any JSON value, built from fuzzer bytes.
#[derive(Debug, Arbitrary)]
pub enum Json {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A large unsigned integer.
    Uint(u64),
    /// A float (non-finite values become null, as in JSON).
    Float(f64),
    /// A string.
    Str(String),
    /// A digit string, to hit the numeric-string paths often.
    Digits(u64),
    /// An array.
    Array(Vec<Json>),
    /// An object.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The serde_json value.
    pub fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Int(n) => Value::from(*n),
            Json::Uint(n) => Value::from(*n),
            Json::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Json::Str(s) => Value::String(s.clone()),
            Json::Digits(n) => Value::String(n.to_string()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}
