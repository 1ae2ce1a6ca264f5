//! Guarded switches against the real Prometheus on a copy of the stack's
//! configuration: the router checks the new color in Prometheus and switches
//! back by itself on a breach; it checks the standby before the switch; a
//! Prometheus that goes away is a reported failure, never a silent pass.
//!
//! The router runs with a short check interval (2 s) and a small minimum
//! request count, and a client sends steady traffic through it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fixture::Stack;
use crate::helpers::{client, dead_url, eventually, metric_value, Proc, TempDir, ADMIN_TOKEN};

/// Router flags of every guard test: a check every 2 s, 10 requests to judge.
const GUARD_FLAGS: [&str; 6] = [
    "--guard-interval",
    "2s",
    "--guard-min-requests",
    "10",
    "--guard-query-timeout",
    "2s",
];

/// Two backends (green with `green_flags`), Prometheus scraping them through
/// the router's targets file, and the router's guard asking that Prometheus.
async fn guarded(tag: &str, green_flags: &[&str], router_flags: &[&str]) -> Stack {
    Stack::builder(tag)
        .green_flags(green_flags)
        .router_flags(&GUARD_FLAGS)
        .router_flags(router_flags)
        .guarded_by_prometheus()
        .start()
        .await
}

/// A file of the repository.
fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// Clients sending `GET /api/info` without pause until dropped.
struct Traffic {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(url: String, clients: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, url) = (Arc::clone(&stop), url.clone());
                tokio::spawn(async move {
                    let client = client();
                    while !stop.load(Ordering::Relaxed) {
                        let _ = client.get(&url).send().await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            })
            .collect();
        Traffic { stop, tasks }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// `POST /switch` with a body of our own: (status, JSON body).
async fn post_switch(router: &Proc, body: Value) -> (u16, Value) {
    let response = client()
        .post(router.admin_url("/switch"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("POST /switch");
    let status = response.status().as_u16();
    (status, response.json().await.expect("switch answer is JSON"))
}

/// Waits until the guard has a verdict and returns `/status`.
async fn verdict(router: &Proc, within: Duration) -> Value {
    eventually(within, "the guard's verdict", || async {
        let status = router.router_status().await;
        (!status["guard"]["verdict"].is_null()).then_some(status)
    })
    .await
}

/// The log lines of the router with `msg`.
fn lines(router: &Proc, msg: &str) -> Vec<Value> {
    router.logs().into_iter().filter(|l| l["msg"] == msg).collect()
}

/// The log lines with `msg` once there is at least one: the router writes
/// its log in batches, so a line can trail the answer it belongs to.
async fn logged(router: &Proc, msg: &str) -> Vec<Value> {
    eventually(Duration::from_secs(5), &format!("a {msg:?} log line"), || async {
        let found = lines(router, msg);
        (!found.is_empty()).then_some(found)
    })
    .await
}

fn metric(text: &str, name: &str, labels: &str) -> f64 {
    metric_value(text, name, labels).unwrap_or_else(|| panic!("no sample {name}{{{labels}}} in:\n{text}"))
}

/// The guard's rollback counters, all present from the start.
fn rollbacks(text: &str) -> [f64; 3] {
    ["guard_error_ratio", "guard_latency", "guard_prometheus_error"].map(|reason| {
        metric(
            text,
            "vigie_router_guard_rollbacks_total",
            &format!("reason=\"{reason}\""),
        )
    })
}

/// Until Prometheus has seen the standby green answer 5xx, and this green
/// has run longer than the shortest window (the pre-check judges an
/// instance on its own requests only).
async fn wait_until_green_fails_as_standby(stack: &Stack) {
    eventually(
        Duration::from_secs(40),
        "Prometheus sees green failing as the standby",
        || async {
            let result = stack
                .prometheus()
                .query(
                    r#"sum(increase(http_requests_total{job="backend",color="green",role="standby",route=~"/api/.*",status=~"5.."}[1m])) > 5
                       and on () (time() - max(process_start_time_seconds{job="backend",color="green"})) > 17"#,
                )
                .await;
            (!result.is_empty()).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_green_failing_30_percent_is_rolled_back_within_the_window() {
    let started = Instant::now();
    let stack = guarded("guard-errors", &["--fault-error-rate", "0.3"], &[]).await;
    let router = &stack.router;
    let before = router.metrics_text().await;
    assert_eq!(rollbacks(&before), [0.0; 3], "rollback counters exist at 0");
    assert_eq!(
        metric(&before, "vigie_router_guard_checks_total", r#"result="breach""#),
        0.0
    );
    let _traffic = Traffic::start(router.url("/api/info"), 2);

    // --wait: the command returns with the verdict, and says it by its status.
    let switched = Instant::now();
    let (code, stdout, stderr) =
        tokio::task::block_in_place(|| router.cli(&["switch", "green", "--guard", "40s", "--wait"], Some(ADMIN_TOKEN)));
    assert_eq!(code, 3, "rolled back exits 3; stdout: {stdout} stderr: {stderr}");
    assert!(stdout.contains("guard: watching green"), "{stdout}");
    assert!(
        stdout.contains("guard verdict on green (0.1.0): rolled_back: guard_error_ratio")
            && stdout.contains("the last: breach (error ratio"),
        "{stdout}"
    );

    let status = verdict(router, Duration::from_secs(1)).await;
    let guard = &status["guard"];
    assert_eq!(guard["verdict"]["result"], "rolled_back", "{guard}");
    assert!(
        switched.elapsed() < Duration::from_secs(40),
        "rolled back within the window"
    );
    assert_eq!(status["active"], "blue", "{status}");
    assert_eq!(guard["running"], false);
    assert_eq!(guard["color"], "green");
    assert_eq!(guard["last"]["result"], "breach", "{guard}");
    assert!(
        guard["last"]["error_ratio"].as_f64().is_some_and(|r| r > 0.05),
        "{guard}"
    );
    assert!(guard["last"]["requests"].as_u64().is_some_and(|n| n >= 10), "{guard}");
    assert!(
        guard["verdict"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("guard_error_ratio")),
        "{guard}"
    );

    let metrics = router.metrics_text().await;
    assert_eq!(rollbacks(&metrics), [1.0, 0.0, 0.0]);
    assert!(metric(&metrics, "vigie_router_guard_checks_total", r#"result="breach""#) >= 1.0);
    assert_eq!(metric(&metrics, "vigie_router_guard_running", ""), 0.0);
    assert_eq!(
        metric(
            &metrics,
            "vigie_router_switches_total",
            r#"from="green",to="blue",result="ok""#
        ),
        1.0
    );

    let rollback = logged(router, "guard rollback").await;
    assert_eq!(rollback.len(), 1, "{rollback:?}");
    let line = &rollback[0];
    assert_eq!(
        (&line["color"], &line["to"], &line["reason"], &line["result"]),
        (
            &json!("green"),
            &json!("blue"),
            &json!("guard_error_ratio"),
            &json!("ok")
        )
    );
    assert!(line["error_ratio"].as_f64().is_some_and(|r| r > 0.05), "{line}");
    assert!(line["requests"].as_u64().is_some(), "{line}");
    assert!(line.get("p95_seconds").is_some(), "{line}");
    assert!(logged(router, "guard check")
        .await
        .iter()
        .any(|l| l["result"] == "breach"));
    let switch_back = logged(router, "switch")
        .await
        .into_iter()
        .find(|l| l["to"] == "blue")
        .expect("the rollback's switch line");
    assert_eq!(switch_back["reason"], "guard_error_ratio");

    let (code, stdout, _) = router.cli(&["status"], Some(ADMIN_TOKEN));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("verdict on green") && stdout.contains("rolled_back") && stdout.contains("breach"),
        "{stdout}"
    );
    eprintln!("rolled back in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_green_stays_after_the_window() {
    let stack = guarded("guard-healthy", &[], &[]).await;
    let router = &stack.router;
    let _traffic = Traffic::start(router.url("/api/info"), 2);

    let (status, body) = post_switch(router, json!({ "to": "green", "guard": "30s" })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["guard"]["running"], true, "{body}");
    assert_eq!(
        body["precheck"]["result"], "insufficient_data",
        "a standby without traffic: {body}"
    );
    let running = router.router_status().await;
    let guard = &running["guard"];
    assert_eq!((&guard["running"], &guard["color"]), (&json!(true), &json!("green")));
    assert!(
        guard["time_left_seconds"].as_u64().is_some_and(|t| t > 0 && t <= 30),
        "{guard}"
    );
    assert!(guard["ends_at"].is_string() && guard["started"].is_string(), "{guard}");
    assert_eq!(
        metric(&router.metrics_text().await, "vigie_router_guard_running", ""),
        1.0
    );

    let status = verdict(router, Duration::from_secs(45)).await;
    let guard = &status["guard"];
    assert_eq!(guard["verdict"]["result"], "passed", "{guard}");
    assert_eq!(status["active"], "green");
    assert_eq!(guard["time_left_seconds"], 0);
    assert_eq!(guard["last"]["result"], "ok", "{guard}");
    let metrics = router.metrics_text().await;
    assert!(metric(&metrics, "vigie_router_guard_checks_total", r#"result="ok""#) >= 1.0);
    assert_eq!(rollbacks(&metrics), [0.0; 3]);
    let passed = logged(router, "guard passed").await;
    assert_eq!(passed.len(), 1);
    assert_eq!(
        (&passed[0]["color"], &passed[0]["result"]),
        (&json!("green"), &json!("passed"))
    );
}

async fn router_sees_green_healthy(router: &Proc, healthy: bool) {
    eventually(
        Duration::from_secs(10),
        &format!("the router sees green healthy={healthy}"),
        || async { (router.router_status().await["upstreams"]["green"]["healthy"] == healthy).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeployed_green_is_judged_on_its_own_requests_and_wait_exits_0_when_it_passes() {
    let mut stack = guarded("guard-redeploy", &["--fault-error-rate", "0.5"], &[]).await;
    // The broken green fails as the standby: a guarded switch is refused.
    let traffic = Traffic::start(stack.green.url("/api/info"), 2);
    wait_until_green_fails_as_standby(&stack).await;
    let (status, body) = post_switch(&stack.router, json!({ "to": "green", "guard": "30s" })).await;
    assert_eq!((status, &body["error"]), (409, &json!("standby_failing")), "{body}");
    drop(traffic);

    // Redeployed with the fix: the router sees the old instance go and the new one come.
    stack.kill_backend("green");
    router_sees_green_healthy(&stack.router, false).await;
    stack.restart_backend("green", &[]);
    router_sees_green_healthy(&stack.router, true).await;
    let router = &stack.router;

    // The old instance's errors are still in the last minute, but the
    // pre-check judges the new one only: too young, not refused.
    let _traffic = Traffic::start(router.url("/api/info"), 2);
    let (code, stdout, stderr) =
        tokio::task::block_in_place(|| router.cli(&["switch", "green", "--guard", "30s", "--wait"], Some(ADMIN_TOKEN)));
    assert_eq!(code, 0, "passed exits 0; stdout: {stdout} stderr: {stderr}");
    assert!(
        stdout.contains("pre-check of green as standby: insufficient_data: the instance started"),
        "{stdout}"
    );
    assert!(stdout.contains("guard verdict on green (0.1.0): passed"), "{stdout}");
    assert!(stdout.contains("the last: ok (error ratio 0.0%"), "{stdout}");
    let status = router.router_status().await;
    assert_eq!(status["active"], "green");
    assert_eq!(status["upstreams"]["green"]["version"], "0.1.0", "{status}");
    let checks = logged(router, "guard check").await;
    let young = checks.iter().filter(|c| c["result"] == "insufficient_data").count();
    assert!(young >= 1, "the first checks find the instance too young: {checks:?}");
    assert!(
        checks
            .iter()
            .filter(|c| c["result"] == "ok")
            .all(|c| c["window_seconds"].as_u64() <= c["instance_age_seconds"].as_u64()),
        "no window reaches back before the instance's start: {checks:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_slo_a_green_within_the_thresholds_but_burning_the_budget_is_rolled_back() {
    // 3% errors: under the 5% error-ratio threshold, but 30 times the
    // availability objective's 0.1% budget, over the 14.4x that pages.
    let slo_file = repo_file("stack/slo.yaml");
    let stack = guarded(
        "guard-slo",
        &["--fault-error-rate", "0.03"],
        &["--slo-file", slo_file.to_str().expect("utf-8")],
    )
    .await;
    let router = &stack.router;
    let settings = &router.router_status().await["guard"]["settings"];
    assert_eq!(settings["slo_objectives"], json!(["availability 99.9%", "latency 99%"]));
    let _traffic = Traffic::start(router.url("/api/info"), 4);

    let (code, stdout, stderr) = tokio::task::block_in_place(|| {
        router.cli(
            &["switch", "green", "--guard", "40s", "--guard-slo", "--wait"],
            Some(ADMIN_TOKEN),
        )
    });
    assert_eq!(code, 3, "rolled back exits 3; stdout: {stdout} stderr: {stderr}");
    assert!(
        stdout.contains("rolled_back: guard_slo_burn_rate: availability burn rate"),
        "{stdout}"
    );
    assert!(stdout.contains(">= 14.4x, the rate that pages"), "{stdout}");
    assert!(
        stdout.contains("; availability burn rate "),
        "the figures per objective: {stdout}"
    );
    let status = router.router_status().await;
    let guard = &status["guard"];
    assert_eq!(
        (&guard["judge"], &status["active"]),
        (&json!("slo"), &json!("blue")),
        "{guard}"
    );
    let burn = guard["last"]["slo"][0]["burn_rate"].as_f64().expect("a burn rate");
    assert!(burn >= 14.4, "{guard}");
    let error_ratio = guard["last"]["error_ratio"].as_f64().expect("an error ratio");
    assert!(error_ratio < 0.05, "within the threshold the plain guard uses: {guard}");
    assert_eq!(
        metric(
            &router.metrics_text().await,
            "vigie_router_guard_rollbacks_total",
            r#"reason="guard_slo_burn_rate""#
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_green_slower_than_the_p95_threshold_is_rolled_back() {
    let stack = guarded(
        "guard-latency",
        &["--fault-latency-ms", "600"],
        &["--guard-max-p95", "300ms"],
    )
    .await;
    let router = &stack.router;
    // Each request takes 600 ms on green: more clients keep the count up.
    let _traffic = Traffic::start(router.url("/api/info"), 8);

    let (status, body) = post_switch(router, json!({ "to": "green", "guard": "40s" })).await;
    assert_eq!(status, 200, "{body}");
    let status = verdict(router, Duration::from_secs(40)).await;
    let guard = &status["guard"];
    assert_eq!(guard["verdict"]["result"], "rolled_back", "{guard}");
    assert!(
        guard["last"]["p95_seconds"].as_f64().is_some_and(|p| p > 0.3),
        "{guard}"
    );
    assert_eq!(status["active"], "blue");
    assert_eq!(rollbacks(&router.metrics_text().await), [0.0, 1.0, 0.0]);
    let rollback = logged(router, "guard rollback").await;
    assert_eq!(rollback.len(), 1);
    assert_eq!(rollback[0]["reason"], "guard_latency");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_stopped_during_the_guard_rolls_back_by_default() {
    let mut stack = guarded("guard-prom-down", &[], &[]).await;
    let (status, body) = post_switch(&stack.router, json!({ "to": "green", "guard": "30s" })).await;
    assert_eq!(status, 200, "{body}");
    stack.stop_prometheus();

    let router = &stack.router;
    let status = verdict(router, Duration::from_secs(15)).await;
    let guard = &status["guard"];
    assert_eq!(guard["verdict"]["result"], "rolled_back", "{guard}");
    assert_eq!(guard["last"]["result"], "prometheus_error", "{guard}");
    assert!(
        guard["last"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot reach Prometheus")),
        "{guard}"
    );
    assert_eq!(status["active"], "blue");
    let metrics = router.metrics_text().await;
    assert_eq!(rollbacks(&metrics), [0.0, 0.0, 1.0]);
    assert!(
        metric(
            &metrics,
            "vigie_router_guard_checks_total",
            r#"result="prometheus_error""#
        ) >= 1.0
    );
    assert_eq!(
        logged(router, "guard rollback").await[0]["reason"],
        "guard_prometheus_error"
    );

    // With Prometheus gone, a new guarded switch is refused by its pre-check
    // (503), unless forced; an unguarded switch does not ask Prometheus.
    let (status, body) = post_switch(router, json!({ "to": "green", "guard": "30s" })).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        (&body["error"], &body["result"]),
        (&json!("prometheus_error"), &json!("refused"))
    );
    assert_eq!(router.router_status().await["active"], "blue");
    let (code, _, stderr) = router.cli(&["switch", "green", "--guard", "30s"], Some(ADMIN_TOKEN));
    assert_eq!(code, 6, "a refused switch exits 6; {stderr}");
    assert!(stderr.contains("switch refused"), "{stderr}");
    let (status, body) = post_switch(router, json!({ "to": "green", "guard": "30s", "force": true })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["precheck"]["forced"], true, "{body}");
    let (status, body) = post_switch(router, json!({ "to": "blue" })).await;
    assert_eq!((status, &body["result"]), (200, &json!("ok")), "{body}");
    assert_eq!(router.router_status().await["guard"]["verdict"]["result"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_stopped_during_the_guard_keeps_green_with_keep() {
    let mut stack = guarded("guard-prom-keep", &[], &["--guard-on-prometheus-error", "keep"]).await;
    let (status, body) = post_switch(&stack.router, json!({ "to": "green", "guard": "7s" })).await;
    assert_eq!(status, 200, "{body}");
    stack.stop_prometheus();

    let router = &stack.router;
    let status = verdict(router, Duration::from_secs(15)).await;
    let guard = &status["guard"];
    assert_eq!(guard["verdict"]["result"], "prometheus_error", "{guard}");
    assert_eq!(guard["last"]["result"], "prometheus_error", "{guard}");
    assert_eq!(status["active"], "green", "keep keeps the new color");
    let metrics = router.metrics_text().await;
    assert_eq!(rollbacks(&metrics), [0.0; 3]);
    assert!(
        metric(
            &metrics,
            "vigie_router_guard_checks_total",
            r#"result="prometheus_error""#
        ) >= 3.0
    );
    let ended = logged(router, "guard ended").await;
    assert_eq!(ended.len(), 1);
    assert_eq!(
        (&ended[0]["result"], &ended[0]["level"]),
        (&json!("prometheus_error"), &json!("warn"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_to_a_failing_standby_is_refused_unless_forced() {
    let stack = guarded("guard-standby", &["--fault-error-rate", "0.3"], &[]).await;
    let router = &stack.router;
    // Green gets traffic of its own while it is the standby (a smoke test).
    let _traffic = Traffic::start(stack.green.url("/api/info"), 2);
    wait_until_green_fails_as_standby(&stack).await;

    let (status, body) = post_switch(router, json!({ "to": "green", "guard": "30s" })).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        (&body["error"], &body["result"]),
        (&json!("standby_failing"), &json!("refused"))
    );
    let precheck = &body["precheck"];
    assert_eq!(precheck["result"], "breach", "{body}");
    assert!(precheck["error_ratio"].as_f64().is_some_and(|r| r > 0.05), "{body}");
    assert!(precheck["requests"].as_u64().is_some_and(|n| n >= 10), "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("error ratio")),
        "{body}"
    );
    assert_eq!(router.router_status().await["active"], "blue");
    assert_eq!(
        metric(
            &router.metrics_text().await,
            "vigie_router_guard_prechecks_total",
            r#"result="breach""#
        ),
        1.0
    );
    let (code, _, stderr) = router.cli(&["switch", "green", "--guard", "30s"], Some(ADMIN_TOKEN));
    assert_eq!(code, 6, "a refused switch exits 6; {stderr}");
    assert!(stderr.contains("failing as the standby"), "{stderr}");
    let precheck_line = logged(router, "guard precheck").await;
    assert_eq!(
        (&precheck_line[0]["decision"], &precheck_line[0]["level"]),
        (&json!("refuse"), &json!("warn"))
    );

    let (code, stdout, stderr) = router.cli(&["switch", "green", "--guard", "30s", "--force"], Some(ADMIN_TOKEN));
    assert_eq!(code, 0, "{stdout} {stderr}");
    assert!(stdout.contains("(forced)"), "{stdout}");
    assert_eq!(router.router_status().await["active"], "green");
}

#[tokio::test]
async fn a_new_switch_cancels_a_running_guard_and_a_restart_resumes_it() {
    // No Prometheus at all; with `keep`, the guard runs and reports its failed checks.
    let prometheus_url = dead_url();
    let flags = [
        "--prometheus-url",
        &prometheus_url,
        "--guard-on-prometheus-error",
        "keep",
        "--guard-interval",
        "1s",
    ];
    let mut stack = Stack::builder("guard-cancel").router_flags(&flags).start().await;
    let router = &stack.router;
    let (status, body) = post_switch(router, json!({ "to": "green", "guard": "10m" })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["precheck"]["result"], "prometheus_error", "{body}");
    let (status, body) = post_switch(router, json!({ "to": "blue", "reason": "manual" })).await;
    assert_eq!(status, 200, "{body}");
    let guard = &router.router_status().await["guard"];
    assert_eq!(guard["running"], false, "{guard}");
    assert_eq!(guard["verdict"]["result"], "cancelled", "{guard}");
    assert!(
        guard["verdict"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("switch to blue")),
        "{guard}"
    );

    let (status, body) = post_switch(router, json!({ "to": "green", "guard": "10m" })).await;
    assert_eq!(status, 200, "{body}");
    eventually(Duration::from_secs(5), "a failed check is reported", || async {
        let guard = router.router_status().await["guard"].clone();
        (guard["last"]["result"] == "prometheus_error").then_some(())
    })
    .await;
    assert!(metric_value(
        &router.metrics_text().await,
        "vigie_router_guard_checks_total",
        r#"result="prometheus_error""#
    )
    .is_some_and(|n| n >= 1.0));
    let switch = router.router_status().await["guard"]["switch"].clone();
    stack.stop_router();
    let router = &stack.router;
    assert_eq!(
        lines(router, "guard cancelled").len(),
        1,
        "a shutdown pauses, not cancels"
    );
    assert_eq!(
        lines(router, "guard paused for the shutdown; the next start resumes it").len(),
        1
    );
    let saved: Value = serde_json::from_slice(&std::fs::read(stack.state_file()).expect("state file")).expect("json");
    assert_eq!(
        (&saved["active"], &saved["guard"]["switch"], &saved["guard"]["verdict"]),
        (&json!("green"), &switch, &Value::Null),
        "the running guard is saved: {saved}"
    );

    stack.start_router();
    let router = &stack.router;
    let guard = router.router_status().await["guard"].clone();
    assert_eq!(
        (&guard["running"], &guard["switch"], &guard["color"]),
        (&json!(true), &switch, &json!("green")),
        "{guard}"
    );
    let left = guard["time_left_seconds"].as_u64().expect("time left");
    assert!((590..=600).contains(&left), "resumed for what is left of 10m: {left}");
    assert_eq!(lines(router, "guard resumed").len(), 1);
    eventually(Duration::from_secs(5), "the resumed guard checks", || async {
        let guard = router.router_status().await["guard"].clone();
        (guard["checks"].as_u64() >= Some(1)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_guard_whose_window_ended_while_the_router_was_down_is_interrupted() {
    let prometheus_url = dead_url();
    let mut stack = Stack::builder("guard-interrupted")
        .router_flags(&["--prometheus-url", &prometheus_url])
        .start()
        .await;
    stack.stop_router();
    // A state file as a router stopped during a 2-minute guard an hour ago left it.
    let started = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .expect("format")
    };
    let state = json!({
        "active": "green", "since": rfc3339(started), "switches": 4,
        "guard": {
            "switch": 4, "color": "green", "from": "blue", "version": "2.0.0", "from_version": "1.0.0",
            "started": rfc3339(started), "ends_at": rfc3339(started + time::Duration::minutes(2)),
            "window_seconds": 120, "verdict": null
        }
    });
    std::fs::write(stack.state_file(), state.to_string()).expect("state file");
    stack.start_router();
    let router = &stack.router;
    let guard = router.router_status().await["guard"].clone();
    assert_eq!(
        (&guard["running"], &guard["switch"], &guard["verdict"]["result"]),
        (&json!(false), &json!(4), &json!("interrupted")),
        "{guard}"
    );
    assert!(
        guard["verdict"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("while the router was not running")),
        "{guard}"
    );
    // The verdict is saved, and what `--wait` of that switch gets at once.
    eventually(Duration::from_secs(5), "the verdict is saved", || async {
        let saved: Value = serde_json::from_slice(&std::fs::read(stack.state_file()).ok()?).ok()?;
        (saved["guard"]["verdict"]["result"] == "interrupted").then_some(())
    })
    .await;
    let answer = router.admin_get("/guard?switch=4&wait=5s").await;
    assert_eq!(answer["verdict"]["result"], "interrupted", "{answer}");
    stack.stop_router();

    // Stopped between its switch back (saved: one more switch, on blue)
    // and its verdict: found rolled back.
    let mut state = state;
    state["active"] = json!("blue");
    state["switches"] = json!(5);
    std::fs::write(stack.state_file(), state.to_string()).expect("state file");
    stack.start_router();
    let router = &stack.router;
    let guard = router.router_status().await["guard"].clone();
    assert_eq!(
        (&guard["running"], &guard["verdict"]["result"]),
        (&json!(false), &json!("rolled_back")),
        "{guard}"
    );
}

#[tokio::test]
async fn bad_guard_requests_get_400() {
    let dir = TempDir::new("guard-bad");
    let db = dir.join("tasks.db");
    let blue = Proc::backend("blue", &db, &[]);
    let router = Proc::router(
        &blue.url(""),
        &dead_url(),
        dir.path(),
        &["--prometheus-url", &dead_url()],
    );
    for body in [
        json!({ "to": "green", "guard": "soon" }),
        json!({ "to": "green", "guard": "0s" }),
        json!({ "to": "green", "guard": "48h" }),
        json!({ "to": "green", "guard": 30 }),
        json!({ "to": "green", "force": "yes" }),
        // Shorter than the check interval (10s by default): never checked.
        json!({ "to": "green", "guard": "5s" }),
        // By burn rate: only guarded, and only with an SLO file.
        json!({ "to": "green", "slo": true }),
        json!({ "to": "green", "guard": "1m", "slo": true }),
    ] {
        let (status, answer) = post_switch(&router, body.clone()).await;
        assert_eq!(
            (status, &answer["error"]),
            (400, &json!("bad_request")),
            "{body}: {answer}"
        );
    }
    let (_, answer) = post_switch(&router, json!({ "to": "green", "guard": "5s" })).await;
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("shorter than the router's check interval (10000 ms")),
        "{answer}"
    );
    for query in ["?wait=5s", "?switch=1&wait=2m", "?switch=one", "?switch=1&wait=soon"] {
        let response = client()
            .get(router.admin_url(&format!("/guard{query}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("GET /guard");
        assert_eq!(response.status(), 400, "{query}");
    }
    let unknown = router.admin_get("/guard?switch=7&wait=1s").await;
    assert_eq!(unknown["running"], false, "no guard to wait for: answered at once");
    let (_, answer) = post_switch(&router, json!({ "to": "green", "guard": "1m", "slo": true })).await;
    assert!(
        answer["message"].as_str().is_some_and(|m| m.contains("no SLO file")),
        "{answer}"
    );
    for args in [
        &["switch", "green", "--guard", "soon"][..],
        &["switch", "green", "--wait"],
        &["switch", "green", "--guard-slo"],
        &["switch", "purple", "--guard", "1m"],
    ] {
        let output = std::process::Command::new(crate::helpers::vigie_bin())
            .args(args)
            .output()
            .expect("run vigie switch");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
    assert_eq!(router.router_status().await["switches"], 0, "nothing changed");
    for (flag, value) in [
        ("--prometheus-url", "https://prometheus:9090"),
        ("--guard-max-error-ratio", "1.5"),
        ("--guard-min-requests", "0"),
        ("--guard-interval", "0s"),
        ("--guard-on-prometheus-error", "ignore"),
        ("--slo-file", "/nonexistent/slo.yaml"),
    ] {
        let output = std::process::Command::new(crate::helpers::vigie_bin())
            .args(["router", flag, value])
            .output()
            .expect("run vigie router");
        assert_eq!(output.status.code(), Some(2), "{flag} {value}");
        assert!(String::from_utf8_lossy(&output.stderr).contains(flag), "{flag}");
    }
}
