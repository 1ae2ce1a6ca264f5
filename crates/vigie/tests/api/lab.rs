//! The stack, the router and the guard with a backend that is not vigie's:
//! `lab-service` (crates/lab), with prom-client's metric names and pino's
//! log lines, as blue and green; and the OpenTelemetry names, from a
//! static exporter. What "Watch your own service" in docs/stack.md promises.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{client, eventually, free_port, Proc, TempDir, ADMIN_TOKEN};
use crate::prometheus::{copy_stack_config, Prometheus};
use crate::stack::{panels_have_data, Api};

/// The items API of lab-service.
const LAB_API: Api = Api {
    read: "/api/items",
    create: "/api/items",
    create_body: |i| json!({ "name": format!("item {i}") }),
    item: "/api/items/",
};

/// What only vigie's backend exports: its database, its build info, its
/// in-flight gauge, its log and trace pipelines' own counters.
const VIGIE_ONLY: [&str; 5] = [
    "vigie_db_",
    "vigie_build_info{job=\"backend\"",
    "http_requests_in_flight",
    "vigie_log_lines_dropped",
    "vigie_trace_",
];

/// The lab-service binary, built once if this test run has not built it.
fn lab_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let path = PathBuf::from(crate::helpers::vigie_bin()).with_file_name("lab-service");
            if !path.exists() {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let status = Command::new(cargo)
                    .args(["build", "-p", "lab-service"])
                    .status()
                    .expect("run cargo build -p lab-service");
                assert!(status.success(), "cargo build -p lab-service failed");
            }
            path
        })
        .clone()
}

