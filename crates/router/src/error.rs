//! HTTP errors of both listeners, as `{"error": "<kind>", "message": "..."}`.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde_json::{json, Value};

use crate::metrics::ErrorKind;

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
        let body = json!({ "error": self.error_kind(), "message": self.message }).to_string();
        let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response
    }
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
