//! Traces: spans exported over OTLP, W3C trace context continued, ids in the
//! request log lines and as exemplars, export that never hurts requests.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{client, eventually, Proc, TempDir};
use crate::otlp::Receiver;

const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

fn backend_with_env(dir: &TempDir, envs: &[(&str, &str)], extra: &[&str]) -> Proc {
    let db = dir.join("vigie.db");
    let mut args = vec![
        "backend",
        "--color",
        "green",
        "--listen",
        "127.0.0.1:0",
        "--database",
        db.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    Proc::start(&args, envs, &["public"])
}

/// A router in front of `blue` (green answers nothing), with `envs`.
fn router_to(blue: &Proc, dir: &TempDir, envs: &[(&str, &str)]) -> Proc {
    let args = Proc::router_args(&blue.url(""), &crate::helpers::dead_url(), dir.path(), &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::start(&args, envs, &["public", "admin"])
}

#[tokio::test]
async fn backend_continues_a_traceparent_and_exports_server_and_database_spans() {
    let receiver = Receiver::start().await;
    let dir = TempDir::new("trace-backend");
    let backend = backend_with_env(&dir, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint)], &[]);
    let response = client()
        .post(backend.url("/api/tasks"))
        .header("traceparent", format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01"))
        .json(&json!({"title": "traced"}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::CREATED);

    let spans = eventually(Duration::from_secs(10), "server and db spans exported", || {
        let spans = receiver.spans();
        let done = spans.iter().any(|s| s.name == "insert tasks") && spans.iter().any(|s| s.name == "POST /api/tasks");
        async move { done.then_some(spans) }
    })
    .await;
    let server = spans.iter().find(|s| s.name == "POST /api/tasks").expect("server span");
    assert_eq!(server.trace_id, PARENT_TRACE);
    assert_eq!(server.parent_span_id, PARENT_SPAN);
    assert_eq!(server.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(server.service, "vigie-backend");
    assert_eq!(server.resource.get("vigie.color").map(String::as_str), Some("green"));
    assert_eq!(
        server.attributes.get("http.request.method").map(String::as_str),
        Some("POST")
    );
    assert_eq!(
        server.attributes.get("http.route").map(String::as_str),
        Some("/api/tasks")
    );
    assert_eq!(
        server.attributes.get("http.response.status_code").map(String::as_str),
        Some("201")
    );
    let db = spans.iter().find(|s| s.name == "insert tasks").expect("db span");
    assert_eq!(db.trace_id, PARENT_TRACE);
    assert_eq!(
        db.parent_span_id, server.span_id,
        "the query span is a child of the server span"
    );
    assert_eq!(db.attributes.get("db.system").map(String::as_str), Some("sqlite"));
    assert_eq!(
        db.attributes.get("db.operation.name").map(String::as_str),
        Some("insert")
    );

    // The request log line carries the exported ids.
    let line = eventually(Duration::from_secs(5), "request log line", || {
        let line = backend
            .logs()
            .into_iter()
            .find(|l| l["msg"] == "request" && l["route"] == "/api/tasks");
        async move { line }
    })
    .await;
    assert_eq!(line["trace_id"], PARENT_TRACE);
    assert_eq!(line["span_id"], server.span_id.as_str());

    // And the latency histogram has it as an exemplar (OpenMetrics only).
    let metrics = crate::helpers::scrape_openmetrics(&backend.url("/metrics")).await;
    let exemplar = format!("# {{trace_id=\"{PARENT_TRACE}\"}}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("http_request_duration_seconds_bucket{")
                && l.contains("route=\"/api/tasks\"")
                && l.contains(&exemplar)),
        "no exemplar with the trace id:\n{metrics}"
    );
}

#[tokio::test]
async fn a_malformed_traceparent_is_ignored_and_a_new_trace_starts() {
    let receiver = Receiver::start().await;
    let dir = TempDir::new("trace-malformed");
    let backend = backend_with_env(&dir, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint)], &[]);
    let response = client()
        .get(backend.url("/api/info"))
        .header("traceparent", "00-garbage-00-zz")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), StatusCode::OK);
    let spans = eventually(Duration::from_secs(10), "server span", || {
        let spans = receiver.spans();
        async move { spans.iter().any(|s| s.name == "GET /api/info").then_some(spans) }
    })
    .await;
    let server = spans.iter().find(|s| s.name == "GET /api/info").expect("span");
    assert_eq!(server.parent_span_id, "", "a root span");
    assert_eq!(server.trace_id.len(), 32);
}

#[tokio::test]
async fn without_an_endpoint_tracing_is_off_and_silent() {
    let dir = TempDir::new("trace-off");
    let backend = backend_with_env(&dir, &[], &[]);
    client().get(backend.url("/api/info")).send().await.expect("get");
    let line = eventually(Duration::from_secs(5), "request line", || {
        let line = backend.logs().into_iter().find(|l| l["msg"] == "request");
        async move { line }
    })
    .await;
    assert!(line.get("trace_id").is_none(), "{line}");
    assert!(
        !backend.raw_output().contains("trace export"),
        "no trace noise when off"
    );
}