/// A running lab-service with its stdout lines.
struct Lab {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Lab {
    async fn start(port: u16, fault_error_rate: &str) -> Lab {
        let mut child = Command::new(lab_bin())
            .arg("serve")
            .env("PORT", port.to_string())
            .env("VIGIE_FAULT_ERROR_RATE", fault_error_rate)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn lab-service");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        let lab = Lab { child, port, lines };
        let url = lab.url("/health/ready");
        eventually(Duration::from_secs(10), "lab-service ready", || {
            let url = url.clone();
            async move {
                client()
                    .get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
                    .map(|_| ())
            }
        })
        .await;
        lab
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn logs(&self) -> Vec<Value> {
        let lines = self.lines.lock().expect("lines").clone();
        lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_prom_client_names_and_pino_logs_fills_the_dashboards() {
    let dir = TempDir::new("lab-dashboards");
    let blue = Lab::start(free_port(), "0").await;
    let green = Lab::start(free_port(), "0.2").await;
    let empty = panels_have_data(&dir, &blue.url(""), &green.url(""), &[], &LAB_API, &VIGIE_ONLY).await;
    eprintln!(
        "vigie-only panels without data for lab-service:\n  {}",
        empty.join("\n  ")
    );
    // Its pino lines carry the router's request id.
    let line = green
        .logs()
        .into_iter()
        .find(|l| l["msg"] == "request completed" && l["req"]["url"] == "/api/items" && l["res"]["statusCode"] == 200)
        .expect("a pino request line");
    assert_eq!(line["level"], 30, "{line}");
    let failed = green
        .logs()
        .into_iter()
        .find(|l| l["res"]["statusCode"] == 500)
        .expect("a failed request's line");
    assert_eq!(failed["level"], 50, "pino's error level: {failed}");
    assert!(
        line["req"]["id"].as_str().is_some_and(|id| id.len() >= 16),
        "the router's x-request-id: {line}"
    );
    assert!(
        line["time"].as_u64().is_some() && line["responseTime"].is_u64(),
        "{line}"
    );
}

/// An OpenTelemetry SDK's Prometheus exporter, as far as the stack reads it.
const OTEL_EXPOSITION: &str = "# TYPE http_server_request_duration_seconds histogram\n\
http_server_request_duration_seconds_bucket{http_request_method=\"GET\",http_route=\"/api/things\",http_response_status_code=\"200\",otel_scope_name=\"app\",le=\"0.25\"} 9\n\
http_server_request_duration_seconds_bucket{http_request_method=\"GET\",http_route=\"/api/things\",http_response_status_code=\"200\",otel_scope_name=\"app\",le=\"+Inf\"} 10\n\
http_server_request_duration_seconds_sum{http_request_method=\"GET\",http_route=\"/api/things\",http_response_status_code=\"200\",otel_scope_name=\"app\"} 1.5\n\
http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/api/things\",http_response_status_code=\"200\",otel_scope_name=\"app\"} 10\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_stores_prom_client_and_opentelemetry_names_as_vigies() {
    let dir = TempDir::new("lab-normalise");
    let lab = Lab::start(free_port(), "0").await;
    for _ in 0..5 {
        let _ = client().get(lab.url("/api/items")).send().await;
    }
    let otel = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let otel_addr = otel.local_addr().expect("addr");
    let app = axum::Router::new().route("/metrics", axum::routing::get(|| async { OTEL_EXPOSITION }));
    tokio::spawn(async move { axum::serve(otel, app).await });
    let config = copy_stack_config(&dir.join("prometheus"));
    // Two targets of the backend job, as the router's file names them.
    let targets = json!([
        {"targets": [format!("127.0.0.1:{}", lab.port)], "labels": {"color": "blue", "role": "active"}},
        {"targets": [otel_addr.to_string()], "labels": {"color": "green", "role": "standby"}},
    ]);
    std::fs::write(config.join("targets/backend.json"), targets.to_string()).expect("targets");
    let prometheus = Prometheus::start(&config).await;
    let stored = |what: &'static str, promql: &'static str| {
        let prometheus = &prometheus;
        eventually(Duration::from_secs(30), what, move || async move {
            let found = prometheus.query(promql).await;
            (!found.is_empty()).then_some(found)
        })
    };
    let blue = stored(
        "lab-service's requests, renamed",
        r#"http_requests_total{job="backend",color="blue",method="GET",route="/api/items",status="200"}"#,
    )
    .await;
    assert!(blue[0]["metric"].get("status_code").is_none(), "{blue:?}");
    let green = stored(
        "the OpenTelemetry names, renamed",
        r#"http_requests_total{job="backend",color="green",method="GET",route="/api/things",status="200"}"#,
    )
    .await;
    assert_eq!(
        green[0]["value"][1], "10",
        "the histogram's count is the request count: {green:?}"
    );
    let buckets = prometheus
        .query(r#"http_request_duration_seconds_bucket{job="backend",color="green",route="/api/things",le="0.25"}"#)
        .await;
    assert_eq!(buckets.len(), 1, "{buckets:?}");
    for leftover in [
        r#"{job="backend",status_code!=""}"#,
        r#"{job="backend",http_route!=""}"#,
        r#"{job="backend",__name__=~"http_server_.*"}"#,
    ] {
        assert!(prometheus.query(leftover).await.is_empty(), "{leftover} is stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_passes_a_healthy_lab_service_and_rolls_back_a_faulty_one() {
    let dir = TempDir::new("lab-guard");
    let config = copy_stack_config(&dir.join("prometheus"));
    let blue_port = free_port();
    let blue = Lab::start(blue_port, "0").await;
    let green = Lab::start(free_port(), "0").await;
    let prometheus = Prometheus::start(&config).await;
    let targets_file = config.join("targets").join("backend.json");
    let prometheus_url = format!("http://{}", prometheus.addr);
    let router = Proc::router(
        &blue.url(""),
        &green.url(""),
        &dir.join("router"),
        &[
            "--targets-file",
            targets_file.to_str().expect("utf-8"),
            "--prometheus-url",
            &prometheus_url,
            "--guard-interval",
            "2s",
            "--guard-min-requests",
            "10",
        ],
    );
    let public = router.url("/api/items");
    let traffic = tokio::spawn(async move {
        let http = client();
        loop {
            let _ = http.get(&public).send().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let (code, stdout, stderr) =
        tokio::task::block_in_place(|| router.cli(&["switch", "green", "--guard", "25s", "--wait"], Some(ADMIN_TOKEN)));
    assert_eq!(code, 0, "a healthy lab-service passes: {stdout} {stderr}");
    assert!(stdout.contains("guard verdict on green (unknown): passed"), "{stdout}");

    // A faulty release of lab-service on blue, the standby now.
    drop(blue);
    let blue = Lab::start(blue_port, "0.3").await;
    let (code, stdout, stderr) =
        tokio::task::block_in_place(|| router.cli(&["switch", "blue", "--guard", "40s", "--wait"], Some(ADMIN_TOKEN)));
    assert_eq!(code, 3, "a faulty one is rolled back: {stdout} {stderr}");
    assert!(stdout.contains("rolled_back: guard_error_ratio"), "{stdout}");
    assert_eq!(router.router_status().await["active"], "green");
    traffic.abort();
    drop(blue);
}
