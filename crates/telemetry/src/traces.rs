//! OpenTelemetry traces over OTLP/HTTP, configured the standard way:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`; unset: tracing is
//! off, silently), `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` with
//! `OTEL_TRACES_SAMPLER_ARG`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SDK_DISABLED`.
//!
//! Export never slows or fails a request: finished spans go into a bounded
//! queue drained in batches by one exporter thread ([`queue`]). When the
//! queue is full, or the trace backend fails, spans are dropped and counted
//! (`vigie_trace_spans_dropped_total{reason}`), and a warning is logged at
//! most every [`WARN_EVERY`]. Shutdown flushes the queue, bounded by
//! [`SHUTDOWN_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::resource::{EnvResourceDetector, TelemetryResourceDetector};
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use opentelemetry_sdk::Resource;
use prometheus_client::registry::Registry;

mod otlp;
mod propagation;
mod queue;

pub use otlp::{HeaderError, OtlpConfigError};
use otlp::{OtlpConfig, OtlpExporter};

pub use propagation::{extract, inject};

use queue::{ExportStats, QueueProcessor};
pub use queue::{BATCH_DELAY, BATCH_SPANS, QUEUE_SPANS, WARN_EVERY};

/// Longest wait for the queue to drain at shutdown.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// The sampler follows the parent's decision (`parentbased_*`, the default).
    parent_based: bool,
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
            trace_id: propagation::hex_string(&span_context.trace_id().to_bytes()),
            span_id: propagation::hex_string(&span_context.span_id().to_bytes()),
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
    pub fn from_env(
        service: &str,
        attributes: Vec<KeyValue>,
        registry: &mut Registry,
    ) -> Result<Traces, OtlpConfigError> {
        let stats = ExportStats::default();
        registry.register_collector(Box::new(stats.clone()));
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let sdk_disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if sdk_disabled {
            return Ok(Traces::disabled());
        }
        let Some(config) = OtlpConfig::from_env(env)? else {
            return Ok(Traces::disabled());
        };
        let endpoint = config.endpoint.clone();
        let exporter = OtlpExporter::new(config);
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
        // The SDK's default sampler, and the one it falls back to on an
        // unknown name, is parentbased_always_on.
        let parent_based = env("OTEL_TRACES_SAMPLER").is_none_or(|name| {
            name.starts_with("parentbased_") || !["always_on", "always_off", "traceidratio"].contains(&name.trim())
        });
        tracing::info!(target: "telemetry", endpoint = %endpoint, "trace export on");
        Ok(Traces {
            inner: Some(Arc::new(Enabled {
                provider,
                tracer,
                parent_based,
            })),
        })
    }

    /// Checks the `OTEL_EXPORTER_OTLP_*` environment without starting
    /// anything: a service calls it before it starts, to refuse a setting
    /// that cannot work as a configuration error.
    pub fn check_env() -> Result<(), OtlpConfigError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(());
        }
        OtlpConfig::from_env(env).map(|_| ())
    }

    pub fn tracer(&self) -> Option<&Tracer> {
        self.inner.as_deref().map(|e| &e.tracer)
    }

    /// The tracer for a request whose incoming W3C context is `parent`, or
    /// `None` when the request will not be sampled because its parent was
    /// not and the sampler follows the parent: such a request then costs no
    /// span at all (the SDK would build one only to drop it).
    pub fn tracer_for(&self, parent: &Context) -> Option<&Tracer> {
        let enabled = self.inner.as_deref()?;
        (!(enabled.parent_based && is_unsampled(parent))).then_some(&enabled.tracer)
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

/// Whether `cx` holds a valid span context that is not sampled.
fn is_unsampled(cx: &Context) -> bool {
    let span = cx.span();
    let context = span.span_context();
    context.is_valid() && !context.is_sampled()
}

/// The ids of the current span of `cx`, when sampled.
pub fn ids(cx: &Context) -> Option<TraceIds> {
    TraceIds::of(cx.span().span_context())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(traceparent: &'static str) -> Context {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", http::HeaderValue::from_static(traceparent));
        extract(&headers)
    }

    #[test]
    fn only_a_valid_unsampled_parent_counts_as_unsampled() {
        assert!(is_unsampled(&parent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        )));
        assert!(!is_unsampled(&parent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        )));
        assert!(!is_unsampled(&parent("00-zzzz-not-a-trace-00")));
        assert!(!is_unsampled(&Context::new()));
    }

    #[test]
    fn without_export_there_is_no_tracer_for_any_request() {
        let off = Traces::disabled();
        assert!(off.tracer_for(&Context::new()).is_none());
        assert!(off.tracer().is_none());
    }
}
