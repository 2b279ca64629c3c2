//! The wire path: arbitrary websocket frames through the same engine.io and socket.io
//! parsers socketioxide uses, then through our handlers' decoding and validation. Nothing may
//! panic, and binary attachments stay within the configured bound.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use engineioxide_core::{Packet as EnginePacket, ProtocolVersion};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use socketioxide_core::packet::PacketData;
use socketioxide_core::parser::{Parse, ParseConfig, ParserState};
use socketioxide_parser_common::CommonParser;
use tidings::protocol::{parse_server_offset, validate_chat_message};
use tidings::protocol::EventArgs;

#[derive(Debug, Arbitrary)]
enum Frame {
    /// A websocket text frame (one engine.io packet).
    Text(String),
    /// A websocket binary frame (a socket.io binary attachment).
    Binary(Vec<u8>),
    /// A long-polling body: packets separated by the record separator.
    Polling(String),
    /// A plausible event, to get past the framing quickly.
    Event { ack: Option<u32>, json: String },
}

fn handle(packet: socketioxide_core::packet::Packet) {
    let limits = tidings::Config::default().limits();
    match packet.inner {
        PacketData::Connect(Some(auth)) => {
            if let Ok(auth) = CommonParser.decode_default::<Value>(Some(&auth)) {
                let _ = parse_server_offset(&auth);
            }
        }
        PacketData::Event(mut value, _) | PacketData::BinaryEvent(mut value, _) => {
            let is_chat = CommonParser
                .read_event(&value)
                .is_ok_and(|e| e == "chat message");
            if is_chat
                && let Ok(EventArgs(args)) =
                    CommonParser.decode_value::<EventArgs>(&mut value, true)
            {
                let _ = validate_chat_message(&args, &limits);
            }
        }
        _ => {}
    }
}

fn engine_text(config: &ParseConfig, state: &ParserState, text: String) {
    match EnginePacket::parse(ProtocolVersion::V4, text) {
        Ok(EnginePacket::Message(message)) => {
            if let Ok(packet) = CommonParser.decode_str(config, state, message) {
                handle(packet);
            }
        }
        Ok(EnginePacket::Binary(bin)) => {
            if let Ok(packet) = CommonParser.decode_bin(config, state, bin) {
                handle(packet);
            }
        }
        _ => {}
    }
}

fuzz_target!(|frames: Vec<Frame>| {
    let config = ParseConfig {
        max_incoming_binary_buf_size: 1 << 16,
        max_incoming_binaries: 16,
        ..ParseConfig::default()
    };
    let state = ParserState::default();
    for frame in frames {
        match frame {
            Frame::Text(text) => engine_text(&config, &state, text),
            Frame::Binary(bytes) => {
                if let Ok(packet) = CommonParser.decode_bin(&config, &state, Bytes::from(bytes)) {
                    handle(packet);
                }
            }
            Frame::Polling(body) => {
                for text in body.split('\u{1e}') {
                    engine_text(&config, &state, text.to_string());
                }
            }
            Frame::Event { ack, json } => {
                let ack = ack.map(|a| a.to_string()).unwrap_or_default();
                engine_text(&config, &state, format!("42{ack}[\"chat message\",{json}]"));
            }
        }
    }
});
