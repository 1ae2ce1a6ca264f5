//! Tempo: ready, and it holds traces of the active color.
//! API (Tempo HTTP API, https://grafana.com/docs/tempo/latest/api_docs/):
//! - `GET /ready`: 200 when Tempo is ready to serve traffic;
//! - `GET /api/search?q=<TraceQL>&start=<unix s>&end=<unix s>&limit=<n>` →
//!   `{"traces": [{"traceID", "rootServiceName", "rootTraceName",
//!   "startTimeUnixNano": "<string>", "durationMs", …}], "metrics": {…}}`.
//!   With `start` and `end`, Tempo searches its recent data and its blocks;
//!   it stops at `limit` traces (20 by default).
//!
//! From the host, Tempo is asked through Grafana (see [`TempoRoute`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::check::Outcome;
use crate::stack::{Stack, TempoRoute, COMPOSE_RUN};

use super::loki::logql_duration;

/// The backend's `service.name` (vigie_backend::SERVICE), a resource attribute
/// of its spans beside `vigie.color`.
pub const BACKEND_SERVICE: &str = "vigie-backend";

/// Enough traces to tell "some" from "none"; a small limit ends the search early.
pub const SEARCH_LIMIT: usize = 20;

const NOT_READY_HINT: &str = "Tempo says ready about 15 s after it starts (its ingester joins the ring); \
    if it stays not ready: docker compose logs tempo --tail 50";

const NO_TRACES_HINT: &str = "the backends export their spans to Tempo over OTLP/HTTP \
    (OTEL_EXPORTER_OTLP_ENDPOINT=http://tempo:4318 in compose.yaml); spans that never reached Tempo are counted \
    in vigie_trace_spans_dropped_total (Prometheus); OTEL_TRACES_SAMPLER_ARG=0 samples nothing; is the traffic \
    generator running? docker compose ps loadgen; Tempo's log: docker compose logs tempo --tail 50";

/// The line of a Tempo check that nothing can relay.
fn cannot_ask() -> Outcome {
    Outcome::skip("not checked: Tempo is not published on the host and Grafana, its relay, is skipped")
        .hint(format!("give --tempo URL, or run inside the network: {COMPOSE_RUN}"))
}

pub async fn ready(stack: &Stack) -> Outcome {
    let route = stack.tempo_route();
    if route == TempoRoute::Unavailable {
        return cannot_ask();
    }
    let data = json!({ "through": route.as_str() });
    match stack.tempo_get(&route, "/ready", &[]).await {
        Ok(answer) if answer.status == 200 => Outcome::ok(format!("ready{}", route.note())).data(data),
        Ok(answer) => Outcome::fail(format!("not ready: {}", answer.unexpected()))
            .hint(NOT_READY_HINT)
            .data(data),
        Err(failure) => Outcome::from(failure).data(data),
    }
}

/// A TraceQL string literal: quotes and backslashes escaped.
fn traceql_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The backend's spans of one color.
pub fn active_color_traceql(color: &str) -> String {
    format!(
        "{{ resource.service.name = {} && resource.vigie.color = {} }}",
        traceql_string(BACKEND_SERVICE),
        traceql_string(color)
    )
}

