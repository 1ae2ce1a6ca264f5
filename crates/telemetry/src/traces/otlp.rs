//! OTLP/HTTP export of finished spans: the batch is encoded as an
//! `ExportTraceServiceRequest` protobuf straight from the SDK's `SpanData`
//! and posted to the receiver. The usual route (the `opentelemetry-otlp`
//! crate) first copies every span into generated protobuf structs, a dozen
//! allocations per span on the export thread; this writes the same bytes
//! without them (the tests decode both and compare).
//!
//! Kept over that route by a side-by-side measure (2026-12-02, callgrind,
//! user-space instructions per request of every thread, 100% sampling,
//! W3C context by the SDK in both): router 45,333 here against 50,877 with
//! `opentelemetry-proto` + `prost` (+12%), backend 39,902 against 44,660
//! (+12%); counts repeat within 1%.
//!
//! Configured by the standard variables ([`OtlpConfig::from_env`]); only the
//! `http/protobuf` protocol, without compression, over plain HTTP.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

/// Longest wait for one export when `OTEL_EXPORTER_OTLP_TIMEOUT` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how spans are posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The full traces URL, e.g. `http://tempo:4318/v1/traces`.
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

/// A trace export setting that cannot work; each names its variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtlpConfigError {
    #[error("{var}: OTLP endpoint {endpoint:?}: https is not supported; send to a collector over http")]
    Https { var: &'static str, endpoint: String },
    #[error("{var}: OTLP endpoint {endpoint:?} is not an http:// URL")]
    NotHttp { var: &'static str, endpoint: String },
    #[error("{var}={value:?}: only http/protobuf is supported")]
    Protocol { var: String, value: String },
    #[error("{var}={value:?}: compression is not supported (use none)")]
    Compression { var: String, value: String },
    #[error("{var}={value:?}: expected a positive number of milliseconds")]
    Timeout { var: String, value: String },
    #[error("{var}: {problem}")]
    Headers { var: String, problem: HeaderError },
}

/// What is wrong with an `OTEL_EXPORTER_OTLP_HEADERS` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("{0:?} is not key=value")]
    NotKeyValue(String),
    #[error("{0:?}: bad percent-encoding")]
    BadPercentEncoding(String),
    #[error("{0:?} is not a header name")]
    BadName(String),
    #[error("the value of {0:?} is not a header value")]
    BadValue(String),
}

impl OtlpConfig {
    /// Reads the `OTEL_EXPORTER_OTLP_*` variables through `env` (a variable
    /// set to blanks counts as unset). `None` when no endpoint is set; an
    /// error names the variable and what is wrong with it.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Option<OtlpConfig>, OtlpConfigError> {
        // The traces-specific variable wins over the general one.
        let var = |name: &str| {
            let specific = name.replacen("OTEL_EXPORTER_OTLP_", "OTEL_EXPORTER_OTLP_TRACES_", 1);
            env(&specific)
                .map(|v| (specific, v))
                .or_else(|| env(name).map(|v| (name.to_owned(), v)))
        };
        let (endpoint_var, endpoint) = match (
            env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            env("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(traces), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces),
            (None, Some(base)) => (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("{}/v1/traces", base.trim_end_matches('/')),
            ),
            (None, None) => return Ok(None),
        };
        match endpoint.parse::<http::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => {}
            Ok(uri) if uri.scheme_str() == Some("https") => {
                return Err(OtlpConfigError::Https {
                    var: endpoint_var,
                    endpoint,
                })
            }
            _ => {
                return Err(OtlpConfigError::NotHttp {
                    var: endpoint_var,
                    endpoint,
                })
            }
        }
        if let Some((var, value)) = var("OTEL_EXPORTER_OTLP_PROTOCOL") {
            if value.trim() != "http/protobuf" {
                return Err(OtlpConfigError::Protocol { var, value });
            }
        }
        if let Some((var, value)) = var("OTEL_EXPORTER_OTLP_COMPRESSION") {
            if value.trim() != "none" {
                return Err(OtlpConfigError::Compression { var, value });
            }
        }
        let timeout = match var("OTEL_EXPORTER_OTLP_TIMEOUT") {
            Some((var, value)) => match value.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => return Err(OtlpConfigError::Timeout { var, value }),
            },
            None => DEFAULT_TIMEOUT,
        };
        let headers = match var("OTEL_EXPORTER_OTLP_HEADERS") {
            Some((var, list)) => parse_headers(&list).map_err(|problem| OtlpConfigError::Headers { var, problem })?,
            None => Vec::new(),
        };
        Ok(Some(OtlpConfig {
            endpoint,
            headers,
            timeout,
        }))
    }
}

