//! Header rewriting between the client and the upstream: hop-by-hop
//! headers stay on their hop (RFC 9110 §7.6.1), the client address is
//! appended to `X-Forwarded-For`, and the request id travels upstream.
//!
//! These names are not ones `http` knows: looking one up in a header map,
//! or inserting it, hashes every byte of it, and an insertion past the
//! room of a map parsed with just the client's fields regrows it. For the
//! few fields of a request or response, one pass comparing names costs
//! less, and the fields a request lacked go upstream after its own
//! instead of into its map (bench/callgrind.sh; docs/benchmarks.md).
//!
//! Fields named in `Connection` go first, before anything else reads the
//! request: an `X-Request-Id` or `traceparent` a client marks as
//! hop-by-hop is not used.

use std::net::IpAddr;

use http::header::{
    HeaderName, HeaderValue, CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING,
    UPGRADE,
};
use http::HeaderMap;
use vigie_telemetry::request_id;

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

/// The fields a request lacked that go upstream after its own.
#[derive(Default)]
pub struct Added {
    forwarded_for: Option<HeaderValue>,
    forwarded_proto: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
}

impl Added {
    /// The fields, in the order they are sent.
    pub fn fields(&self) -> impl Iterator<Item = (HeaderName, &HeaderValue)> + Clone {
        [
            (X_FORWARDED_FOR, self.forwarded_for.as_ref()),
            (X_FORWARDED_PROTO, self.forwarded_proto.as_ref()),
            (X_REQUEST_ID, self.request_id.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
    }
}

/// Readies a request's fields for the upstream: hop-by-hop fields go, the
/// client is appended to the last `X-Forwarded-For`, `X-Forwarded-Proto`
/// is set unless a proxy in front of us did (we only speak plain HTTP),
/// and `X-Request-Id` carries the request id: the client's if
/// [`request_id::acceptable`] (the first, if it sent several), else a new
/// one. Fields the request has are changed in place; the ones it lacks are
/// returned, with the request id.
pub fn for_upstream(headers: &mut HeaderMap, client: &ClientAddr) -> (HeaderValue, Added) {
    remove_hop_by_hop(headers);
    let mut last_forwarded_for = None;
    let mut has_proto = false;
    let mut id = None;
    let mut more_ids = false;
    for (name, value) in headers.iter_mut() {
        if *name == X_FORWARDED_FOR {
            last_forwarded_for = Some(value);
        } else if *name == X_FORWARDED_PROTO {
            has_proto = true;
        } else if *name == X_REQUEST_ID {
            if id.is_some() {
                more_ids = true;
                continue;
            }
            if !request_id::acceptable(value) {
                *value = request_id::generate();
            }
            id = Some(value.clone());
        }
    }
    let mut added = Added::default();
    match last_forwarded_for {
        Some(last) => *last = appended(last, client),
        None => added.forwarded_for = Some(client.0.clone()),
    }
    if !has_proto {
        added.forwarded_proto = Some(HeaderValue::from_static("http"));
    }
    let id = match id {
        Some(id) => {
            if more_ids {
                headers.insert(X_REQUEST_ID, id.clone());
            }
            id
        }
        None => {
            let id = request_id::generate();
            added.request_id = Some(id.clone());
            id
        }
    };
    (id, added)
}

/// An `X-Forwarded-For` value with the client after it; the client alone
/// if the value is empty or not text.
fn appended(existing: &HeaderValue, client: &ClientAddr) -> HeaderValue {
    let address = client.0.to_str().unwrap_or_default();
    match existing.to_str() {
        // A valid previous value and an address make a valid value.
        Ok(existing) if !existing.trim().is_empty() => {
            HeaderValue::from_str(&format!("{existing}, {address}")).unwrap_or_else(|_| client.0.clone())
        }
        _ => client.0.clone(),
    }
}

/// Sets `name` to `value`, found by a pass over the fields rather than a
/// lookup by name; for a field the map most likely has once (an upstream
/// echoes the `X-Request-Id` it was sent).
pub fn set_present(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    let mut found = headers.iter_mut().filter(|(n, _)| **n == name).map(|(_, v)| v);
    if let (Some(only), None) = (found.next(), found.next()) {
        *only = value;
        return;
    }
    headers.insert(name, value);
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

    /// The fields that go upstream: the map's, then the added ones.
    fn upstream_fields(headers: &HeaderMap, added: &Added) -> Vec<(String, String)> {
        let text = |name: &HeaderName, value: &HeaderValue| {
            (name.as_str().to_owned(), value.to_str().expect("text").to_owned())
        };
        headers
            .iter()
            .map(|(n, v)| text(n, v))
            .chain(added.fields().map(|(n, v)| text(&n, v)))
            .collect()
    }

    fn pairs(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_bare_request_gets_the_forwarding_fields_and_a_new_id_added() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("router"));
        let (id, added) = for_upstream(&mut headers, &ClientAddr::new("127.0.0.1".parse().expect("ip")));
        assert_eq!(id.len(), 36, "a new UUID: {id:?}");
        assert_eq!(headers.len(), 1, "the map is left as it was: {headers:?}");
        let id = id.to_str().expect("text");
        assert_eq!(
            upstream_fields(&headers, &added),
            pairs(&[
                ("host", "router"),
                ("x-forwarded-for", "127.0.0.1"),
                ("x-forwarded-proto", "http"),
                ("x-request-id", id),
            ])
        );
    }

    #[test]
    fn given_fields_are_kept_or_changed_in_place_and_hop_by_hop_ones_go() {
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert("x-request-id", HeaderValue::from_static("abc-123"));
        headers.insert(CONNECTION, HeaderValue::from_static("x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        let (id, added) = for_upstream(&mut headers, &ClientAddr::new("::1".parse().expect("ip")));
        assert_eq!(id, "abc-123");
        // The client joins the list after the last address given.
        assert_eq!(
            upstream_fields(&headers, &added),
            pairs(&[
                ("x-forwarded-for", "10.0.0.1"),
                ("x-forwarded-for", "10.0.0.2, ::1"),
                ("x-forwarded-proto", "https"),
                ("x-request-id", "abc-123"),
            ])
        );
    }

    #[test]
    fn an_unacceptable_or_repeated_request_id_leaves_one_id_upstream() {
        let client = ClientAddr::new("127.0.0.1".parse().expect("ip"));
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("has space"));
        headers.insert("x-forwarded-for", HeaderValue::from_static(" "));
        let (id, added) = for_upstream(&mut headers, &client);
        assert_eq!(id.len(), 36, "replaced by a new UUID: {id:?}");
        assert_eq!(headers.get_all("x-request-id").iter().collect::<Vec<_>>(), [&id]);
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1", "an empty list is replaced");
        assert_eq!(added.fields().map(|(n, _)| n).collect::<Vec<_>>(), [X_FORWARDED_PROTO]);

        let mut headers = HeaderMap::new();
        headers.append("x-request-id", HeaderValue::from_static("first"));
        headers.append("x-request-id", HeaderValue::from_static("second"));
        let (id, added) = for_upstream(&mut headers, &client);
        assert_eq!(id, "first");
        assert_eq!(headers.get_all("x-request-id").iter().collect::<Vec<_>>(), [&id]);
        assert!(added.fields().all(|(n, _)| n != X_REQUEST_ID));
    }

    #[test]
    fn set_present_replaces_the_field_or_adds_it() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        set_present(&mut headers, X_REQUEST_ID, HeaderValue::from_static("a"));
        assert_eq!(headers[&X_REQUEST_ID], "a");
        set_present(&mut headers, X_REQUEST_ID, HeaderValue::from_static("b"));
        assert_eq!(headers.get_all(&X_REQUEST_ID).iter().collect::<Vec<_>>(), ["b"]);
        headers.append(X_REQUEST_ID, HeaderValue::from_static("c"));
        set_present(&mut headers, X_REQUEST_ID, HeaderValue::from_static("d"));
        assert_eq!(headers.get_all(&X_REQUEST_ID).iter().collect::<Vec<_>>(), ["d"]);
        assert_eq!(headers.len(), 2);
    }
}
