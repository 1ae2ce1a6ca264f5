//! OpenTelemetry traces over OTLP/HTTP, configured the standard way:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`; unset: tracing is
//! off, silently), `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` with
//! `OTEL_TRACES_SAMPLER_ARG`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SDK_DISABLED`.
//!
//! Export never slows or fails a request: finished spans go into a bounded
//! queue drained by one exporter thread. When the queue is full, or the trace
//! backend fails, spans are dropped and counted
//! (`vigie_trace_spans_dropped_total{reason}`), and a warning is logged at
//! most every [`WARN_EVERY`]. Shutdown flushes the queue, bounded by
//! [`SHUTDOWN_TIMEOUT`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::{EnvResourceDetector, TelemetryResourceDetector};
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor, Tracer};
use opentelemetry_sdk::Resource;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;

/// Finished spans held while the exporter is busy, before new ones are dropped.
pub const QUEUE_SPANS: usize = 4096;
/// Spans sent in one OTLP request at most.
pub const BATCH_SPANS: usize = 512;
/// How long a span may wait in the queue before its batch is sent.
pub const BATCH_DELAY: Duration = Duration::from_secs(1);
/// Longest wait for the queue to drain at shutdown.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Drops and export failures are logged at most this often.
pub const WARN_EVERY: Duration = Duration::from_secs(30);

/// The name a span starts with before the sampler has decided; a sampled
/// span is renamed at once, an unsampled one is never seen.
pub const SPAN_NAME_PENDING: &str = "request";

/// The process' tracing: a tracer when export is on, nothing otherwise.
#[derive(Clone, Debug)]
pub struct Traces {
    inner: Option<Arc<Enabled>>,
}

#[derive(Debug)]
struct Enabled {
    provider: SdkTracerProvider,
    tracer: Tracer,
}

/// The ids of the span that served a request, for log lines and exemplars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: String,
    pub span_id: String,
}

impl TraceIds {
    /// The ids of a sampled span, `None` for an unsampled or invalid one.
    pub fn of(span_context: &SpanContext) -> Option<TraceIds> {
        (span_context.is_valid() && span_context.is_sampled()).then(|| TraceIds {
            trace_id: span_context.trace_id().to_string(),
            span_id: span_context.span_id().to_string(),
        })
    }
}

impl Traces {
    pub fn disabled() -> Self {
        Traces { inner: None }
    }

    /// Reads the `OTEL_*` environment. `service` is the default
    /// `service.name`; `attributes` are default resource attributes (both
    /// overridden by `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`).
    pub fn from_env(service: &str, attributes: Vec<KeyValue>, registry: &mut Registry) -> Result<Traces, String> {
        let stats = ExportStats::default();
        registry.register_collector(Box::new(stats.clone()));
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let sdk_disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let Some(endpoint) = endpoint.filter(|_| !sdk_disabled) else {
            return Ok(Traces::disabled());
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| format!("cannot set up OTLP export to {endpoint}: {e}"))?;
        let mut resource = Resource::builder_empty()
            .with_service_name(service.to_owned())
            .with_attributes(attributes)
            .with_detectors(&[
                Box::new(TelemetryResourceDetector),
                Box::new(EnvResourceDetector::new()),
            ]);
        if let Some(name) = env("OTEL_SERVICE_NAME") {
            resource = resource.with_service_name(name);
        }
        let provider = SdkTracerProvider::builder()
            .with_resource(resource.build())
            .with_span_processor(QueueProcessor::start(exporter, stats))
            .build();
        let tracer = provider.tracer("vigie");
        tracing::info!(target: "telemetry", endpoint = %endpoint, "trace export on");
        Ok(Traces {
            inner: Some(Arc::new(Enabled { provider, tracer })),
        })
    }

    pub fn tracer(&self) -> Option<&Tracer> {
        self.inner.as_deref().map(|e| &e.tracer)
    }

    /// Flushes queued spans, bounded by [`SHUTDOWN_TIMEOUT`].
    pub fn shutdown(&self) {
        if let Some(enabled) = &self.inner {
            if let Err(e) = enabled.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
                tracing::warn!(target: "telemetry", error = %e, "trace export did not flush cleanly");
            }
        }
    }
}