/// `key=value,key=value`, values percent-decoded (the OTLP exporter spec).
fn parse_headers(list: &str) -> Result<Vec<(String, String)>, HeaderError> {
    let mut headers = Vec::new();
    for pair in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| HeaderError::NotKeyValue(pair.to_owned()))?;
        let key = key.trim();
        let value = value.trim();
        // The crate keeps a `%` without two hex digits as it is; a typo in
        // a secret is better an error at start-up.
        let malformed = value.match_indices('%').any(|(at, _)| {
            !value
                .get(at + 1..at + 3)
                .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
        });
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .ok()
            .filter(|_| !malformed)
            .ok_or_else(|| HeaderError::BadPercentEncoding(pair.to_owned()))?
            .into_owned();
        http::HeaderName::from_bytes(key.as_bytes()).map_err(|_| HeaderError::BadName(key.to_owned()))?;
        http::HeaderValue::from_str(&value).map_err(|_| HeaderError::BadValue(key.to_owned()))?;
        headers.push((key.to_owned(), value));
    }
    Ok(headers)
}

/// Posts batches of spans to an OTLP/HTTP receiver, blocking the calling
/// (export) thread for at most the configured timeout.
#[derive(Debug)]
pub struct OtlpExporter {
    /// Made on first use, on the export thread: a blocking client must not
    /// be made or dropped on an async runtime's thread.
    client: OnceLock<Result<reqwest::blocking::Client, String>>,
    config: OtlpConfig,
    resource: Resource,
}

impl OtlpExporter {
    pub fn new(config: OtlpConfig) -> OtlpExporter {
        OtlpExporter {
            client: OnceLock::new(),
            config,
            resource: Resource::builder_empty().build(),
        }
    }

    fn client(&self) -> Result<&reqwest::blocking::Client, OTelSdkError> {
        self.client
            .get_or_init(|| {
                reqwest::blocking::Client::builder()
                    .timeout(self.config.timeout)
                    .build()
                    .map_err(|e| format!("cannot set up OTLP export to {}: {e}", self.config.endpoint))
            })
            .as_ref()
            .map_err(|e| OTelSdkError::InternalFailure(e.clone()))
    }

    fn post(&self, body: Vec<u8>) -> OTelSdkResult {
        let mut request = self
            .client()?
            .post(&self.config.endpoint)
            .header(http::header::CONTENT_TYPE, "application/x-protobuf");
        for (key, value) in &self.config.headers {
            request = request.header(key.as_str(), value.as_str());
        }
        let response = request
            .body(body)
            .send()
            .map_err(|e| OTelSdkError::InternalFailure(format!("{}: {e}", self.config.endpoint)))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(OTelSdkError::InternalFailure(format!(
                "{} answered {}",
                self.config.endpoint,
                response.status()
            )))
        }
    }
}

impl Drop for OtlpExporter {
    fn drop(&mut self) {
        // The last owner may be an async task (the service's shutdown).
        if let Some(Ok(client)) = self.client.take() {
            let _ = std::thread::Builder::new()
                .name("vigie-otlp-drop".into())
                .spawn(move || drop(client));
        }
    }
}

impl SpanExporter for OtlpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.post(encode(&self.resource, &batch))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.clone();
    }
}

