//! JSON logs: one object per line on stdout with `ts` (UTC RFC 3339, ms),
//! `level`, `msg`, `target`, the process' static fields (service, color,
//! version) and the event's own fields.
//!
//! Lines go to a bounded in-memory buffer that a writer thread moves to
//! stdout every few milliseconds ([`crate::log_writer`]), so a slow stdout
//! never blocks a request. When the buffer is full a line is dropped and
//! counted (`vigie_log_lines_dropped_total`) rather than stalling the
//! service; the returned [`LogGuard`] writes what is left when dropped.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::OnceLock;

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

/// Why the logger could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum LogInitError {
    #[error("invalid log level {filter:?}: {source}")]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("cannot start the log writer thread: {0}")]
    WriterThread(std::io::Error),
    #[error("a logger is already installed: {0}")]
    AlreadyInstalled(tracing_subscriber::util::TryInitError),
}

/// Installs the global JSON logger writing to `writer` (stdout in services).
/// `filter` uses `RUST_LOG` syntax, e.g. `info` or `info,vigie_router=debug`.
pub fn init<W: Write + Send + 'static>(
    filter: &str,
    static_fields: Vec<(&'static str, String)>,
    writer: W,
) -> Result<LogGuard, LogInitError> {
    let filter = EnvFilter::try_new(filter).map_err(|source| LogInitError::Filter {
        filter: filter.to_owned(),
        source,
    })?;
    let (lines, writer) = BufferedLines::start(writer).map_err(LogInitError::WriterThread)?;
    let static_fields: Vec<(&str, &str)> = static_fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // One global filter rather than a per-layer one: per-layer filtering
    // keeps per-event state in a thread local, a cost on every request.
    let layer = JsonLayer::new(lines.clone(), &static_fields);
    let direct = DirectSink {
        lines: lines.clone(),
        static_fields: layer.static_fields.clone(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init()
        .map_err(LogInitError::AlreadyInstalled)?;
    // Only the first logger of the process is installed, so this is set once.
    let _ = DIRECT.set(direct);
    Ok(LogGuard { lines, _writer: writer })
}

/// Runs a server role inside its logger, the same way for every role:
/// installs the logger ([`init`]), runs `serve` (which may register the
/// logger's metrics through the guard), logs the error that stopped it, if
/// any, and flushes every queued line before returning.
pub async fn run_logged<W: Write + Send + 'static>(
    filter: &str,
    static_fields: Vec<(&'static str, String)>,
    writer: W,
    serve: impl AsyncFnOnce(&LogGuard) -> anyhow::Result<std::process::ExitCode>,
) -> anyhow::Result<std::process::ExitCode> {
    let log_guard = init(filter, static_fields, writer)?;
    let result = serve(&log_guard).await;
    if let Err(e) = &result {
        tracing::error!(error = %format!("{e:#}"), "stopped on an error");
    }
    drop(log_guard); // flushes every queued line
    result
}

/// Where [`write_line`] writes: the installed logger's sink and fields.
struct DirectSink {
    lines: BufferedLines,
    static_fields: String,
}

static DIRECT: OnceLock<DirectSink> = OnceLock::new();

/// Whether [`write_line`] can write: [`init`] installed the logger.
pub fn direct_enabled() -> bool {
    DIRECT.get().is_some()
}

/// A `tracing` event at a level chosen at run time: `tracing::event!`
/// needs a constant level (each call site is a static), so this expands to
/// one call site per level and picks one. Use it as `event!`, with the
/// target first: `event_at!(target: "guard", level, color = %c, "guard check")`.
#[macro_export]
macro_rules! event_at {
    (target: $target:expr, $level:expr, $($rest:tt)+) => {
        match $level {
            $crate::logging::Level::ERROR => $crate::logging::__event!(target: $target, $crate::logging::Level::ERROR, $($rest)+),
            $crate::logging::Level::WARN => $crate::logging::__event!(target: $target, $crate::logging::Level::WARN, $($rest)+),
            $crate::logging::Level::INFO => $crate::logging::__event!(target: $target, $crate::logging::Level::INFO, $($rest)+),
            $crate::logging::Level::DEBUG => $crate::logging::__event!(target: $target, $crate::logging::Level::DEBUG, $($rest)+),
            _ => $crate::logging::__event!(target: $target, $crate::logging::Level::TRACE, $($rest)+),
        }
    };
}

#[doc(hidden)]
pub use tracing::event as __event;
pub use tracing::Level;

/// The level of a request's line by its status: error for 5xx, warn for
/// 4xx, info otherwise.
pub fn level_for_status(status: u16) -> Level {
    match status {
        500.. => Level::ERROR,
        400..=499 => Level::WARN,
        _ => Level::INFO,
    }
}

/// One request's log line, the same for every role: the fields a role
/// does not have are `None` and left out.
pub struct RequestLine<'a> {
    pub method: &'a str,
    /// The matched route template (the backend).
    pub route: Option<&'a str>,
    pub path: &'a str,
    pub status: u16,
    pub duration: std::time::Duration,
    pub request_id: &'a str,
    /// The color the request went to (the router).
    pub upstream_color: Option<&'a str>,
    /// Why the exchange failed, in words (the router).
    pub error: Option<&'a str>,
    pub trace_id: Option<&'a str>,
    pub span_id: Option<&'a str>,
}

/// Writes a request's line (target `http`, message `request`) at `level`
/// if the filter lets it through: straight into the log buffer when the
/// logger of [`init`] is installed (no `tracing` per-field dispatch: about
/// half the cost of the line), else as a `tracing` event.
pub fn log_request(level: Level, line: &RequestLine<'_>) {
    let enabled = match level {
        Level::ERROR => tracing::enabled!(target: "http", Level::ERROR),
        Level::WARN => tracing::enabled!(target: "http", Level::WARN),
        Level::INFO => tracing::enabled!(target: "http", Level::INFO),
        Level::DEBUG => tracing::enabled!(target: "http", Level::DEBUG),
        _ => tracing::enabled!(target: "http", Level::TRACE),
    };
    if !enabled {
        return;
    }
    if direct_enabled() {
        write_line(level, "http", "request", |f| {
            f.plain_str("method", line.method)
                .opt_str("route", line.route)
                .str("path", line.path)
                .u64("status", u64::from(line.status))
                .millis("duration_ms", line.duration)
                .str("request_id", line.request_id)
                .opt_str("upstream_color", line.upstream_color)
                .opt_str("error", line.error)
                .opt_plain_str("trace_id", line.trace_id)
                .opt_plain_str("span_id", line.span_id);
        });
    } else {
        let duration_ms = (line.duration.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        crate::event_at!(
            target: "http", level,
            method = line.method, route = line.route, path = line.path, status = line.status, duration_ms,
            request_id = line.request_id, upstream_color = line.upstream_color, error = line.error,
            trace_id = line.trace_id, span_id = line.span_id,
            "request"
        );
    }
}

/// Writes one line in the format of the JSON layer without going through
/// `tracing`'s per-field dynamic dispatch: for the line every request
/// writes. The caller checks the level first (`tracing::enabled!`), and
/// uses `tracing` when [`direct_enabled`] is false. Keys, `target` and
/// `msg` must be plain (no character JSON escapes): they are written as
/// they are.
pub fn write_line(
    level: tracing::Level,
    target: &'static str,
    msg: &'static str,
    fields: impl FnOnce(&mut LineFields<'_>),
) {
    let Some(sink) = DIRECT.get() else {
        return;
    };
    // A line written while the thread's buffers are taken or gone (thread
    // exit) gets buffers of its own.
    let mut fields = Some(fields);
    let _ = BUFFERS.try_with(|buffers| {
        if let (Ok(mut buffers), Some(fields)) = (buffers.try_borrow_mut(), fields.take()) {
            write_direct(sink, &mut buffers, level, target, msg, fields);
        }
    });
    if let Some(fields) = fields {
        write_direct(sink, &mut LineBuffers::default(), level, target, msg, fields);
    }
}

fn write_direct(
    sink: &DirectSink,
    buffers: &mut LineBuffers,
    level: tracing::Level,
    target: &'static str,
    msg: &'static str,
    fields: impl FnOnce(&mut LineFields<'_>),
) {
    format_line(buffers, &sink.static_fields, &level, target, msg, fields);
    sink.lines.push(buffers.line.as_bytes());
    if buffers.line.capacity() > MAX_KEPT_BUFFER {
        *buffers = LineBuffers::default();
    }
}

/// Renders a direct line into `buffers.line`.
fn format_line(
    buffers: &mut LineBuffers,
    static_fields: &str,
    level: &tracing::Level,
    target: &'static str,
    msg: &'static str,
    fields: impl FnOnce(&mut LineFields<'_>),
) {
    let line = &mut buffers.line;
    line.clear();
    line.push_str("{\"ts\":\"");
    push_timestamp(line, &mut buffers.second, std::time::SystemTime::now());
    line.push_str("\",\"level\":\"");
    line.push_str(level_name(level));
    line.push_str("\",\"msg\":");
    push_plain_str(line, msg);
    line.push_str(",\"target\":");
    push_plain_str(line, target);
    line.push_str(static_fields);
    fields(&mut LineFields { line });
    line.push_str("}\n");
}

/// The fields of a [`write_line`] line, in the order they are added. Its
/// methods are inlined so that the literal keys of a call are copied as
/// constants.
pub struct LineFields<'a> {
    line: &'a mut String,
}

impl LineFields<'_> {
    #[inline]
    fn key(&mut self, key: &str) {
        debug_assert!(!key.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'), "{key}");
        self.line.push_str(",\"");
        self.line.push_str(key);
        self.line.push_str("\":");
    }

    #[inline]
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        push_json_str(self.line, value);
        self
    }

    /// A value that needs no escaping by construction (an HTTP method
    /// token, hex ids): copied as it is.
    #[inline]
    pub fn plain_str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        push_plain_str(self.line, value);
        self
    }

    /// Left out when `None`, as the JSON layer leaves out an empty `Option`.
    #[inline]
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.str(key, value);
        }
        self
    }

    /// [`Self::plain_str`], left out when `None`.
    #[inline]
    pub fn opt_plain_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.plain_str(key, value);
        }
        self
    }

    #[inline]
    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        self.line.push_str(itoa::Buffer::new().format(value));
        self
    }

    /// A duration as milliseconds with three decimals (microseconds).
    #[inline]
    pub fn millis(&mut self, key: &str, value: std::time::Duration) -> &mut Self {
        self.key(key);
        let micros = value.as_micros();
        self.line.push_str(itoa::Buffer::new().format(micros / 1000));
        self.line.push('.');
        let fraction = (micros % 1000) as u16;
        for digit in [fraction / 100, fraction / 10 % 10, fraction % 10] {
            self.line.push(char::from(b'0' + digit as u8));
        }
        self
    }
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
        // Reused per thread: a request's log line costs no allocation. An
        // event logged while formatting another (a field's Debug logging)
        // finds the buffers taken and gets its own.
        BUFFERS.with(|buffers| match buffers.try_borrow_mut() {
            Ok(mut buffers) => self.write(event, &mut buffers),
            Err(_) => self.write(event, &mut LineBuffers::default()),
        });
    }
}

