//! Parsing of the few engine.io / socket.io text frames the bench cares about, without building
//! a JSON tree: it looks at prefixes and slices, and borrows from the frame.

/// What a server frame means to the bench.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// engine.io ping (`2`): answer `3`.
    Ping,
    /// engine.io close (`1`).
    Close,
    /// socket.io namespace connect answer (`40{...}`).
    Connected,
    /// socket.io `connect_error` (`44{...}`), with its raw body.
    ConnectError(&'a str),
    /// socket.io disconnect (`41`).
    Disconnect,
    /// `42["chat message", content, id, ...]`; `content` is the raw JSON string body (escapes
    /// are left as they are: the bench's own contents have none).
    Chat { content: &'a str, id: u64 },
    /// An ack `43<ack_id>[...]`.
    Ack { ack_id: u64, body: AckBody },
    /// Anything else (other events, engine.io noop, ...).
    Other,
}

/// The body of an ack, as far as the bench needs it.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum AckBody {
    /// `[]` or anything without an id: the reference server acks with no argument.
    Empty,
    /// `[{"id":N}]`: stored as a new message.
    Id(u64),
    /// `[{"id":N,"duplicate":true}]`: a retry of a stored message.
    Duplicate(u64),
    /// `[{"error":...}]`: refused.
    Error,
}

const CHAT_PREFIX: &str = "42[\"chat message\",\"";

/// Classifies one text frame sent by a server.
pub fn parse(text: &str) -> Frame<'_> {
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(b'2') if bytes.len() == 1 => return Frame::Ping,
        Some(b'1') => return Frame::Close,
        Some(b'4') => {}
        _ => return Frame::Other,
    }
    match bytes.get(1) {
        Some(b'0') => Frame::Connected,
        Some(b'1') => Frame::Disconnect,
        Some(b'4') => Frame::ConnectError(&text[2..]),
        Some(b'2') => parse_chat(text).unwrap_or(Frame::Other),
        Some(b'3') => parse_ack(&text[2..]).unwrap_or(Frame::Other),
        _ => Frame::Other,
    }
}

fn parse_chat(text: &str) -> Option<Frame<'_>> {
    let rest = text.strip_prefix(CHAT_PREFIX)?;
    let end = string_end(rest.as_bytes())?;
    let content = &rest[..end];
    let after = rest[end + 1..].trim_start_matches([',', ' ']);
    let (id, _) = leading_u64(after)?;
    Some(Frame::Chat { content, id })
}

/// The `room` of a delivered `chat message` (`42["chat message",content,id,{...,"room":R},...]`,
/// tidings' rooms shape), read after the content and id; `None` for any other frame or a
/// message without one.
pub fn chat_room(text: &str) -> Option<&str> {
    let rest = text.strip_prefix(CHAT_PREFIX)?;
    let end = string_end(rest.as_bytes())?;
    let after = rest[end + 1..].trim_start_matches([',', ' ']);
    let (_, meta) = leading_u64(after)?;
    let meta = meta.trim_start_matches([',', ' ']).strip_prefix('{')?;
    // The third argument's own fields: an author's quotes are escaped, so `"room":"` inside
    // its value cannot match.
    let at = meta.find("\"room\":\"")?;
    let value = &meta[at + 8..];
    let close = string_end(value.as_bytes())?;
    Some(&value[..close])
}

/// Index of the closing quote of a JSON string body (the opening quote already consumed).
fn string_end(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn parse_ack(rest: &str) -> Option<Frame<'_>> {
    let (ack_id, body) = leading_u64(rest)?;
    let body = if body.contains("\"error\"") {
        AckBody::Error
    } else if let Some(at) = body.find("\"id\":") {
        let (id, _) = leading_u64(body[at + 5..].trim_start())?;
        if body.contains("\"duplicate\":true") {
            AckBody::Duplicate(id)
        } else {
            AckBody::Id(id)
        }
    } else {
        AckBody::Empty
    };
    Some(Frame::Ack { ack_id, body })
}

const PRESENCE_PREFIX: &str = "42[\"presence\",{";

