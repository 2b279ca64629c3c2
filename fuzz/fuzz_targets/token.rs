//! Token verification (`tidings::identity::Verifier`), against a plain reading of the rule: a
//! token is accepted exactly when its header names HS256 (the configured algorithm), its
//! signature is the HMAC-SHA256 of its first two parts under the configured secret (computed
//! here with the `hmac` crate, not the `jsonwebtoken` one the server uses), and its claims
//! hold at the fuzzer's clock: `sub` a usable user id, `exp` present and not past (with the
//! leeway), `nbf` and `iat` not to come, `iss` and `aud` the configured ones when the input
//! configures them, and the display name (`name`, else `sub`) a valid nickname. An accepted
//! token's identity is its claims'.
//!
//! Inputs are either any string or a token built from parts the oracle knows: an algorithm
//! (HS256, HS512, `none`, RS256, anything), the right key, a wrong one or no signature,
//! arbitrary claims, and a tampered byte.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use sha2::{Sha256, Sha512};
use tidings::identity::{ClaimRules, Identity, MAX_TOKEN_BYTES, Verifier};
use tidings::protocol::validate_nickname;

const SECRET: &[u8] = b"the fuzzing secret, 32 bytes or more";
const OTHER: &[u8] = b"another secret, also 32 bytes or more";
const NOW: u64 = 1_800_000_000;
const LEEWAY: u64 = 30;
const ISSUER: &str = "iss-1";
const AUDIENCE: &str = "aud-1";

#[derive(Debug, Arbitrary)]
enum Input {
    /// Anything at all.
    Raw { token: String, strict: bool },
    /// A token built from known parts.
    Built {
        alg: Alg,
        key: Key,
        claims: Claims,
        tamper: Tamper,
        /// Whether the verifier requires the issuer and the audience.
        strict: bool,
    },
}

#[derive(Debug, Arbitrary)]
enum Alg {
    Hs256,
    Hs512,
    None,
    Rs256,
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Key {
    Right,
    Wrong,
    Unsigned,
}

#[derive(Debug, Arbitrary)]
enum Tamper {
    No,
    Signature(u16, u8),
    Payload(u16, u8),
    ExtraPart,
}

#[derive(Debug, Arbitrary)]
struct Claims {
    sub: Option<Field>,
    exp: Option<Time>,
    nbf: Option<Time>,
    iat: Option<Time>,
    iss: Option<Field>,
    aud: Option<Aud>,
    name: Option<Field>,
}

#[derive(Debug, Arbitrary)]
enum Field {
    Text(String),
    /// One of the values the rules know ("iss-1", "aud-1", "alice", " Bob ", "").
    Known(u8),
    Number(i64),
    Null,
    Bool(bool),
}

#[derive(Debug, Arbitrary)]
enum Time {
    /// Seconds from the fuzzer's clock.
    FromNow(i32),
    Raw(i64),
    Float(f64),
    Text(String),
}

#[derive(Debug, Arbitrary)]
enum Aud {
    One(Field),
    Many(Vec<Field>),
}

impl Field {
    fn json(&self) -> Value {
        const KNOWN: [&str; 5] = [ISSUER, AUDIENCE, "alice", " Bob ", ""];
        match self {
            Field::Text(text) => json!(text),
            Field::Known(n) => json!(KNOWN[usize::from(*n) % KNOWN.len()]),
            Field::Number(n) => json!(n),
            Field::Null => Value::Null,
            Field::Bool(b) => json!(b),
        }
    }
}

impl Time {
    fn json(&self) -> Value {
        match self {
            Time::FromNow(d) => json!(NOW as i64 + i64::from(*d)),
            Time::Raw(n) => json!(n),
            // serde_json writes a non-finite float as null.
            Time::Float(f) => json!(f),
            Time::Text(t) => json!(t),
        }
    }
}

impl Claims {
    fn json(&self) -> Value {
        let mut map = Map::new();
        let mut put = |name: &str, value: Option<Value>| {
            if let Some(value) = value {
                map.insert(name.to_string(), value);
            }
        };
        put("sub", self.sub.as_ref().map(Field::json));
        put("exp", self.exp.as_ref().map(Time::json));
        put("nbf", self.nbf.as_ref().map(Time::json));
        put("iat", self.iat.as_ref().map(Time::json));
        put("iss", self.iss.as_ref().map(Field::json));
        put(
            "aud",
            self.aud.as_ref().map(|aud| match aud {
                Aud::One(field) => field.json(),
                Aud::Many(list) => Value::Array(list.iter().map(Field::json).collect()),
            }),
        );
        put("name", self.name.as_ref().map(Field::json));
        Value::Object(map)
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hs256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256>>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn hs512(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha512>>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn build(alg: &Alg, key: &Key, claims: &Claims, tamper: &Tamper) -> String {
    let alg = match alg {
        Alg::Hs256 => "HS256".to_string(),
        Alg::Hs512 => "HS512".to_string(),
        Alg::None => "none".to_string(),
        Alg::Rs256 => "RS256".to_string(),
        Alg::Other(other) => other.clone(),
    };
    let header = json!({ "alg": alg, "typ": "JWT" });
    let mut payload = serde_json::to_vec(&claims.json()).expect("json");
    if let Tamper::Payload(at, by) = tamper
        && !payload.is_empty()
    {
        let at = usize::from(*at) % payload.len();
        payload[at] ^= by | 1;
    }
    let head = format!("{}.{}", b64(&serde_json::to_vec(&header).expect("json")), b64(&payload));
    // The signature is over the untampered claims when the payload was tampered with.
    let signed_over = format!(
        "{}.{}",
        b64(&serde_json::to_vec(&header).expect("json")),
        b64(&serde_json::to_vec(&claims.json()).expect("json"))
    );
    let secret = match key {
        Key::Right => Some(SECRET),
        Key::Wrong => Some(OTHER),
        Key::Unsigned => None,
    };
    let mut signature = match (secret, alg.as_str()) {
        (None, _) => Vec::new(),
        (Some(secret), "HS512") => hs512(secret, signed_over.as_bytes()),
        (Some(secret), _) => hs256(secret, signed_over.as_bytes()),
    };
    if let Tamper::Signature(at, by) = tamper
        && !signature.is_empty()
    {
        let at = usize::from(*at) % signature.len();
        signature[at] ^= by | 1;
    }
    let mut token = format!("{head}.{}", b64(&signature));
    if let Tamper::ExtraPart = tamper {
        token.push_str(".x");
    }
    token
}

/// A usable user id, as the rule states it.
fn usable_sub(sub: &str) -> bool {
    !sub.is_empty() && sub.len() <= 256 && !sub.chars().any(char::is_control)
}

/// A numeric date: a non-negative number of seconds (below 10^15).
fn date(value: Option<&Value>) -> Result<Option<u64>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(n), _) => Ok(Some(n)),
            (None, Some(f)) if f >= 0.0 && f < 1e15 => Ok(Some(f as u64)),
            _ => Err(()),
        },
        Some(_) => Err(()),
    }
}

