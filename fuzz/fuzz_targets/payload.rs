//! `chat message` validation: any arguments are accepted or rejected with a typed error, and
//! the error tells the truth about the arguments; an accepted payload, sent again as the
//! client would (content, clientOffset, { author }), is accepted identically.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tidings::Config;
use tidings::message::ChatInput;
use tidings::protocol::nickname::{MAX_NICKNAME_CHARS, validate_nickname};
use tidings::protocol::room::RoomName;
use tidings::protocol::{Limits, PayloadError, json_type_name, validate_chat_message};
use tidings_fuzz::Json;

#[derive(Debug, Arbitrary)]
enum Input {
    /// Structured arguments.
    Args(Vec<Json>),
    /// Raw text, as if it were the JSON argument list of an event.
    Raw(String),
    /// Small limits, to reach the size checks with small inputs.
    Tight {
        args: Vec<Json>,
        max_message: u8,
        max_offset: u8,
    },
    /// Plausible arguments: a string content, an optional offset, a meta object with an
    /// author (a class of input the generic JSON reaches rarely).
    Chat {
        content: String,
        offset: Option<String>,
        author: Option<Json>,
        author_text: Option<String>,
        /// `meta.room`: a short valid name, or any text.
        room: Option<Result<u8, String>>,
        extra: Option<(String, Json)>,
    },
}

/// The arguments a client sends for `input`: what the server must accept as the same input.
fn resend(input: &ChatInput) -> Vec<Value> {
    let offset = input
        .client_offset
        .as_ref()
        .map_or(Value::Null, |o| Value::String(o.0.clone()));
    let mut meta = serde_json::Map::new();
    if let Some(author) = &input.author {
        meta.insert("author".into(), json!(author));
    }
    if let Some(room) = &input.room {
        meta.insert("room".into(), json!(room));
    }
    match (meta.is_empty(), offset) {
        (true, Value::Null) => vec![json!(input.content)],
        (true, offset) => vec![json!(input.content), offset],
        (false, offset) => vec![json!(input.content), offset, Value::Object(meta)],
    }
}

fn check(args: &[Value], limits: &Limits) {
    match validate_chat_message(args, limits) {
        Ok(input) => {
            assert!(!input.content.is_empty() && input.content.len() <= limits.max_message_bytes);
            assert_eq!(args.first(), Some(&json!(input.content)));
            if let Some(offset) = &input.client_offset {
                assert!(!offset.0.is_empty() && offset.0.len() <= limits.max_client_offset_bytes);
                assert_eq!(args.get(1), Some(&json!(offset.0)));
            }
            if let Some(room) = &input.room {
                // A valid name, as given.
                assert_eq!(
                    RoomName::parse(room).map(|r| r.to_string()).as_ref(),
                    Ok(room)
                );
                let given = args.get(2).and_then(|meta| meta.get("room"));
                assert_eq!(given, Some(&json!(room)));
            }
            if let Some(author) = &input.author {
                // Trimmed, at most 32 characters, no control characters: a fixed point.
                assert_eq!(validate_nickname(&json!(author)).as_ref(), Ok(author));
                assert!(author.chars().count() <= MAX_NICKNAME_CHARS);
                assert_eq!(author.trim(), author);
            }
            let round: Result<ChatInput, _> = validate_chat_message(&resend(&input), limits);
            assert_eq!(round, Ok(input));
        }
        Err(error) => explains(&error, args, limits),
    }
}

/// The error says something true about the arguments.
fn explains(error: &PayloadError, args: &[Value], limits: &Limits) {
    let text = error.to_string();
    let string = |i: usize| args.get(i).and_then(Value::as_str);
    let type_of = |i: usize| args.get(i).map(json_type_name);
    match error {
        PayloadError::MissingContent => assert!(args.is_empty()),
        PayloadError::Undecodable(_) => panic!("values are always decodable: {text}"),
        PayloadError::ContentNotString(t) => {
            assert_eq!(type_of(0), Some(*t));
            assert_ne!(*t, "string");
        }
        PayloadError::EmptyContent => assert_eq!(string(0), Some("")),
        PayloadError::ContentTooLarge { size, limit } => {
            assert_eq!(string(0).map(str::len), Some(*size));
            assert!(size > limit && *limit == limits.max_message_bytes);
        }
        PayloadError::OffsetNotString(t) => {
            assert_eq!(type_of(1), Some(*t));
            assert!(*t != "string" && *t != "null");
        }
        PayloadError::EmptyOffset => assert_eq!(string(1), Some("")),
        PayloadError::OffsetTooLarge { size, limit } => {
            assert_eq!(string(1).map(str::len), Some(*size));
            assert!(size > limit && *limit == limits.max_client_offset_bytes);
        }
        PayloadError::TooManyArguments(n) => assert!(*n == args.len() && *n > 3),
        PayloadError::MetaNotObject(t) => {
            assert_eq!(type_of(2), Some(*t));
            assert!(*t != "object" && *t != "null");
        }
        PayloadError::BadAuthor(why) => {
            let author = args.get(2).and_then(|meta| meta.get("author"));
            assert_eq!(author.map(validate_nickname), Some(Err(why.clone())));
        }
        PayloadError::BadRoom(why) => {
            let room = args.get(2).and_then(|meta| meta.get("room"));
            assert_eq!(room.map(RoomName::from_value), Some(Err(why.clone())));
        }
    }
    assert!(!text.is_empty());
}

fuzz_target!(|input: Input| match input {
    Input::Args(args) => {
        let args: Vec<Value> = args.iter().map(Json::to_value).collect();
        check(&args, &Config::default().limits());
    }
    Input::Raw(text) => {
        if let Ok(Value::Array(args)) = serde_json::from_str::<Value>(&text) {
            check(&args, &Config::default().limits());
        }
    }
    Input::Tight {
        args,
        max_message,
        max_offset,
    } => {
        let args: Vec<Value> = args.iter().map(Json::to_value).collect();
        let limits = Limits {
            max_message_bytes: usize::from(max_message),
            max_client_offset_bytes: usize::from(max_offset),
        };
        check(&args, &limits);
    }
    Input::Chat {
        content,
        offset,
        author,
        author_text,
        room,
        extra,
    } => {
        let mut meta = serde_json::Map::new();
        match room {
            Some(Ok(n)) => {
                meta.insert("room".into(), json!(format!("r{}", n % 4)));
            }
            Some(Err(text)) => {
                meta.insert("room".into(), Value::String(text));
            }
            None => {}
        }
        if let Some(author) = author_text {
            meta.insert("author".into(), Value::String(author));
        } else if let Some(author) = author {
            meta.insert("author".into(), author.to_value());
        }
        if let Some((key, value)) = extra {
            meta.entry(key).or_insert_with(|| value.to_value());
        }
        let args = vec![
            Value::String(content),
            offset.map_or(Value::Null, Value::String),
            Value::Object(meta),
        ];
        check(&args, &Config::default().limits());
    }
});
