//! Identity: verifying the signed tokens (JWT) clients present, and signing them for
//! development (`tidings token`).
//!
//! A [`Verifier`] holds one key and one algorithm. [`Verifier::verify`] accepts a token only
//! if its header names exactly that algorithm (so `none` and algorithm confusion, an HS256
//! token "signed" with an RSA public key, never pass), its signature verifies under the key,
//! its issuer and audience are the configured ones (when set), and its claims hold at the
//! given time: `sub` (the user id) and `exp` present, `exp`, `nbf` and `iat` within the leeway.
//! Every refusal is a [`TokenError`] whose text is what the client is told.
//!
//! The signature check is the `jsonwebtoken` crate's, with its pure-Rust `rust_crypto`
//! backend (no system library, no C toolchain beyond what cargo needs); the claims are
//! checked here against an explicit clock, so tests and the fuzz target control time.
//!
//! A leaf module: pure functions over bytes and a clock reading; no I/O (reading the key
//! files is the caller's).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::protocol::validate_nickname;

/// Largest token accepted, in bytes; a bigger one is refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Shortest HMAC secret accepted, in bytes (256 bits, as HS256's output).
pub const MIN_SECRET_BYTES: usize = 32;

/// Longest `sub` accepted, in bytes.
pub const MAX_SUB_BYTES: usize = 256;

/// Why a token was refused; the text is the client's `connect_error` (or ack `error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token where one is required.
    #[error("token required")]
    Missing,
    /// `auth.token` is not a string.
    #[error("invalid token: expected a string, got {0}")]
    NotAString(&'static str),
    /// Over [`MAX_TOKEN_BYTES`].
    #[error("token too large: {0} bytes, the most is 8192")]
    TooLarge(usize),
    /// Not three base64url parts with a JSON header and payload.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header names an algorithm other than the configured one.
    #[error("algorithm not allowed: {found} (this server accepts {allowed})")]
    AlgorithmNotAllowed {
        /// The header's `alg`.
        found: String,
        /// The configured algorithm.
        allowed: &'static str,
    },
    /// The signature does not verify under the configured key.
    #[error("bad signature")]
    BadSignature,
    /// `exp` plus the leeway is past.
    #[error("token expired")]
    Expired,
    /// `nbf` minus the leeway is still to come.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` minus the leeway is still to come.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not name the configured audience.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim is absent (`sub`, `exp`, and `iss`/`aud` when configured).
    #[error("missing {0}")]
    MissingClaim(&'static str),
    /// A claim is present but unusable.
    #[error("invalid {claim}: {why}")]
    BadClaim {
        /// The claim.
        claim: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

/// Why a key could not be used (a start-up error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// An HMAC secret shorter than [`MIN_SECRET_BYTES`].
    #[error(
        "the secret is {0} bytes long, it must be at least 32 (for example `head -c 48 /dev/urandom | base64`)"
    )]
    ShortSecret(usize),
    /// A PEM file that holds no RSA, EC or Ed25519 public key.
    #[error("not a PEM public key jsonwebtoken can use (RSA, EC P-256/P-384 or Ed25519): {0}")]
    BadPem(String),
    /// `--jwt-algorithm` names an algorithm of another family than the key's.
    #[error("algorithm {algorithm} cannot be used with {key} (use one of {choices})")]
    WrongFamily {
        /// The chosen algorithm.
        algorithm: &'static str,
        /// The kind of key given.
        key: &'static str,
        /// The algorithms that key allows.
        choices: String,
    },
    /// A secret the crypto backend refuses.
    #[error("the secret cannot be used: {0}")]
    BadSecret(String),
    /// An algorithm name this server does not know.
    #[error(
        "unknown algorithm {0:?} (HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA)"
    )]
    UnknownAlgorithm(String),
}

/// The algorithms by name, as tokens' headers and `--jwt-algorithm` spell them.
const ALGORITHMS: [(&str, Algorithm); 12] = [
    ("HS256", Algorithm::HS256),
    ("HS384", Algorithm::HS384),
    ("HS512", Algorithm::HS512),
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// An algorithm's name.
fn algorithm_name(algorithm: Algorithm) -> &'static str {
    ALGORITHMS
        .iter()
        .find(|(_, a)| *a == algorithm)
        .map_or("unknown", |(name, _)| name)
}

