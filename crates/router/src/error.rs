//! Errors: the HTTP errors of both listeners, as `{"error": "<kind>",
//! "message": "..."}`, the kinds of upstream failure, and an error's cause
//! chain in words.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde_json::{json, Value};

/// Why a request got no answer from its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Refused, unreachable or not connected within the connect timeout (502).
    Connect,
    /// No response head within the request timeout (504).
    Timeout,
    /// The connection broke after the request was sent, or similar (502).
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 3] = [ErrorKind::Connect, ErrorKind::Timeout, ErrorKind::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Other => "other",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Text of an error and its causes, e.g. `cannot connect: Connection
/// refused (os error 111)`.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Builds the JSON error response; `extra` fields are merged into the body.
pub fn json_error(status: StatusCode, kind: &str, message: &str, extra: Option<Value>) -> Response {
    let mut body = json!({ "error": kind, "message": message });
    if let (Some(Value::Object(extra)), Value::Object(body)) = (extra, &mut body) {
        for (k, v) in extra {
            body.entry(k).or_insert(v);
        }
    }
    (status, Json(body)).into_response()
}

/// A proxied request that got no response from its upstream.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UpstreamError {
    pub kind: ErrorKind,
    pub message: String,
}

impl UpstreamError {
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Connect | ErrorKind::Other => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn error_kind(&self) -> &'static str {
        match self.kind {
            ErrorKind::Timeout => "upstream_timeout",
            ErrorKind::Connect | ErrorKind::Other => "upstream_unreachable",
        }
    }
}

impl UpstreamError {
    /// The JSON error response sent to the client.
    pub fn to_response(&self) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        proxy_error_response(self.status(), self.error_kind(), &self.message)
    }
}

/// A proxied request the client got wrong: its body malformed, cut short
/// or stalled. Answered 400 or 408; never counted against the upstream.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl ClientError {
    /// The body could not be read (`why` in plain words).
    pub fn bad_body(why: String) -> Self {
        ClientError {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_request_body",
            message: format!("{why}; the request was not completed"),
        }
    }

    /// The body had not all arrived when the request timeout ran out.
    pub fn stalled(timeout: std::time::Duration) -> Self {
        ClientError {
            status: StatusCode::REQUEST_TIMEOUT,
            kind: "request_body_timeout",
            message: format!(
                "the request body did not arrive within {} ms; the request was not completed",
                timeout.as_millis()
            ),
        }
    }

    pub fn to_response(&self) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        proxy_error_response(self.status, self.kind, &self.message)
    }
}

/// A JSON error of the public listener (plain hyper, no framework).
fn proxy_error_response(
    status: StatusCode,
    kind: &str,
    message: &str,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let body = json!({ "error": kind, "message": message }).to_string();
    let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Errors of the admin API.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    UnknownColor(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("no such admin endpoint")]
    NotFound,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    ForbiddenOrigin(String),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the switch task failed: {0}")]
    Internal(String),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            AdminError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AdminError::UnknownColor(_) => (StatusCode::BAD_REQUEST, "unknown_color"),
            AdminError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            AdminError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            AdminError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            AdminError::ForbiddenOrigin(_) => (StatusCode::FORBIDDEN, "forbidden_origin"),
            AdminError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            AdminError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let mut response = json_error(status, kind, &self.to_string(), None);
        if matches!(self, AdminError::Unauthorized) {
            response
                .headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}
