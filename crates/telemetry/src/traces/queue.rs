//! The span processor behind trace export: finished spans are appended to a
//! bounded in-memory batch under a short lock, and one exporter thread takes
//! the whole batch every [`BATCH_DELAY`], or as soon as [`BATCH_SPANS`] wait.
//! A request never waits on the exporter and wakes it at most once per
//! [`BATCH_SPANS`] spans (a channel would wake it for every span, a futex
//! call on the request's path). Past [`QUEUE_SPANS`] new spans are dropped
//! and counted; a failed export drops its batch and counts it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use parking_lot::{Condvar, Mutex, MutexGuard};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

/// Finished spans held while the exporter is busy, before new ones are dropped.
pub const QUEUE_SPANS: usize = 4096;
/// Spans sent in one OTLP request at most; this many waiting wake the exporter.
pub const BATCH_SPANS: usize = 512;
/// How long a span may wait in the queue before its batch is sent.
pub const BATCH_DELAY: Duration = Duration::from_secs(1);
/// Drops and export failures are logged at most this often.
pub const WARN_EVERY: Duration = Duration::from_secs(30);

/// Counters of the export pipeline, exposed as metrics.
#[derive(Debug, Clone, Default)]
pub struct ExportStats {
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

/// What the request threads and the exporter thread share.
#[derive(Debug, Default)]
struct Pending {
    spans: Vec<SpanData>,
    /// Flush callers waiting for everything queued before them to be sent.
    flushes: Vec<SyncSender<()>>,
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock()
    }
}

