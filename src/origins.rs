//! Which web pages may open a socket (`--allowed-origins`): the `Origin` header of every
//! engine.io request (the websocket upgrade and each long-polling request) against a list, so
//! that another site cannot open a socket from a visitor's browser (with the visitor's
//! cookies, or a token it lures out of the page).
//!
//! A request without an `Origin` (a non-browser client) is always let through, as is the
//! server's own origin (the `Origin` whose host is the request's `Host`: the page this server
//! serves); `*` lets every origin through (the default, as before the flag). Pure: the router
//! asks, and answers 403 to a refusal.

use std::collections::HashSet;

use axum::http::Uri;

/// Why a `--allowed-origins` entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an origin: scheme://host[:port] with http or https, no path (or * for any)")]
pub struct OriginError(pub String);

/// The origins that may open a socket.
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins {
    /// Every origin (`*`, or no list at all).
    any: bool,
    /// The others, normalized ([`normalize`]).
    listed: HashSet<String>,
}

impl AllowedOrigins {
    /// Every origin.
    pub fn any() -> Self {
        Self {
            any: true,
            listed: HashSet::new(),
        }
    }

    /// The origins of `--allowed-origins`; an empty list is any origin (the default).
    pub fn parse(list: &[String]) -> Result<Self, OriginError> {
        if list.is_empty() || list.iter().any(|entry| entry.trim() == "*") {
            return Ok(Self::any());
        }
        let listed = list
            .iter()
            .map(|entry| normalize(entry.trim()).ok_or_else(|| OriginError(entry.clone())))
            .collect::<Result<_, _>>()?;
        Ok(Self { any: false, listed })
    }

    /// Whether a request with `origin` (its `Origin` header, if any) for `host` (its `Host`
    /// header, if any) may go on.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        if self.any {
            return true;
        }
        // `null` (a sandboxed frame, a file) and anything unparsable normalize to nothing.
        let Some(normalized) = normalize(origin) else {
            return false;
        };
        if self.listed.contains(&normalized) {
            return true;
        }
        // The server's own page: the origin's host is the one the request was sent to.
        let scheme = normalized.split("://").next().unwrap_or("http");
        host.and_then(|host| normalize(&format!("{scheme}://{host}")))
            .is_some_and(|own| own == normalized)
    }
}

/// `scheme://host[:port]` in one spelling: lower case, without the scheme's default port;
/// `None` for anything else (another scheme, a path, a query, user info, no host).
fn normalize(origin: &str) -> Option<String> {
    let uri: Uri = origin.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = uri.authority()?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    let path = uri.path_and_query().map_or("", |p| p.as_str());
    if !(path.is_empty() || path == "/") {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    Some(match authority.port_u16() {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Result<AllowedOrigins, OriginError> {
        AllowedOrigins::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn listed_origins_pass_in_any_spelling_and_others_do_not() -> Result<(), OriginError> {
        let allowed = list(&["https://Chat.Example.com", "http://localhost:8080"])?;
        for origin in [
            "https://chat.example.com",
            "https://chat.example.com:443",
            "HTTPS://CHAT.EXAMPLE.COM",
            "http://localhost:8080",
        ] {
            assert!(
                allowed.allows(Some(origin), Some("tidings.internal:3000")),
                "{origin}"
            );
        }
        for origin in [
            "https://evil.example",
            "http://chat.example.com",
            "https://chat.example.com:8443",
            "http://localhost",
            "null",
            "",
            "https://chat.example.com.evil.example",
        ] {
            assert!(
                !allowed.allows(Some(origin), Some("tidings.internal:3000")),
                "{origin}"
            );
        }
        Ok(())
    }

    #[test]
    fn no_origin_and_the_server_s_own_always_pass() -> Result<(), OriginError> {
        let allowed = list(&["https://chat.example.com"])?;
        assert!(allowed.allows(None, Some("tidings.internal:3000")));
        assert!(allowed.allows(Some("http://127.0.0.1:3000"), Some("127.0.0.1:3000")));
        assert!(allowed.allows(Some("https://tidings.example"), Some("tidings.example")));
        assert!(allowed.allows(Some("http://tidings.example"), Some("tidings.example:80")));
        assert!(!allowed.allows(Some("http://127.0.0.1:3001"), Some("127.0.0.1:3000")));
        assert!(!allowed.allows(Some("http://127.0.0.1:3000"), None));
        Ok(())
    }

    #[test]
    fn star_or_nothing_is_any_origin_and_bad_entries_are_named() {
        assert!(list(&[]).is_ok_and(|a| a.allows(Some("https://x.example"), None)));
        assert!(list(&["*"]).is_ok_and(|a| a.allows(Some("null"), None)));
        for bad in [
            "chat.example.com",
            "ftp://x.example",
            "https://x.example/chat",
            "https://u@x.example",
            "https://",
        ] {
            assert_eq!(
                list(&[bad]).err(),
                Some(OriginError(bad.to_string())),
                "{bad}"
            );
        }
    }
}
