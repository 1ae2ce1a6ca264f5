//! HTTP RED metrics and the request log line, as one axum middleware.
//!
//! `route` is the matched route template (`/api/tasks/{id}`); a request that
//! matches no route is recorded as [`UNMATCHED_ROUTE`], so random URLs cannot
//! grow the number of series. Health checks and `/metrics` are counted under
//! their own routes but logged at debug level, so they neither drown the
//! request log nor hide in the API's series (dashboards select `/api/.*`).

use std::borrow::Cow;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::KeyValue;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::request_id::RequestId;
use crate::traces::{self, TraceIds, Traces};

pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Latency buckets in seconds, 1 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: Cow<'static, str>,
    pub route: String,
    pub status: Cow<'static, str>,
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

/// axum middleware: counts, times, traces and logs every request. With
/// tracing on, the request runs inside an OpenTelemetry server span that
/// continues an incoming W3C `traceparent`.
pub async fn track(State(telemetry): State<HttpTelemetry>, request: Request, next: Next) -> Response {
    let metrics = &telemetry.metrics;
    let start = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let method = method_label(request.method());
    let path = request.uri().path().to_owned();
    // Moved out, not cloned: nothing after this middleware reads it.
    let mut request = request;
    let request_id = request
        .extensions_mut()
        .remove::<RequestId>()
        .map(|r| r.0)
        .unwrap_or_default();

    metrics.in_flight.inc();
    // Decrements even if the client goes away and the future is dropped.
    let _in_flight = InFlightGuard(&metrics.in_flight);
    // Probes and scrapes are not traced: a span every few seconds per
    // instance would bury the requests worth looking at.
    let tracer = telemetry.traces.tracer().filter(|_| !is_probe(&route));
    let cx = tracer.map(|tracer| {
        let parent = traces::extract(request.headers());
        let mut span = tracer
            .span_builder(traces::SPAN_NAME_PENDING)
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, &parent);
        // Names and attributes cost allocations: only for sampled spans.
        if span.is_recording() {
            span.update_name(format!("{method} {route}"));
            span.set_attributes([
                KeyValue::new("http.request.method", method.clone()),
                KeyValue::new("http.route", route.clone()),
                KeyValue::new("url.path", path.clone()),
            ]);
        }
        parent.with_span(span)
    });
    // Only a sampled span becomes the current context of the handler (for
    // its child spans): attaching a context costs on every poll.
    let response = match &cx {
        Some(cx) if cx.span().span_context().is_sampled() => next.run(request).with_context(cx.clone()).await,
        _ => next.run(request).await,
    };
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
    metrics.observe(&labels, elapsed.as_secs_f64(), ids.as_ref());
    let trace_id = ids.as_ref().map(|i| i.trace_id.as_str());
    let span_id = ids.as_ref().map(|i| i.span_id.as_str());

    let duration_ms = (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    macro_rules! log_request {
        ($level:expr) => {
            tracing::event!(
                target: "http", $level,
                method = %labels.method, route = %labels.route, path = %path,
                status, duration_ms, request_id = %request_id,
                trace_id, span_id,
                "request"
            )
        };
    }
    if is_probe(&labels.route) {
        log_request!(tracing::Level::DEBUG);
    } else if status >= 500 {
        log_request!(tracing::Level::ERROR);
    } else if status >= 400 {
        log_request!(tracing::Level::WARN);
    } else {
        log_request!(tracing::Level::INFO);
    }
    response
}

struct InFlightGuard<'a>(&'a Gauge);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