impl<W: for<'w> MakeWriter<'w>> JsonLayer<W> {
    fn write(&self, event: &Event<'_>, buffers: &mut LineBuffers) {
        format_event(event, &self.static_fields, buffers);
        // A failed write has nowhere better to be reported than stdout itself.
        let _ = self.writer.make_writer().write_all(buffers.line.as_bytes());
        // One huge line (a long error chain) must not pin its size per thread.
        if buffers.line.capacity() > MAX_KEPT_BUFFER {
            *buffers = LineBuffers::default();
        }
    }
}

/// Buffers that grew past this are freed after their line is written.
const MAX_KEPT_BUFFER: usize = 16 * 1024;

thread_local! {
    static BUFFERS: RefCell<LineBuffers> = RefCell::new(LineBuffers::default());
}

#[derive(Default)]
struct LineBuffers {
    line: String,
    fields: String,
    message: String,
    /// The second of the last timestamp and its text up to the `.`.
    second: Option<(u64, String)>,
}

/// Renders one event as a JSON line ending in `\n` into `buffers.line`.
/// Written by hand rather than through a `serde_json::Map`: this runs once
/// per request.
fn format_event(event: &Event<'_>, static_fields: &str, buffers: &mut LineBuffers) {
    let meta = event.metadata();
    buffers.fields.clear();
    buffers.message.clear();
    event.record(&mut JsonVisitor {
        fields: &mut buffers.fields,
        message: &mut buffers.message,
    });
    let line = &mut buffers.line;
    line.clear();
    line.push_str("{\"ts\":\"");
    push_timestamp(line, &mut buffers.second, std::time::SystemTime::now());
    line.push_str("\",\"level\":\"");
    line.push_str(level_name(meta.level()));
    line.push_str("\",\"msg\":\"");
    line.push_str(&buffers.message);
    line.push('"');
    push_key(line, "target");
    push_json_str(line, meta.target());
    line.push_str(static_fields);
    line.push_str(&buffers.fields);
    line.push_str("}\n");
}

