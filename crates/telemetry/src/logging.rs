//! JSON logs: one object per line on stdout with `ts` (UTC RFC 3339, ms),
//! `level`, `msg`, `target`, the process' static fields (service, color,
//! version) and the event's own fields.
//!
//! Lines go to a bounded in-memory buffer that a writer thread moves to
//! stdout every few milliseconds ([`crate::log_writer`]), so a slow stdout
//! never blocks a request. When the buffer is full a line is dropped and
//! counted (`vigie_log_lines_dropped_total`) rather than stalling the
//! service; the returned [`LogGuard`] writes what is left when dropped.

use std::io::Write;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::log_writer::{BufferedLines, WriterGuard};

/// Keeps the log writer thread alive; dropping it flushes every queued line.
#[must_use = "dropping the guard stops the log writer"]
#[derive(Debug)]
pub struct LogGuard {
    lines: BufferedLines,
    // Dropped last: flushes after every other field is gone.
    _writer: WriterGuard,
}

impl LogGuard {
    /// Exposes the number of dropped lines as `vigie_log_lines_dropped_total`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(DroppedLines(self.lines.clone())));
    }
}

#[derive(Debug)]
struct DroppedLines(BufferedLines);

impl Collector for DroppedLines {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(self.0.dropped());
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
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("invalid log level {filter:?}: {e}"))?;
    let (lines, writer) =
        BufferedLines::start(writer).map_err(|e| format!("cannot start the log writer thread: {e}"))?;
    let static_fields: Vec<(&str, &str)> = static_fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    tracing_subscriber::registry()
        .with(JsonLayer::new(lines.clone(), &static_fields).with_filter(filter))
        .try_init()
        .map_err(|e| format!("a logger is already installed: {e}"))?;
    Ok(LogGuard { lines, _writer: writer })
}

/// Formats each event as one JSON line.
pub struct JsonLayer<W> {
    writer: W,
    /// The static fields, rendered once as `,"k":"v",...`.
    static_fields: String,
}

impl<W> JsonLayer<W> {
    pub fn new(writer: W, static_fields: &[(&str, &str)]) -> Self {
        let mut rendered = String::new();
        for (key, value) in static_fields {
            push_key(&mut rendered, key);
            push_json_str(&mut rendered, value);
        }
        JsonLayer {
            writer,
            static_fields: rendered,
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

/// Renders one event as a JSON line ending in `\n`. Written by hand rather
/// than through a `serde_json::Map`: this runs once per request.
fn format_event(event: &Event<'_>, static_fields: &str) -> String {
    let meta = event.metadata();
    let mut fields = String::with_capacity(256);
    let mut visitor = JsonVisitor {
        line: &mut fields,
        message: None,
    };
    event.record(&mut visitor);
    let message = visitor.message.take().unwrap_or_default();

    let mut line = String::with_capacity(fields.len() + static_fields.len() + 128);
    line.push_str("{\"ts\":\"");
    push_timestamp(&mut line, time::OffsetDateTime::now_utc());
    line.push_str("\",\"level\":\"");
    line.push_str(level_name(meta.level()));
    line.push('"');
    push_key(&mut line, "msg");
    push_json_str(&mut line, &message);
    push_key(&mut line, "target");
    push_json_str(&mut line, meta.target());
    line.push_str(static_fields);
    line.push_str(&fields);
    line.push_str("}\n");
    line
}

/// Appends `2026-11-25T16:04:35.165Z`; by hand, as `time`'s formatter is a
/// measurable share of a request's cost.
fn push_timestamp(line: &mut String, now: time::OffsetDateTime) {
    use std::fmt::Write as _;
    let _ = write!(
        line,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    );
}

fn level_name(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "error",
        tracing::Level::WARN => "warn",
        tracing::Level::INFO => "info",
        tracing::Level::DEBUG => "debug",
        tracing::Level::TRACE => "trace",
    }
}

fn push_key(line: &mut String, key: &str) {
    line.push(',');
    push_json_str(line, key);
    line.push(':');
}

/// Appends `text` as a JSON string literal.
fn push_json_str(line: &mut String, text: &str) {
    line.push('"');
    for c in text.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if (c as u32) < 0x20 => line.push_str(&format!("\\u{:04x}", c as u32)),
            c => line.push(c),
        }
    }
    line.push('"');
}

struct JsonVisitor<'a> {
    line: &'a mut String,
    message: Option<String>,
}

impl JsonVisitor<'_> {
    fn key(&mut self, field: &Field) {
        push_key(self.line, field.name());
    }

    fn raw(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        self.key(field);
        let _ = self.line.write_fmt(value);
    }

    fn string(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            self.key(field);
            push_json_str(self.line, value);
        }
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.raw(field, format_args!("{value}"));
        } else {
            self.raw(field, format_args!("null"));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, format_args!("{value}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, format_args!("{value}"));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, format_args!("{value}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field, value);
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
        self.string(field, &text);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.string(field, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn writes_one_json_object_per_event_with_required_fields() {
        let capture = crate::log_writer::MemorySink::default();
        let sink = capture.clone();
        let layer = JsonLayer::new(move || sink.clone(), &[("color", "blue")]);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "http", status = 201u64, route = "/api/tasks", "request");
            tracing::warn!(
                ratio = 0.5,
                ok = true,
                n = -3i64,
                e = "\u{1}\\",
                "half \"quoted\"\nline"
            );
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
        let parsed = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).expect("RFC 3339");
        assert!((time::OffsetDateTime::now_utc() - parsed).whole_seconds().abs() < 5);
        assert_eq!(lines[1]["msg"], "half \"quoted\"\nline");
        assert_eq!(lines[1]["ratio"], 0.5);
        assert_eq!(lines[1]["ok"], true);
        assert_eq!(lines[1]["n"], -3);
        assert_eq!(lines[1]["e"], "\u{1}\\");
        let keys: Vec<&str> = text
            .lines()
            .next()
            .map(|l| l.split('"').skip(1).step_by(4).take(5).collect())
            .unwrap_or_default();
        assert_eq!(keys, ["ts", "level", "msg", "target", "color"]);
    }
}
