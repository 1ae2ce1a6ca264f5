//! `vigie router`, `vigie switch` and `vigie status` against real backends.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fixture::{served_by, Stack};
use crate::helpers::{assert_promtool_accepts, client, dead_url, metric_value, Proc, TempDir, ADMIN_TOKEN};

/// The targets file as (active color, active target, standby color, standby target).
fn read_targets(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read targets file");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("targets file is not JSON ({e}): {text:?}"))
}

fn expected_targets(active: &Proc, active_color: &str, standby: &Proc, standby_color: &str) -> Value {
    json!([
        { "targets": [active.addr.to_string()], "labels": { "color": active_color, "role": "active" } },
        { "targets": [standby.addr.to_string()], "labels": { "color": standby_color, "role": "standby" } },
    ])
}

#[tokio::test]
async fn traffic_reaches_only_the_active_color_and_a_switch_moves_it() {
    let stack = Stack::start("router-moves").await;
    for _ in 0..10 {
        assert_eq!(stack.served_by().await, "blue");
    }
    assert_eq!(
        read_targets(&stack.targets_file()),
        expected_targets(&stack.blue, "blue", &stack.green, "green")
    );

    let (status, body) = stack.router.switch_to("green").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "ok");
    assert_eq!(
        (body["from"].as_str(), body["to"].as_str(), body["active"].as_str()),
        (Some("blue"), Some("green"), Some("green"))
    );
    assert_eq!(body["drained"], true);
    assert!(
        body["drain_ms"].is_u64() && body["checks"].as_u64() >= Some(3),
        "{body}"
    );
    assert_eq!(
        (body["state_saved"].as_bool(), body["targets_written"].as_bool()),
        (Some(true), Some(true))
    );

    for _ in 0..10 {
        assert_eq!(stack.served_by().await, "green");
    }
    assert_eq!(
        read_targets(&stack.targets_file()),
        expected_targets(&stack.green, "green", &stack.blue, "blue")
    );
    let status = stack.router.router_status().await;
    assert_eq!(status["active"], "green");
    assert_eq!(status["switches"], 1);
    assert_eq!(status["upstreams"]["green"]["state"], "active");
    assert_eq!(status["upstreams"]["blue"]["state"], "standby");
    assert_eq!(status["upstreams"]["blue"]["url"], stack.blue.url(""));
    assert!(status["since"].as_str().is_some_and(|s| s.ends_with('Z')), "{status}");

    let metrics = stack.router.metrics_text().await;
    let value = |name, labels| metric_value(&metrics, name, labels);
    assert_eq!(
        value("vigie_router_requests_total", r#"color="blue",status_class="2xx""#),
        Some(10.0)
    );
    assert_eq!(
        value("vigie_router_requests_total", r#"color="green",status_class="2xx""#),
        Some(10.0)
    );
    assert_eq!(
        value(
            "vigie_router_request_duration_seconds_count",
            r#"color="green",status_class="2xx""#
        ),
        Some(10.0)
    );
    assert_eq!(value("vigie_router_active_color", r#"color="green""#), Some(1.0));
    assert_eq!(value("vigie_router_active_color", r#"color="blue""#), Some(0.0));
    assert_eq!(
        value("vigie_router_switches_total", r#"from="blue",to="green",result="ok""#),
        Some(1.0)
    );
    assert!(
        value("vigie_router_last_switch_timestamp_seconds", "").is_some_and(|t| t > 1.7e9),
        "{metrics}"
    );

    let logs = stack
        .router
        .logs_when("switch line", |l| l.iter().any(|l| l["msg"] == "switch"));
    let switch = logs.iter().find(|l| l["msg"] == "switch").expect("a switch log line");
    assert_eq!(
        (
            switch["from"].as_str(),
            switch["to"].as_str(),
            switch["result"].as_str()
        ),
        (Some("blue"), Some("green"), Some("ok"))
    );
    assert!(
        switch["reason"].is_string() && switch["drain_ms"].is_u64() && switch["check_ms"].is_u64(),
        "{switch}"
    );
    let transitions: Vec<(String, String, String)> = logs
        .iter()
        .filter(|l| l["msg"] == "target state")
        .map(|l| (l["color"].to_string(), l["from"].to_string(), l["to"].to_string()))
        .collect();
    assert_eq!(
        transitions.len(),
        4,
        "standby→checking→active for green, active→draining→standby for blue: {transitions:?}"
    );
}

#[tokio::test]
async fn the_router_and_backend_log_lines_share_the_request_id() {
    let stack = Stack::start("router-reqid").await;
    let response = client()
        .get(stack.router.url("/api/info?x=1"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    let generated = client().get(stack.router.url("/api/tasks")).send().await.expect("GET");
    let generated = generated.headers()["x-request-id"].to_str().expect("ascii").to_owned();
    assert_eq!(generated.len(), 36, "a UUID is generated when the client sends none");

    for id in ["trace-me-42", generated.as_str()] {
        let router_line = crate::helpers::eventually(Duration::from_secs(5), "router request line", || {
            let logs = stack.router.logs();
            async move {
                logs.into_iter()
                    .find(|l| l["msg"] == "request" && l["request_id"] == id)
            }
        })
        .await;
        assert_eq!(router_line["target"], "http");
        assert_eq!(router_line["level"], "info");
        assert_eq!(router_line["method"], "GET");
        assert_eq!(router_line["status"], 200);
        assert_eq!(router_line["upstream_color"], "blue");
        assert!(router_line["duration_ms"].is_f64(), "{router_line}");
        assert!(
            router_line["path"].as_str().is_some_and(|p| p.starts_with("/api/")),
            "{router_line}"
        );
        crate::helpers::eventually(Duration::from_secs(5), "backend request line with the same id", || {
            let logs = stack.blue.logs();
            async move {
                logs.into_iter()
                    .find(|l| l["msg"] == "request" && l["request_id"] == id)
            }
        })
        .await;
    }
}

#[tokio::test]
async fn the_targets_file_always_parses_and_agrees_during_switches() {
    let stack = Stack::start("router-targets").await;
    let path = stack.targets_file();
    let blue_then_green = expected_targets(&stack.blue, "blue", &stack.green, "green");
    let green_then_blue = expected_targets(&stack.green, "green", &stack.blue, "blue");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (path, stop) = (path.clone(), std::sync::Arc::clone(&stop));
        let allowed = [blue_then_green.clone(), green_then_blue.clone()];
        std::thread::spawn(move || {
            let (mut reads, mut bad) = (0u64, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| format!("<unreadable: {e}>"));
                reads += 1;
                match serde_json::from_str::<Value>(&text) {
                    Ok(v) if allowed.contains(&v) => {}
                    _ => bad.push(text),
                }
            }
            (reads, bad)
        })
    };
    let mut color = "blue";
    for _ in 0..8 {
        color = if color == "blue" { "green" } else { "blue" };
        let (status, body) = stack.router.switch_to(color).await;
        assert_eq!(status, 200, "{body}");
        let expected = if color == "green" {
            &green_then_blue
        } else {
            &blue_then_green
        };
        assert_eq!(
            &read_targets(&path),
            expected,
            "the targets file names the new color once the switch answered"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, bad) = reader.join().expect("reader thread");
    assert!(reads > 100, "the reader polled only {reads} times");
    assert!(
        bad.is_empty(),
        "{} of {reads} reads saw a bad targets file, e.g. {:?}",
        bad.len(),
        bad.first()
    );
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
        .expect("list")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        leftovers,
        vec![std::ffi::OsString::from("backend.json")],
        "no temp file is left behind"
    );
}

#[tokio::test]
async fn no_standby_target_lists_only_the_active_color() {
    let stack = Stack::builder("router-nostandby")
        .router_flags(&["--no-standby-target"])
        .start()
        .await;
    let expected =
        json!([{ "targets": [stack.blue.addr.to_string()], "labels": { "color": "blue", "role": "active" } }]);
    assert_eq!(read_targets(&stack.targets_file()), expected);
}

#[tokio::test]
async fn a_switch_to_a_color_with_nothing_listening_is_refused_and_changes_nothing() {
    let dir = TempDir::new("router-refused");
    let blue = Proc::backend("blue", &dir.join("tasks.db"), &[]);
    let router = Proc::router(&blue.url(""), &dead_url(), dir.path(), &["--deploy-timeout", "1s"]);
    let targets_before = std::fs::read(dir.join("targets/backend.json")).expect("targets file");

    let started = Instant::now();
    let (status, body) = router.switch_to("green").await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "refusal is bounded by the deploy timeout"
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "not_ready");
    assert_eq!(body["result"], "refused");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("green is not ready")),
        "{body}"
    );

    assert_eq!(served_by(&router).await, "blue");
    assert_eq!(router.router_status().await["active"], "blue");
    assert_eq!(router.router_status().await["switches"], 0);
    assert_eq!(
        std::fs::read(dir.join("targets/backend.json")).expect("targets"),
        targets_before
    );
    assert!(!dir.join("state.json").exists(), "a refused switch saves no state");
    let metrics = router.metrics_text().await;
    assert_eq!(
        metric_value(
            &metrics,
            "vigie_router_switches_total",
            r#"from="blue",to="green",result="refused""#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&metrics, "vigie_router_active_color", r#"color="blue""#),
        Some(1.0)
    );
    let line = router
        .logs_when("switch line", |l| l.iter().any(|l| l["msg"] == "switch"))
        .into_iter()
        .find(|l| l["msg"] == "switch")
        .expect("switch log line");
    assert_eq!(
        (line["result"].as_str(), line["level"].as_str()),
        (Some("refused"), Some("warn"))
    );

    let (code, _stdout, stderr) = router.cli(&["switch", "green"], Some(ADMIN_TOKEN));
    assert_eq!(code, 6, "a refused switch exits 6; stderr: {stderr}");
    assert!(
        stderr.contains("switch refused") && stderr.contains("not ready"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_switch_to_a_backend_that_reports_not_ready_is_refused() {
    // A backend shutting down answers /health/ready with 503 but still serves.
    // Long enough that a loaded machine still completes checks: each one
    // answers 503 at once, so the refusal names it.
    let stack = Stack::builder("router-notready")
        .green_flags(&["--shutdown-delay", "30s"])
        .router_flags(&["--deploy-timeout", "4s"])
        .start()
        .await;
    let (green, router) = (&stack.green, &stack.router);
    green.terminate();
    crate::helpers::eventually(Duration::from_secs(5), "green readiness 503", || async {
        let r = client().get(green.url("/health/ready")).send().await.ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    let (status, body) = router.switch_to("green").await;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("503")), "{body}");
    assert_eq!(served_by(router).await, "blue");
}

/// Without a token, a page in a browser on the same machine could post a
/// form to the admin port: no preflight for `text/plain`, and the browser
/// sends its own `Origin`; a page whose name was rebound to the admin
/// address (DNS rebinding) is even same-origin, but carries its name in
/// `Host`. All are refused and nothing changes.
#[tokio::test]
async fn a_switch_a_web_page_could_send_is_refused_and_changes_nothing() {
    // No VIGIE_ADMIN_TOKEN: the case the checks are for.
    let stack = Stack::builder("router-csrf").without_token().start().await;
    let router = &stack.router;
    let url = router.admin_url("/switch");
    let admin = router.admin_addr.expect("admin listener");
    let rebound = format!("evil.example:{}", admin.port());
    let post = |content_type: &'static str, origin: Option<String>, host: Option<String>| {
        let mut request = client()
            .post(&url)
            .header("content-type", content_type)
            .body(r#"{"to":"green"}"#);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(host) = host {
            request = request.header("host", host);
        }
        request.send()
    };
    let cases = [
        ("text/plain", None, None, 415, "unsupported_media_type"),
        (
            "application/x-www-form-urlencoded",
            None,
            None,
            415,
            "unsupported_media_type",
        ),
        (
            "application/json",
            Some("http://evil.example".to_owned()),
            None,
            403,
            "forbidden_origin",
        ),
        (
            "application/json",
            Some("null".to_owned()),
            None,
            403,
            "forbidden_origin",
        ),
        (
            "application/json",
            Some(format!("http://{rebound}")),
            Some(rebound.clone()),
            403,
            "forbidden_origin",
        ),
    ];
    for (content_type, origin, host, status, kind) in cases {
        let response = post(content_type, origin.clone(), host.clone())
            .await
            .expect("POST /switch");
        assert_eq!(response.status(), status, "{content_type} {origin:?} {host:?}");
        let answer: Value = response.json().await.expect("json error");
        assert_eq!(answer["error"], kind, "{answer}");
        assert_eq!(router.router_status().await["active"], "blue");
    }
    // Its own origin at its address (a page the admin listener served) is fine.
    let response = post("application/json; charset=utf-8", Some(format!("http://{admin}")), None)
        .await
        .expect("POST /switch");
    assert_eq!(response.status(), 200);
    assert_eq!(router.router_status().await["active"], "green");
}

#[tokio::test]
async fn an_admin_body_over_its_limit_is_a_json_413() {
    let stack = Stack::start("router-413").await;
    let response = client()
        .post(stack.router.admin_url("/switch"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(format!(r#"{{"to":"green","reason":"{}"}}"#, "x".repeat(8 * 1024)))
        .send()
        .await
        .expect("POST /switch");
    assert_eq!(response.status(), 413);
    let answer: Value = response.json().await.expect("a JSON error, not plain text");
    assert_eq!(answer["error"], "payload_too_large", "{answer}");
    assert_eq!(stack.router.router_status().await["active"], "blue");
}

#[tokio::test]
async fn unknown_colors_and_malformed_switch_requests_get_400() {
    let stack = Stack::start("router-400").await;
    let post = |body: &'static str| {
        client()
            .post(stack.router.admin_url("/switch"))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for (body, kind) in [
        (r#"{"to":"purple"}"#, "unknown_color"),
        (r#"{"to":"Green"}"#, "unknown_color"),
        ("not json", "bad_request"),
        ("{}", "bad_request"),
        (r#"{"to":"green","extra":1}"#, "bad_request"),
    ] {
        let response = post(body).await.expect("POST /switch");
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.expect("json error");
        assert_eq!(answer["error"], kind, "{body}: {answer}");
        assert!(answer["message"].is_string());
    }
    let response = client().get(stack.router.admin_url("/nope")).send().await.expect("GET");
    assert_eq!(response.status(), 404);
    assert_eq!(response.json::<Value>().await.expect("json")["error"], "not_found");
    assert_eq!(stack.router.router_status().await["active"], "blue");
}

#[tokio::test]
async fn switching_to_the_active_color_changes_nothing() {
    let stack = Stack::start("router-noop").await;
    let (status, body) = stack.router.switch_to("blue").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "noop");
    // Nothing was written, and the answer says so.
    assert_eq!(
        (body["state_saved"].as_bool(), body["targets_written"].as_bool()),
        (Some(false), Some(false)),
        "{body}"
    );
    assert_eq!(stack.router.router_status().await["switches"], 0);
    let metrics = stack.router.metrics_text().await;
    assert_eq!(
        metric_value(
            &metrics,
            "vigie_router_switches_total",
            r#"from="blue",to="blue",result="noop""#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            "vigie_router_switches_total",
            r#"from="blue",to="green",result="refused""#
        ),
        Some(0.0),
        "every outcome starts at 0"
    );
    assert_eq!(
        metric_value(&metrics, "vigie_router_last_switch_timestamp_seconds", ""),
        Some(0.0)
    );
}

#[tokio::test]
async fn concurrent_switch_requests_are_serialized() {
    let stack = Stack::start("router-concurrent").await;
    let router = &stack.router;
    let answers = futures_join_all(
        ["green", "blue", "green", "green", "blue", "green"].map(|color| async move { router.switch_to(color).await }),
    )
    .await;
    let mut ok = 0;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert!(matches!(body["result"].as_str(), Some("ok" | "noop")), "{body}");
        ok += u64::from(body["result"] == "ok");
    }
    let status = router.router_status().await;
    assert_eq!(status["switches"], ok);
    // Serialized: in log order, each successful switch starts where the
    // previous one ended, and no two overlap.
    let want = answers.len();
    let lines: Vec<Value> = router
        .logs_when("every switch line", |l| {
            l.iter().filter(|l| l["msg"] == "switch").count() >= want
        })
        .into_iter()
        .filter(|l| l["msg"] == "switch")
        .collect();
    assert_eq!(lines.len(), answers.len());
    let mut active = "blue".to_owned();
    for line in &lines {
        assert_eq!(line["from"], active.as_str(), "{lines:?}");
        if line["result"] == "ok" {
            active = line["to"].as_str().expect("to").to_owned();
        }
    }
    assert_eq!(status["active"], active.as_str());
    assert_eq!(served_by(router).await, active);
}

/// Runs the futures concurrently on this task (the test crate has no
/// futures dependency).
async fn futures_join_all<F: std::future::Future>(futures: [F; 6]) -> Vec<F::Output> {
    let [a, b, c, d, e, f] = futures;
    let (a, b, c, d, e, f) = tokio::join!(a, b, c, d, e, f);
    vec![a, b, c, d, e, f]
}

#[tokio::test]
async fn the_active_color_survives_a_restart() {
    let mut stack = Stack::start("router-restart").await;
    assert_eq!(stack.switch_to("green").await.0, 200);
    let since = stack.router.router_status().await["since"].clone();
    stack.stop_router();
    std::fs::remove_file(stack.targets_file()).expect("remove targets file");

    stack.start_router();
    let status = stack.router.router_status().await;
    assert_eq!(status["active"], "green");
    assert_eq!(status["since"], since);
    assert_eq!(status["switches"], 1);
    assert_eq!(stack.served_by().await, "green");
    assert_eq!(
        read_targets(&stack.targets_file()),
        expected_targets(&stack.green, "green", &stack.blue, "blue")
    );
    let metrics = stack.router.metrics_text().await;
    assert_eq!(
        metric_value(&metrics, "vigie_router_active_color", r#"color="green""#),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_corrupt_state_file_starts_on_blue_with_an_error_logged() {
    let mut stack = Stack::start("router-corrupt").await;
    stack.stop_router();
    std::fs::write(stack.state_file(), "{\"active\":\"gre").expect("write corrupt state");
    stack.start_router();
    let router = &stack.router;
    assert_eq!(stack.served_by().await, "blue");
    let line = router
        .logs_when("error line", |l| l.iter().any(|l| l["level"] == "error"))
        .into_iter()
        .find(|l| l["level"] == "error")
        .expect("an error line about the state file");
    assert!(
        line["error"].as_str().is_some_and(|e| e.contains("state.json")),
        "{line}"
    );
    // The next switch replaces the unusable file.
    assert_eq!(router.switch_to("green").await.0, 200);
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(stack.state_file()).expect("state")).expect("json");
    assert_eq!(saved["active"], "green");
}

#[tokio::test]
async fn a_state_file_that_cannot_be_written_is_reported_not_dropped() {
    // A regular file where the state directory should be: even root cannot
    // create the state file under it.
    let elsewhere = TempDir::new("router-unsaved-state");
    std::fs::write(elsewhere.join("blocker"), "not a directory").expect("write blocker");
    let state = elsewhere.join("blocker").join("state.json");
    let stack = Stack::builder("router-unsaved")
        .router_flags(&["--state-file", state.to_str().expect("utf-8")])
        .start()
        .await;
    let router = &stack.router;
    let (status, body) = router.switch_to("green").await;
    assert_eq!(status, 200, "the switch itself happened: {body}");
    assert_eq!(
        (body["result"].as_str(), body["state_saved"].as_bool()),
        (Some("ok"), Some(false))
    );
    assert!(
        body["errors"][0].as_str().is_some_and(|e| e.contains("blocker")),
        "{body}"
    );
    assert_eq!(served_by(router).await, "green");
    let metrics = router.metrics_text().await;
    assert_eq!(
        metric_value(&metrics, "vigie_router_file_write_errors_total", r#"file="state""#),
        Some(1.0)
    );
    // The switch line is written after the error line: wait for both.
    let logs = router.logs_when("state file error and switch lines", |l| {
        l.iter()
            .any(|l| l["level"] == "error" && l["msg"] == "state file not saved")
            && l.iter().any(|l| l["msg"] == "switch")
    });
    assert!(
        logs.iter()
            .any(|l| l["level"] == "error" && l["msg"] == "state file not saved"),
        "no error line"
    );
    let switch = logs.iter().find(|l| l["msg"] == "switch").expect("switch line");
    assert_eq!(switch["level"], "error");

    let (code, stdout, stderr) = router.cli(&["switch", "blue"], Some(ADMIN_TOKEN));
    assert_eq!(code, 1, "switched but not saved exits 1: {stdout} {stderr}");
    assert!(
        stdout.contains("switched green -> blue") && stderr.contains("warning: cannot save state file"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_admin_api_refuses_a_missing_or_wrong_token() {
    let stack = Stack::start("router-auth").await;
    let router = &stack.router;
    for token in [None, Some("wrong-token"), Some("")] {
        for (method, path) in [("GET", "/status"), ("POST", "/switch")] {
            let mut request = client().request(method.parse().expect("method"), router.admin_url(path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request
                .json(&json!({ "to": "green" }))
                .send()
                .await
                .expect("admin call");
            assert_eq!(response.status(), 401, "{method} {path} with {token:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            assert_eq!(response.json::<Value>().await.expect("json")["error"], "unauthorized");
        }
    }
    assert_eq!(router.router_status().await["active"], "blue", "nothing switched");
    for open in ["/metrics", "/health/live"] {
        let response = client().get(router.admin_url(open)).send().await.expect("GET");
        assert_eq!(
            response.status(),
            200,
            "{open} needs no token (Prometheus and health checks)"
        );
    }
    let (code, _, stderr) = router.cli(&["status"], None);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("401") && stderr.contains("VIGIE_ADMIN_TOKEN"),
        "{stderr}"
    );
    let (code, _, _) = router.cli(&["switch", "green"], Some("wrong"));
    assert_eq!(code, 1);
}

#[tokio::test]
async fn cli_switch_and_status_print_summaries_or_json_and_exit_0_on_ok_and_noop() {
    let stack = Stack::start("router-cli").await;
    let router = &stack.router;
    let token = Some(ADMIN_TOKEN);

    let (code, stdout, stderr) = router.cli(&["status"], token);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("active: blue"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("green") && l.contains("standby")),
        "{stdout}"
    );

    let (code, stdout, stderr) = router.cli(&["switch", "green", "--reason", "release 1.2"], token);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("switched blue -> green"), "{stdout}");
    let line = router
        .logs_when("switch line", |l| l.iter().any(|l| l["msg"] == "switch"))
        .into_iter()
        .find(|l| l["msg"] == "switch")
        .expect("switch line");
    assert_eq!(line["reason"], "release 1.2");

    let (code, stdout, _) = router.cli(&["switch", "green"], token);
    assert_eq!(code, 0);
    assert!(stdout.contains("already active"), "{stdout}");

    let (code, stdout, _) = router.cli(&["switch", "blue", "--json"], token);
    assert_eq!(code, 0);
    let answer: Value = serde_json::from_str(stdout.trim()).expect("--json prints JSON");
    assert_eq!(
        (answer["result"].as_str(), answer["active"].as_str()),
        (Some("ok"), Some("blue"))
    );

    let (code, stdout, _) = router.cli(&["status", "--json"], token);
    assert_eq!(code, 0);
    let status: Value = serde_json::from_str(stdout.trim()).expect("--json prints JSON");
    assert_eq!(
        (status["active"].as_str(), status["switches"].as_u64()),
        (Some("blue"), Some(2))
    );

    let (code, _, stderr) = router.cli(&["switch", "purple"], token);
    assert_eq!(code, 2, "clap rejects an unknown color: {stderr}");
    let unreachable = std::process::Command::new(crate::helpers::vigie_bin())
        .args(["status", "--admin", &dead_url(), "--timeout", "3s"])
        .output()
        .expect("run vigie status");
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach the admin API"));
}

#[tokio::test]
async fn an_unreachable_upstream_answers_502_fast_and_the_router_stays_up() {
    let dir = TempDir::new("router-502");
    let router = Proc::router(&dead_url(), &dead_url(), dir.path(), &[]);
    for method in ["GET", "POST"] {
        let started = Instant::now();
        let response = client()
            .request(method.parse().expect("method"), router.url("/api/tasks"))
            .json(&json!({ "title": "x" }))
            .send()
            .await
            .expect("the router answers");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a refused connect fails fast"
        );
        assert_eq!(response.status(), 502);
        assert_eq!(response.headers()["x-vigie-color"], "blue");
        let body: Value = response.json().await.expect("json error");
        assert_eq!(body["error"], "upstream_unreachable");
        assert!(body["message"].as_str().is_some_and(|m| m.contains("blue")), "{body}");
    }
    let metrics = router.metrics_text().await;
    assert_eq!(
        metric_value(
            &metrics,
            "vigie_router_upstream_errors_total",
            r#"color="blue",kind="connect""#
        ),
        Some(2.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            "vigie_router_requests_total",
            r#"color="blue",status_class="5xx""#
        ),
        Some(2.0)
    );
    let line = router
        .logs_when("request line", |l| l.iter().any(|l| l["msg"] == "request"))
        .into_iter()
        .find(|l| l["msg"] == "request")
        .expect("request line");
    assert_eq!(
        (line["level"].as_str(), line["status"].as_u64()),
        (Some("error"), Some(502))
    );
    let status = router.router_status().await;
    assert_eq!(status["active"], "blue");
    crate::helpers::eventually(Duration::from_secs(5), "background probe marks blue unhealthy", || {
        let router = &router;
        async move { (router.router_status().await["upstreams"]["blue"]["healthy"] == false).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_slow_upstream_answers_504_within_the_request_timeout() {
    let dir = TempDir::new("router-504");
    let db = dir.join("tasks.db");
    let blue = Proc::backend("blue", &db, &["--fault-latency-ms", "3000"]);
    let router = Proc::router(&blue.url(""), &dead_url(), dir.path(), &["--request-timeout", "300ms"]);
    let started = Instant::now();
    let response = client()
        .get(router.url("/api/info"))
        .send()
        .await
        .expect("the router answers");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert_eq!(response.status(), 504);
    assert_eq!(
        response.json::<Value>().await.expect("json")["error"],
        "upstream_timeout"
    );
    let metrics = router.metrics_text().await;
    assert_eq!(
        metric_value(
            &metrics,
            "vigie_router_upstream_errors_total",
            r#"color="blue",kind="timeout""#
        ),
        Some(1.0)
    );
    // Probes are not delayed (fault injection covers /api/* only): still fine.
    assert_eq!(
        client()
            .get(router.url("/health/live"))
            .send()
            .await
            .expect("GET")
            .status(),
        200
    );
}

/// A minimal upstream that answers every request with its request head as
/// the body (and the number of body bytes it read), or with `size` bytes
/// for `GET /big/<size>`, or stalls mid-body for `GET /stall`. Also sends
/// hop-by-hop response headers.
async fn echo_upstream() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 64 * 1024];
                let head_end = loop {
                    if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                    if buffer.len() > 64 * 1024 {
                        return;
                    }
                };
                let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let mut read = buffer.len() - head_end;
                while read < length {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                }
                if head.starts_with("get /stall ") {
                    // A head, part of the body, then nothing (bounded wait).
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nfirst-part")
                        .await;
                    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                    return;
                }
                let body = match head.split_whitespace().nth(1).and_then(|p| p.strip_prefix("/big/")) {
                    Some(size) => "x".repeat(size.parse().unwrap_or(0)),
                    None => format!("{head}body-bytes: {read}\n"),
                };
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close, x-resp-hop\r\nx-resp-hop: 1\r\nx-resp-kept: 1\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, task)
}

#[tokio::test]
async fn proxied_requests_carry_forwarding_headers_stream_bodies_and_drop_hop_by_hop_headers() {
    let dir = TempDir::new("router-headers");
    let (echo, _task) = echo_upstream().await;
    let router = Proc::router(&echo, &dead_url(), dir.path(), &[]);
    let response = client()
        .post(router.url("/api/echo?q=1"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("connection", "x-client-hop")
        .header("x-client-hop", "secret")
        .header("proxy-authorization", "Basic abc")
        .header("x-request-id", "echo-1")
        .header("x-kept", "yes")
        .body(vec![b'a'; 3 * 1024 * 1024])
        .send()
        .await
        .expect("POST through the router");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-resp-kept"], "1");
    assert!(
        response.headers().get("x-resp-hop").is_none(),
        "response hop-by-hop headers are removed"
    );
    let seen = response.text().await.expect("echo body");
    assert!(seen.starts_with("post /api/echo?q=1 http/1.1"), "{seen}");
    assert!(seen.contains("x-forwarded-for: 203.0.113.7, 127.0.0.1\r\n"), "{seen}");
    assert!(seen.contains("x-forwarded-proto: http\r\n"), "{seen}");
    assert!(seen.contains("x-request-id: echo-1\r\n"), "{seen}");
    assert!(seen.contains("x-kept: yes\r\n"), "{seen}");
    assert!(
        seen.contains(&format!("host: {}\r\n", router.addr)),
        "the client's Host is kept: {seen}"
    );
    assert!(
        !seen.contains("x-client-hop") && !seen.contains("proxy-authorization"),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("body-bytes: {}\n", 3 * 1024 * 1024)),
        "the whole body is streamed: {seen}"
    );

    let big = client().get(router.url("/big/8000000")).send().await.expect("GET big");
    assert_eq!(big.bytes().await.expect("big body").len(), 8_000_000);
}

#[tokio::test]
async fn a_response_body_that_stalls_is_cut_after_the_request_timeout() {
    let dir = TempDir::new("router-stall");
    let (echo, _task) = echo_upstream().await;
    let router = Proc::router(&echo, &dead_url(), dir.path(), &["--request-timeout", "500ms"]);
    let started = Instant::now();
    let response = client()
        .get(router.url("/stall"))
        .send()
        .await
        .expect("the head arrives");
    assert_eq!(response.status(), 200);
    assert!(
        response.bytes().await.is_err(),
        "the client sees the body cut, not a complete body"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cut after {:?}",
        started.elapsed()
    );
    let metrics = router.metrics_text().await;
    assert_eq!(
        metric_value(
            &metrics,
            "vigie_router_upstream_errors_total",
            r#"color="blue",kind="timeout""#
        ),
        Some(1.0)
    );
    let line = crate::helpers::eventually(Duration::from_secs(5), "the request line", || {
        let logs = router.logs();
        async move {
            logs.into_iter()
                .find(|l| l["msg"] == "request" && l["path"] == "/stall")
        }
    })
    .await;
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.contains("no response body data")),
        "{line}"
    );
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits_0() {
    let dir = TempDir::new("router-sigterm");
    let blue = Proc::backend("blue", &dir.join("tasks.db"), &["--fault-latency-ms", "1000"]);
    let mut router = Proc::router(&blue.url(""), &dead_url(), dir.path(), &[]);
    let slow = tokio::spawn(client().get(router.url("/api/info")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    router.terminate();
    let response = slow.await.expect("join").expect("the in-flight request completes");
    assert_eq!(response.status(), 200);
    assert!(router.wait_exit(Duration::from_secs(5)).success());
    assert!(router.logs().iter().any(|l| l["msg"] == "stopped"));
}

#[tokio::test]
async fn router_metrics_follow_prometheus_conventions() {
    let stack = Stack::start("router-metrics").await;
    stack.served_by().await;
    assert_eq!(stack.router.switch_to("green").await.0, 200);
    let metrics = stack.router.metrics_text().await;
    for name in [
        "vigie_router_requests_total",
        "vigie_router_request_duration_seconds_bucket",
        "vigie_router_upstream_errors_total",
        "vigie_router_active_color",
        "vigie_router_switches_total",
        "vigie_router_last_switch_timestamp_seconds",
        "vigie_build_info",
        "vigie_log_lines_dropped_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{metrics}"
        );
    }
    assert!(
        metrics.contains(r#"vigie_build_info{version=""#) && metrics.contains(r#"role="router""#),
        "{metrics}"
    );
    assert_promtool_accepts(&metrics);
}

#[test]
fn bad_router_flags_exit_2_with_a_clear_message() {
    for (flag, value) in [
        ("--connect-timeout", "ten"),
        ("--request-timeout", "0s"),
        ("--status-check-interval", "0ms"),
        ("--health-check-interval", "0s"),
        ("--blue", "https://backend-blue:3000"),
        ("--green", "http://backend-green:3000/api"),
        ("--health-check-successes", "0"),
        ("--listen", "nowhere"),
    ] {
        let output = std::process::Command::new(crate::helpers::vigie_bin())
            .args(["router", flag, value])
            .output()
            .expect("run vigie router");
        assert_eq!(output.status.code(), Some(2), "{flag} {value}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(flag),
            "{flag}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Sends `head` and `body` on a raw connection to the router's public
/// listener, then (when `close_write`) ends the client's side, and reads
/// the answer until the router closes or 10 s pass: (status, JSON body).
async fn raw_exchange(router: &Proc, head: &str, body: &[u8], close_write: bool) -> (u16, Value, Duration) {
    let mut stream = tokio::net::TcpStream::connect(router.addr).await.expect("connect");
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    if close_write {
        stream.shutdown().await.expect("half-close");
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&chunk[..n]);
                    // One response is enough: stop at the end of its JSON body.
                    let text = String::from_utf8_lossy(&answer);
                    if text.contains("\r\n\r\n{") && text.trim_end().ends_with('}') {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer within 10 s: {}",
        String::from_utf8_lossy(&answer)
    );
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let json = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let body: Value = serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    (status, body, elapsed)
}

/// A client that sends a broken body, or stops sending it, is answered 400
/// or 408 as the one at fault, in plain words, and never counts as an
/// upstream error (which would page about a healthy backend).
#[tokio::test]
async fn a_clients_broken_or_stalled_body_is_the_clients_fault_not_the_upstreams() {
    let stack = Stack::builder("router-client-body")
        .router_flags(&["--request-timeout", "1s"])
        .start()
        .await;
    let post = |framing: &str| {
        format!("POST /api/tasks HTTP/1.1\r\nHost: vigie\r\nContent-Type: application/json\r\n{framing}\r\n\r\n")
    };
    struct Case {
        what: &'static str,
        head: String,
        body: &'static [u8],
        close_write: bool,
        status: u16,
        words: &'static str,
    }
    let cases = [
        Case {
            what: "malformed chunked body",
            head: post("Transfer-Encoding: chunked"),
            body: b"zz\r\n{\"title\":\"x\"}\r\n0\r\n\r\n",
            close_write: false,
            status: 400,
            words: "chunked encoding is malformed",
        },
        Case {
            what: "body shorter than its Content-Length",
            head: post("Content-Length: 100"),
            body: b"{\"title\":",
            close_write: true,
            status: 400,
            words: "ended before it was complete",
        },
        Case {
            what: "stalled upload",
            head: post("Content-Length: 100"),
            body: b"{\"title\":",
            close_write: false,
            status: 408,
            words: "did not arrive within 1000 ms",
        },
    ];
    for case in cases {
        let what = case.what;
        let (got, answer, elapsed) = raw_exchange(&stack.router, &case.head, case.body, case.close_write).await;
        assert_eq!(got, case.status, "{what}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(case.words), "{what}: {answer}");
        assert!(
            !message.contains("error (") && !message.contains("os error"),
            "{what}: library words in {message:?}"
        );
        assert!(elapsed < Duration::from_secs(5), "{what}: answered after {elapsed:?}");
    }
    let metrics = stack.router.metrics_text().await;
    let upstream_errors: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("vigie_router_upstream_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(upstream_errors, 0.0, "{metrics}");
    // The backend is fine, and the router still proxies to it.
    assert_eq!(stack.served_by().await, "blue");
}

/// A POST whose body the upstream received, answered too slowly, is the
/// upstream's 504, counted against it: not the client's 408.
#[tokio::test]
async fn a_slow_upstream_answering_a_post_is_a_504_not_the_clients_fault() {
    let dir = TempDir::new("router-slow-post");
    let db = dir.join("tasks.db");
    let blue = Proc::backend("blue", &db, &["--fault-latency-ms", "3000"]);
    let green = Proc::backend("green", &db, &[]);
    let router = Proc::router(&blue.url(""), &green.url(""), dir.path(), &["--request-timeout", "1s"]);
    let response = client()
        .post(router.url("/api/tasks"))
        .json(&json!({ "title": "slow" }))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.expect("json error");
    assert_eq!(body["error"], "upstream_timeout", "{body}");
    let metrics = router.metrics_text().await;
    assert_eq!(
        metric_value(
            &metrics,
            "vigie_router_upstream_errors_total",
            r#"color="blue",kind="timeout""#
        ),
        Some(1.0),
        "{metrics}"
    );
}

/// The peak resident memory of a process, in bytes (Linux's VmHWM).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status");
    kib * 1024
}

#[tokio::test]
async fn a_100_mb_response_streams_through_with_bounded_router_memory() {
    const SIZE: usize = 100 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let dir = TempDir::new("router-100mb");
    // An upstream that writes 100 MB as fast as the connection takes it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = format!("http://{}", listener.local_addr().expect("addr"));
    let _server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let n = stream.read(&mut head).await.unwrap_or(0);
                if !head[..n].starts_with(b"GET /big ") {
                    // Health checks and anything else: a small answer.
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                        .await;
                    return;
                }
                let start = format!("HTTP/1.1 200 OK\r\ncontent-length: {SIZE}\r\n\r\n");
                if stream.write_all(start.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'v'; CHUNK];
                for _ in 0..SIZE / CHUNK {
                    if stream.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let router = Proc::router(&upstream, &dead_url(), dir.path(), &[]);
    let small = client()
        .get(router.url("/small"))
        .send()
        .await
        .expect("a first request");
    assert_eq!(small.text().await.expect("small body"), "ok");
    let before = peak_rss(router.pid());

    let mut response = client().get(router.url("/big")).send().await.expect("GET /big");
    assert_eq!(response.status(), 200);
    let mut received = 0usize;
    let mut paused = false;
    while let Some(chunk) = response.chunk().await.expect("body chunk") {
        received += chunk.len();
        // A client slower than the upstream: a router that buffered instead
        // of pushing back would hold the rest of the body meanwhile.
        if !paused && received >= 1024 * 1024 {
            paused = true;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert_eq!(received, SIZE, "the whole body arrives");
    let peak = peak_rss(router.pid());
    assert!(
        peak < before + 16 * 1024 * 1024,
        "the router's peak memory grew by {} MiB to stream 100 MiB (from {} MiB to {} MiB)",
        (peak - before) / (1024 * 1024),
        before / (1024 * 1024),
        peak / (1024 * 1024)
    );
    let line = crate::helpers::eventually(Duration::from_secs(5), "the request line", || {
        let logs = router.logs();
        async move { logs.into_iter().find(|l| l["msg"] == "request" && l["path"] == "/big") }
    })
    .await;
    assert_eq!(line["status"], 200, "{line}");
}

/// An upstream that answers every request at once, before reading its
/// body, and then reads that body to its end on the same connection (as a
/// server answering 401 or 413 early may): the connection stays busy
/// uploading after its response.
async fn early_answering_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
                    let mut left: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    buffer.drain(..end + 4);
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                    // Then the body, however slowly it comes.
                    let taken = left.min(buffer.len());
                    buffer.drain(..taken);
                    left -= taken;
                    while left > 0 {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => left = left.saturating_sub(n),
                        }
                    }
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn a_clients_slow_upload_never_holds_up_another_request() {
    let dir = TempDir::new("router-upload-busy");
    let upstream = early_answering_upstream().await;
    let router = Proc::router(&upstream, &dead_url(), dir.path(), &[]);
    // A client starts a 1 MB upload, gets its answer, and stalls.
    let mut uploader = tokio::net::TcpStream::connect(router.addr).await.expect("connect");
    uploader
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nfirst bytes")
        .await
        .expect("send the start of the upload");
    let mut head = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), uploader.read(&mut head))
        .await
        .expect("the early answer arrives")
        .expect("read");
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    // Another request must not wait for that upload's connection.
    let started = Instant::now();
    let answer = client()
        .get(router.url("/other"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the other request is answered");
    assert_eq!(answer.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the other request took {:?}",
        started.elapsed()
    );
    drop(uploader);
}

#[tokio::test]
async fn every_proxy_thread_setting_serves_and_switches_and_a_bad_one_exits_2() {
    // 0: the connections on the shared runtime; 1 and 3: that many proxy
    // threads (more than this machine may have cores).
    for threads in ["0", "1", "3"] {
        let mut stack = Stack::builder(&format!("router-threads-{threads}"))
            .router_flags(&["--proxy-threads", threads])
            .start()
            .await;
        for _ in 0..8 {
            assert_eq!(stack.served_by().await, "blue", "--proxy-threads {threads}");
        }
        let (status, body) = stack.switch_to("green").await;
        assert_eq!(status, 200, "--proxy-threads {threads}: {body}");
        for _ in 0..8 {
            assert_eq!(stack.served_by().await, "green", "--proxy-threads {threads}");
        }
        // A clean exit on SIGTERM: the threads' connections drained.
        stack.stop_router();
    }
    for value in ["65", "-1", "many"] {
        let output = std::process::Command::new(crate::helpers::vigie_bin())
            .args(["router", &format!("--proxy-threads={value}")])
            .output()
            .expect("run vigie router");
        assert_eq!(output.status.code(), Some(2), "--proxy-threads {value}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("--proxy-threads"),
            "{value}"
        );
    }
}