/// Appends `2026-11-25T16:04:35.165Z`. The text up to the second is kept
/// and reused within that second: formatting a date is a measurable share
/// of a small request's cost.
fn push_timestamp(line: &mut String, second: &mut Option<(u64, String)>, now: std::time::SystemTime) {
    let since_epoch = now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let prefix = match second {
        Some((cached, prefix)) if *cached == secs => prefix,
        _ => {
            let at = i64::try_from(secs)
                .ok()
                .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let prefix = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
                at.year(),
                u8::from(at.month()),
                at.day(),
                at.hour(),
                at.minute(),
                at.second()
            );
            &mut second.insert((secs, prefix)).1
        }
    };
    line.push_str(prefix);
    let millis = since_epoch.subsec_millis();
    for digit in [millis / 100, millis / 10 % 10, millis % 10] {
        line.push(char::from(b'0' + digit as u8));
    }
    line.push('Z');
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

/// Appends `text`, which needs no escaping, as a JSON string literal.
fn push_plain_str(line: &mut String, text: &str) {
    debug_assert!(!text.bytes().any(byte_needs_escape), "{text}");
    line.push('"');
    line.push_str(text);
    line.push('"');
}

/// Appends `text` as a JSON string literal.
fn push_json_str(line: &mut String, text: &str) {
    line.push('"');
    push_escaped(line, text);
    line.push('"');
}

