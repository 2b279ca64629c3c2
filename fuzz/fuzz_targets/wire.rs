//! The wire path: arbitrary websocket frames and polling bodies through the same engine.io and
//! socket.io parsers socketioxide uses, configured with the server's own limits
//! (`payload_limit` and `MAX_INCOMING_BINARIES`, as `server.rs` builds its `ParserConfig`),
//! then through our handlers' decoding and validation, on one connection that closes, as
//! socketioxide closes it, at the first parse error.
//!
//! Nothing may panic, and binary attachments stay within the bound: after every frame, the
//! attachments buffered for a packet are at most `MAX_INCOMING_BINARIES` and at most
//! `payload_limit` bytes in all, and so are those of every packet the parser completes.
#![no_main]

use std::collections::VecDeque;
use std::sync::PoisonError;

use arbitrary::Arbitrary;
use bytes::Bytes;
use engineioxide_core::{Packet as EnginePacket, ProtocolVersion};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use socketioxide_core::packet::{Packet, PacketData};
use socketioxide_core::parser::{Parse, ParseConfig, ParseError, ParserState};
use socketioxide_parser_common::CommonParser;
use tidings::protocol::{
    EventArgs, MAX_INCOMING_BINARIES, parse_handshake, parse_history_request, payload_limit,
    validate_chat_message, validate_nickname,
};

#[derive(Debug, Arbitrary)]
enum Frame {
    /// A websocket text frame (one engine.io packet).
    Text(String),
    /// A websocket binary frame (a socket.io binary attachment).
    Binary(Vec<u8>),
    /// A long-polling body: packets separated by the record separator.
    Polling(String),
    /// A plausible event, to get past the framing quickly.
    Event {
        ack: Option<u32>,
        name: EventName,
        json: String,
    },
    /// A binary event header announcing `count` attachments.
    BinaryEvent { count: u8, json: String },
    /// A large binary attachment (filled with one byte), to reach the byte bound.
    BigBinary { kib: u8, byte: u8 },
}

#[derive(Debug, Arbitrary)]
enum EventName {
    Chat,
    History,
    Nickname,
    Typing,
}

impl EventName {
    fn as_str(&self) -> &'static str {
        match self {
            EventName::Chat => "chat message",
            EventName::History => "history",
            EventName::Nickname => "nickname",
            EventName::Typing => "typing",
        }
    }
}

/// One connection's parser state; replaced when the connection closes.
struct Connection {
    config: ParseConfig,
    state: ParserState,
    limit: usize,
}

/// The attachments of a binary packet: within the bound.
fn assert_bounded(binaries: Option<&VecDeque<Bytes>>, limit: usize, what: &str) {
    let Some(binaries) = binaries else { return };
    assert!(
        binaries.len() <= MAX_INCOMING_BINARIES,
        "{what}: {} attachments, the bound is {MAX_INCOMING_BINARIES}",
        binaries.len()
    );
    let bytes: usize = binaries.iter().map(Bytes::len).sum();
    assert!(
        bytes <= limit,
        "{what}: {bytes} bytes of attachments, the bound is {limit}"
    );
}

fn binaries_of(packet: &Packet) -> Option<&VecDeque<Bytes>> {
    match &packet.inner {
        PacketData::BinaryEvent(socketioxide_core::Value::Str(_, binaries), _)
        | PacketData::BinaryAck(socketioxide_core::Value::Str(_, binaries), _) => binaries.as_ref(),
        _ => None,
    }
}

impl Connection {
    fn new() -> Self {
        let limits = tidings::Config::default().limits();
        let limit = payload_limit(&limits);
        Self {
            config: ParseConfig {
                max_incoming_binary_buf_size: limit,
                max_incoming_binaries: MAX_INCOMING_BINARIES,
                ..ParseConfig::default()
            },
            state: ParserState::default(),
            limit,
        }
    }