/// The `count` of a tidings `presence` event (`42["presence",{"count":N,...}]`, README
/// "Extensions"): how many clients the server has connected. `None` for any other frame.
pub fn presence_count(text: &str) -> Option<u64> {
    let body = text.strip_prefix(PRESENCE_PREFIX)?;
    // The key with its opening quote: `joinedCount` does not match, nor does a nickname
    // (its quotes are escaped inside the JSON string).
    let at = body.find("\"count\":")?;
    let (count, _) = leading_u64(body[at + 8..].trim_start())?;
    Some(count)
}

/// The decimal number at the start of `s` and what follows it.
pub fn leading_u64(s: &str) -> Option<(u64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let value = s[..digits].parse().ok()?;
    Some((value, &s[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_io_packets() {
        assert_eq!(parse("2"), Frame::Ping);
        assert_eq!(parse("1"), Frame::Close);
        assert_eq!(parse("6"), Frame::Other);
        assert_eq!(parse("40{\"sid\":\"x\"}"), Frame::Connected);
        assert_eq!(parse("41"), Frame::Disconnect);
        assert_eq!(
            parse("44{\"message\":\"no\"}"),
            Frame::ConnectError("{\"message\":\"no\"}")
        );
    }

    #[test]
    fn chat_messages_from_both_servers() {
        assert_eq!(
            parse("42[\"chat message\",\"hello\",17]"),
            Frame::Chat {
                content: "hello",
                id: 17
            }
        );
        // The reference appends a connection-state-recovery offset.
        assert_eq!(
            parse("42[\"chat message\",\"a\\\"b\",3,\"abc-1\"]"),
            Frame::Chat {
                content: "a\\\"b",
                id: 3
            }
        );
        assert_eq!(parse("42[\"other\",\"x\",1]"), Frame::Other);
        assert_eq!(parse("42[\"chat message\",5,1]"), Frame::Other);
    }

    #[test]
    fn rooms_of_delivered_messages() {
        let tidings =
            r#"42["chat message","m.x",7,{"author":"a\"room\":\"no","time":1,"room":"dev"},"7"]"#;
        assert_eq!(chat_room(tidings), Some("dev"));
        let reference =
            r#"42["chat message","m.x",7,{"author":null,"time":1,"room":"r-12"},"abc"]"#;
        assert_eq!(chat_room(reference), Some("r-12"));
        assert_eq!(chat_room(r#"42["chat message","m.x",7,"abc"]"#), None);
        assert_eq!(chat_room(r#"42["chat message","m.x",7]"#), None);
        assert_eq!(chat_room(r#"42["other","m.x",7,{"room":"dev"}]"#), None);
        // Still a chat message to the other parsers.
        assert_eq!(
            parse(tidings),
            Frame::Chat {
                content: "m.x",
                id: 7
            }
        );
    }

    #[test]
    fn presence_counts() {
        let event = r#"42["presence",{"count":3,"users":["a","b"],"joined":["b"],"joinedCount":1,"left":[],"leftCount":0}]"#;
        assert_eq!(presence_count(event), Some(3));
        // The field order does not matter, nor a nickname that looks like the key.
        let event = r#"42["presence",{"users":["\"count\":9"],"joinedCount":7,"count": 12}]"#;
        assert_eq!(presence_count(event), Some(12));
        assert_eq!(
            presence_count(r#"42["chat message","\"count\":1",1]"#),
            None
        );
        assert_eq!(presence_count(r#"42["presence",{"users":[]}]"#), None);
        assert_eq!(presence_count("40{\"sid\":\"x\"}"), None);
        // A presence event is not a chat message to the other parsers.
        assert_eq!(parse(r#"42["presence",{"count":3}]"#), Frame::Other);
    }

    #[test]
    fn acks() {
        assert_eq!(
            parse("437[]"),
            Frame::Ack {
                ack_id: 7,
                body: AckBody::Empty
            }
        );
        assert_eq!(
            parse("4312[{\"id\":99}]"),
            Frame::Ack {
                ack_id: 12,
                body: AckBody::Id(99)
            }
        );
        assert_eq!(
            parse("430[{\"id\":4,\"duplicate\":true}]"),
            Frame::Ack {
                ack_id: 0,
                body: AckBody::Duplicate(4)
            }
        );
        assert_eq!(
            parse("431[{\"error\":\"content must be a string\"}]"),
            Frame::Ack {
                ack_id: 1,
                body: AckBody::Error
            }
        );
    }
}
