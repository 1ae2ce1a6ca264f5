//! Proxying one request to the active color, streamed both ways, with a
//! 502/504 JSON answer when the upstream fails.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, Version};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::KeyValue;
use vigie_telemetry::http::method_label;
use vigie_telemetry::traces::{self, Traces};
use vigie_telemetry::Color;

use crate::error::{ClientError, ErrorKind, UpstreamError};
use crate::h1::ExchangeError;
use crate::headers::{for_upstream, remove_hop_by_hop, set_present, Added, ClientAddr, X_REQUEST_ID, X_VIGIE_COLOR};
use crate::metrics::RouterMetrics;
use crate::pool::{ResponseBody, SendError};
use crate::routing::Routing;
use crate::upload;
use crate::upstream::{InFlight, Upstream};

/// What the client receives: the upstream's body, or a JSON error.
pub type ClientBody = Either<Box<Tracked>, Full<Bytes>>;

/// Shared by every proxied request.
pub struct Proxy {
    pub routing: Arc<Routing>,
    pub metrics: RouterMetrics,
    /// Longest wait for an upstream's response head.
    pub request_timeout: Duration,
    /// OpenTelemetry export; off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    pub traces: Traces,
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

/// Handles one request of the public listener; never fails.
pub async fn handle(
    proxy: Arc<Proxy>,
    client: ClientAddr,
    request: Request<Incoming>,
) -> Result<Response<ClientBody>, Infallible> {
    let (mut parts, body) = request.into_parts();
    let (id, added) = for_upstream(&mut parts.headers, &client);
    let flight = proxy.begin();
    let upstream = Arc::clone(flight.upstream());
    let color_header = HeaderValue::from_static(upstream.color.as_str());
    // The proxy span continues an incoming W3C traceparent; the upstream
    // request carries this span as its parent. With tracing off, an incoming
    // traceparent passes through untouched.
    // A request whose incoming parent is unsampled gets no span (the
    // sampler follows the parent): its traceparent passes through as is.
    let trace = proxy.traces.tracer().and_then(|_| {
        let parent = traces::extract(&parts.headers);
        let tracer = proxy.traces.tracer_for(&parent)?;
        let mut span = tracer
            .span_builder(traces::SPAN_NAME_PENDING)
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, &parent);
        // Names and attributes cost allocations: only for sampled spans.
        if span.is_recording() {
            let method = method_label(&parts.method);
            span.update_name(format!("{method} proxy"));
            span.set_attributes([
                KeyValue::new("http.request.method", method),
                KeyValue::new("url.path", parts.uri.path().to_owned()),
                KeyValue::new("vigie.upstream.color", upstream.color.as_str()),
                KeyValue::new("vigie.upstream.url", upstream.url_attribute.clone()),
            ]);
        }
        Some(parent.with_span(span))
    });
    let mut exchange = Exchange {
        start: Instant::now(),
        method: parts.method.clone(),
        // A clone shares the parsed request's bytes: no copy of the path.
        uri: parts.uri.clone(),
        request_id: id.clone(),
        color: upstream.color,
        status: STATUS_CLIENT_CLOSED,
        error: None,
        proxy: Arc::clone(&proxy),
        trace: trace.clone(),
        _flight: flight,
    };
    // The response is built where it is returned, its body boxed: each
    // move of it (hyper's dispatcher makes several) then copies its head
    // and a pointer, not the body and its exchange (a few hundred bytes).
    let mut response = match forward(&upstream, parts, body, &added, proxy.request_timeout, trace.as_ref()).await {
        Ok(response) => {
            exchange.status = response.status().as_u16();
            let (mut parts, body) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            stamp(&mut parts.headers, color_header, id);
            // The exchange rides along with the body: the request stays in
            // flight (and unlogged) until the last byte is sent or the client
            // goes away, which is what a switch must wait for.
            return Ok(Response::from_parts(
                parts,
                Either::Left(Box::new(Tracked {
                    inner: body,
                    idle_timeout: proxy.request_timeout,
                    idle: None,
                    frame_since_armed: false,
                    exchange,
                })),
            ));
        }
        Err(Failed::Upstream(error)) => {
            proxy.metrics.upstream_error(upstream.color, error.kind);
            exchange.status = error.status().as_u16();
            exchange.error = Some(error.message.clone());
            error.to_response()
        }
        Err(Failed::Client(error)) => {
            exchange.status = error.status.as_u16();
            exchange.error = Some(error.message.clone());
            error.to_response()
        }
    };
    drop(exchange);
    stamp(response.headers_mut(), color_header, id);
    Ok(response.map(Either::Right))
}

