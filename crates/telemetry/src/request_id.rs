//! Request ids: an incoming `x-request-id` is kept when it is sane, else a
//! new UUID is made; either way it is put in the request's extensions (for
//! the request log) and echoed in the response header.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;

pub const HEADER: &str = "x-request-id";
/// Longer ids are replaced: they would bloat every log line.
const MAX_LEN: usize = 128;

/// The id of the current request, readable from request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Returns the incoming id if it is short printable ASCII, else a new one.
pub fn accept_or_generate(incoming: Option<&HeaderValue>) -> String {
    incoming
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= MAX_LEN && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// axum middleware: `.layer(axum::middleware::from_fn(request_id::propagate))`.
pub async fn propagate(mut request: Request, next: Next) -> Response {
    let id = accept_or_generate(request.headers().get(HEADER));
    // The id is ASCII-graphic by construction, so it is a valid header value.
    if let Ok(value) = HeaderValue::from_str(&id) {
        request.headers_mut().insert(HEADER, value.clone());
        request.extensions_mut().insert(RequestId(id));
        let mut response = next.run(request).await;
        response.headers_mut().insert(HEADER, value);
        response
    } else {
        next.run(request).await
    }
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
        assert_eq!(accept_or_generate(None).len(), 36);
    }
}