// Field numbers of opentelemetry/proto/{collector/trace,trace,common,resource}/v1.
mod field {
    pub const REQUEST_RESOURCE_SPANS: u32 = 1;
    pub const RESOURCE_SPANS_RESOURCE: u32 = 1;
    pub const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
    pub const RESOURCE_SPANS_SCHEMA_URL: u32 = 3;
    pub const RESOURCE_ATTRIBUTES: u32 = 1;
    pub const SCOPE_SPANS_SCOPE: u32 = 1;
    pub const SCOPE_SPANS_SPANS: u32 = 2;
    pub const SCOPE_SPANS_SCHEMA_URL: u32 = 3;
    pub const SCOPE_NAME: u32 = 1;
    pub const SCOPE_VERSION: u32 = 2;
    pub const SCOPE_ATTRIBUTES: u32 = 3;
    pub const SPAN_TRACE_ID: u32 = 1;
    pub const SPAN_SPAN_ID: u32 = 2;
    pub const SPAN_TRACE_STATE: u32 = 3;
    pub const SPAN_PARENT_SPAN_ID: u32 = 4;
    pub const SPAN_NAME: u32 = 5;
    pub const SPAN_KIND: u32 = 6;
    pub const SPAN_START: u32 = 7;
    pub const SPAN_END: u32 = 8;
    pub const SPAN_ATTRIBUTES: u32 = 9;
    pub const SPAN_DROPPED_ATTRIBUTES: u32 = 10;
    pub const SPAN_EVENTS: u32 = 11;
    pub const SPAN_DROPPED_EVENTS: u32 = 12;
    pub const SPAN_LINKS: u32 = 13;
    pub const SPAN_DROPPED_LINKS: u32 = 14;
    pub const SPAN_STATUS: u32 = 15;
    pub const SPAN_FLAGS: u32 = 16;
    pub const EVENT_TIME: u32 = 1;
    pub const EVENT_NAME: u32 = 2;
    pub const EVENT_ATTRIBUTES: u32 = 3;
    pub const EVENT_DROPPED_ATTRIBUTES: u32 = 4;
    pub const LINK_TRACE_ID: u32 = 1;
    pub const LINK_SPAN_ID: u32 = 2;
    pub const LINK_TRACE_STATE: u32 = 3;
    pub const LINK_ATTRIBUTES: u32 = 4;
    pub const LINK_DROPPED_ATTRIBUTES: u32 = 5;
    pub const LINK_FLAGS: u32 = 6;
    pub const STATUS_MESSAGE: u32 = 2;
    pub const STATUS_CODE: u32 = 3;
    pub const KEY_VALUE_KEY: u32 = 1;
    pub const KEY_VALUE_VALUE: u32 = 2;
    pub const ANY_STRING: u32 = 1;
    pub const ANY_BOOL: u32 = 2;
    pub const ANY_INT: u32 = 3;
    pub const ANY_DOUBLE: u32 = 4;
    pub const ANY_ARRAY: u32 = 5;
    pub const ARRAY_VALUES: u32 = 1;
}

/// `SpanFlags`: the sampled bit, plus "we know whether the parent is remote".
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// The body of one export: an `ExportTraceServiceRequest` with one
/// `ResourceSpans` holding a `ScopeSpans` per instrumentation scope.
pub fn encode(resource: &Resource, spans: &[SpanData]) -> Vec<u8> {
    let mut scopes: Vec<(&InstrumentationScope, Vec<SizedSpan<'_>>)> = Vec::new();
    for span in spans {
        // Each span's length is needed at every level above it: once here.
        let sized = SizedSpan(span, SpanMessage(span).len());
        match scopes
            .iter_mut()
            .find(|(scope, _)| *scope == &span.instrumentation_scope)
        {
            Some((_, members)) => members.push(sized),
            None => scopes.push((&span.instrumentation_scope, vec![sized])),
        }
    }
    let resource_spans = ResourceSpans { resource, scopes };
    let mut out = Vec::with_capacity(resource_spans.len() + 16);
    put_message(&mut out, field::REQUEST_RESOURCE_SPANS, &resource_spans);
    out
}

/// A protobuf message written from borrowed data: its encoded length
/// (without tag and length prefix), and the writing of it.
trait Message {
    fn len(&self) -> usize;
    fn write(&self, out: &mut Vec<u8>);
}

struct ResourceSpans<'a> {
    resource: &'a Resource,
    scopes: Vec<(&'a InstrumentationScope, Vec<SizedSpan<'a>>)>,
}

/// A span and its encoded length.
struct SizedSpan<'a>(&'a SpanData, usize);

struct ResourceMessage<'a>(&'a Resource);
struct ScopeSpans<'a>(&'a InstrumentationScope, &'a [SizedSpan<'a>]);
struct ScopeMessage<'a>(&'a InstrumentationScope);
struct SpanMessage<'a>(&'a SpanData);
struct EventMessage<'a>(&'a opentelemetry::trace::Event);
struct LinkMessage<'a>(&'a opentelemetry::trace::Link);
struct StatusMessage<'a>(&'a Status);
struct KeyValueMessage<'a>(&'a str, &'a Value);
struct AnyValue<'a>(&'a Value);
struct ArrayMessage<'a>(&'a Array);

