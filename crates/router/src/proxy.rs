//! The public listener: every request goes to the active color, streamed
//! both ways, and answers 502/504 with a JSON body when the upstream fails.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use vigie_telemetry::{request_id, Color};

use crate::error::UpstreamError;
use crate::headers::{add_forwarded, remove_hop_by_hop, X_REQUEST_ID, X_VIGIE_COLOR};
use crate::metrics::{ErrorKind, RouterMetrics};
use crate::routing::Routing;
use crate::upstream::{InFlight, Upstream};

/// Shared by every proxied request.
pub struct Proxy {
    pub routing: Arc<Routing>,
    pub metrics: RouterMetrics,
    /// Longest wait for an upstream's response head.
    pub request_timeout: Duration,
}

impl Proxy {
    /// Counts the request in flight on the active color. If a switch moved
    /// the color in between, it starts over on the new one, so a switch that
    /// saw no request in flight on the old color really has drained it.
    fn begin(&self) -> InFlight {
        loop {
            let flight = self.routing.active_upstream().begin();
            if self.routing.active() == flight.upstream().color {
                return flight;
            }
        }
    }
}

/// axum handler for every path of the public listener.
pub async fn handle(
    State(proxy): State<Arc<Proxy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let id = request_id::accept_or_generate(request.headers().get(X_REQUEST_ID));
    // Ids from `accept_or_generate` are short printable ASCII: always valid.
    let id_header = HeaderValue::from_str(&id).ok();
    let flight = proxy.begin();
    let upstream = Arc::clone(flight.upstream());
    let mut exchange = Exchange {
        start: Instant::now(),
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        request_id: id,
        color: upstream.color,
        status: STATUS_CLIENT_CLOSED,
        error: None,
        metrics: proxy.metrics.clone(),
        _flight: flight,
    };
    match forward(&upstream, request, peer, id_header.clone(), proxy.request_timeout).await {
        Ok(response) => {
            exchange.status = response.status().as_u16();
            let (mut parts, body) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            parts.headers.insert(X_VIGIE_COLOR, HeaderValue::from_static(upstream.color.as_str()));
            if let Some(id) = id_header {
                parts.headers.insert(X_REQUEST_ID, id);
            }
            // The exchange rides along with the body: the request stays in
            // flight (and unlogged) until the last byte is sent or the client
            // goes away, which is what a switch must wait for.
            let body = body.map_frame(move |frame| {
                let _ = &exchange;
                frame
            });
            Response::from_parts(parts, Body::new(body))
        }
        Err(error) => {
            proxy.metrics.upstream_error(upstream.color, error.kind);
            exchange.status = error.status().as_u16();
            exchange.error = Some(error.message.clone());
            let mut response = error.into_response();
            response.headers_mut().insert(X_VIGIE_COLOR, HeaderValue::from_static(upstream.color.as_str()));
            if let Some(id) = id_header {
                response.headers_mut().insert(X_REQUEST_ID, id);
            }
            response
        }
    }
}

/// Sends the request upstream and waits for the response head.
async fn forward(
    upstream: &Upstream,
    request: Request,
    peer: SocketAddr,
    request_id: Option<HeaderValue>,
    timeout: Duration,
) -> Result<http::Response<Incoming>, UpstreamError> {
    let (mut parts, body) = request.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = upstream.url.uri(path_and_query).map_err(|e| UpstreamError {
        kind: ErrorKind::Other,
        message: format!("cannot build the upstream URL: {e}"),
    })?;
    // The upstream connection is HTTP/1.1 whatever the client spoke.
    parts.version = Version::HTTP_11;
    remove_hop_by_hop(&mut parts.headers);
    add_forwarded(&mut parts.headers, peer.ip());
    if let Some(id) = request_id {
        parts.headers.insert(X_REQUEST_ID, id);
    }
    // An idempotent request without a body can be sent again when its
    // connection broke under it (e.g. the backend closed a pooled connection
    // just as the request went out). A body is streamed, so it cannot be.
    let replay = (is_idempotent(&parts.method) && body.is_end_stream()).then(|| {
        let mut again = http::Request::new(Body::empty());
        *again.method_mut() = parts.method.clone();
        *again.uri_mut() = parts.uri.clone();
        *again.version_mut() = parts.version;
        *again.headers_mut() = parts.headers.clone();
        again
    });
    let exchange = async {
        match upstream.client.request(http::Request::from_parts(parts, body)).await {
            Err(error) if replay.is_some() && is_retryable(&error) => {
                tracing::debug!(color = %upstream.color, error = %crate::health::describe(&error), "retrying an idempotent request once");
                match replay {
                    Some(again) => upstream.client.request(again).await,
                    None => Err(error),
                }
            }
            other => other,
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => Err(classify(upstream, &error)),
        Err(_) => Err(UpstreamError {
            kind: ErrorKind::Timeout,
            message: format!("{} did not answer within {} ms", upstream.color, timeout.as_millis()),
        }),
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// A connection that closed or broke under the request, as opposed to a
/// refused connect (retrying that immediately would fail the same way).
fn is_retryable(error: &hyper_util::client::legacy::Error) -> bool {
    if error.is_connect() {
        return false;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>() {
            return hyper_error.is_incomplete_message() || hyper_error.is_canceled() || hyper_error.is_closed();
        }
        source = cause.source();
    }
    false
}

fn classify(upstream: &Upstream, error: &hyper_util::client::legacy::Error) -> UpstreamError {
    let detail = crate::health::describe(error);
    if error.is_connect() {
        UpstreamError { kind: ErrorKind::Connect, message: format!("cannot connect to {}: {detail}", upstream.color) }
    } else {
        UpstreamError { kind: ErrorKind::Other, message: format!("{} failed: {detail}", upstream.color) }
    }
}

/// nginx's code for a client that went away before the response.
const STATUS_CLIENT_CLOSED: u16 = 499;

/// One proxied request; logged and measured when dropped, i.e. when its
/// response is fully sent, failed, or abandoned by the client.
struct Exchange {
    start: Instant,
    method: Method,
    path: String,
    request_id: String,
    color: Color,
    status: u16,
    error: Option<String>,
    metrics: RouterMetrics,
    _flight: InFlight,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed().as_secs_f64();
        self.metrics.observe_request(self.color, self.status, elapsed);
        let duration_ms = (elapsed * 1_000_000.0).round() / 1000.0;
        // An Option field is left out of the line when None.
        let error = self.error.as_deref();
        macro_rules! log {
            ($level:expr) => {
                tracing::event!(
                    target: "http", $level,
                    method = %self.method, path = %self.path, status = self.status, duration_ms,
                    request_id = %self.request_id, upstream_color = %self.color, error,
                    "request"
                )
            };
        }
        match self.status {
            500.. => log!(tracing::Level::ERROR),
            400..=499 => log!(tracing::Level::WARN),
            _ => log!(tracing::Level::INFO),
        }
    }
}