/// The fields the router adds to every response: the color that answered
/// and the request id.
fn stamp(headers: &mut http::HeaderMap, color: HeaderValue, id: HeaderValue) {
    headers.insert(X_VIGIE_COLOR, color);
    set_present(headers, X_REQUEST_ID, id);
}

/// Why a proxied request got no response from its upstream, by whose fault.
enum Failed {
    Upstream(UpstreamError),
    Client(ClientError),
}

/// Sends the request (its fields readied by [`for_upstream`], which
/// returned `added`) upstream and waits for the response head.
async fn forward(
    upstream: &Upstream,
    mut parts: http::request::Parts,
    body: Incoming,
    added: &Added,
    timeout: Duration,
    trace: Option<&opentelemetry::Context>,
) -> Result<Response<ResponseBody>, Failed> {
    // The upstream is a server, not a proxy: it gets the origin form
    // (`/path?query`) even if the client sent an absolute URI.
    if parts.uri.scheme().is_some() {
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = http::Uri::try_from(path_and_query).map_err(|e| {
            Failed::Upstream(UpstreamError {
                kind: ErrorKind::Other,
                message: format!("cannot build the upstream URL: {e}"),
            })
        })?;
    }
    // The upstream connection is HTTP/1.1 whatever the client spoke.
    parts.version = Version::HTTP_11;
    if let Some(cx) = trace {
        traces::inject(cx, &mut parts.headers);
    }
    // The pool sends an idempotent request without a body again when a
    // kept-alive connection turns out closed; one with a body is streamed,
    // so it cannot be.
    let (body, upload) = upload::watched(body);
    let request = Request::from_parts(parts, Either::Left(body));
    match upstream.pool.send(request, added.fields(), timeout).await {
        Ok(response) => Ok(response),
        // The upstream waits for the rest of the body: the client stalled.
        Err(SendError::TimedOut(_)) if upload.stalled_by_client() => Err(Failed::Client(ClientError::stalled(timeout))),
        // The client's body broke first: the upstream only saw it break.
        Err(error) => Err(match upload.failure() {
            Some(why) => Failed::Client(ClientError::bad_body(why)),
            None => Failed::Upstream(classify(upstream, &error)),
        }),
    }
}

/// The upstream failure in plain words: what happened, not the HTTP
/// library's chain of errors ("cannot connect: Connection refused (os
/// error 111)" is "cannot connect to blue: connection refused").
fn classify(upstream: &Upstream, error: &SendError) -> UpstreamError {
    let color = upstream.color;
    let what = match error {
        SendError::Connect(e) => {
            return UpstreamError {
                kind: ErrorKind::Connect,
                message: format!("cannot connect to {color}: {}", root_cause(e)),
            }
        }
        SendError::TimedOut(timeout) => {
            return UpstreamError {
                kind: ErrorKind::Timeout,
                message: format!("{color} did not answer within {} ms", timeout.as_millis()),
            }
        }
        SendError::Http(e) if e.is_incomplete_message() => {
            "closed the connection before its response was complete".to_owned()
        }
        SendError::Http(e) if e.is_parse() => "sent a response that is not valid HTTP".to_owned(),
        SendError::Http(e) if e.is_closed() || e.is_canceled() => "closed the connection".to_owned(),
        SendError::Http(e) => format!("failed: {}", root_cause(e)),
        SendError::Exchange(ExchangeError::Closed) => "closed the connection".to_owned(),
        SendError::Exchange(ExchangeError::Incomplete) => {
            "closed the connection before its response was complete".to_owned()
        }
        SendError::Exchange(ExchangeError::Invalid(what)) => format!("sent {what}"),
        SendError::Exchange(ExchangeError::Io(e)) => format!("failed: {}", root_cause(e)),
        // The pool reports a timed out exchange as `SendError::TimedOut`.
        SendError::Exchange(ExchangeError::TimedOut) => {
            return UpstreamError {
                kind: ErrorKind::Timeout,
                message: format!("{color} did not answer in time"),
            }
        }
    };
    UpstreamError {
        kind: ErrorKind::Other,
        message: format!("{color} {what}"),
    }
}

