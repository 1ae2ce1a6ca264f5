//! HTTP RED metrics and the request log line, as one axum middleware.
//!
//! `route` is the matched route template (`/api/tasks/{id}`); a request that
//! matches no route is recorded as [`UNMATCHED_ROUTE`], so random URLs cannot
//! grow the number of series. Health checks and `/metrics` are counted under
//! their own routes but logged at debug level, so they neither drown the
//! request log nor hide in the API's series (dashboards select `/api/.*`).

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::KeyValue;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use tower::{Layer, Service};

use crate::request_id;
use crate::traces::{self, TraceIds, Traces};

pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Latency buckets in seconds, 1 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: Cow<'static, str>,
    pub route: RouteLabel,
    pub status: Cow<'static, str>,
}

/// The `route` label: axum's matched route template, shared rather than
/// copied per request, or [`UNMATCHED_ROUTE`].
#[derive(Clone, Debug)]
pub enum RouteLabel {
    Matched(MatchedPath),
    Unmatched,
}

impl RouteLabel {
    pub fn as_str(&self) -> &str {
        match self {
            RouteLabel::Matched(path) => path.as_str(),
            RouteLabel::Unmatched => UNMATCHED_ROUTE,
        }
    }
}

impl PartialEq for RouteLabel {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RouteLabel {}

impl Hash for RouteLabel {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// The method as a label value; the standard ones without an allocation.
pub fn method_label(method: &http::Method) -> Cow<'static, str> {
    const STANDARD: [(http::Method, &str); 7] = [
        (http::Method::GET, "GET"),
        (http::Method::POST, "POST"),
        (http::Method::PUT, "PUT"),
        (http::Method::PATCH, "PATCH"),
        (http::Method::DELETE, "DELETE"),
        (http::Method::HEAD, "HEAD"),
        (http::Method::OPTIONS, "OPTIONS"),
    ];
    STANDARD
        .iter()
        .find(|(m, _)| m == method)
        .map(|(_, name)| Cow::Borrowed(*name))
        .unwrap_or_else(|| Cow::Owned(method.as_str().to_owned()))
}

/// The status code as a label value; the common ones without an allocation.
pub fn status_label(status: u16) -> Cow<'static, str> {
    const COMMON: [(u16, &str); 14] = [
        (200, "200"),
        (201, "201"),
        (204, "204"),
        (301, "301"),
        (304, "304"),
        (400, "400"),
        (401, "401"),
        (404, "404"),
        (405, "405"),
        (409, "409"),
        (413, "413"),
        (422, "422"),
        (500, "500"),
        (503, "503"),
    ];
    COMMON
        .iter()
        .find(|(code, _)| *code == status)
        .map(|(_, text)| Cow::Borrowed(*text))
        .unwrap_or_else(|| Cow::Owned(status.to_string()))
}

/// The exemplar label of a sampled request: its trace id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    pub trace_id: String,
}

/// `http_requests_total`, `http_request_duration_seconds` (with the trace id
/// of sampled requests as exemplar), `http_requests_in_flight`.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: Family<HttpLabels, Counter>,
    duration: Family<HttpLabels, HistogramWithExemplars<TraceExemplar>>,
    in_flight: Gauge,
}

pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

pub fn latency_histogram_with_exemplars() -> HistogramWithExemplars<TraceExemplar> {
    HistogramWithExemplars::new(LATENCY_BUCKETS.into_iter())
}

/// What [`track`] needs: the metrics and the process' tracing.
#[derive(Clone, Debug)]
pub struct HttpTelemetry {
    pub metrics: HttpMetrics,
    pub traces: Traces,
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram_with_exemplars),
            in_flight: Gauge::default(),
        };
        registry.register("http_requests", "HTTP requests served", metrics.requests.clone());
        registry.register_with_unit(
            "http_request_duration",
            "HTTP request duration",
            prometheus_client::registry::Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being served",
            metrics.in_flight.clone(),
        );
        metrics
    }

    /// Counts and times one request; `trace` becomes the bucket's exemplar.
    pub fn observe(&self, labels: &HttpLabels, seconds: f64, trace: Option<&TraceIds>) {
        self.requests.get_or_create(labels).inc();
        let exemplar = trace.map(|t| TraceExemplar {
            trace_id: t.trace_id.clone(),
        });
        self.duration.get_or_create(labels).observe(seconds, exemplar, None);
    }
}

/// Routes whose requests are logged at debug level (probes and scrapes).
fn is_probe(route: &str) -> bool {
    route == "/metrics" || route.starts_with("/health/")
}

