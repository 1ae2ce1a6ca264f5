//! HTTP RED metrics and the request log line, as one axum middleware.
//!
//! `route` is the matched route template (`/api/tasks/{id}`); a request that
//! matches no route is recorded as [`UNMATCHED_ROUTE`], so random URLs cannot
//! grow the number of series. Health checks and `/metrics` are counted under
//! their own routes but logged at debug level, so they neither drown the
//! request log nor hide in the API's series (dashboards select `/api/.*`).

use std::borrow::Cow;
use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::KeyValue;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
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
    pub route: Cow<'static, str>,
    pub status: Cow<'static, str>,
}

/// The route label of a request: axum's matched route template, copied
/// (an `Arc` clone would bounce its counter between cores on every
/// request), or [`UNMATCHED_ROUTE`].
pub fn route_label(matched: Option<&MatchedPath>) -> Cow<'static, str> {
    matched.map_or(Cow::Borrowed(UNMATCHED_ROUTE), |p| Cow::Owned(p.as_str().to_owned()))
}

/// The label value for a method a client made up: with the method as is, any
/// client could add series without end (OpenTelemetry's convention).
pub const OTHER_METHOD: &str = "_OTHER";

/// The method as a label value: the standard ones by name, any other as
/// [`OTHER_METHOD`], so the label stays bounded.
pub fn method_label(method: &http::Method) -> Cow<'static, str> {
    const STANDARD: [(http::Method, &str); 9] = [
        (http::Method::GET, "GET"),
        (http::Method::POST, "POST"),
        (http::Method::PUT, "PUT"),
        (http::Method::PATCH, "PATCH"),
        (http::Method::DELETE, "DELETE"),
        (http::Method::HEAD, "HEAD"),
        (http::Method::OPTIONS, "OPTIONS"),
        (http::Method::CONNECT, "CONNECT"),
        (http::Method::TRACE, "TRACE"),
    ];
    Cow::Borrowed(
        STANDARD
            .iter()
            .find(|(m, _)| m == method)
            .map_or(OTHER_METHOD, |(_, name)| *name),
    )
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
    /// Tells apart the metrics of two servers in one process in [`HANDLES`].
    id: u64,
    requests: Family<HttpLabels, Counter>,
    duration: Family<HttpLabels, HistogramWithExemplars<TraceExemplar>>,
    in_flight: InFlight,
}

static NEXT_METRICS_ID: AtomicU64 = AtomicU64::new(0);

type SeriesHandles = (Counter, HistogramWithExemplars<TraceExemplar>);

thread_local! {
    /// Per thread, the series already looked up: a request takes no lock of
    /// the metric families (their lock words would bounce between cores).
    /// foldhash rather than SipHash: its keys are bounded label sets, not
    /// a client's choice, and SipHash was a third of the metrics' cost.
    static HANDLES: RefCell<foldhash::HashMap<(u64, HttpLabels), SeriesHandles>> = RefCell::default();
}

/// `http_requests_in_flight`, kept in per-thread shards summed at scrape
/// time: one shared counter would be written by every core twice per request.
#[derive(Clone, Debug, Default)]
struct InFlight(Arc<[Shard; IN_FLIGHT_SHARDS]>);

const IN_FLIGHT_SHARDS: usize = 16;

/// One shard on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(AtomicI64);

impl InFlight {
    fn shard(&self) -> &AtomicI64 {
        static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % IN_FLIGHT_SHARDS;
        }
        &self.0[SHARD.with(|s| *s)].0
    }

    fn get(&self) -> i64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl EncodeMetric for InFlight {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.get())
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

pub fn latency_histogram_with_exemplars() -> HistogramWithExemplars<TraceExemplar> {
    HistogramWithExemplars::new(LATENCY_BUCKETS.into_iter())
}

/// What [`TrackLayer`] needs: the metrics and the process' tracing.
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
            in_flight: InFlight::default(),
            id: NEXT_METRICS_ID.fetch_add(1, Ordering::Relaxed),
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
    pub fn observe(&self, labels: HttpLabels, seconds: f64, trace: Option<&TraceIds>) {
        let exemplar = trace.map(|t| TraceExemplar {
            trace_id: t.trace_id.clone(),
        });
        HANDLES.with(|handles| {
            let mut handles = handles.borrow_mut();
            let key = (self.id, labels);
            let (requests, duration) = match handles.get(&key) {
                Some(found) => found,
                None => {
                    let found = (
                        self.requests.get_or_create(&key.1).clone(),
                        self.duration.get_or_create(&key.1).clone(),
                    );
                    handles.entry(key).or_insert(found)
                }
            };
            requests.inc();
            duration.observe(seconds, exemplar, None);
        });
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
#[derive(Clone, Copy, Debug)]
pub struct TrackLayer {
    /// Shared for the life of the process (one per server): a reference,
    /// where an `Arc` would have every request bounce its counter between
    /// cores.
    telemetry: &'static HttpTelemetry,
}

impl TrackLayer {
    pub fn new(telemetry: HttpTelemetry) -> Self {
        TrackLayer {
            telemetry: Box::leak(Box::new(telemetry)),
        }
    }
}

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;
    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            telemetry: self.telemetry,
        }
    }
}