/// The innermost error's text, without the OS error number.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = error;
    while let Some(cause) = inner.source() {
        inner = cause;
    }
    let text = inner.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_lowercase(),
        None => text.to_lowercase(),
    }
}

/// An upstream response body that keeps its [`Exchange`] alive, and gives
/// up when the upstream sends nothing for `idle_timeout` (the request
/// timeout), so a stalled body cannot hold the client forever.
pub struct Tracked {
    inner: ResponseBody,
    idle_timeout: Duration,
    /// Armed the first time the body has to wait: a response whose body
    /// came with its head never touches the timer or the clock.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A frame arrived since the timer was armed: the next wait re-arms it
    /// (the clock is read per wait, not per frame).
    frame_since_armed: bool,
    exchange: Exchange,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        // Every field is Unpin, so no pin projection is needed.
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.frame_since_armed = true;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                match &mut this.idle {
                    None => this.idle = Some(Box::pin(tokio::time::sleep(this.idle_timeout))),
                    Some(idle) if this.frame_since_armed => {
                        idle.as_mut().reset(tokio::time::Instant::now() + this.idle_timeout);
                    }
                    Some(_) => {}
                }
                this.frame_since_armed = false;
                let Some(idle) = this.idle.as_mut() else {
                    return Poll::Pending;
                };
                if idle.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let message = format!(
                    "{} sent no response body data for {} ms",
                    this.exchange.color,
                    this.idle_timeout.as_millis()
                );
                this.exchange
                    .proxy
                    .metrics
                    .upstream_error(this.exchange.color, ErrorKind::Timeout);
                this.exchange.error = Some(message.clone());
                // An error ends the response: hyper closes the client connection.
                Poll::Ready(Some(Err(message.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// nginx's code for a client that went away before the response.
const STATUS_CLIENT_CLOSED: u16 = 499;

/// One proxied request; logged and measured when dropped, i.e. when its
/// response is fully sent, failed, or abandoned by the client.
struct Exchange {
    start: Instant,
    method: Method,
    uri: http::Uri,
    request_id: HeaderValue,
    color: Color,
    status: u16,
    error: Option<String>,
    /// One reference count, rather than a clone of every metric handle.
    proxy: Arc<Proxy>,
    /// The proxy span, ended with the exchange.
    trace: Option<opentelemetry::Context>,
    _flight: InFlight,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let duration = self.start.elapsed();
        let elapsed = duration.as_secs_f64();
        self.proxy.metrics.observe_request(self.color, self.status, elapsed);
        let ids = self.trace.as_ref().and_then(|cx| {
            let span = cx.span();
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(self.status)));
            if let Some(error) = &self.error {
                span.set_status(Status::error(error.clone()));
            } else if self.status >= 500 {
                span.set_status(Status::error(format!("HTTP {}", self.status)));
            }
            span.end();
            traces::ids(cx)
        });
        vigie_telemetry::logging::log_request(
            vigie_telemetry::logging::level_for_status(self.status),
            &vigie_telemetry::logging::RequestLine {
                method: self.method.as_str(),
                route: None,
                path: self.uri.path(),
                status: self.status,
                duration,
                request_id: self.request_id.to_str().unwrap_or_default(),
                upstream_color: Some(self.color.as_str()),
                error: self.error.as_deref(),
                trace_id: ids.as_ref().map(|i| i.trace_id.as_str()),
                span_id: ids.as_ref().map(|i| i.span_id.as_str()),
            },
        );
    }
}