impl Message for ResourceSpans<'_> {
    fn len(&self) -> usize {
        let scopes: usize = self
            .scopes
            .iter()
            .map(|(scope, spans)| message_len(field::RESOURCE_SPANS_SCOPE_SPANS, &ScopeSpans(scope, spans)))
            .sum();
        message_len(field::RESOURCE_SPANS_RESOURCE, &ResourceMessage(self.resource))
            + scopes
            + str_len(
                field::RESOURCE_SPANS_SCHEMA_URL,
                self.resource.schema_url().unwrap_or_default(),
            )
    }
    fn write(&self, out: &mut Vec<u8>) {
        put_message(out, field::RESOURCE_SPANS_RESOURCE, &ResourceMessage(self.resource));
        for (scope, spans) in &self.scopes {
            put_message(out, field::RESOURCE_SPANS_SCOPE_SPANS, &ScopeSpans(scope, spans));
        }
        put_str(
            out,
            field::RESOURCE_SPANS_SCHEMA_URL,
            self.resource.schema_url().unwrap_or_default(),
        );
    }
}

impl Message for ResourceMessage<'_> {
    fn len(&self) -> usize {
        self.0
            .iter()
            .map(|(k, v)| message_len(field::RESOURCE_ATTRIBUTES, &KeyValueMessage(k.as_str(), v)))
            .sum()
    }
    fn write(&self, out: &mut Vec<u8>) {
        for (k, v) in self.0.iter() {
            put_message(out, field::RESOURCE_ATTRIBUTES, &KeyValueMessage(k.as_str(), v));
        }
    }
}

impl Message for ScopeSpans<'_> {
    fn len(&self) -> usize {
        message_len(field::SCOPE_SPANS_SCOPE, &ScopeMessage(self.0))
            + self
                .1
                .iter()
                .map(|span| delimited_len(field::SCOPE_SPANS_SPANS, span.1))
                .sum::<usize>()
            + str_len(field::SCOPE_SPANS_SCHEMA_URL, self.0.schema_url().unwrap_or_default())
    }
    fn write(&self, out: &mut Vec<u8>) {
        put_message(out, field::SCOPE_SPANS_SCOPE, &ScopeMessage(self.0));
        for SizedSpan(span, len) in self.1 {
            put_tag(out, field::SCOPE_SPANS_SPANS, WIRE_LEN);
            put_varint(out, *len as u64);
            SpanMessage(span).write(out);
        }
        put_str(
            out,
            field::SCOPE_SPANS_SCHEMA_URL,
            self.0.schema_url().unwrap_or_default(),
        );
    }
}

impl Message for ScopeMessage<'_> {
    fn len(&self) -> usize {
        str_len(field::SCOPE_NAME, self.0.name())
            + str_len(field::SCOPE_VERSION, self.0.version().unwrap_or_default())
            + attributes_len(field::SCOPE_ATTRIBUTES, self.0.attributes())
    }
    fn write(&self, out: &mut Vec<u8>) {
        put_str(out, field::SCOPE_NAME, self.0.name());
        put_str(out, field::SCOPE_VERSION, self.0.version().unwrap_or_default());
        put_attributes(out, field::SCOPE_ATTRIBUTES, self.0.attributes());
    }
}

fn span_flags(trace_flags: u8, parent_is_remote: bool) -> u32 {
    u32::from(trace_flags) | FLAG_HAS_IS_REMOTE | if parent_is_remote { FLAG_IS_REMOTE } else { 0 }
}

fn span_kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn parent_id(span: &SpanData) -> [u8; 8] {
    span.parent_span_id.to_bytes()
}