/// Appends `text` escaped for the inside of a JSON string, copying runs of
/// plain characters at once.
fn push_escaped(line: &mut String, text: &str) {
    let bytes = text.as_bytes();
    // Most values need no escaping: check them 8 bytes at a time (one load
    // each), then the last few bytes one by one, and copy them at once.
    let mut scan_from = 0;
    while let Some(chunk) = bytes.get(scan_from..scan_from + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if needs_escape(u64::from_le_bytes(word)) {
            break;
        }
        scan_from += 8;
    }
    while scan_from < bytes.len() && !byte_needs_escape(bytes[scan_from]) {
        scan_from += 1;
    }
    if scan_from == bytes.len() {
        line.push_str(text);
        return;
    }
    let mut plain_from = 0;
    for (at, byte) in bytes.iter().enumerate().skip(scan_from) {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        line.push_str(&text[plain_from..at]);
        if escaped.is_empty() {
            let _ = write!(line, "\\u{byte:04x}");
        } else {
            line.push_str(escaped);
        }
        plain_from = at + 1;
    }
    line.push_str(&text[plain_from..]);
}

fn byte_needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// Whether one of the 8 bytes of `word` needs escaping in a JSON string: a
/// control character, `"` or `\`. Exact (no false negatives nor positives
/// for "any byte"), from the classic has-zero-byte and has-less-than tricks.
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let quote = has_zero(word ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
    (below_space | quote | backslash) != 0
}

/// `fmt::Write` that escapes what it is given: Debug and Display values are
/// written straight into the line, without a `String` of their own.
struct Escaping<'a>(&'a mut String);

impl std::fmt::Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        push_escaped(self.0, text);
        Ok(())
    }
}

struct JsonVisitor<'a> {
    fields: &'a mut String,
    /// The event's message, escaped.
    message: &'a mut String,
}

