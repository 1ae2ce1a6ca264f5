//! HTTP RED metrics and the request log line, as one axum middleware.
//!
//! `route` is the matched route template (`/api/tasks/{id}`); a request that
//! matches no route is recorded as [`UNMATCHED_ROUTE`], so random URLs cannot
//! grow the number of series. Health checks and `/metrics` are counted under
//! their own routes but logged at debug level, so they neither drown the
//! request log nor hide in the API's series (dashboards select `/api/.*`).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::request_id::RequestId;

pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Latency buckets in seconds, 1 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: String,
}

/// `http_requests_total`, `http_request_duration_seconds`, `http_requests_in_flight`.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: Family<HttpLabels, Counter>,
    duration: Family<HttpLabels, Histogram>,
    in_flight: Gauge,
}

pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            in_flight: Gauge::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests served",
            metrics.requests.clone(),
        );
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

    pub fn observe(&self, labels: &HttpLabels, seconds: f64) {
        self.requests.get_or_create(labels).inc();
        self.duration.get_or_create(labels).observe(seconds);
    }
}

/// Routes whose requests are logged at debug level (probes and scrapes).
fn is_probe(route: &str) -> bool {
    route == "/metrics" || route.starts_with("/health/")
}

/// axum middleware: counts, times and logs every request.
pub async fn track(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();

    metrics.in_flight.inc();
    // Decrements even if the client goes away and the future is dropped.
    let _in_flight = InFlightGuard(&metrics.in_flight);
    let response = next.run(request).await;
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    let labels = HttpLabels {
        method,
        route,
        status: status.to_string(),
    };
    metrics.observe(&labels, elapsed.as_secs_f64());

    let duration_ms = (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    macro_rules! log_request {
        ($level:expr) => {
            tracing::event!(
                target: "http", $level,
                method = %labels.method, route = %labels.route, path = %path,
                status, duration_ms, request_id = %request_id,
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
