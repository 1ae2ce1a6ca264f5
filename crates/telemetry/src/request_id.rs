//! Request ids: an incoming `x-request-id` is kept when it is sane, else a
//! new UUID is made. [`crate::http::TrackLayer`] logs it and echoes it in the
//! response header; the router also passes it upstream.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

pub const HEADER: &str = "x-request-id";
/// [`HEADER`] as a header name: a lookup or insert by `&str` parses it
/// on every request.
pub const HEADER_NAME: HeaderName = HeaderName::from_static(HEADER);
/// Longer ids are replaced: they would bloat every log line.
const MAX_LEN: usize = 128;

/// Returns the incoming id if it is short printable ASCII, else a new UUID.
/// Either way the result is a valid header value whose `to_str` succeeds.
pub fn accept_or_generate(incoming: Option<&HeaderValue>) -> HeaderValue {
    incoming.filter(|v| acceptable(v)).cloned().unwrap_or_else(generate)
}

/// Whether an incoming id is kept: short printable ASCII.
pub fn acceptable(id: &HeaderValue) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.as_bytes().iter().all(|b| b.is_ascii_graphic())
}

/// A random (version 4) UUID. Its bits come from the thread's fast,
/// non-cryptographic generator: a request id must be unique, not secret,
/// and the cryptographic one was a measurable share of a request's cost.
pub fn generate() -> HeaderValue {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let uuid = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    uuid.hyphenated().encode_lower(&mut text);
    // Owned by one shared allocation: the router clones the id three times
    // per request (log line, upstream request, response), and a clone of
    // bytes copied from a slice allocates again.
    // Hex digits and hyphens: always a valid header value.
    HeaderValue::from_maybe_shared(Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid-request-id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        let ok = HeaderValue::from_static("abc-123");
        assert_eq!(accept_or_generate(Some(&ok)), "abc-123");
        let long = HeaderValue::from_str(&"x".repeat(200)).expect("ascii");
        assert_eq!(accept_or_generate(Some(&long)).len(), 36);
        let spaced = HeaderValue::from_static("a b");
        assert_eq!(accept_or_generate(Some(&spaced)).len(), 36);
        let generated = accept_or_generate(None);
        assert_eq!(generated.len(), 36);
        let parsed = uuid::Uuid::parse_str(generated.to_str().expect("ascii")).expect("a UUID");
        assert_eq!(parsed.get_version(), Some(uuid::Version::Random));
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        assert_ne!(generated, accept_or_generate(None));
    }
}
