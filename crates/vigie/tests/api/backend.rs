//! `vigie backend` over HTTP: API, errors, metrics, logs, shutdown.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_promtool_accepts, client, Pair, Proc, TempDir};

fn start(tag: &str, extra: &[&str]) -> (TempDir, Proc) {
    let dir = TempDir::new(tag);
    let proc = Proc::backend("blue", &dir.join("vigie.db"), extra);
    (dir, proc)
}

async fn metrics_text(app: &Proc) -> String {
    crate::helpers::scrape(&app.url("/metrics")).await
}

/// The value of the sample line starting with `series` (labels in encoding order).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

async fn assert_error(response: reqwest::Response, status: StatusCode, kind: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("error body is JSON");
    assert_eq!(body["error"], kind, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn info_names_service_version_and_color() {
    let (_dir, app) = start("info", &[]);
    let body: Value = client()
        .get(app.url("/api/info"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(
        body,
        json!({"service": "vigie-backend", "version": env!("CARGO_PKG_VERSION"), "color": "blue"})
    );
}

#[tokio::test]
async fn tasks_can_be_created_listed_updated_and_deleted() {
    let (_dir, app) = start("crud", &[]);
    let http = client();
    let created = http
        .post(app.url("/api/tasks"))
        .json(&json!({"title": "  write the runbook "}))
        .send()
        .await
        .expect("post");
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().expect("ascii").to_owned();
    let task: Value = created.json().await.expect("json");
    assert_eq!(task["title"], "write the runbook");
    assert_eq!(task["done"], false);
    assert_eq!(location, format!("/api/tasks/{}", task["id"]));

    let fetched: Value = http
        .get(app.url(&location))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(fetched, task);

    for i in 0..3 {
        http.post(app.url("/api/tasks"))
            .json(&json!({"title": format!("t{i}")}))
            .send()
            .await
            .expect("post");
    }
    let page: Vec<Value> = http
        .get(app.url("/api/tasks?limit=2&offset=1"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(
        page.iter()
            .map(|t| t["title"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["t0", "t1"]
    );

    let patched = http
        .patch(app.url(&location))
        .json(&json!({"done": true}))
        .send()
        .await
        .expect("patch");
    assert_eq!(patched.status(), StatusCode::OK);
    let patched: Value = patched.json().await.expect("json");
    assert_eq!(patched["done"], true);
    assert_eq!(patched["title"], "write the runbook");

    let deleted = http.delete(app.url(&location)).send().await.expect("delete");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = http.get(app.url(&location)).send().await.expect("get");
    assert_error(gone, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn bad_input_gets_the_right_status_and_a_json_error() {
    let (_dir, app) = start("bad-input", &[]);
    let http = client();
    let post = |body: String| {
        http.post(app.url("/api/tasks"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    // Bodies of POST /api/tasks and the error each gets.
    for (body, status, kind) in [
        ("{\"title\": ".to_owned(), StatusCode::BAD_REQUEST, "bad_request"),
        ("{}".to_owned(), StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
        (
            json!({"title": "   "}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"title": "é".repeat(201)}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"title": "x".repeat(70 * 1024)}).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ] {
        let shown = body.chars().take(40).collect::<String>();
        let response = post(body).await.expect("send");
        assert_eq!(response.status(), status, "POST {shown}");
        assert_error(response, status, kind).await;
    }
    let exactly_200 = "é".repeat(200);
    assert_eq!(
        post(json!({"title": exactly_200}).to_string())
            .await
            .expect("send")
            .status(),
        StatusCode::CREATED
    );
    let no_type = http
        .post(app.url("/api/tasks"))
        .body("{\"title\":\"a\"}")
        .send()
        .await
        .expect("send");
    assert_error(no_type, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;

    // Requests without a body and the error each gets.
    for (method, path, status, kind) in [
        (Method::GET, "/api/tasks/999999", StatusCode::NOT_FOUND, "not_found"),
        (Method::GET, "/api/tasks/abc", StatusCode::BAD_REQUEST, "bad_request"),
        (
            Method::GET,
            "/api/tasks?limit=x",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/api/tasks?limit=100000",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (Method::GET, "/no/such/route", StatusCode::NOT_FOUND, "not_found"),
        (
            Method::PUT,
            "/api/tasks/1",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ] {
        let response = http.request(method.clone(), app.url(path)).send().await.expect("send");
        assert_eq!(response.status(), status, "{method} {path}");
        assert_error(response, status, kind).await;
    }
    let empty_patch = http
        .patch(app.url("/api/tasks/1"))
        .json(&json!({}))
        .send()
        .await
        .expect("patch");
    assert_error(empty_patch, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    // The server is still fine after all of that.
    assert_eq!(
        http.get(app.url("/health/ready")).send().await.expect("ready").status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn metrics_count_requests_by_method_route_and_status() {
    let (_dir, app) = start("metrics", &[]);
    let http = client();
    for _ in 0..3 {
        http.get(app.url("/api/info")).send().await.expect("get");
    }
    http.get(app.url("/api/tasks/42")).send().await.expect("get");
    // Answers of the hardening layers inside the telemetry layer are counted too.
    let wrong_method = http.delete(app.url("/api/info")).send().await.expect("delete");
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    let too_large = http
        .post(app.url("/api/tasks"))
        .header("content-type", "application/json")
        .body(vec![b' '; 70 * 1024])
        .send()
        .await
        .expect("post");
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let text = metrics_text(&app).await;
    for series in [
        r#"http_requests_total{method="DELETE",route="/api/info",status="405"}"#,
        r#"http_requests_total{method="POST",route="/api/tasks",status="413"}"#,
    ] {
        assert_eq!(sample(&text, series), Some(1.0), "{series} in {text}");
    }
    assert_eq!(
        sample(
            &text,
            r#"http_requests_total{method="GET",route="/api/info",status="200"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"http_requests_total{method="GET",route="/api/tasks/{id}",status="404"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"http_request_duration_seconds_count{method="GET",route="/api/info",status="200"}"#
        ),
        Some(3.0)
    );
    let sum = sample(
        &text,
        r#"http_request_duration_seconds_sum{method="GET",route="/api/info",status="200"}"#,
    )
    .expect("sum");
    assert!(sum > 0.0 && sum < 1.0, "duration sum {sum}");
    assert_eq!(
        sample(
            &text,
            r#"http_request_duration_seconds_bucket{le="10.0",method="GET",route="/api/info",status="200"}"#
        ),
        Some(3.0)
    );
    // The scrape itself is in flight while it renders.
    assert_eq!(sample(&text, "http_requests_in_flight"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"vigie_build_info{{version="{}",role="backend",color="blue"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
    assert!(sample(&text, r#"vigie_db_query_duration_seconds_count{operation="select"}"#).is_some_and(|n| n >= 1.0));
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "vigie_log_lines_dropped_total",
    ] {
        assert!(sample(&text, name).is_some(), "{name} missing:\n{text}");
    }
    assert!(text.starts_with("# HELP"), "text format");
    assert!(!text.contains("# EOF"));
}

#[tokio::test]
async fn metrics_speak_openmetrics_when_the_scraper_asks() {
    let (_dir, app) = start("openmetrics", &[]);
    client().get(app.url("/api/info")).send().await.expect("traffic");
    let response = client()
        .get(app.url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .expect("scrape");
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("application/openmetrics-text"));
    let text = response.text().await.expect("body");
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE http_requests counter"));
}

#[tokio::test]
async fn a_scan_of_random_unknown_paths_adds_at_most_one_series() {
    let (_dir, app) = start("cardinality", &[]);
    let series = |text: &str| -> HashSet<String> {
        text.lines()
            .filter(|l| l.starts_with("http_requests_total{"))
            .map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_owned()).unwrap_or_default())
            .collect()
    };
    let before = series(&metrics_text(&app).await);
    let http = client();
    for i in 0..1000 {
        let response = http
            .get(app.url(&format!("/scan/{i}/{}", i * 7919)))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    let after = series(&metrics_text(&app).await);
    let added: Vec<_> = after.difference(&before).collect();
    // The scrape of /metrics itself may add its own series once.
    let scan_series: Vec<_> = added.iter().filter(|s| !s.contains("route=\"/metrics\"")).collect();
    assert_eq!(scan_series.len(), 1, "{added:?}");
    assert!(scan_series[0].contains("route=\"unmatched\""));
}

#[tokio::test]
async fn each_request_logs_one_json_line_and_keeps_its_request_id() {
    let (_dir, app) = start("logs", &[]);
    let response = client()
        .get(app.url("/api/info"))
        .header("x-request-id", "req-abc-123")
        .send()
        .await
        .expect("get");
    assert_eq!(response.headers()["x-request-id"], "req-abc-123");
    let generated = client().get(app.url("/api/tasks/7")).send().await.expect("get");
    let generated_id = generated.headers()["x-request-id"].to_str().expect("ascii").to_owned();
    assert_eq!(generated_id.len(), 36, "a UUID is generated");

    let logs = crate::helpers::eventually(Duration::from_secs(5), "request log lines", || {
        let logs = app.logs();
        let found = logs.iter().filter(|l| l["msg"] == "request").count() >= 2;
        async move { found.then_some(logs) }
    })
    .await;
    let line = logs
        .iter()
        .find(|l| l["request_id"] == "req-abc-123")
        .expect("line with the given id");
    for field in [
        "ts",
        "level",
        "msg",
        "target",
        "method",
        "route",
        "path",
        "status",
        "duration_ms",
        "request_id",
        "color",
        "version",
    ] {
        assert!(!line[field].is_null(), "{field} missing in {line}");
    }
    assert_eq!(line["route"], "/api/info");
    assert_eq!(line["status"], 200);
    assert_eq!(line["color"], "blue");
    assert!(
        line["ts"].as_str().is_some_and(|t| t.ends_with('Z') && t.len() == 24),
        "{line}"
    );
    let not_found = logs
        .iter()
        .find(|l| l["request_id"] == generated_id.as_str())
        .expect("line with generated id");
    assert_eq!(not_found["level"], "warn");
    assert_eq!(not_found["path"], "/api/tasks/7");
}

#[tokio::test]
async fn shutdown_turns_ready_503_finishes_in_flight_requests_and_exits_0() {
    let (_dir, mut app) = start("shutdown", &["--shutdown-delay", "1500ms", "--fault-latency-ms", "800"]);
    let http = client();
    assert_eq!(
        http.get(app.url("/health/ready")).send().await.expect("ready").status(),
        StatusCode::OK
    );
    let slow = tokio::spawn(http.get(app.url("/api/info")).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = http
        .get(app.url("/health/ready"))
        .send()
        .await
        .expect("ready while draining");
    assert_error(ready, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert_eq!(
        http.get(app.url("/health/live")).send().await.expect("live").status(),
        StatusCode::OK
    );
    let slow = slow.await.expect("join").expect("in-flight request completes");
    assert_eq!(slow.status(), StatusCode::OK);
    let status = app.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    assert!(
        app.logs().iter().any(|l| l["msg"] == "stopped"),
        "the last line is flushed"
    );
}

#[tokio::test]
async fn two_colors_on_one_database_see_each_others_writes() {
    let Pair { dir: _dir, blue, green } = Pair::start("shared-db");
    let http = client();
    let created: Value = http
        .post(blue.url("/api/tasks"))
        .json(&json!({"title": "from blue"}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let seen: Value = http
        .get(green.url(&format!("/api/tasks/{}", created["id"])))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(seen["title"], "from blue");
    let patched = http
        .patch(green.url(&format!("/api/tasks/{}", created["id"])))
        .json(&json!({"done": true}))
        .send()
        .await
        .expect("patch");
    assert_eq!(patched.status(), StatusCode::OK);
    let again: Value = http
        .get(blue.url(&format!("/api/tasks/{}", created["id"])))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(again["done"], true);
    let info: Value = http
        .get(green.url("/api/info"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(info["color"], "green");
}

#[tokio::test]
async fn injected_faults_are_real_counted_500s_on_the_api_only() {
    let (_dir, app) = start("faults", &["--fault-error-rate", "1"]);
    let http = client();
    for _ in 0..5 {
        assert_error(
            http.get(app.url("/api/info")).send().await.expect("get"),
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected_fault",
        )
        .await;
    }
    assert_eq!(
        http.get(app.url("/health/ready")).send().await.expect("ready").status(),
        StatusCode::OK
    );
    let text = metrics_text(&app).await;
    assert_eq!(
        sample(
            &text,
            r#"http_requests_total{method="GET",route="/api/info",status="500"}"#
        ),
        Some(5.0)
    );
    assert!(app.logs().iter().any(|l| l["msg"] == "fault injection is on"));
}

#[test]
fn bad_configuration_exits_2_with_a_clear_message() {
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let mut command = std::process::Command::new(crate::helpers::vigie_bin());
        command.args(args);
        for (k, v) in envs {
            command.env(k, v);
        }
        command.output().expect("run vigie")
    };
    /// (arguments, environment, text the error must contain)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 6] = [
        (&["backend", "--color", "red"], &[], "red"),
        (
            &["backend", "--color", "blue", "--fault-error-rate", "1.5"],
            &[],
            "outside 0..1",
        ),
        (
            &["backend", "--color", "blue"],
            &[("VIGIE_LOG_LEVEL", "info,[bad")],
            "invalid log filter",
        ),
        (&["backend", "--color", "blue", "--listen", "nowhere"], &[], "nowhere"),
        (
            &["backend", "--color", "blue", "--listen", "127.0.0.1:0"],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://tempo:4318")],
            "https is not supported",
        ),
        (
            &["router", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://tempo:4318"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
            ],
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ),
    ];
    for (args, envs, needle) in cases {
        let output = run(args, envs);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn promtool_accepts_the_live_metrics() {
    let (_dir, app) = start("promtool", &[]);
    client().get(app.url("/api/tasks")).send().await.expect("traffic");
    assert_promtool_accepts(&metrics_text(&app).await);
}