impl Message for SpanMessage<'_> {
    fn len(&self) -> usize {
        let s = self.0;
        let has_parent = s.parent_span_id != opentelemetry::trace::SpanId::INVALID;
        bytes_len(field::SPAN_TRACE_ID, 16)
            + bytes_len(field::SPAN_SPAN_ID, 8)
            + str_len(field::SPAN_TRACE_STATE, &s.span_context.trace_state().header())
            + if has_parent {
                bytes_len(field::SPAN_PARENT_SPAN_ID, 8)
            } else {
                0
            }
            + str_len(field::SPAN_NAME, &s.name)
            + varint_field_len(field::SPAN_KIND, span_kind(&s.span_kind))
            + fixed64_len(field::SPAN_START, nanos(s.start_time))
            + fixed64_len(field::SPAN_END, nanos(s.end_time))
            + attributes_len(field::SPAN_ATTRIBUTES, &s.attributes)
            + varint_field_len(field::SPAN_DROPPED_ATTRIBUTES, u64::from(s.dropped_attributes_count))
            + s.events
                .iter()
                .map(|e| message_len(field::SPAN_EVENTS, &EventMessage(e)))
                .sum::<usize>()
            + varint_field_len(field::SPAN_DROPPED_EVENTS, u64::from(s.events.dropped_count))
            + s.links
                .iter()
                .map(|l| message_len(field::SPAN_LINKS, &LinkMessage(l)))
                .sum::<usize>()
            + varint_field_len(field::SPAN_DROPPED_LINKS, u64::from(s.links.dropped_count))
            + message_len(field::SPAN_STATUS, &StatusMessage(&s.status))
            + fixed32_len(field::SPAN_FLAGS)
    }
    fn write(&self, out: &mut Vec<u8>) {
        let s = self.0;
        put_bytes(out, field::SPAN_TRACE_ID, &s.span_context.trace_id().to_bytes());
        put_bytes(out, field::SPAN_SPAN_ID, &s.span_context.span_id().to_bytes());
        put_str(out, field::SPAN_TRACE_STATE, &s.span_context.trace_state().header());
        if s.parent_span_id != opentelemetry::trace::SpanId::INVALID {
            put_bytes(out, field::SPAN_PARENT_SPAN_ID, &parent_id(s));
        }
        put_str(out, field::SPAN_NAME, &s.name);
        put_varint_field(out, field::SPAN_KIND, span_kind(&s.span_kind));
        put_fixed64(out, field::SPAN_START, nanos(s.start_time));
        put_fixed64(out, field::SPAN_END, nanos(s.end_time));
        put_attributes(out, field::SPAN_ATTRIBUTES, &s.attributes);
        put_varint_field(
            out,
            field::SPAN_DROPPED_ATTRIBUTES,
            u64::from(s.dropped_attributes_count),
        );
        for event in s.events.iter() {
            put_message(out, field::SPAN_EVENTS, &EventMessage(event));
        }
        put_varint_field(out, field::SPAN_DROPPED_EVENTS, u64::from(s.events.dropped_count));
        for link in s.links.iter() {
            put_message(out, field::SPAN_LINKS, &LinkMessage(link));
        }
        put_varint_field(out, field::SPAN_DROPPED_LINKS, u64::from(s.links.dropped_count));
        put_message(out, field::SPAN_STATUS, &StatusMessage(&s.status));
        put_fixed32(
            out,
            field::SPAN_FLAGS,
            span_flags(s.span_context.trace_flags().to_u8(), s.parent_span_is_remote),
        );
    }
}

impl Message for EventMessage<'_> {
    fn len(&self) -> usize {
        let e = self.0;
        fixed64_len(field::EVENT_TIME, nanos(e.timestamp))
            + str_len(field::EVENT_NAME, &e.name)
            + attributes_len(field::EVENT_ATTRIBUTES, &e.attributes)
            + varint_field_len(field::EVENT_DROPPED_ATTRIBUTES, u64::from(e.dropped_attributes_count))
    }
    fn write(&self, out: &mut Vec<u8>) {
        let e = self.0;
        put_fixed64(out, field::EVENT_TIME, nanos(e.timestamp));
        put_str(out, field::EVENT_NAME, &e.name);
        put_attributes(out, field::EVENT_ATTRIBUTES, &e.attributes);
        put_varint_field(
            out,
            field::EVENT_DROPPED_ATTRIBUTES,
            u64::from(e.dropped_attributes_count),
        );
    }
}

impl Message for LinkMessage<'_> {
    fn len(&self) -> usize {
        let l = self.0;
        bytes_len(field::LINK_TRACE_ID, 16)
            + bytes_len(field::LINK_SPAN_ID, 8)
            + str_len(field::LINK_TRACE_STATE, &l.span_context.trace_state().header())
            + attributes_len(field::LINK_ATTRIBUTES, &l.attributes)
            + varint_field_len(field::LINK_DROPPED_ATTRIBUTES, u64::from(l.dropped_attributes_count))
            + fixed32_len(field::LINK_FLAGS)
    }
    fn write(&self, out: &mut Vec<u8>) {
        let l = self.0;
        put_bytes(out, field::LINK_TRACE_ID, &l.span_context.trace_id().to_bytes());
        put_bytes(out, field::LINK_SPAN_ID, &l.span_context.span_id().to_bytes());
        put_str(out, field::LINK_TRACE_STATE, &l.span_context.trace_state().header());
        put_attributes(out, field::LINK_ATTRIBUTES, &l.attributes);
        put_varint_field(
            out,
            field::LINK_DROPPED_ATTRIBUTES,
            u64::from(l.dropped_attributes_count),
        );
        put_fixed32(
            out,
            field::LINK_FLAGS,
            span_flags(l.span_context.trace_flags().to_u8(), l.span_context.is_remote()),
        );
    }
}

