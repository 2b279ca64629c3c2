//! The handshake's `auth` object, parsed as the server does (`parse_handshake`: serverOffset,
//! nickname, latest, epoch, rooms). Each field is also judged by a plain reading of its
//! documented rule; the parse must agree with that: accepted exactly when every field is
//! acceptable, with each value as the rule gives it, and otherwise refused naming the first
//! field (in the order offset, nickname, latest, epoch, rooms) that breaks its rule. An accepted handshake, sent again as
//! a client would, parses to the same. The connection state recovery fields (`pid`, `offset`)
//! never refuse a handshake; they are read by their own rule.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use tidings::protocol::handshake::MAX_PAGE;
use tidings::protocol::{
    AuthError, Handshake, MAX_SERVER_OFFSET, RecoveryRequest, parse_handshake, parse_server_offset,
};
use tidings_fuzz::Json;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Anything as `auth` (usually an object, given the fields below).
    auth: Json,
    offset: Option<Field>,
    nickname: Option<Field>,
    latest: Option<Field>,
    epoch: Option<Field>,
    rooms: Option<Rooms>,
    pid: Option<Field>,
    recovery_offset: Option<Field>,
}

/// `auth.rooms`: anything, or a list of names near the rule's edges.
#[derive(Debug, Arbitrary)]
enum Rooms {
    Any(Field),
    Names(Vec<RoomName>),
}

/// A room name near the rule's edges.
#[derive(Debug, Arbitrary)]
enum RoomName {
    /// `r0`..`r3`: valid, and often the same.
    Short(u8),
    /// Any text.
    Text(String),
    /// `n` times `x` (64 is the longest valid name).
    Long(u8),
    /// Not a string.
    Other(Field),
}

impl Rooms {
    fn to_value(&self) -> Value {
        match self {
            Rooms::Any(field) => field.to_value(),
            Rooms::Names(names) => Value::Array(
                names
                    .iter()
                    .map(|name| match name {
                        RoomName::Short(n) => json!(format!("r{}", n % 4)),
                        RoomName::Text(text) => json!(text),
                        RoomName::Long(n) => json!("x".repeat(usize::from(*n))),
                        RoomName::Other(field) => field.to_value(),
                    })
                    .collect(),
            ),
        }
    }
}

/// `rooms`: missing or null is none; a list (of at most 10,000) of names of 1 to 64
/// characters from a-z, 0-9, '-' and '_' starting with a letter or digit, each kept once in
/// the order given.
fn rooms_rule(value: Option<&Value>) -> Option<Option<Vec<String>>> {
    let list = match value {
        None | Some(Value::Null) => return Some(None),
        Some(Value::Array(list)) if list.len() <= 10_000 => list,
        Some(_) => return None,
    };
    let mut names: Vec<String> = Vec::new();
    for value in list {
        let Value::String(name) = value else {
            return None;
        };
        let first_ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !first_ok || !rest_ok || name.len() > 64 {
            return None;
        }
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    Some(Some(names))
}

/// A field's value: anything, or one of the shapes its rule is about.
#[derive(Debug, Arbitrary)]
enum Field {
    Any(Json),
    Uint(u64),
    Small(u16),
    Float(f64),
    Text(String),
    Digits(u64),
    Hex(u128),
}

impl Field {
    fn to_value(&self) -> Value {
        match self {
            Field::Any(json) => json.to_value(),
            Field::Uint(n) => json!(n),
            Field::Small(n) => json!(n),
            Field::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Field::Text(s) => json!(s),
            Field::Digits(n) => json!(n.to_string()),
            Field::Hex(n) => json!(format!("{n:x}")),
        }
    }
}

/// `serverOffset`: missing or null is 0; a non-negative integer up to 2^53-1 (a number with no
/// fraction counts), or a string of at most 16 decimal digits with such a value.
fn offset_rule(value: Option<&Value>) -> Option<u64> {
    match value {
        None | Some(Value::Null) => Some(0),
        Some(Value::Number(n)) => {
            let exact = n.as_u64().or_else(|| {
                let f = n.as_f64()?;
                (n.as_i64().is_none() && f.is_finite() && f.fract() == 0.0 && f >= 0.0)
                    .then_some(f)
                    .filter(|f| *f <= MAX_SERVER_OFFSET as f64)
                    .map(|f| f as u64)
            })?;
            (exact <= MAX_SERVER_OFFSET).then_some(exact)
        }
        Some(Value::String(s)) => {
            if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u64 = s.parse().ok()?;
            (n <= MAX_SERVER_OFFSET).then_some(n)
        }
        Some(_) => None,
    }
}

/// `nickname`: missing or null is none; a string that, trimmed, has 1 to 32 characters and no
/// control character.
fn nickname_rule(value: Option<&Value>) -> Option<Option<String>> {
    match value {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => {
            let t = s.trim();
            let n = t.chars().count();
            ((1..=32).contains(&n) && !t.chars().any(char::is_control)).then(|| Some(t.to_string()))
        }
        Some(_) => None,
    }
}

/// `latest`: missing or null is none; an integer from 1 to 1000.
fn latest_rule(value: Option<&Value>) -> Option<Option<u64>> {
    match value {
        None | Some(Value::Null) => Some(None),
        Some(Value::Number(n)) => n.as_u64().filter(|n| (1..=MAX_PAGE).contains(n)).map(Some),
        Some(_) => None,
    }
}

/// `epoch`: missing or null is none; a string of 1 to 64 bytes.
fn epoch_rule(value: Option<&Value>) -> Option<Option<String>> {
    match value {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => Some(Some(s.clone())),
        Some(_) => None,
    }
}

/// `pid` and `offset` (connection state recovery): no `pid` key is no request; a pid that is
/// not 1 to 64 hex digits is malformed; a good pid with an `offset` string of 1 to 16 decimal
/// digits up to 2^53-1 resumes from there, with anything else it has no offset.
fn recovery_rule(object: &Map<String, Value>) -> Option<RecoveryRequest> {
    let pid = match object.get("pid")? {
        Value::String(p)
            if (1..=64).contains(&p.len()) && p.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            p.clone()
        }
        _ => return Some(RecoveryRequest::Malformed),
    };
    let offset = match object.get("offset") {
        Some(Value::String(s))
            if (1..=16).contains(&s.len()) && s.chars().all(|c| c.is_ascii_digit()) =>
        {
            s.parse::<u64>().ok().filter(|n| *n <= MAX_SERVER_OFFSET)
        }
        _ => None,
    };
    Some(match offset {
        Some(offset) => RecoveryRequest::Resume { pid, offset },
        None => RecoveryRequest::NoOffset,
    })
}