#[derive(Debug, Deserialize)]
struct SearchAnswer {
    /// Left out of the JSON when no trace matched.
    #[serde(default)]
    traces: Vec<TraceHit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct TraceHit {
    #[serde(rename = "traceID")]
    trace_id: String,
    root_service_name: String,
    root_trace_name: String,
    /// A string in Tempo's answers (a 64-bit integer in protobuf JSON).
    start_time_unix_nano: Value,
    duration_ms: Option<u64>,
}

impl TraceHit {
    fn start_nanos(&self) -> u128 {
        match &self.start_time_unix_nano {
            Value::String(text) => text.parse().unwrap_or(0),
            Value::Number(number) => number.as_u64().map_or(0, u128::from),
            _ => 0,
        }
    }
}

pub async fn traces(stack: &Stack) -> Outcome {
    let route = stack.tempo_route();
    if route == TempoRoute::Unavailable {
        return cannot_ask();
    }
    let active = match stack.active_color().await {
        Ok(color) => color,
        Err(failure) => return failure.into(),
    };
    let window = stack.args.logs_window;
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let start = end.saturating_sub(window.as_secs().max(1));
    let traceql = active_color_traceql(&active);
    let (start, end, limit) = (start.to_string(), end.to_string(), SEARCH_LIMIT.to_string());
    let query = [
        ("q", traceql.as_str()),
        ("start", start.as_str()),
        ("end", end.as_str()),
        ("limit", limit.as_str()),
    ];
    let answer = match stack.tempo_get(&route, "/api/search", &query).await {
        Ok(answer) => answer,
        Err(failure) => return failure.into(),
    };
    if !answer.is_success() {
        let hint = if answer.status == 503 {
            NOT_READY_HINT
        } else {
            "docker compose logs tempo --tail 50"
        };
        return Outcome::fail(format!("search {traceql}: {}", answer.unexpected())).hint(hint);
    }
    let found: SearchAnswer = match answer.json() {
        Ok(found) => found,
        Err(error) => return Outcome::fail(error.to_string()).hint("is this Tempo?"),
    };
    judge(&active, window, &traceql, &found.traces, &route)
}

fn judge(active: &str, window: Duration, traceql: &str, hits: &[TraceHit], route: &TempoRoute) -> Outcome {
    let window = logql_duration(window);
    let note = route.note();
    let latest = hits.iter().max_by_key(|hit| hit.start_nanos());
    let data = json!({
        "active": active,
        "window": window,
        "traceql": traceql,
        "traces": hits.len(),
        "limit": SEARCH_LIMIT,
        "latest": latest.map(|hit| json!({
            "trace_id": hit.trace_id,
            "root_service": hit.root_service_name,
            "root_name": hit.root_trace_name,
            "duration_ms": hit.duration_ms,
        })),
        "through": route.as_str(),
    });
    let Some(latest) = latest else {
        return Outcome::fail(format!(
            "no trace of {BACKEND_SERVICE} with the active color {active} in the last {window}{note}"
        ))
        .hint(NO_TRACES_HINT)
        .data(data);
    };
    let count = match hits.len() {
        1 => "1 trace".to_owned(),
        n if n >= SEARCH_LIMIT => format!("{n}+ traces"),
        n => format!("{n} traces"),
    };
    Outcome::ok(format!(
        "{active}: {count} of {BACKEND_SERVICE} in the last {window}, latest {} {} (trace {}){note}",
        latest.root_service_name, latest.root_trace_name, latest.trace_id
    ))
    .data(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    #[test]
    fn the_traceql_asks_for_the_backend_spans_of_one_color() {
        assert_eq!(
            active_color_traceql("green"),
            r#"{ resource.service.name = "vigie-backend" && resource.vigie.color = "green" }"#
        );
        assert_eq!(traceql_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn hits_come_from_the_documented_search_shape() {
        // The example answer of Tempo's HTTP API docs (tags-based search).
        let body = r#"{"traces":[
            {"traceID":"d6e9329d67b6146a","rootServiceName":"frontend","rootTraceName":"/cart",
             "startTimeUnixNano":"1634727903545000000","durationMs":611},
            {"traceID":"1b1ba462b409200d","rootServiceName":"frontend","rootTraceName":"/cart",
             "startTimeUnixNano":"1634727775935000000","durationMs":611}],
            "metrics":{"inspectedTraces":3100,"inspectedBytes":"3811736","totalBlocks":3}}"#;
        let found: SearchAnswer = serde_json::from_str(body).expect("answer");
        let direct = TempoRoute::Direct("http://tempo:3200".to_owned());
        let ok = judge("blue", Duration::from_secs(300), "{}", &found.traces, &direct);
        assert_eq!(ok.status, Status::Ok);
        assert_eq!(
            ok.detail,
            "blue: 2 traces of vigie-backend in the last 5m, latest frontend /cart (trace d6e9329d67b6146a)"
        );
        assert_eq!(ok.data["latest"]["trace_id"], "d6e9329d67b6146a");

        let empty: SearchAnswer = serde_json::from_str(r#"{"metrics":{}}"#).expect("no traces field");
        let none = judge("blue", Duration::from_secs(120), "{}", &empty.traces, &direct);
        assert_eq!(none.status, Status::Fail);
        assert_eq!(
            none.detail,
            "no trace of vigie-backend with the active color blue in the last 2m"
        );
        assert!(none.hint.is_some_and(|h| h.contains("vigie_trace_spans_dropped_total")));
    }
}