impl StatusMessage<'_> {
    fn parts(&self) -> (&str, u64) {
        match self.0 {
            Status::Unset => ("", 0),
            Status::Ok => ("", 1),
            Status::Error { description } => (description, 2),
        }
    }
}

impl Message for StatusMessage<'_> {
    fn len(&self) -> usize {
        let (message, code) = self.parts();
        str_len(field::STATUS_MESSAGE, message) + varint_field_len(field::STATUS_CODE, code)
    }
    fn write(&self, out: &mut Vec<u8>) {
        let (message, code) = self.parts();
        put_str(out, field::STATUS_MESSAGE, message);
        put_varint_field(out, field::STATUS_CODE, code);
    }
}

impl Message for KeyValueMessage<'_> {
    fn len(&self) -> usize {
        str_len(field::KEY_VALUE_KEY, self.0) + message_len(field::KEY_VALUE_VALUE, &AnyValue(self.1))
    }
    fn write(&self, out: &mut Vec<u8>) {
        put_str(out, field::KEY_VALUE_KEY, self.0);
        put_message(out, field::KEY_VALUE_VALUE, &AnyValue(self.1));
    }
}

// A oneof member is written even when it holds its type's default value.
impl Message for AnyValue<'_> {
    fn len(&self) -> usize {
        match self.0 {
            Value::Bool(_) => tag_len(field::ANY_BOOL) + 1,
            Value::I64(v) => tag_len(field::ANY_INT) + varint_len(*v as u64),
            Value::F64(_) => tag_len(field::ANY_DOUBLE) + 8,
            Value::String(s) => delimited_len(field::ANY_STRING, s.as_str().len()),
            Value::Array(a) => message_len(field::ANY_ARRAY, &ArrayMessage(a)),
            other => delimited_len(field::ANY_STRING, other.to_string().len()),
        }
    }
    fn write(&self, out: &mut Vec<u8>) {
        match self.0 {
            Value::Bool(v) => {
                put_tag(out, field::ANY_BOOL, WIRE_VARINT);
                put_varint(out, u64::from(*v));
            }
            Value::I64(v) => {
                put_tag(out, field::ANY_INT, WIRE_VARINT);
                put_varint(out, *v as u64);
            }
            Value::F64(v) => {
                put_tag(out, field::ANY_DOUBLE, WIRE_FIXED64);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::String(s) => put_delimited(out, field::ANY_STRING, s.as_str().as_bytes()),
            Value::Array(a) => put_message(out, field::ANY_ARRAY, &ArrayMessage(a)),
            other => put_delimited(out, field::ANY_STRING, other.to_string().as_bytes()),
        }
    }
}

impl ArrayMessage<'_> {
    /// The array's members as values (arrays are rare: a copy is fine).
    fn values(&self) -> Vec<Value> {
        match self.0 {
            Array::Bool(v) => v.iter().map(|x| Value::Bool(*x)).collect(),
            Array::I64(v) => v.iter().map(|x| Value::I64(*x)).collect(),
            Array::F64(v) => v.iter().map(|x| Value::F64(*x)).collect(),
            Array::String(v) => v.iter().map(|x| Value::String(x.clone())).collect(),
            other => vec![Value::String(other.to_string().into())],
        }
    }
}

impl Message for ArrayMessage<'_> {
    fn len(&self) -> usize {
        self.values()
            .iter()
            .map(|v| message_len(field::ARRAY_VALUES, &AnyValue(v)))
            .sum()
    }
    fn write(&self, out: &mut Vec<u8>) {
        for value in self.values() {
            put_message(out, field::ARRAY_VALUES, &AnyValue(&value));
        }
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

const WIRE_VARINT: u32 = 0;
const WIRE_FIXED64: u32 = 1;
const WIRE_LEN: u32 = 2;
const WIRE_FIXED32: u32 = 5;

fn varint_len(mut value: u64) -> usize {
    let mut n = 1;
    while value >= 0x80 {
        value >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn tag_len(field: u32) -> usize {
    varint_len(u64::from(field << 3))
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(out, u64::from((field << 3) | wire));
}

fn delimited_len(field: u32, len: usize) -> usize {
    tag_len(field) + varint_len(len as u64) + len
}

fn put_delimited(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

// proto3: scalar fields at their default value are left out.
fn str_len(field: u32, text: &str) -> usize {
    bytes_len(field, text.len())
}

fn bytes_len(field: u32, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        delimited_len(field, len)
    }
}

fn put_str(out: &mut Vec<u8>, field: u32, text: &str) {
    put_bytes(out, field, text.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_delimited(out, field, bytes);
    }
}

fn varint_field_len(field: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        tag_len(field) + varint_len(value)
    }
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        put_tag(out, field, WIRE_VARINT);
        put_varint(out, value);
    }
}

fn fixed64_len(field: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        tag_len(field) + 8
    }
}

