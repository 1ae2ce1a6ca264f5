//! W3C trace context (`traceparent`, `tracestate`) read from and written to
//! HTTP headers by the OpenTelemetry SDK's `TraceContextPropagator`, over
//! an `http::HeaderMap`. (A hand-written reader and writer without the
//! SDK's allocations measured within run-to-run noise of it in
//! bench/tracing.sh; docs/benchmarks.md.)

use http::header::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// W3C trace context of `headers`; an absent or malformed `traceparent`
/// gives an empty context (a new trace starts), never an error.
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// Writes the W3C `traceparent` (and a non-empty `tracestate`) of the span
/// of `cx` into `headers`; nothing for an invalid span context.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeadersMut(headers));
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The two names the propagator writes, without parsing them each time.
        let name = match key {
            "traceparent" => TRACEPARENT,
            "tracestate" => TRACESTATE,
            other => match HeaderName::from_bytes(other.as_bytes()) {
                Ok(name) => name,
                Err(_) => return,
            },
        };
        // An empty `tracestate` says nothing: left out.
        if value.is_empty() {
            return;
        }
        if let Ok(value) = HeaderValue::from_str(&value) {
            self.0.insert(name, value);
        }
    }
}

/// Lowercase hex of `bytes`, into `out` (twice as long).
pub(crate) fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// Lowercase hex of `bytes` as a `String` (a trace or span id in a log line).
pub(crate) fn hex_string(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_into(bytes, &mut out);
    // Hex digits are ASCII.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};

    fn headers(traceparent: &str, tracestate: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(traceparent) {
            headers.insert(TRACEPARENT, v);
        }
        if let Some(state) = tracestate {
            headers.insert(TRACESTATE, HeaderValue::from_str(state).expect("header"));
        }
        headers
    }

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_a_remote_parent_with_its_state() {
        let cx = extract(&headers(VALID, Some("congo=t61rcWkgMzE")));
        let span = cx.span();
        let parent = span.span_context();
        assert!(parent.is_valid() && parent.is_remote() && parent.is_sampled());
        assert_eq!(parent.trace_id(), TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736));
        assert_eq!(parent.span_id(), SpanId::from(0x00f067aa0ba902b7));
        assert_eq!(parent.trace_state().header(), "congo=t61rcWkgMzE");
    }

    #[test]
    fn absent_or_malformed_traceparents_start_a_new_trace() {
        for case in [
            "",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "zz-zzzz-not-a-trace-01",
        ] {
            assert!(
                !extract(&headers(case, None)).span().span_context().is_valid(),
                "{case:?}"
            );
        }
    }

    #[test]
    fn a_continued_traceparent_is_written_back_unchanged_without_an_empty_state() {
        let cx = extract(&headers(VALID, None));
        let mut out = HeaderMap::new();
        inject(&cx, &mut out);
        assert_eq!(out[TRACEPARENT], VALID);
        assert!(out.get(TRACESTATE).is_none(), "{out:?}");
        let mut none = HeaderMap::new();
        inject(&Context::new(), &mut none);
        assert!(none.is_empty(), "no span, no header: {none:?}");
    }

    #[test]
    fn hex_is_lowercase_and_two_digits_a_byte() {
        assert_eq!(hex_string(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex_string(&[]), "");
    }
}
