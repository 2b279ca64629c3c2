//! Whose connection it is: the client's address, also behind a reverse proxy
//! (`--trusted-proxies`), for the per-address limit (`--max-connections-per-ip`) and the
//! connection log lines.
//!
//! The peer of a TCP connection is the client, unless the peer is a trusted proxy: then the
//! client is the last address in `X-Forwarded-For` that is not a trusted proxy (each proxy
//! appends the address it got the request from, so the entries to the right of the first
//! untrusted one were written by proxies we trust, and those to the left by whoever could
//! write anything). A header from an untrusted peer is ignored: anyone can send one.
//!
//! engine.io keeps nothing of a request but its URI for the life of a socket (the server
//! drops the headers to save memory), so the HTTP layer writes the address it found into the
//! engine.io request's query ([`tag`]: `tidings_client=ADDR`, replacing any a client sent)
//! and admission reads it back ([`tagged`]). Pure.

use std::net::IpAddr;

use axum::extract::connect_info::Connected;
use axum::http::Uri;
use axum::serve::IncomingStream;
use ipnet::IpNet;

/// The TCP peer of a connection, as axum hands it to each request (`ConnectInfo<Peer>`),
/// whatever the listener (plain TCP or TLS).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

impl Connected<IncomingStream<'_, crate::tls::PlainListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, crate::tls::PlainListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, crate::tls::TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// The query parameter carrying the client's address from the HTTP layer to admission.
const PARAM: &str = "tidings_client";

/// Why a `--trusted-proxies` entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address or a network (10.0.0.0/8, 127.0.0.1, ::1)")]
pub struct ProxyError(pub String);

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// The networks of `--trusted-proxies` (an address alone is a network of one).
    pub fn parse(list: &[String]) -> Result<Self, ProxyError> {
        list.iter()
            .map(|entry| {
                let entry = entry.trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| ProxyError(entry.to_string()))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client of a request from `peer` carrying `forwarded_for` (its `X-Forwarded-For`
    /// headers, joined by commas).
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let Some(forwarded_for) = forwarded_for else {
            return peer;
        };
        let mut client = peer;
        for entry in forwarded_for.rsplit(',') {
            let Some(address) = parse_forwarded(entry) else {
                // Garbage: nothing to its left can be told apart from what anyone wrote.
                return client;
            };
            client = address;
            if !self.trusts(address) {
                return address;
            }
        }
        client
    }
}

/// An IPv4 address mapped into IPv6 (a dual-stack socket's view) as the IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: an address, perhaps `[v6]` or with a port.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Some(canonical(address));
    }
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|socket| canonical(socket.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|v6| v6.parse().ok())
                .map(canonical)
        })
}

/// `uri` with `client` as its [`PARAM`] (any the client sent is dropped).
pub fn tag(uri: &Uri, client: IpAddr) -> Option<Uri> {
    let mut query: Vec<&str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(PARAM))
        .collect();
    let param = format!("{PARAM}={client}");
    query.push(&param);
    format!("{}?{}", uri.path(), query.join("&")).parse().ok()
}

/// The client address [`tag`] wrote into `uri`, if any.
pub fn tagged(uri: &Uri) -> Option<IpAddr> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == PARAM)
        .and_then(|(_, value)| value.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|e| e.to_string()).collect::<Vec<_>>())
            .unwrap_or_default()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        // From the proxy: the client it names.
        assert_eq!(
            trusted.client(ip("127.0.0.1"), Some("203.0.113.7")),
            ip("203.0.113.7")
        );
        // Through two of ours: the first address that is not ours, from the right.
        assert_eq!(
            trusted.client(ip("10.0.0.2"), Some("198.51.100.1, 203.0.113.7, 10.0.0.9")),
            ip("203.0.113.7")
        );
        // From anyone else: the header is theirs to invent, the peer is the client.
        assert_eq!(
            trusted.client(ip("203.0.113.9"), Some("1.2.3.4")),
            ip("203.0.113.9")
        );
        // No header, or garbage in it: the last address that can be believed.
        assert_eq!(trusted.client(ip("127.0.0.1"), None), ip("127.0.0.1"));
        assert_eq!(
            trusted.client(ip("127.0.0.1"), Some("nonsense")),
            ip("127.0.0.1")
        );
        assert_eq!(
            trusted.client(ip("127.0.0.1"), Some("9.9.9.9, [2001:db8::1]:443")),
            ip("2001:db8::1")
        );
        // No trusted proxies (the default): the peer, always.
        assert_eq!(
            TrustedProxies::default().client(ip("127.0.0.1"), Some("1.2.3.4")),
            ip("127.0.0.1")
        );
        // A dual-stack socket's mapped address is its IPv4 address.
        assert_eq!(
            trusted.client(ip("::ffff:127.0.0.1"), Some("1.2.3.4")),
            ip("1.2.3.4")
        );
    }

    #[test]
    fn bad_entries_are_named() {
        let parsed = TrustedProxies::parse(&["10.0.0.0/33".to_string()]);
        assert_eq!(parsed.err(), Some(ProxyError("10.0.0.0/33".into())));
        assert!(TrustedProxies::parse(&[" ::1 ".to_string(), "fd00::/8".to_string()]).is_ok());
    }

    #[test]
    fn the_address_rides_in_the_query_and_a_client_cannot_forge_it() {
        let uri: Uri = "/socket.io/?EIO=4&transport=websocket&tidings_client=6.6.6.6"
            .parse()
            .unwrap_or_default();
        let tagged_uri = tag(&uri, ip("203.0.113.7")).unwrap_or_default();
        assert_eq!(tagged(&tagged_uri), Some(ip("203.0.113.7")));
        assert_eq!(
            tagged_uri.to_string(),
            "/socket.io/?EIO=4&transport=websocket&tidings_client=203.0.113.7"
        );
        let bare: Uri = "/socket.io/".parse().unwrap_or_default();
        assert_eq!(
            tagged(&tag(&bare, ip("::1")).unwrap_or_default()),
            Some(ip("::1"))
        );
        assert_eq!(tagged(&bare), None);
    }
}