fn put_fixed64(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        put_tag(out, field, WIRE_FIXED64);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// Span and link flags always carry the has-is-remote bit: never zero.
fn fixed32_len(field: u32) -> usize {
    tag_len(field) + 4
}

fn put_fixed32(out: &mut Vec<u8>, field: u32, value: u32) {
    put_tag(out, field, WIRE_FIXED32);
    out.extend_from_slice(&value.to_le_bytes());
}

fn attributes_len<'a>(field: u32, attributes: impl IntoIterator<Item = &'a KeyValue>) -> usize {
    attributes
        .into_iter()
        .map(|kv| message_len(field, &KeyValueMessage(kv.key.as_str(), &kv.value)))
        .sum()
}

fn put_attributes<'a>(out: &mut Vec<u8>, field: u32, attributes: impl IntoIterator<Item = &'a KeyValue>) {
    for kv in attributes {
        put_message(out, field, &KeyValueMessage(kv.key.as_str(), &kv.value));
    }
}

/// Length of an embedded message field; a present message is written even
/// when empty.
fn message_len(field: u32, message: &impl Message) -> usize {
    delimited_len(field, message.len())
}

fn put_message(out: &mut Vec<u8>, field: u32, message: &impl Message) {
    put_tag(out, field, WIRE_LEN);
    put_varint(out, message.len() as u64);
    message.write(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Event, Link, SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry::StringValue;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message as _;
    use std::borrow::Cow;
    use std::str::FromStr;

    fn context(trace: u128, span: u64, sampled: bool, remote: bool, state: &str) -> SpanContext {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let state = TraceState::from_str(state).unwrap_or_default();
        SpanContext::new(TraceId::from(trace), SpanId::from(span), flags, remote, state)
    }

    fn at(nanos: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(nanos)
    }

    /// Spans that use every field the encoder writes, over two scopes.
    fn spans() -> Vec<SpanData> {
        let vigie = InstrumentationScope::builder("vigie").build();
        let other = InstrumentationScope::builder("other")
            .with_version("1.2.3")
            .with_schema_url("https://opentelemetry.io/schemas/1.26.0")
            .with_attributes([KeyValue::new("scope.attr", true)])
            .build();
        let mut events = SpanEvents::default();
        events.events = vec![Event::new(
            "exception",
            at(1_764_590_000_000_500_000),
            vec![KeyValue::new("k", "v")],
            1,
        )];
        events.dropped_count = 3;
        let mut links = SpanLinks::default();
        links.links = vec![Link::new(
            context(7, 8, true, true, "rojo=00f067aa0ba902b7"),
            vec![KeyValue::new("l", 1_i64)],
            4,
        )];
        links.dropped_count = 5;
        let server = SpanData {
            span_context: context(0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, true, false, ""),
            parent_span_id: SpanId::from(0x1122334455667788),
            parent_span_is_remote: true,
            span_kind: SpanKind::Server,
            name: Cow::Borrowed("GET /api/tasks/{id}"),
            start_time: at(1_764_590_000_000_000_000),
            end_time: at(1_764_590_000_001_234_567),
            attributes: vec![
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("http.route", String::from("/api/tasks/{id}")),
                KeyValue::new("http.response.status_code", 200_i64),
                KeyValue::new("negative", -5_i64),
                KeyValue::new("zero", 0_i64),
                KeyValue::new("ratio", 0.25_f64),
                KeyValue::new("flag", false),
                KeyValue::new("empty", ""),
                KeyValue::new("ünïcode", "値"),
                KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("ints", Value::Array(Array::I64(vec![1, -2, 300]))),
                KeyValue::new("floats", Value::Array(Array::F64(vec![1.5]))),
                KeyValue::new(
                    "strings",
                    Value::Array(Array::String(vec![StringValue::from("a"), "b".into()])),
                ),
            ],
            dropped_attributes_count: 2,
            events,
            links,
            status: Status::error("HTTP 500"),
            instrumentation_scope: vigie.clone(),
        };
        let root = SpanData {
            span_context: context(0xabc, 0xdef, true, false, "congo=t61rcWkgMzE"),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: Cow::Owned("SELECT tasks".into()),
            start_time: at(5),
            end_time: at(6),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Ok,
            instrumentation_scope: other,
        };
        let mut internal = root.clone();
        internal.span_kind = SpanKind::Internal;
        internal.status = Status::Unset;
        internal.instrumentation_scope = vigie;
        let mut producer = internal.clone();
        producer.span_kind = SpanKind::Producer;
        let mut consumer = internal.clone();
        consumer.span_kind = SpanKind::Consumer;
        vec![server, root, internal, producer, consumer]
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_service_name("vigie-backend")
            .with_attributes([KeyValue::new("vigie.color", "blue"), KeyValue::new("pid", 42_i64)])
            .with_schema_url([], "https://opentelemetry.io/schemas/1.26.0")
            .build()
    }

    /// What `opentelemetry-otlp` would send for the same spans.
    fn reference(resource: &Resource, spans: Vec<SpanData>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans, &ResourceAttributesWithSchema::from(resource)),
        }
    }

    #[test]
    fn the_encoding_decodes_to_what_the_opentelemetry_conversion_builds() {
        let resource = resource();
        let ours = encode(&resource, &spans());
        let decoded = ExportTraceServiceRequest::decode(ours.as_slice()).expect("valid protobuf");
        assert_eq!(decoded, reference(&resource, spans()));
    }

    #[test]
    fn the_encoding_is_byte_for_byte_what_prost_writes() {
        let resource = resource();
        assert_eq!(
            encode(&resource, &spans()),
            reference(&resource, spans()).encode_to_vec()
        );
        let empty = Resource::builder_empty().build();
        assert_eq!(encode(&empty, &[]), reference(&empty, Vec::new()).encode_to_vec());
    }

    #[test]
    fn long_values_get_multi_byte_lengths() {
        let mut span = spans().remove(1);
        span.name = Cow::Owned("n".repeat(20_000));
        span.attributes = vec![KeyValue::new("big", "x".repeat(300)), KeyValue::new("max", i64::MAX)];
        let resource = resource();
        let ours = encode(&resource, std::slice::from_ref(&span));
        assert_eq!(ours, reference(&resource, vec![span]).encode_to_vec());
    }

    fn config(vars: &[(&str, &str)]) -> Result<Option<OtlpConfig>, String> {
        OtlpConfig::from_env(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
                .filter(|v| !v.trim().is_empty())
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_endpoint_comes_from_the_standard_variables() {
        assert_eq!(config(&[]), Ok(None));
        let base = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://tempo:4318/")])
            .expect("valid")
            .expect("set");
        assert_eq!(base.endpoint, "http://tempo:4318/v1/traces");
        assert_eq!(base.timeout, DEFAULT_TIMEOUT);
        assert!(base.headers.is_empty());
        let full = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/custom"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-scope-orgid=tenant%201, authorization=Bearer abc",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-only=traces"),
        ])
        .expect("valid")
        .expect("set");
        assert_eq!(full.endpoint, "http://collector:4318/custom");
        assert_eq!(full.timeout, Duration::from_millis(2500));
        assert_eq!(full.headers, vec![("x-only".to_owned(), "traces".to_owned())]);
        let headers = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://tempo:4318"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-scope-orgid=tenant%201, authorization=Bearer abc",
            ),
        ])
        .expect("valid")
        .expect("set");
        assert_eq!(
            headers.headers,
            vec![
                ("x-scope-orgid".to_owned(), "tenant 1".to_owned()),
                ("authorization".to_owned(), "Bearer abc".to_owned())
            ]
        );
    }

    #[test]
    fn unsupported_or_malformed_settings_are_named_in_the_error() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://tempo:4318");
        for (vars, expected) in [
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "tempo:4318")],
                "not an http:// URL",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "https://tempo:4318")],
                "https is not supported",
            ),
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")],
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            ),
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")],
                "compression",
            ),
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")],
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ),
            (vec![endpoint, ("OTEL_EXPORTER_OTLP_TIMEOUT", "0")], "positive"),
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_HEADERS", "novalue")],
                "not key=value",
            ),
            (vec![endpoint, ("OTEL_EXPORTER_OTLP_HEADERS", "k=%zz")], "percent"),
            (vec![endpoint, ("OTEL_EXPORTER_OTLP_HEADERS", "k=%+a")], "percent"),
            (
                vec![("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://x")],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_HEADERS", "bad key=v")],
                "header name",
            ),
        ] {
            let error = config(&vars).expect_err("rejected");
            assert!(error.contains(expected), "{vars:?}: {error}");
        }
    }
}
