//! Header rewriting between the client and the upstream: hop-by-hop
//! headers stay on their hop (RFC 9110 §7.6.1), the client address is
//! appended to `X-Forwarded-For`, and the request id travels upstream.

use std::net::IpAddr;

use http::header::Entry;
use http::header::{
    HeaderName, HeaderValue, CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING,
    UPGRADE,
};
use http::HeaderMap;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_VIGIE_COLOR: HeaderName = HeaderName::from_static("x-vigie-color");
pub const X_REQUEST_ID: HeaderName = vigie_telemetry::request_id::HEADER_NAME;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The hop-by-hop fields every message may carry.
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Removes the hop-by-hop headers, including those named in `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over their few fields costs less
    // than nine removals by name, each hashing it (bench/instructions.sh).
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.into_iter().chain(HOP_BY_HOP) {
        headers.remove(name);
    }
}

/// The client's address as an `X-Forwarded-For` value, formatted once per
/// connection rather than per request.
#[derive(Clone)]
pub struct ClientAddr(HeaderValue);

impl ClientAddr {
    pub fn new(ip: IpAddr) -> Self {
        // An IP address is always a valid header value.
        ClientAddr(HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown")))
    }
}

/// Appends the client to `X-Forwarded-For` and sets `X-Forwarded-Proto`
/// unless a proxy in front of us already did (we only speak plain HTTP).
/// One lookup per field, through the entry API.
pub fn add_forwarded(headers: &mut HeaderMap, client: &ClientAddr) {
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Vacant(entry) => {
            entry.insert(client.0.clone());
        }
        Entry::Occupied(mut entry) => {
            let appended = match entry.get().to_str() {
                Ok(existing) if !existing.trim().is_empty() => {
                    let client = client.0.to_str().unwrap_or_default();
                    // A valid previous value and an address make a valid value.
                    HeaderValue::from_str(&format!("{existing}, {client}")).ok()
                }
                _ => Some(client.0.clone()),
            };
            if let Some(value) = appended {
                entry.insert(value);
            }
        }
    }
    headers
        .entry(X_FORWARDED_PROTO)
        .or_insert_with(|| HeaderValue::from_static("http"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_hop_by_hop_headers_and_those_named_in_connection() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers["x-kept"], "yes");
        // A hop-by-hop field alone, without Connection, goes too.
        let mut headers = HeaderMap::new();
        headers.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
    }

    #[test]
    fn appends_the_client_to_forwarded_for_and_keeps_a_given_proto() {
        let mut headers = HeaderMap::new();
        add_forwarded(&mut headers, &ClientAddr::new("127.0.0.1".parse().expect("ip")));
        assert_eq!(headers[&X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(headers[&X_FORWARDED_PROTO], "http");
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        add_forwarded(&mut headers, &ClientAddr::new("::1".parse().expect("ip")));
        assert_eq!(headers[&X_FORWARDED_FOR], "127.0.0.1, ::1");
        assert_eq!(headers[&X_FORWARDED_PROTO], "https");
    }
}