impl JsonVisitor<'_> {
    fn raw(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        push_key(self.fields, field.name());
        let _ = self.fields.write_fmt(value);
    }

    /// Writes a string field through `write`, which gets an escaping writer.
    fn string(&mut self, field: &Field, write: impl FnOnce(&mut Escaping<'_>) -> std::fmt::Result) {
        if field.name() == "message" {
            self.message.clear();
            let _ = write(&mut Escaping(self.message));
        } else {
            push_key(self.fields, field.name());
            self.fields.push('"');
            let _ = write(&mut Escaping(self.fields));
            self.fields.push('"');
        }
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            push_key(self.fields, field.name());
            self.fields.push_str(ryu::Buffer::new().format_finite(value));
        } else {
            self.raw(field, format_args!("null"));
        }
    }
    // itoa and ryu rather than `fmt`: a request line has several numbers.
    fn record_i64(&mut self, field: &Field, value: i64) {
        push_key(self.fields, field.name());
        self.fields.push_str(itoa::Buffer::new().format(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        push_key(self.fields, field.name());
        self.fields.push_str(itoa::Buffer::new().format(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, format_args!("{value}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field, |out| out.write_str(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // Logs the whole cause chain once, as `a: b: c`.
        self.string(field, |out| {
            write!(out, "{value}")?;
            let mut source = value.source();
            while let Some(cause) = source {
                write!(out, ": {cause}")?;
                source = cause.source();
            }
            Ok(())
        });
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.string(field, |out| write!(out, "{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn needs_escape_finds_exactly_the_bytes_json_escapes() {
        for byte in 0..=255u8 {
            let expected = byte < 0x20 || byte == b'"' || byte == b'\\';
            for position in 0..8 {
                for filler in [b'a', 0x7f, 0x80, 0xff, b' ', b'!', b'#', b']'] {
                    let mut word = [filler; 8];
                    word[position] = byte;
                    assert_eq!(
                        needs_escape(u64::from_le_bytes(word)),
                        expected,
                        "byte {byte:#04x} at {position} among {filler:#04x}"
                    );
                }
            }
        }
    }

    #[test]
    fn escaped_random_text_reads_back_unchanged_through_a_json_parser() {
        let alphabet: Vec<char> = "ab\"\\\n\r\t\u{0}\u{1f} é😀\u{7f}/".chars().collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let text: String = (0..len)
                .map(|i| alphabet[((seed >> (i % 50)) as usize + i * 7) % alphabet.len()])
                .collect();
            let mut ours = String::new();
            push_json_str(&mut ours, &text);
            assert_eq!(
                serde_json::from_str::<String>(&ours).expect("valid JSON string"),
                text,
                "{ours}"
            );
        }
    }

    use super::*;
    use serde_json::Value;

    #[test]
    fn a_direct_line_reads_like_the_json_layer_line_of_the_same_event() {
        let capture = crate::log_writer::MemorySink::default();
        let sink = capture.clone();
        let layer = JsonLayer::new(move || sink.clone(), &[("service", "svc"), ("color", "blue")]);
        let static_fields = layer.static_fields.clone();
        let subscriber = tracing_subscriber::registry().with(layer);
        let path = "/api/t\"a\\sks\u{1}é";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                target: "http",
                method = "GET",
                path,
                status = 404u16,
                duration_ms = 12.345,
                request_id = "abc",
                trace_id = None::<&str>,
                "request"
            );
        });
        let through_tracing = String::from_utf8(capture.0.lock().clone()).expect("utf8");
        let mut buffers = LineBuffers::default();
        format_line(
            &mut buffers,
            &static_fields,
            &tracing::Level::WARN,
            "http",
            "request",
            |f| {
                f.str("method", "GET")
                    .str("path", path)
                    .u64("status", 404)
                    .millis("duration_ms", std::time::Duration::from_micros(12_345))
                    .str("request_id", "abc")
                    .opt_str("trace_id", None);
            },
        );
        let without_ts = |line: &str| {
            let mut value: Value = serde_json::from_str(line.trim_end()).expect("json line");
            value.as_object_mut().expect("object").remove("ts");
            serde_json::to_string(&value).expect("serialize")
        };
        assert_eq!(without_ts(&buffers.line), without_ts(&through_tracing));
        assert!(buffers.line.ends_with("}\n"));
        let mut zero = LineBuffers::default();
        format_line(&mut zero, "", &tracing::Level::INFO, "t", "m", |f| {
            f.millis("a", std::time::Duration::ZERO)
                .millis("b", std::time::Duration::from_micros(7_000_001));
        });
        assert!(zero.line.contains(r#""a":0.000,"b":7000.001}"#), "{}", zero.line);
    }

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
        let bytes = capture.0.lock().clone();
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