/// W3C trace context of `headers`; an absent or malformed `traceparent`
/// gives an empty context (a new trace starts), never an error.
pub fn extract(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes the W3C `traceparent` (and `tracestate`) of `cx` into `headers`.
pub fn inject(cx: &Context, headers: &mut http::HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

/// The ids of the current span of `cx`, when sampled.
pub fn ids(cx: &Context) -> Option<TraceIds> {
    TraceIds::of(cx.span().span_context())
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl opentelemetry::propagation::Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Counters of the export pipeline, exposed as metrics.
#[derive(Debug, Clone, Default)]
struct ExportStats {
    exported: Arc<AtomicU64>,
    dropped_queue_full: Arc<AtomicU64>,
    dropped_export_failed: Arc<AtomicU64>,
}

impl Collector for ExportStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let exported = ConstCounter::new(self.exported.load(Ordering::Relaxed));
        exported.encode(encoder.encode_descriptor(
            "vigie_trace_spans_exported",
            "Spans accepted by the trace backend",
            None,
            exported.metric_type(),
        )?)?;
        let mut family = encoder.encode_descriptor(
            "vigie_trace_spans_dropped",
            "Spans dropped, by reason (queue_full: the exporter could not keep up; export_failed: the trace backend failed or timed out)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (reason, count) in [
            ("queue_full", &self.dropped_queue_full),
            ("export_failed", &self.dropped_export_failed),
        ] {
            let labels = [("reason", reason)];
            let counter = ConstCounter::new(count.load(Ordering::Relaxed));
            counter.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

enum Message {
    Span(Box<SpanData>),
    /// Export everything queued, then answer.
    Flush(SyncSender<()>),
}

/// A span processor with a bounded queue that never blocks the caller.
#[derive(Debug)]
struct QueueProcessor {
    queue: SyncSender<Message>,
    exporter: Arc<Mutex<Box<dyn DynExporter>>>,
    stats: ExportStats,
    last_warning: Mutex<Option<Instant>>,
}

/// Object-safe view of the exporter, run to completion on the export thread.
trait DynExporter: Send + std::fmt::Debug {
    fn export_blocking(&self, batch: Vec<SpanData>) -> OTelSdkResult;
    fn set_resource(&mut self, resource: &Resource);
    fn shutdown(&self, timeout: Duration) -> OTelSdkResult;
}

impl<E: SpanExporter + 'static> DynExporter for E {
    fn export_blocking(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        futures_executor::block_on(self.export(batch))
    }
    fn set_resource(&mut self, resource: &Resource) {
        SpanExporter::set_resource(self, resource);
    }
    fn shutdown(&self, timeout: Duration) -> OTelSdkResult {
        self.shutdown_with_timeout(timeout)
    }
}

impl QueueProcessor {
    fn start<E: SpanExporter + 'static>(exporter: E, stats: ExportStats) -> Self {
        let (queue, receiver) = sync_channel(QUEUE_SPANS);
        let exporter: Arc<Mutex<Box<dyn DynExporter>>> = Arc::new(Mutex::new(Box::new(exporter)));
        let worker_exporter = Arc::clone(&exporter);
        let worker_stats = stats.clone();
        let spawned = std::thread::Builder::new()
            .name("vigie-trace-export".into())
            .spawn(move || export_loop(receiver, worker_exporter, worker_stats));
        if let Err(e) = spawned {
            tracing::error!(target: "telemetry", error = %e, "cannot start the trace export thread; spans will be dropped");
        }
        QueueProcessor {
            queue,
            exporter,
            stats,
            last_warning: Mutex::new(None),
        }
    }

    fn warn_rarely(&self, what: &str) {
        let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                target: "telemetry",
                dropped_queue_full = self.stats.dropped_queue_full.load(Ordering::Relaxed),
                "{what}"
            );
        }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.queue.try_send(Message::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
                self.warn_rarely("trace export queue full; dropping spans");
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        flush(&self.queue, SHUTDOWN_TIMEOUT)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let flushed = flush(&self.queue, timeout);
        let exporter = self.exporter.lock().unwrap_or_else(|p| p.into_inner());
        exporter.shutdown(timeout)?;
        flushed
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.exporter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_resource(resource);
    }
}

fn flush(queue: &SyncSender<Message>, timeout: Duration) -> OTelSdkResult {
    let (done, wait) = sync_channel(1);
    let deadline = Instant::now() + timeout;
    // The queue may be full: retry until the flush request fits, bounded.
    let mut message = Message::Flush(done);
    loop {
        match queue.try_send(message) {
            Ok(()) => break,
            Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                message = m;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return Err(OTelSdkError::Timeout(timeout)),
        }
    }
    wait.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .map_err(|_| OTelSdkError::Timeout(timeout))
}

fn export_loop(receiver: Receiver<Message>, exporter: Arc<Mutex<Box<dyn DynExporter>>>, stats: ExportStats) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(BATCH_SPANS);
    let mut batch_started = Instant::now();
    let mut last_failure_log: Option<Instant> = None;
    let mut send = |batch: &mut Vec<SpanData>| {
        if batch.is_empty() {
            return;
        }
        let spans = batch.len() as u64;
        let result = exporter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .export_blocking(std::mem::take(batch));
        match result {
            Ok(()) => {
                stats.exported.fetch_add(spans, Ordering::Relaxed);
            }
            Err(e) => {
                stats.dropped_export_failed.fetch_add(spans, Ordering::Relaxed);
                if last_failure_log.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    last_failure_log = Some(Instant::now());
                    tracing::warn!(
                        target: "telemetry",
                        error = %e,
                        dropped_total = stats.dropped_export_failed.load(Ordering::Relaxed),
                        "trace export failed; spans dropped"
                    );
                }
            }
        }
    };
    loop {
        let wait = BATCH_DELAY.saturating_sub(batch_started.elapsed());
        match receiver.recv_timeout(wait) {
            Ok(Message::Span(span)) => {
                if batch.is_empty() {
                    batch_started = Instant::now();
                }
                batch.push(*span);
                if batch.len() >= BATCH_SPANS {
                    send(&mut batch);
                }
            }
            Ok(Message::Flush(done)) => {
                // Everything sent before the flush request is in `batch` or the queue.
                while let Ok(Message::Span(span)) = receiver.try_recv() {
                    batch.push(*span);
                    if batch.len() >= BATCH_SPANS {
                        send(&mut batch);
                    }
                }
                send(&mut batch);
                let _ = done.send(());
            }
            Err(RecvTimeoutError::Timeout) => {
                send(&mut batch);
                batch_started = Instant::now();
            }
            Err(RecvTimeoutError::Disconnected) => {
                send(&mut batch);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", http::HeaderValue::from_static("00-zzzz-not-a-trace-01"));
        let cx = extract(&headers);
        assert!(!cx.span().span_context().is_valid());
    }

    #[test]
    fn a_valid_traceparent_is_continued_and_reinjected() {
        let mut headers = http::HeaderMap::new();
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert("traceparent", http::HeaderValue::from_static(parent));
        let cx = extract(&headers);
        let ids = ids(&cx).expect("sampled parent");
        assert_eq!(ids.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ids.span_id, "00f067aa0ba902b7");
        let mut out = http::HeaderMap::new();
        inject(&cx, &mut out);
        assert_eq!(out["traceparent"], parent);
    }
}