/// What the rule says `token` is: the identity it proves, or `None`.
fn oracle(token: &str, strict: bool) -> Option<Identity> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return None;
    };
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    if header.get("alg")? != "HS256" {
        return None;
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    let message = &token[..token.rfind('.')?];
    if signature != hs256(SECRET, message.as_bytes()) {
        return None;
    }
    let claims: Map<String, Value> =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    if strict {
        if claims.get("iss")? != ISSUER {
            return None;
        }
        match claims.get("aud")? {
            Value::Array(list) if list.iter().any(|a| a == AUDIENCE) => {}
            aud if aud == AUDIENCE => {}
            _ => return None,
        }
    }
    let sub = claims.get("sub")?.as_str()?;
    if !usable_sub(sub) {
        return None;
    }
    let exp = date(claims.get("exp")).ok()??;
    if exp.saturating_add(LEEWAY) < NOW {
        return None;
    }
    for claim in ["nbf", "iat"] {
        if date(claims.get(claim)).ok()?.is_some_and(|t| t > NOW + LEEWAY) {
            return None;
        }
    }
    let name = match claims.get("name") {
        None | Some(Value::Null) => validate_nickname(&json!(sub)).ok()?,
        Some(name) => validate_nickname(name).ok()?,
    };
    Some(Identity {
        user: sub.to_string(),
        name,
        exp,
    })
}

fn verifier(strict: bool) -> Verifier {
    let rules = ClaimRules {
        issuer: strict.then(|| ISSUER.to_string()),
        audience: strict.then(|| AUDIENCE.to_string()),
        leeway: LEEWAY,
    };
    Verifier::from_secret(SECRET, None, rules).expect("a verifier")
}

fuzz_target!(|input: Input| {
    let (token, strict, built) = match input {
        Input::Raw { token, strict } => (token, strict, false),
        Input::Built {
            alg,
            key,
            claims,
            tamper,
            strict,
        } => (build(&alg, &key, &claims, &tamper), strict, true),
    };
    let got = verifier(strict).verify(&token, NOW);
    let want = oracle(&token, strict);
    match (&got, &want) {
        (Ok(identity), Some(expected)) => assert_eq!(identity, expected, "{token}"),
        (Err(_), None) => {}
        (Ok(identity), None) => panic!("accepted {token} as {identity:?}, against the rule"),
        // A random string the rule would accept needs a correct HMAC: only built tokens can
        // be, and each of those must be accepted.
        (Err(error), Some(expected)) => {
            panic!("refused {token} ({error}), the rule accepts it as {expected:?} (built: {built})")
        }
    }
});