/// The algorithm named `name` (exactly as in a token's header).
pub fn parse_algorithm(name: &str) -> Result<Algorithm, KeyError> {
    ALGORITHMS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| *a)
        .ok_or_else(|| KeyError::UnknownAlgorithm(name.to_string()))
}

fn family_name(family: AlgorithmFamily) -> &'static str {
    match family {
        AlgorithmFamily::Hmac => "an HMAC secret",
        AlgorithmFamily::Rsa => "an RSA public key",
        AlgorithmFamily::Ec => "an EC public key",
        AlgorithmFamily::Ed => "an Ed25519 public key",
    }
}

/// `algorithm`, or the family's default; refused if it belongs to another family.
fn choose(family: AlgorithmFamily, algorithm: Option<Algorithm>) -> Result<Algorithm, KeyError> {
    let default = match family {
        AlgorithmFamily::Hmac => Algorithm::HS256,
        AlgorithmFamily::Rsa => Algorithm::RS256,
        AlgorithmFamily::Ec => Algorithm::ES256,
        AlgorithmFamily::Ed => Algorithm::EdDSA,
    };
    let algorithm = algorithm.unwrap_or(default);
    if family.algorithms().contains(&algorithm) {
        Ok(algorithm)
    } else {
        Err(KeyError::WrongFamily {
            algorithm: algorithm_name(algorithm),
            key: family_name(family),
            choices: family
                .algorithms()
                .iter()
                .map(|a| algorithm_name(*a))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// An HMAC secret is at least [`MIN_SECRET_BYTES`] long.
fn check_secret(secret: &[u8]) -> Result<(), KeyError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(KeyError::ShortSecret(secret.len()));
    }
    Ok(())
}

/// The secret in a secret file: its bytes less one trailing newline (`\n` or `\r\n`), at
/// least [`MIN_SECRET_BYTES`] long.
pub fn secret_from_file(bytes: &[u8]) -> Result<&[u8], KeyError> {
    let secret = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(bytes);
    check_secret(secret)?;
    Ok(secret)
}

/// What a verified token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id (`sub`).
    pub user: String,
    /// The display name (`name`, else `sub`), a valid nickname.
    pub name: String,
    /// When the token expires, in seconds since the Unix epoch (`exp`).
    pub exp: u64,
}

/// The checks applied to the claims besides the signature.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimRules {
    /// `iss` must equal this, when set.
    pub issuer: Option<String>,
    /// `aud` must be or contain this, when set.
    pub audience: Option<String>,
    /// Seconds of clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: u64,
}

/// Verifies tokens under one key and one algorithm.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    algorithm: Algorithm,
    validation: Validation,
    rules: ClaimRules,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier of HMAC-signed tokens (`algorithm`: HS256, the default, HS384 or HS512).
    pub fn from_secret(
        secret: &[u8],
        algorithm: Option<Algorithm>,
        rules: ClaimRules,
    ) -> Result<Self, KeyError> {
        check_secret(secret)?;
        let key =
            DecodingKey::from_secret(secret).map_err(|e| KeyError::BadSecret(e.to_string()))?;
        Ok(Self::new(
            key,
            choose(AlgorithmFamily::Hmac, algorithm)?,
            rules,
        ))
    }

    /// A verifier of tokens signed with the private half of the PEM public key `pem` (RSA,
    /// EC or Ed25519; `algorithm` defaults to RS256, ES256 (ES384 for a P-384 key) or EdDSA by
    /// the key's type).
    pub fn from_public_pem(
        pem: &[u8],
        algorithm: Option<Algorithm>,
        rules: ClaimRules,
    ) -> Result<Self, KeyError> {
        let key = DecodingKey::from_ed_pem(pem)
            .or_else(|_| DecodingKey::from_ec_pem(pem))
            .or_else(|_| DecodingKey::from_rsa_pem(pem))
            .map_err(|e| KeyError::BadPem(e.to_string()))?;
        // An EC key's curve picks its algorithm: a P-384 point (97 bytes uncompressed) is
        // ES384's, a P-256 one (65) ES256's.
        let p384 = key.family() == AlgorithmFamily::Ec
            && key.try_get_as_bytes().is_ok_and(|point| point.len() == 97);
        let algorithm = match algorithm {
            None if p384 => Some(Algorithm::ES384),
            chosen => chosen,
        };
        let algorithm = choose(key.family(), algorithm)?;
        Ok(Self::new(key, algorithm, rules))
    }

    fn new(key: DecodingKey, algorithm: Algorithm, rules: ClaimRules) -> Self {
        let mut validation = Validation::new(algorithm);
        // The crate checks the algorithm and the signature; every claim is checked in
        // `claims`, against the caller's clock, by one set of rules.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Self {
            key,
            algorithm,
            validation,
            rules,
        }
    }

    /// The algorithm tokens must name.
    pub fn algorithm(&self) -> &'static str {
        algorithm_name(self.algorithm)
    }

    /// The leeway on `exp`, `nbf` and `iat`, in seconds.
    pub fn leeway(&self) -> u64 {
        self.rules.leeway
    }

    /// Verifies `token` at `now` (seconds since the Unix epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<Identity, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge(token.len()));
        }
        let found = header_algorithm(token)?;
        let allowed = self.algorithm();
        if found != allowed {
            return Err(TokenError::AlgorithmNotAllowed { found, allowed });
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(refusal)?;
        claims(&data.claims, now, &self.rules)
    }
}