/// The service of [`TrackLayer`].
#[derive(Clone, Debug)]
pub struct Track<S> {
    inner: S,
    telemetry: &'static HttpTelemetry,
}

impl<S, B> Service<Request> for Track<S>
where
    S: Service<Request, Response = Response<B>, Error = Infallible>,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let start = Instant::now();
        let telemetry = self.telemetry;
        let request_id = request_id::accept_or_generate(request.headers().get(request_id::HEADER_NAME));
        let route = route_label(request.extensions().get::<MatchedPath>());
        let method = method_label(request.method());
        // The log line keeps a made-up method as it came (a line is no series).
        let raw_method = (method == OTHER_METHOD).then(|| request.method().clone());
        // A cheap clone (shared bytes) for the log line, not a copy.
        let uri = request.uri().clone();
        // Probes and scrapes are not traced: a span every few seconds per
        // instance would bury the requests worth looking at.
        let traces = Some(&telemetry.traces).filter(|t| t.tracer().is_some() && !is_probe(&route));
        let cx = traces.and_then(|traces| {
            let parent = traces::extract(request.headers());
            let tracer = traces.tracer_for(&parent)?;
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
                    KeyValue::new("url.path", uri.path().to_owned()),
                ]);
            }
            Some(parent.with_span(span))
        });
        let sampled = cx.as_ref().filter(|cx| cx.span().span_context().is_sampled()).cloned();
        let in_flight = telemetry.metrics.in_flight.shard();
        in_flight.fetch_add(1, Ordering::Relaxed);
        // Made before the inner call, so that a panic in it lowers the gauge too.
        let in_flight = InFlightGuard(in_flight);
        let response = match sampled {
            Some(sampled) => Traced::InContext {
                future: self.inner.call(request).with_context(sampled),
            },
            None => Traced::Plain {
                future: self.inner.call(request),
            },
        };
        TrackFuture {
            response,
            request: Some(Tracked {
                start,
                telemetry,
                request_id,
                method,
                route,
                raw_method,
                uri,
                cx,
                _in_flight: in_flight,
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Track`]: the response, then the request's span end,
    /// log line, metrics and request id header. A type of its own rather
    /// than a boxed `async` block: one allocation less per request.
    pub struct TrackFuture<F> {
        #[pin]
        response: Traced<F>,
        request: Option<Tracked>,
    }
}

pin_project_lite::pin_project! {
    #[project = TracedProjection]
    enum Traced<F> {
        Plain { #[pin] future: F },
        /// A sampled span is the current context of the handler (for its
        /// child spans): attaching a context costs on every poll.
        InContext { #[pin] future: WithContext<F> },
    }
}

/// What the end of a request needs to know of its start.
struct Tracked {
    start: Instant,
    telemetry: &'static HttpTelemetry,
    request_id: http::HeaderValue,
    method: Cow<'static, str>,
    route: Cow<'static, str>,
    raw_method: Option<http::Method>,
    uri: http::Uri,
    cx: Option<opentelemetry::Context>,
    /// Decrements even if the client goes away and the future is dropped.
    _in_flight: InFlightGuard<'static>,
}

impl<F, B> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.response.project() {
            TracedProjection::Plain { future } => std::task::ready!(future.poll(cx)),
            TracedProjection::InContext { future } => std::task::ready!(future.poll(cx)),
        };
        let mut response = result.unwrap_or_else(|never| match never {});
        if let Some(request) = this.request.take() {
            request.finish(&mut response);
        }
        Poll::Ready(Ok(response))
    }
}

impl Tracked {
    fn finish<B>(self, response: &mut Response<B>) {
        let elapsed = self.start.elapsed();
        let status = response.status().as_u16();
        let ids = self.cx.as_ref().and_then(|cx| {
            let span = cx.span();
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
            if status >= 500 {
                span.set_status(Status::error(format!("HTTP {status}")));
            }
            span.end();
            traces::ids(cx)
        });
        let labels = HttpLabels {
            method: self.method,
            route: self.route,
            status: status_label(status),
        };
        log_request(
            &labels,
            self.raw_method.as_ref().map_or(&labels.method, |m| m.as_str()),
            self.uri.path(),
            status,
            elapsed,
            self.request_id.to_str().unwrap_or_default(),
            ids.as_ref(),
        );
        self.telemetry
            .metrics
            .observe(labels, elapsed.as_secs_f64(), ids.as_ref());
        response.headers_mut().insert(request_id::HEADER_NAME, self.request_id);
    }
}

/// The request's log line: debug for probes, else by status.
fn log_request(
    labels: &HttpLabels,
    method: &str,
    path: &str,
    status: u16,
    elapsed: Duration,
    request_id: &str,
    ids: Option<&TraceIds>,
) {
    let level = if is_probe(&labels.route) {
        crate::logging::Level::DEBUG
    } else {
        crate::logging::level_for_status(status)
    };
    crate::logging::log_request(
        level,
        &crate::logging::RequestLine {
            method,
            route: Some(&labels.route),
            path,
            status,
            duration: elapsed,
            request_id,
            upstream_color: None,
            error: None,
            trace_id: ids.map(|i| i.trace_id.as_str()),
            span_id: ids.map(|i| i.span_id.as_str()),
        },
    );
}

struct InFlightGuard<'a>(&'a AtomicI64);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).expect("encode");
        out
    }

    fn labels(route: &'static str, status: u16) -> HttpLabels {
        HttpLabels {
            method: method_label(&http::Method::GET),
            route: Cow::Borrowed(route),
            status: status_label(status),
        }
    }

    #[test]
    fn two_servers_in_one_process_count_apart_through_the_handle_cache() {
        let (mut first, mut second) = (Registry::default(), Registry::default());
        let a = HttpMetrics::register(&mut first);
        let b = HttpMetrics::register(&mut second);
        for _ in 0..3 {
            a.observe(labels("/api/info", 200), 0.002, None);
        }
        b.observe(labels("/api/info", 200), 0.002, None);
        b.observe(labels("/api/info", 404), 0.002, None);
        let (first, second) = (text(&first), text(&second));
        assert!(
            first.contains(r#"http_requests_total{method="GET",route="/api/info",status="200"} 3"#),
            "{first}"
        );
        assert!(!first.contains(r#"status="404""#), "{first}");
        assert!(
            second.contains(r#"http_requests_total{method="GET",route="/api/info",status="200"} 1"#),
            "{second}"
        );
        assert!(
            second.contains(r#"http_requests_total{method="GET",route="/api/info",status="404"} 1"#),
            "{second}"
        );
    }

    #[test]
    fn a_method_never_needs_json_escaping() {
        // The request log writes methods unescaped (`LineFields::plain_str`):
        // a method is an HTTP token, which excludes quotes, backslashes and
        // control characters.
        for bad in [&b"GE\"T"[..], b"GE\\T", b"GE\nT", b"GE T"] {
            assert!(http::Method::from_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn made_up_methods_share_one_label_value() {
        for method in ["FOO123", "PROPFIND", "get"] {
            let method = http::Method::from_bytes(method.as_bytes()).expect("token");
            assert_eq!(method_label(&method), OTHER_METHOD);
        }
        assert_eq!(method_label(&http::Method::DELETE), "DELETE");
    }

    #[test]
    fn a_sampled_request_leaves_its_trace_id_as_exemplar() {
        let mut registry = Registry::default();
        let metrics = HttpMetrics::register(&mut registry);
        let ids = TraceIds {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
        };
        metrics.observe(labels("/api/tasks", 201), 0.0042, Some(&ids));
        let text = text(&registry);
        assert!(
            text.contains(r#"# {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.0042"#),
            "{text}"
        );
    }

    #[test]
    fn in_flight_shards_add_up_across_threads() {
        let mut registry = Registry::default();
        let metrics = HttpMetrics::register(&mut registry);
        let in_flight = metrics.in_flight.clone();
        // Raised on some threads and lowered on others, as a request whose
        // future moves between worker threads does.
        let on_threads = |threads: usize, change: fn(&AtomicI64)| {
            let spawned: Vec<_> = (0..threads)
                .map(|_| {
                    let in_flight = in_flight.clone();
                    std::thread::spawn(move || change(in_flight.shard()))
                })
                .collect();
            spawned.into_iter().for_each(|t| drop(t.join()));
        };
        on_threads(20, |shard| {
            shard.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(in_flight.get(), 20);
        assert!(text(&registry).contains("http_requests_in_flight 20"));
        on_threads(15, |shard| {
            shard.fetch_sub(1, Ordering::Relaxed);
        });
        assert!(text(&registry).contains("# TYPE http_requests_in_flight gauge\nhttp_requests_in_flight 5\n"));
    }
}
