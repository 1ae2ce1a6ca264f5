//! JSON logs: one object per line on stdout with `ts` (UTC RFC 3339, ms),
//! `level`, `msg`, `target`, the process' static fields (service, color,
//! version) and the event's own fields.
//!
//! Lines go through a bounded in-memory queue drained by a writer thread, so
//! a slow stdout never blocks a request. When the queue is full a line is
//! dropped and counted (`vigie_log_lines_dropped_total`) rather than stalling
//! the service; the returned [`LogGuard`] flushes the queue when dropped.

use std::io::Write;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value};
use time::format_description::FormatItem;
use time::macros::format_description;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Lines held in memory while stdout is slow, before new lines are dropped.
pub const QUEUE_LINES: usize = 65_536;

const TIMESTAMP: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Keeps the log writer thread alive; dropping it flushes every queued line.
#[must_use = "dropping the guard stops the log writer"]
#[derive(Debug)]
pub struct LogGuard {
    _worker: WorkerGuard,
    dropped: ErrorCounter,
}

impl LogGuard {
    /// Exposes the number of dropped lines as `vigie_log_lines_dropped_total`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(DroppedLines(self.dropped.clone())));
    }
}

#[derive(Debug)]
struct DroppedLines(ErrorCounter);

impl Collector for DroppedLines {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(self.0.dropped_lines() as u64);
        counter.encode(encoder.encode_descriptor(
            "vigie_log_lines_dropped",
            "Log lines dropped because stdout could not keep up",
            None,
            counter.metric_type(),
        )?)
    }
}

/// Checks a `RUST_LOG`-style filter; a clap value parser.
pub fn parse_filter(filter: &str) -> Result<String, String> {
    EnvFilter::try_new(filter)
        .map(|_| filter.to_owned())
        .map_err(|e| format!("invalid log filter {filter:?}: {e}"))
}

/// Installs the global JSON logger writing to `writer` (stdout in services).
/// `filter` uses `RUST_LOG` syntax, e.g. `info` or `info,vigie_router=debug`.
pub fn init<W: Write + Send + 'static>(
    filter: &str,
    static_fields: Vec<(&'static str, String)>,
    writer: W,
) -> Result<LogGuard, String> {
    let filter =
        EnvFilter::try_new(filter).map_err(|e| format!("invalid log level {filter:?}: {e}"))?;
    let (non_blocking, worker) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name("vigie-log-writer")
        .finish(writer);
    let dropped = non_blocking.error_counter();
    let static_fields = static_fields
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v)))
        .collect();
    tracing_subscriber::registry()
        .with(
            JsonLayer {
                writer: non_blocking,
                static_fields,
            }
            .with_filter(filter),
        )
        .try_init()
        .map_err(|e| format!("a logger is already installed: {e}"))?;
    Ok(LogGuard {
        _worker: worker,
        dropped,
    })
}

/// Formats each event as one JSON line.
pub struct JsonLayer<W> {
    writer: W,
    static_fields: Vec<(String, Value)>,
}

impl<W> JsonLayer<W> {
    pub fn new(writer: W, static_fields: Vec<(String, Value)>) -> Self {
        JsonLayer {
            writer,
            static_fields,
        }
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let line = format_event(event, &self.static_fields);
        // A failed write has nowhere better to be reported than stdout itself.
        let _ = self.writer.make_writer().write_all(line.as_bytes());
    }
}

/// Renders one event as a JSON line ending in `\n`.
pub fn format_event(event: &Event<'_>, static_fields: &[(String, Value)]) -> String {
    let meta = event.metadata();
    let mut object = Map::new();
    let ts = time::OffsetDateTime::now_utc()
        .format(TIMESTAMP)
        .unwrap_or_default();
    object.insert("ts".into(), Value::String(ts));
    object.insert(
        "level".into(),
        Value::String(meta.level().as_str().to_ascii_lowercase()),
    );
    object.insert("msg".into(), Value::String(String::new()));
    object.insert("target".into(), Value::String(meta.target().to_owned()));
    for (key, value) in static_fields {
        object.insert(key.clone(), value.clone());
    }
    event.record(&mut JsonVisitor(&mut object));
    let mut line = Value::Object(object).to_string();
    line.push('\n');
    line
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let key = if field.name() == "message" {
            "msg"
        } else {
            field.name()
        };
        self.0.insert(key.to_owned(), value);
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(
            field,
            serde_json::Number::from_f64(value)
                .map(Value::Number)
                .unwrap_or(Value::Null),
        );
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // Logs the whole cause chain once, as `a: b: c`.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        self.put(field, Value::from(text));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_one_json_object_per_event_with_required_fields() {
        let capture = Capture::default();
        let sink = capture.clone();
        let layer = JsonLayer::new(
            move || sink.clone(),
            vec![("color".into(), Value::from("blue"))],
        );
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "http", status = 201u64, route = "/api/tasks", "request");
            tracing::warn!(ratio = 0.5, "half \"quoted\"\nline");
        });
        let bytes = capture.0.lock().expect("lock").clone();
        let text = String::from_utf8(bytes).expect("utf8");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["msg"], "request");
        assert_eq!(lines[0]["level"], "info");
        assert_eq!(lines[0]["target"], "http");
        assert_eq!(lines[0]["status"], 201);
        assert_eq!(lines[0]["color"], "blue");
        let ts = lines[0]["ts"].as_str().expect("ts");
        assert_eq!(ts.len(), "2026-01-01T00:00:00.000Z".len(), "{ts}");
        assert!(ts.ends_with('Z'));
        assert_eq!(lines[1]["msg"], "half \"quoted\"\nline");
        assert_eq!(lines[1]["ratio"], 0.5);
    }
}