/// The header's `alg`, read before anything else is trusted.
fn header_algorithm(token: &str) -> Result<String, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "expected three parts separated by dots",
        ));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed("the header is not base64url"))?;
    let header: Value = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::Malformed("the header is not JSON"))?;
    match header.get("alg") {
        Some(Value::String(alg)) => Ok(alg.chars().take(16).collect()),
        _ => Err(TokenError::Malformed("the header names no algorithm")),
    }
}

/// A `jsonwebtoken` refusal as the client is told it.
fn refusal(error: jsonwebtoken::errors::Error) -> TokenError {
    use jsonwebtoken::errors::ErrorKind as K;
    match error.kind() {
        K::Base64(_) | K::Utf8(_) => TokenError::Malformed("a part is not base64url"),
        K::Json(_) => TokenError::Malformed("the payload is not a JSON object"),
        K::InvalidToken | K::MissingAlgorithm | K::InvalidAlgorithmName => {
            TokenError::Malformed("not a JSON web token")
        }
        // The signature's own failures, and a signature of the wrong size or shape for the
        // key (the crypto backends report those as key or provider errors).
        _ => TokenError::BadSignature,
    }
}

/// A numeric date claim: a non-negative number of seconds (a fraction is dropped).
fn numeric_date(
    claims: &Map<String, Value>,
    claim: &'static str,
) -> Result<Option<u64>, TokenError> {
    match claims.get(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(n), _) => Ok(Some(n)),
            (None, Some(f)) if (0.0..1e15).contains(&f) => Ok(Some(f as u64)),
            _ => Err(TokenError::BadClaim {
                claim,
                why: format!("{n} is not a date in seconds since 1970"),
            }),
        },
        Some(other) => Err(TokenError::BadClaim {
            claim,
            why: format!(
                "expected seconds since 1970, got {}",
                crate::protocol::json_type_name(other)
            ),
        }),
    }
}

/// Checks the verified claims at `now` against `rules` and extracts the identity.
fn claims(
    claims: &Map<String, Value>,
    now: u64,
    rules: &ClaimRules,
) -> Result<Identity, TokenError> {
    let leeway = rules.leeway;
    if let Some(issuer) = &rules.issuer {
        match claims.get("iss") {
            None | Some(Value::Null) => return Err(TokenError::MissingClaim("iss")),
            Some(Value::String(iss)) if iss == issuer => {}
            Some(_) => return Err(TokenError::WrongIssuer),
        }
    }
    if let Some(audience) = &rules.audience {
        let ours = |value: &Value| value.as_str() == Some(audience.as_str());
        match claims.get("aud") {
            None | Some(Value::Null) => return Err(TokenError::MissingClaim("aud")),
            Some(Value::Array(list)) if list.iter().any(ours) => {}
            Some(aud) if ours(aud) => {}
            Some(_) => return Err(TokenError::WrongAudience),
        }
    }
    let user = match claims.get("sub") {
        None | Some(Value::Null) => return Err(TokenError::MissingClaim("sub")),
        Some(Value::String(sub)) => sub,
        Some(other) => {
            return Err(TokenError::BadClaim {
                claim: "sub",
                why: format!(
                    "expected a string, got {}",
                    crate::protocol::json_type_name(other)
                ),
            });
        }
    };
    let bad_sub = |why: &str| TokenError::BadClaim {
        claim: "sub",
        why: why.to_string(),
    };
    if user.is_empty() {
        return Err(bad_sub("it is empty"));
    }
    if user.len() > MAX_SUB_BYTES {
        return Err(bad_sub("it is longer than 256 bytes"));
    }
    if user.chars().any(char::is_control) {
        return Err(bad_sub("it contains control characters"));
    }
    let exp = numeric_date(claims, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
    if exp.saturating_add(leeway) < now {
        return Err(TokenError::Expired);
    }
    if numeric_date(claims, "nbf")?.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(TokenError::NotYetValid);
    }
    if numeric_date(claims, "iat")?.is_some_and(|iat| iat > now.saturating_add(leeway)) {
        return Err(TokenError::IssuedInFuture);
    }
    let name = match claims.get("name") {
        None | Some(Value::Null) => {
            validate_nickname(&Value::String(user.clone())).map_err(|e| TokenError::BadClaim {
                claim: "sub",
                why: format!("{e} (it is the display name when the token has no name claim)"),
            })?
        }
        Some(name) => validate_nickname(name).map_err(|e| TokenError::BadClaim {
            claim: "name",
            why: e.to_string(),
        })?,
    };
    Ok(Identity {
        user: user.clone(),
        name,
        exp,
    })
}