/// The tower layer that counts, times, traces and logs every request and
/// gives it a request id: `router.layer(TrackLayer::new(telemetry))`. Added
/// with `Router::layer`, it sees the matched route template. With tracing
/// on, the request runs inside an OpenTelemetry server span that continues
/// an incoming W3C `traceparent`.
///
/// A hand-written service rather than `axum::middleware::from_fn`: that one
/// clones the boxed inner service and boxes two futures per request, a
/// measurable share of a small request's cost.
#[derive(Clone, Debug)]
pub struct TrackLayer {
    telemetry: Arc<HttpTelemetry>,
}

impl TrackLayer {
    pub fn new(telemetry: HttpTelemetry) -> Self {
        TrackLayer {
            telemetry: Arc::new(telemetry),
        }
    }
}

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;
    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            telemetry: Arc::clone(&self.telemetry),
        }
    }
}

/// The service of [`TrackLayer`].
#[derive(Clone, Debug)]
pub struct Track<S> {
    inner: S,
    telemetry: Arc<HttpTelemetry>,
}

impl<S> Service<Request> for Track<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let start = Instant::now();
        let telemetry = Arc::clone(&self.telemetry);
        let request_id = request_id::accept_or_generate(request.headers().get(request_id::HEADER));
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or(RouteLabel::Unmatched, |p| RouteLabel::Matched(p.clone()));
        let method = method_label(request.method());
        // A cheap clone (shared bytes) for the log line, not a copy.
        let uri = request.uri().clone();
        // Probes and scrapes are not traced: a span every few seconds per
        // instance would bury the requests worth looking at.
        let cx = telemetry
            .traces
            .tracer()
            .filter(|_| !is_probe(route.as_str()))
            .map(|tracer| {
                let parent = traces::extract(request.headers());
                let mut span = tracer
                    .span_builder(traces::SPAN_NAME_PENDING)
                    .with_kind(SpanKind::Server)
                    .start_with_context(tracer, &parent);
                // Names and attributes cost allocations: only for sampled spans.
                if span.is_recording() {
                    span.update_name(format!("{method} {}", route.as_str()));
                    span.set_attributes([
                        KeyValue::new("http.request.method", method.clone()),
                        KeyValue::new("http.route", route.as_str().to_owned()),
                        KeyValue::new("url.path", uri.path().to_owned()),
                    ]);
                }
                parent.with_span(span)
            });
        // Only a sampled span becomes the current context of the handler (for
        // its child spans): attaching a context costs on every poll.
        let sampled = cx.as_ref().filter(|cx| cx.span().span_context().is_sampled()).cloned();
        let response = self.inner.call(request);
        Box::pin(async move {
            telemetry.metrics.in_flight.inc();
            // Decrements even if the client goes away and the future is dropped.
            let _in_flight = InFlightGuard(&telemetry.metrics.in_flight);
            let mut response = match sampled {
                Some(sampled) => response.with_context(sampled).await,
                None => response.await,
            }
            .unwrap_or_else(|never| match never {});
            let elapsed = start.elapsed();
            let status = response.status().as_u16();
            let ids = cx.as_ref().and_then(|cx| {
                let span = cx.span();
                span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
                if status >= 500 {
                    span.set_status(Status::error(format!("HTTP {status}")));
                }
                span.end();
                traces::ids(cx)
            });
            let labels = HttpLabels {
                method,
                route,
                status: status_label(status),
            };
            telemetry.metrics.observe(&labels, elapsed.as_secs_f64(), ids.as_ref());
            log_request(
                &labels,
                uri.path(),
                status,
                elapsed,
                request_id.to_str().unwrap_or_default(),
                ids.as_ref(),
            );
            response.headers_mut().insert(request_id::HEADER, request_id);
            Ok(response)
        })
    }
}

/// The request's log line: debug for probes, error for 5xx, warn for 4xx.
fn log_request(
    labels: &HttpLabels,
    path: &str,
    status: u16,
    elapsed: Duration,
    request_id: &str,
    ids: Option<&TraceIds>,
) {
    let trace_id = ids.map(|i| i.trace_id.as_str());
    let span_id = ids.map(|i| i.span_id.as_str());
    let duration_ms = (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    macro_rules! log_at {
        ($level:expr) => {
            tracing::event!(
                target: "http", $level,
                method = labels.method.as_ref(), route = labels.route.as_str(), path,
                status, duration_ms, request_id,
                trace_id, span_id,
                "request"
            )
        };
    }
    if is_probe(labels.route.as_str()) {
        log_at!(tracing::Level::DEBUG);
    } else if status >= 500 {
        log_at!(tracing::Level::ERROR);
    } else if status >= 400 {
        log_at!(tracing::Level::WARN);
    } else {
        log_at!(tracing::Level::INFO);
    }
}

struct InFlightGuard<'a>(&'a Gauge);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