#[tokio::test]
async fn an_unreachable_or_black_holed_trace_backend_costs_requests_nothing() {
    // Black hole: accepts connections, never answers.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hole_url = format!("http://{}", hole.local_addr().expect("addr"));
    for endpoint in [crate::helpers::dead_url(), hole_url] {
        let dir = TempDir::new("trace-down");
        let mut backend = backend_with_env(
            &dir,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
            ],
            &[],
        );
        let http = client();
        let start = Instant::now();
        for _ in 0..300 {
            let response = http
                .get(backend.url("/api/info"))
                .send()
                .await
                .expect("request succeeds");
            assert_eq!(response.status(), StatusCode::OK);
        }
        let elapsed = start.elapsed();
        // 300 loopback requests take milliseconds; a request waiting on the
        // exporter would take seconds.
        assert!(
            elapsed < Duration::from_secs(5),
            "300 requests took {elapsed:?} with trace backend {endpoint}"
        );
        backend.terminate();
        let status = backend.wait_exit(Duration::from_secs(15));
        assert!(status.success(), "{status}");
    }
    drop(hole);
}

#[tokio::test]
async fn one_request_through_the_router_is_one_trace_across_spans_logs_and_exemplars() {
    let receiver = Receiver::start().await;
    let endpoint = receiver.endpoint.clone();
    let otel = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    let dir = TempDir::new("trace-router");
    let blue = backend_with_env(&dir, &otel, &[]);
    let router = router_to(&blue, &dir, &otel);
    let response = client()
        .post(router.url("/api/tasks"))
        .header("x-request-id", "trace-me-1")
        .json(&json!({"title": "through the router"}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::CREATED);

    let spans = eventually(Duration::from_secs(10), "router, backend and db spans", || {
        let spans = receiver.spans();
        let done = ["POST proxy", "POST /api/tasks", "insert tasks"]
            .iter()
            .all(|n| spans.iter().any(|s| &s.name == n));
        async move { done.then_some(spans) }
    })
    .await;
    let proxy = spans.iter().find(|s| s.name == "POST proxy").expect("router span");
    let server = spans
        .iter()
        .find(|s| s.name == "POST /api/tasks")
        .expect("backend span");
    let db = spans.iter().find(|s| s.name == "insert tasks").expect("db span");
    assert_eq!(proxy.service, "vigie-router");
    assert_eq!(proxy.parent_span_id, "", "the router starts the trace");
    assert_eq!(
        proxy.attributes.get("vigie.upstream.color").map(String::as_str),
        Some("blue")
    );
    assert_eq!(
        proxy.attributes.get("http.response.status_code").map(String::as_str),
        Some("201")
    );
    assert_eq!(server.trace_id, proxy.trace_id);
    assert_eq!(
        server.parent_span_id, proxy.span_id,
        "the backend span is a child of the router span"
    );
    assert_eq!(db.trace_id, proxy.trace_id);
    assert_eq!(
        db.parent_span_id, server.span_id,
        "the query span is a child of the backend span"
    );

    let trace_id = proxy.trace_id.as_str();
    let router_line = eventually(Duration::from_secs(5), "router request line", || {
        let line = router
            .logs()
            .into_iter()
            .find(|l| l["msg"] == "request" && l["request_id"] == "trace-me-1");
        async move { line }
    })
    .await;
    assert_eq!(router_line["trace_id"], trace_id);
    assert_eq!(router_line["span_id"], proxy.span_id.as_str());
    let backend_line = eventually(Duration::from_secs(5), "backend request line", || {
        let line = blue
            .logs()
            .into_iter()
            .find(|l| l["msg"] == "request" && l["request_id"] == "trace-me-1");
        async move { line }
    })
    .await;
    assert_eq!(backend_line["trace_id"], trace_id);
    assert_eq!(backend_line["span_id"], server.span_id.as_str());

    let metrics = crate::helpers::scrape_openmetrics(&blue.url("/metrics")).await;
    assert!(
        metrics.contains(&format!("# {{trace_id=\"{trace_id}\"}}")),
        "no exemplar for {trace_id}:\n{metrics}"
    );
}

#[tokio::test]
async fn the_router_continues_an_incoming_traceparent() {
    let receiver = Receiver::start().await;
    let endpoint = receiver.endpoint.clone();
    let otel = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    let dir = TempDir::new("trace-router-parent");
    let blue = backend_with_env(&dir, &[], &[]);
    let router = router_to(&blue, &dir, &otel);
    // First an unsampled parent: under the parent-based sampler nothing of
    // that trace is exported (sent first, so a span of it would arrive no
    // later than the others). That the router skips building the span is
    // checked by the unit tests of `Traces::tracer_for`.
    let unsampled_trace = "0af7651916cd43dd8448eb211c80319c";
    for traceparent in [
        format!("00-{unsampled_trace}-{PARENT_SPAN}-00"),
        format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01"),
        "not-a-traceparent".to_owned(),
    ] {
        let response = client()
            .get(router.url("/api/info"))
            .header("traceparent", traceparent)
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let spans = eventually(Duration::from_secs(10), "two router spans", || {
        let spans: Vec<_> = receiver.spans().into_iter().filter(|s| s.name == "GET proxy").collect();
        async move { (spans.len() >= 2).then_some(spans) }
    })
    .await;
    assert!(
        spans
            .iter()
            .any(|s| s.trace_id == PARENT_TRACE && s.parent_span_id == PARENT_SPAN),
        "{spans:?}"
    );
    assert!(
        spans
            .iter()
            .any(|s| s.trace_id != PARENT_TRACE && s.parent_span_id.is_empty()),
        "{spans:?}"
    );
    assert!(
        receiver.spans().iter().all(|s| s.trace_id != unsampled_trace),
        "a span of the unsampled trace was exported"
    );
}
