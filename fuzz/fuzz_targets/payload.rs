//! `chat message` validation: any arguments are accepted or rejected with a typed error;
//! an accepted payload, sent again as the client would, is accepted identically.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tidings::Config;
use tidings::message::ChatInput;
use tidings::protocol::{Limits, validate_chat_message};
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
}

fn check(args: &[Value], limits: &Limits) {
    match validate_chat_message(args, limits) {
        Ok(input) => {
            assert!(!input.content.is_empty() && input.content.len() <= limits.max_message_bytes);
            let mut again = vec![Value::String(input.content.clone())];
            if let Some(offset) = &input.client_offset {
                assert!(!offset.0.is_empty() && offset.0.len() <= limits.max_client_offset_bytes);
                again.push(Value::String(offset.0.clone()));
            }
            let round: Result<ChatInput, _> = validate_chat_message(&again, limits);
            assert_eq!(round, Ok(input));
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
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
});