    /// What socketioxide does with a parse result: a packet goes to the handlers, "needs more
    /// binary data" waits, any other error closes the connection.
    fn received(&mut self, result: Result<Packet, ParseError>) {
        match result {
            Ok(packet) => {
                assert_bounded(binaries_of(&packet), self.limit, "a completed packet");
                handle(packet);
            }
            Err(ParseError::NeedsMoreBinaryData) => {}
            Err(_) => *self = Self::new(),
        }
        let partial = self
            .state
            .partial_bin_packet
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(partial) = partial.as_ref() {
            assert_bounded(binaries_of(&partial.packet), self.limit, "a partial packet");
        }
        let expected = self
            .state
            .incoming_binary_cnt
            .load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            partial.is_none() || expected <= MAX_INCOMING_BINARIES,
            "waiting for {expected} attachments"
        );
    }

    fn engine_text(&mut self, text: String) {
        // Larger websocket frames and polling bodies are refused before any parser sees them.
        if text.len() > self.limit {
            *self = Self::new();
            return;
        }
        match EnginePacket::parse(ProtocolVersion::V4, text) {
            Ok(EnginePacket::Message(message)) => {
                let result = CommonParser.decode_str(&self.config, &self.state, message);
                self.received(result);
            }
            Ok(EnginePacket::Binary(bin)) => self.binary(bin),
            Ok(_) => {}
            Err(_) => *self = Self::new(),
        }
    }

    fn binary(&mut self, bin: Bytes) {
        if bin.len() > self.limit {
            *self = Self::new();
            return;
        }
        let result = CommonParser.decode_bin(&self.config, &self.state, bin);
        self.received(result);
    }
}

/// Our handlers' decoding and validation of what a packet carries.
fn handle(packet: Packet) {
    let limits = tidings::Config::default().limits();
    match packet.inner {
        PacketData::Connect(Some(auth)) => {
            if let Ok(auth) = CommonParser.decode_default::<Value>(Some(&auth)) {
                let _ = parse_handshake(&auth);
            }
        }
        PacketData::Event(mut value, _) | PacketData::BinaryEvent(mut value, _) => {
            let Ok(name) = CommonParser.read_event(&value).map(str::to_owned) else {
                return;
            };
            let Ok(EventArgs(args)) = CommonParser.decode_value::<EventArgs>(&mut value, true)
            else {
                return;
            };
            match name.as_str() {
                "chat message" => {
                    let _ = validate_chat_message(&args, &limits);
                }
                "history" => {
                    let _ = parse_history_request(&args);
                }
                "nickname" => {
                    if let Some(name) = args.first() {
                        let _ = validate_nickname(name);
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
}

fuzz_target!(|frames: Vec<Frame>| {
    let mut connection = Connection::new();
    for frame in frames {
        match frame {
            Frame::Text(text) => connection.engine_text(text),
            Frame::Binary(bytes) => connection.binary(Bytes::from(bytes)),
            Frame::Polling(body) => {
                for text in body.split('\u{1e}') {
                    connection.engine_text(text.to_string());
                }
            }
            Frame::Event { ack, name, json } => {
                let ack = ack.map(|a| a.to_string()).unwrap_or_default();
                let name = name.as_str();
                connection.engine_text(format!("42{ack}[\"{name}\",{json}]"));
            }
            Frame::BinaryEvent { count, json } => {
                let placeholders: Vec<String> = (0..count % 8)
                    .map(|n| format!("{{\"_placeholder\":true,\"num\":{n}}}"))
                    .collect();
                connection.engine_text(format!(
                    "45{}-[\"chat message\",{}{}{json}]",
                    count % 8,
                    placeholders.join(","),
                    if placeholders.is_empty() { "" } else { "," },
                ));
            }
            Frame::BigBinary { kib, byte } => {
                connection.binary(Bytes::from(vec![byte; usize::from(kib) * 1024]));
            }
        }
    }
});