fuzz_target!(|input: Input| {
    let mut auth = input.auth.to_value();
    if let Some(object) = auth.as_object_mut() {
        for (name, field) in [
            ("serverOffset", &input.offset),
            ("nickname", &input.nickname),
            ("latest", &input.latest),
            ("epoch", &input.epoch),
            ("pid", &input.pid),
            ("offset", &input.recovery_offset),
        ] {
            if let Some(field) = field {
                object.insert(name.into(), field.to_value());
            }
        }
        if let Some(rooms) = &input.rooms {
            object.insert("rooms".into(), rooms.to_value());
        }
    }
    let parsed = parse_handshake(&auth);

    // What the rules say.
    let object = match &auth {
        Value::Null => Some(Map::new()),
        Value::Object(object) => Some(object.clone()),
        _ => None,
    };
    let Some(object) = object else {
        assert!(
            matches!(parsed, Err(AuthError::NotAnObject(_))),
            "{auth} is not an object: {parsed:?}"
        );
        return;
    };
    let want = (|| {
        let offset = offset_rule(object.get("serverOffset")).ok_or("serverOffset")?;
        let nickname = nickname_rule(object.get("nickname")).ok_or("nickname")?;
        let latest = latest_rule(object.get("latest")).ok_or("latest")?;
        let epoch = epoch_rule(object.get("epoch")).ok_or("epoch")?;
        let rooms = rooms_rule(object.get("rooms")).ok_or("rooms")?;
        Ok::<_, &str>((
            Handshake {
                offset,
                nickname,
                latest,
                epoch,
                rooms: None,
                recovery: recovery_rule(&object),
            },
            rooms,
        ))
    })();

    match (&parsed, want) {
        (Ok(got), Ok((want, rooms))) => {
            let names = got
                .rooms
                .as_ref()
                .map(|rooms| rooms.iter().map(|r| r.to_string()).collect::<Vec<_>>());
            assert_eq!(names, rooms, "{auth}: rooms");
            let without_rooms = Handshake {
                rooms: None,
                ..got.clone()
            };
            assert_eq!(without_rooms, want, "{auth}");
            assert_eq!(parse_server_offset(&auth), Ok(got.offset));
            // Sent again as a client would (the offset as a number, then as a string).
            let mut again = json!({ "serverOffset": got.offset });
            for (name, value) in [
                ("nickname", got.nickname.as_ref().map(|n| json!(n))),
                ("latest", got.latest.map(|n| json!(n))),
                ("epoch", got.epoch.as_ref().map(|e| json!(e))),
                ("rooms", names.as_ref().map(|n| json!(n))),
                (
                    "pid",
                    match &got.recovery {
                        Some(RecoveryRequest::Resume { pid, .. }) => Some(json!(pid)),
                        Some(RecoveryRequest::NoOffset) => Some(json!("ab12")),
                        Some(RecoveryRequest::Malformed) => Some(json!(1)),
                        None => None,
                    },
                ),
                (
                    "offset",
                    match &got.recovery {
                        Some(RecoveryRequest::Resume { offset, .. }) => {
                            Some(json!(offset.to_string()))
                        }
                        _ => None,
                    },
                ),
            ] {
                if let (Some(value), Some(object)) = (value, again.as_object_mut()) {
                    object.insert(name.into(), value);
                }
            }
            assert_eq!(parse_handshake(&again).as_ref(), Ok(got));
            again["serverOffset"] = json!(got.offset.to_string());
            assert_eq!(parse_handshake(&again).as_ref(), Ok(got));
        }
        (Err(error), Err(field)) => {
            let right_variant = match field {
                "serverOffset" => matches!(error, AuthError::BadServerOffset(_)),
                "nickname" => matches!(error, AuthError::BadNickname(_)),
                "latest" => matches!(error, AuthError::BadLatest(_)),
                "epoch" => matches!(error, AuthError::BadEpoch(_)),
                _ => matches!(error, AuthError::BadRooms(_)),
            };
            assert!(right_variant, "{auth}: {field} is wrong, got {error:?}");
            assert!(
                error.to_string().contains(field),
                "{auth}: the message names {field}: {error}"
            );
        }
        (got, want) => panic!("{auth}: parsed {got:?}, the rules say {want:?}"),
    }
});