/// Signs tokens with an HMAC secret (`tidings token`, tests).
pub struct Signer {
    key: EncodingKey,
    header: Header,
    rules: ClaimRules,
}

impl Signer {
    /// A signer with `secret` (at least [`MIN_SECRET_BYTES`]) and an HMAC `algorithm` (HS256
    /// by default); the tokens name `rules`' issuer and audience.
    pub fn from_secret(
        secret: &[u8],
        algorithm: Option<Algorithm>,
        rules: ClaimRules,
    ) -> Result<Self, KeyError> {
        check_secret(secret)?;
        let key =
            EncodingKey::from_secret(secret).map_err(|e| KeyError::BadSecret(e.to_string()))?;
        let algorithm = choose(AlgorithmFamily::Hmac, algorithm)?;
        Ok(Self {
            key,
            header: Header::new(algorithm),
            rules,
        })
    }

    /// A token for user `sub`, shown as `name` (default: `sub`), issued at `now` and valid for
    /// `ttl` seconds.
    pub fn sign(
        &self,
        sub: &str,
        name: Option<&str>,
        now: u64,
        ttl: u64,
    ) -> Result<String, String> {
        let mut claims = Map::new();
        claims.insert("sub".into(), sub.into());
        if let Some(name) = name {
            claims.insert("name".into(), name.into());
        }
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), now.saturating_add(ttl).into());
        if let Some(issuer) = &self.rules.issuer {
            claims.insert("iss".into(), issuer.as_str().into());
        }
        if let Some(audience) = &self.rules.audience {
            claims.insert("aud".into(), audience.as_str().into());
        }
        jsonwebtoken::encode(&self.header, &claims, &self.key).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn part(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
    }

    /// A token over `claims` signed with `secret` under `header`'s algorithm.
    fn hand_signed(header: Header, claims: Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(secret).expect("key"),
        )
        .expect("signed")
    }

    fn verifier(rules: ClaimRules) -> Verifier {
        Verifier::from_secret(SECRET, None, rules).expect("a verifier")
    }

    fn token(claims: Value) -> String {
        hand_signed(Header::new(Algorithm::HS256), claims, SECRET)
    }

    #[test]
    fn a_good_token_gives_its_identity_and_the_signer_makes_good_tokens() {
        let v = verifier(ClaimRules::default());
        let id = v
            .verify(
                &token(json!({ "sub": "u1", "name": " Ada ", "exp": NOW + 10 })),
                NOW,
            )
            .expect("valid");
        assert_eq!(
            id,
            Identity {
                user: "u1".into(),
                name: "Ada".into(),
                exp: NOW + 10
            }
        );
        let rules = ClaimRules {
            issuer: Some("me".into()),
            audience: Some("chat".into()),
            leeway: 0,
        };
        let signer = Signer::from_secret(SECRET, None, rules.clone()).expect("signer");
        let signed = signer.sign("bob", None, NOW, 60).expect("signed");
        let id = verifier(rules).verify(&signed, NOW).expect("valid");
        assert_eq!(
            (id.user.as_str(), id.name.as_str(), id.exp),
            ("bob", "bob", NOW + 60)
        );
    }

    #[test]
    fn every_refusal_says_why() {
        let leeway = 30;
        let v = verifier(ClaimRules {
            issuer: Some("me".into()),
            audience: Some("chat".into()),
            leeway,
        });
        let good = json!({ "sub": "u1", "exp": NOW + 60, "iss": "me", "aud": "chat" });
        let with = |extra: Value| {
            let mut claims = good.clone();
            for (k, v) in extra.as_object().expect("object") {
                if v.is_null() {
                    claims.as_object_mut().expect("object").remove(k);
                } else {
                    claims[k] = v.clone();
                }
            }
            token(claims)
        };
        let cases: Vec<(String, &str)> = vec![
            (with(json!({ "exp": NOW - leeway - 1 })), "token expired"),
            (
                with(json!({ "nbf": NOW + leeway + 1 })),
                "token not yet valid",
            ),
            (
                with(json!({ "iat": NOW + leeway + 1 })),
                "token issued in the future",
            ),
            (with(json!({ "iss": "other" })), "wrong issuer"),
            (with(json!({ "aud": "other" })), "wrong audience"),
            (with(json!({ "aud": null })), "missing aud"),
            (with(json!({ "sub": null })), "missing sub"),
            (with(json!({ "exp": null })), "missing exp"),
            (
                with(json!({ "sub": 5 })),
                "invalid sub: expected a string, got number",
            ),
            (with(json!({ "sub": "" })), "invalid sub: it is empty"),
            (
                with(json!({ "exp": "soon" })),
                "invalid exp: expected seconds since 1970, got string",
            ),
            (
                with(json!({ "name": "x".repeat(40) })),
                "invalid name: a nickname has at most 32 characters, got 40",
            ),
            (
                hand_signed(
                    Header::new(Algorithm::HS256),
                    good.clone(),
                    b"another secret of thirty-two bytes",
                ),
                "bad signature",
            ),
            (
                format!("{}.{}.", part(&json!({ "alg": "none" })), part(&good)),
                "algorithm not allowed: none (this server accepts HS256)",
            ),
            (
                "a.b".into(),
                "malformed token: expected three parts separated by dots",
            ),
            (
                "!!.b.c".into(),
                "malformed token: the header is not base64url",
            ),
            (
                "x".repeat(MAX_TOKEN_BYTES + 1),
                "token too large: 8193 bytes, the most is 8192",
            ),
        ];
        for (token, why) in cases {
            assert_eq!(
                v.verify(&token, NOW).map_err(|e| e.to_string()),
                Err(why.to_string()),
                "{token}"
            );
        }
        // Within the leeway still passes, on both sides.
        assert!(v.verify(&with(json!({ "exp": NOW - leeway })), NOW).is_ok());
        assert!(v.verify(&with(json!({ "nbf": NOW + leeway })), NOW).is_ok());
        // An array audience naming ours passes.
        assert!(
            v.verify(&with(json!({ "aud": ["x", "chat"] })), NOW)
                .is_ok()
        );
    }

    #[test]
    fn keys_and_algorithms_are_checked_at_start_up() {
        assert_eq!(
            secret_from_file(b"short\n").err(),
            Some(KeyError::ShortSecret(5))
        );
        let mut file = SECRET.to_vec();
        file.extend_from_slice(b"\r\n");
        assert_eq!(secret_from_file(&file), Ok(SECRET));
        assert!(
            Verifier::from_secret(SECRET, Some(Algorithm::RS256), ClaimRules::default()).is_err()
        );
        assert!(Verifier::from_public_pem(b"not a key", None, ClaimRules::default()).is_err());
        assert_eq!(parse_algorithm("EdDSA"), Ok(Algorithm::EdDSA));
        assert!(parse_algorithm("none").is_err());
        let hs512 = Verifier::from_secret(SECRET, Some(Algorithm::HS512), ClaimRules::default())
            .expect("HS512");
        // An HS256 token is refused by an HS512 verifier, whatever its signature.
        assert_eq!(
            hs512
                .verify(&token(json!({ "sub": "u", "exp": NOW })), NOW)
                .map_err(|e| e.to_string()),
            Err("algorithm not allowed: HS256 (this server accepts HS512)".into())
        );
    }
}