/// A span processor with a bounded queue that never blocks the caller.
#[derive(Debug)]
pub struct QueueProcessor {
    shared: Arc<Shared>,
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
    pub fn start<E: SpanExporter + 'static>(exporter: E, stats: ExportStats) -> Self {
        let shared = Arc::new(Shared::default());
        let exporter: Arc<Mutex<Box<dyn DynExporter>>> = Arc::new(Mutex::new(Box::new(exporter)));
        let worker = Exporter {
            shared: Arc::clone(&shared),
            exporter: Arc::clone(&exporter),
            stats: stats.clone(),
            last_failure_log: None,
        };
        let spawned = std::thread::Builder::new()
            .name("vigie-trace-export".into())
            .spawn(move || worker.run());
        if let Err(e) = spawned {
            tracing::error!(target: "telemetry", error = %e, "cannot start the trace export thread; spans will be dropped");
            shared.lock().stop = true;
        }
        QueueProcessor {
            shared,
            exporter,
            stats,
            last_warning: Mutex::new(None),
        }
    }

    fn warn_rarely(&self, what: &str) {
        let mut last = self.last_warning.lock();
        if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                target: "telemetry",
                dropped_queue_full = self.stats.dropped_queue_full.load(Ordering::Relaxed),
                "{what}"
            );
        }
    }

    /// Asks the exporter thread to send everything queued now and waits for
    /// it, at most `timeout`.
    fn flush(&self, timeout: Duration) -> OTelSdkResult {
        let (done, wait) = sync_channel(1);
        {
            let mut pending = self.shared.lock();
            if pending.stop {
                return Err(OTelSdkError::AlreadyShutdown);
            }
            pending.flushes.push(done);
        }
        self.shared.wake.notify_one();
        wait.recv_timeout(timeout).map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let waiting = {
            let mut pending = self.shared.lock();
            if pending.spans.len() >= QUEUE_SPANS || pending.stop {
                None
            } else {
                pending.spans.push(span);
                Some(pending.spans.len())
            }
        };
        match waiting {
            // Only the span that completes a batch wakes the exporter.
            Some(BATCH_SPANS) => {
                self.shared.wake.notify_one();
            }
            Some(_) => {}
            None => {
                self.stats.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
                self.warn_rarely("trace export queue full; dropping spans");
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush(super::SHUTDOWN_TIMEOUT)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let flushed = self.flush(timeout);
        // From here the exporter thread sends no further batch: what it has
        // not sent is counted as dropped, and the process may exit.
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        // A batch still in flight to a black-holed backend holds the
        // exporter for its whole timeout: shutdown does not wait for it.
        if let Some(exporter) = self.exporter.try_lock() {
            exporter.shutdown(timeout)?;
        }
        flushed
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.exporter.lock().set_resource(resource);
    }
}

/// The exporter thread's side.
struct Exporter {
    shared: Arc<Shared>,
    exporter: Arc<Mutex<Box<dyn DynExporter>>>,
    stats: ExportStats,
    last_failure_log: Option<Instant>,
}

impl Exporter {
    fn run(mut self) {
        let mut taken: Vec<SpanData> = Vec::new();
        loop {
            let (flushes, stop) = {
                let mut pending = self.shared.lock();
                let deadline = Instant::now() + BATCH_DELAY;
                // Sleeps until a batch is full, a flush or stop is asked, or
                // BATCH_DELAY has passed.
                while pending.spans.len() < BATCH_SPANS && pending.flushes.is_empty() && !pending.stop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    let _ = self.shared.wake.wait_for(&mut pending, left);
                }
                std::mem::swap(&mut pending.spans, &mut taken);
                (std::mem::take(&mut pending.flushes), pending.stop)
            };
            while !taken.is_empty() {
                if self.shared.lock().stop {
                    // Shutdown gave up waiting: count the rest, do not send it.
                    self.stats
                        .dropped_export_failed
                        .fetch_add(taken.len() as u64, Ordering::Relaxed);
                    taken.clear();
                    break;
                }
                let rest = taken.split_off(taken.len().min(BATCH_SPANS));
                self.send(std::mem::replace(&mut taken, rest));
            }
            for done in flushes {
                let _ = done.send(());
            }
            if stop {
                return;
            }
        }
    }

    fn send(&mut self, batch: Vec<SpanData>) {
        let spans = batch.len() as u64;
        let result = self.exporter.lock().export_blocking(batch);
        match result {
            Ok(()) => {
                self.stats.exported.fetch_add(spans, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.dropped_export_failed.fetch_add(spans, Ordering::Relaxed);
                if self.last_failure_log.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    self.last_failure_log = Some(Instant::now());
                    tracing::warn!(
                        target: "telemetry",
                        error = %e,
                        dropped_total = self.stats.dropped_export_failed.load(Ordering::Relaxed),
                        "trace export failed; spans dropped"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// Records batch sizes; fails when told to; waits while `gate` is held.
    #[derive(Debug, Clone, Default)]
    struct TestExporter {
        batches: Arc<Mutex<Vec<usize>>>,
        fail: bool,
        gate: Arc<Mutex<()>>,
        exports_started: Arc<AtomicU64>,
    }

    impl SpanExporter for TestExporter {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.exports_started.fetch_add(1, Ordering::Relaxed);
            drop(self.gate.lock());
            self.batches.lock().push(batch.len());
            if self.fail {
                Err(OTelSdkError::InternalFailure("refused".into()))
            } else {
                Ok(())
            }
        }
    }

    fn provider(exporter: TestExporter, stats: &ExportStats) -> SdkTracerProvider {
        SdkTracerProvider::builder()
            .with_span_processor(QueueProcessor::start(exporter, stats.clone()))
            .build()
    }

    fn end_spans(provider: &SdkTracerProvider, n: usize) {
        let tracer = provider.tracer("test");
        for _ in 0..n {
            drop(tracer.start("span"));
        }
    }

    fn count(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    #[test]
    fn a_flush_exports_every_queued_span_in_batches_of_at_most_batch_spans() {
        let exporter = TestExporter::default();
        let stats = ExportStats::default();
        let provider = provider(exporter.clone(), &stats);
        end_spans(&provider, 1300);
        provider.force_flush().expect("flush");
        let batches = exporter.batches.lock().clone();
        assert_eq!(batches.iter().sum::<usize>(), 1300, "{batches:?}");
        assert!(batches.iter().all(|&n| n <= BATCH_SPANS), "{batches:?}");
        assert_eq!(count(&stats.exported), 1300);
        assert_eq!(count(&stats.dropped_queue_full), 0);
        provider.shutdown().expect("shutdown");
    }

    #[test]
    fn a_stuck_exporter_drops_and_counts_spans_without_blocking_the_caller() {
        let exporter = TestExporter::default();
        let stats = ExportStats::default();
        let provider = provider(exporter.clone(), &stats);
        let held = exporter.gate.lock();
        // The first full batch wakes the exporter, which then waits on the
        // gate; the queue fills behind it and the rest is dropped.
        end_spans(&provider, BATCH_SPANS);
        let deadline = Instant::now() + Duration::from_secs(5);
        while count(&exporter.exports_started) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(count(&exporter.exports_started), 1, "a full batch wakes the exporter");
        let total = BATCH_SPANS + QUEUE_SPANS + 1000;
        let calls = Instant::now();
        end_spans(&provider, total - BATCH_SPANS);
        assert!(
            calls.elapsed() < Duration::from_secs(2),
            "ending spans waited on the exporter"
        );
        assert!(count(&stats.dropped_queue_full) >= 1000, "{stats:?}");
        drop(held);
        provider.force_flush().expect("flush");
        assert_eq!(
            count(&stats.exported) + count(&stats.dropped_queue_full),
            total as u64,
            "every span is either exported or counted as dropped"
        );
        provider.shutdown().expect("shutdown");
    }

    #[test]
    fn shutdown_returns_within_its_timeout_while_an_export_hangs() {
        let exporter = TestExporter::default();
        let stats = ExportStats::default();
        let provider = provider(exporter.clone(), &stats);
        let held = exporter.gate.lock();
        end_spans(&provider, BATCH_SPANS * 3);
        let started = Instant::now();
        let result = provider.shutdown_with_timeout(Duration::from_millis(300));
        let took = started.elapsed();
        assert!(result.is_err(), "the flush cannot have finished: {result:?}");
        assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
        drop(held);
        // The batch in flight goes out; the rest is counted, not sent.
        let deadline = Instant::now() + Duration::from_secs(5);
        while count(&stats.exported) + count(&stats.dropped_export_failed) < (BATCH_SPANS * 3) as u64
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            count(&stats.exported) + count(&stats.dropped_export_failed),
            (BATCH_SPANS * 3) as u64
        );
        assert!(count(&stats.dropped_export_failed) > 0, "{stats:?}");
    }

    #[test]
    fn a_failed_export_counts_its_spans_as_dropped() {
        let exporter = TestExporter {
            fail: true,
            ..TestExporter::default()
        };
        let stats = ExportStats::default();
        let provider = provider(exporter, &stats);
        end_spans(&provider, 10);
        provider.force_flush().expect("flush");
        assert_eq!(count(&stats.dropped_export_failed), 10);
        assert_eq!(count(&stats.exported), 0);
        provider.shutdown().expect("shutdown");
    }

    #[test]
    fn spans_are_sent_after_the_batch_delay_without_a_flush() {
        let exporter = TestExporter::default();
        let stats = ExportStats::default();
        let provider = provider(exporter, &stats);
        end_spans(&provider, 3);
        let deadline = Instant::now() + BATCH_DELAY * 3;
        while count(&stats.exported) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(count(&stats.exported), 3);
        provider.shutdown().expect("shutdown");
    }
}
