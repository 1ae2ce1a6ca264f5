//! `vigie doctor` against the real processes that run here (backends,
//! router, Prometheus, Alertmanager) and, for Loki, Tempo and Grafana (not
//! installable here), small HTTP servers answering with the shapes their
//! HTTP API documentation gives.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path as UrlPath, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::fixture::Stack;
use crate::helpers::{client, dead_url, free_port, require_program, vigie_bin, TempDir, ADMIN_TOKEN};
use crate::prometheus::{copy_stack_config, set_static_target, Prometheus};

/// A doctor run never takes longer (its own requests are bounded by
/// `--timeout`, 5 s by default, and run concurrently).
const RUN_LIMIT: Duration = Duration::from_secs(30);
/// Scrape intervals (5 s, 15 s for the alertmanager job) + file_sd
/// discovery batching (5 s), with room for a slow, shared machine.
const SEEN_WITHIN: Duration = Duration::from_secs(45);
/// Longest wait for Alertmanager's `/-/ready`.
const ALERTMANAGER_READY: Duration = Duration::from_secs(20);

// ---- running the doctor ---------------------------------------------------

struct DoctorRun {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl DoctorRun {
    /// The report line of check `name` (its name column).
    fn line(&self, name: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(&format!("{name}  "))))
            .unwrap_or_else(|| panic!("no line for {name:?} in:\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }

    fn status(&self, name: &str) -> &str {
        self.line(name).split_whitespace().next().unwrap_or("")
    }

    fn report_lines(&self) -> Vec<&str> {
        self.stdout.lines().take_while(|l| !l.is_empty()).collect()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "--json output is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs `vigie doctor <args>` with only the given `VIGIE_*` variables.
async fn doctor(args: &[String], envs: &[(&str, &str)]) -> DoctorRun {
    let mut command = tokio::process::Command::new(vigie_bin());
    command.arg("doctor").args(args).stdin(Stdio::null()).kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("VIGIE_") {
            command.env_remove(key);
        }
    }
    command.envs(envs.iter().copied());
    let started = Instant::now();
    let output = tokio::time::timeout(RUN_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("vigie doctor {args:?} did not finish within {RUN_LIMIT:?}"))
        .expect("run vigie doctor");
    DoctorRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// Serves `app` on 127.0.0.1, a free port, for the rest of the test.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake server");
    let addr = listener.local_addr().expect("fake server address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A server that accepts connections and never answers.
async fn silent_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind silent server");
    let addr = listener.local_addr().expect("silent server address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{addr}")
}

// ---- Loki, as documented --------------------------------------------------
// https://grafana.com/docs/loki/latest/reference/loki-http-api/
// `GET /ready`: 200 when ready to accept traffic (503 and a reason before).
// `GET /loki/api/v1/query`: an instant metric query answers
// {"status":"success","data":{"resultType":"vector","result":[{"metric":{…},"value":[<unix s>,"<value>"]}]}}.

#[derive(Clone)]
struct FakeLoki {
    /// Shared, so a test can make a starting Loki ready.
    ready: Arc<AtomicBool>,
    /// Lines per color over the queried window.
    lines: Vec<(&'static str, u64)>,
    queries: Arc<Mutex<Vec<String>>>,
}

impl FakeLoki {
    fn new(ready: bool, lines: &[(&'static str, u64)]) -> Self {
        FakeLoki {
            ready: Arc::new(AtomicBool::new(ready)),
            lines: lines.to_vec(),
            queries: Arc::default(),
        }
    }

    async fn serve(&self) -> String {
        let app = Router::new()
            .route("/ready", get(loki_ready))
            .route("/loki/api/v1/query", get(loki_query))
            .with_state(self.clone());
        serve(app).await
    }

    fn queries(&self) -> Vec<String> {
        self.queries.lock().expect("queries lock").clone()
    }
}

/// `GET /ready` as Loki and Tempo answer it.
fn ready_answer(ready: bool) -> Response {
    if ready {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Ingester not ready: waiting for 15s after being ready\n",
        )
            .into_response()
    }
}

async fn loki_ready(State(loki): State<FakeLoki>) -> Response {
    ready_answer(loki.ready.load(Ordering::SeqCst))
}

async fn loki_query(State(loki): State<FakeLoki>, Query(params): Query<HashMap<String, String>>) -> Response {
    loki.queries
        .lock()
        .expect("queries lock")
        .push(params.get("query").cloned().unwrap_or_default());
    if !loki.ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "Ingester not ready\n").into_response();
    }
    let now = 1_588_889_221;
    let result: Vec<Value> = loki
        .lines
        .iter()
        .map(|(color, n)| json!({ "metric": { "color": color }, "value": [now, n.to_string()] }))
        .collect();
    Json(json!({ "status": "success", "data": { "resultType": "vector", "result": result, "stats": {} } }))
        .into_response()
}

// ---- Tempo, as documented -------------------------------------------------
// Tempo HTTP API, https://grafana.com/docs/tempo/latest/api_docs/
// `GET /ready`: 200 when ready to serve traffic.
// `GET /api/echo`: 200 and body `echo` (Grafana's test of the data source).
// `GET /api/search?q=<TraceQL>&start=<unix s>&end=<unix s>&limit=<n>` →
// {"traces":[{"traceID","rootServiceName","rootTraceName","startTimeUnixNano":"<string>","durationMs"}],"metrics":{…}}.

#[derive(Clone)]
struct FakeTempo {
    ready: bool,
    /// Traces of the backend per color over the searched window.
    traces: Vec<(&'static str, usize)>,
    /// The query parameters of each search.
    searches: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

impl FakeTempo {
    fn new(ready: bool, traces: &[(&'static str, usize)]) -> Self {
        FakeTempo {
            ready,
            traces: traces.to_vec(),
            searches: Arc::default(),
        }
    }

    async fn serve(&self) -> String {
        let app = Router::new()
            .route("/ready", get(tempo_ready))
            .route("/api/echo", get(|| async { "echo" }))
            .route("/api/search", get(tempo_search))
            .with_state(self.clone());
        serve(app).await
    }

    fn searches(&self) -> Vec<HashMap<String, String>> {
        self.searches.lock().expect("searches lock").clone()
    }
}

async fn tempo_ready(State(tempo): State<FakeTempo>) -> Response {
    ready_answer(tempo.ready)
}

async fn tempo_search(State(tempo): State<FakeTempo>, Query(params): Query<HashMap<String, String>>) -> Response {
    tempo.searches.lock().expect("searches lock").push(params.clone());
    if !tempo.ready {
        return (StatusCode::SERVICE_UNAVAILABLE, "Ingester not ready\n").into_response();
    }
    let q = params.get("q").cloned().unwrap_or_default();
    let limit: usize = params.get("limit").and_then(|l| l.parse().ok()).unwrap_or(20);
    let backend = q.contains(r#"resource.service.name = "vigie-backend""#);
    let matching = tempo
        .traces
        .iter()
        .find(|(color, _)| backend && q.contains(&format!("resource.vigie.color = \"{color}\"")))
        .map_or(0, |(_, n)| *n);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos();
    let traces: Vec<Value> = (0..matching.min(limit))
        .map(|i| {
            json!({ "traceID": format!("{:032x}", i + 1), "rootServiceName": "vigie-router",
                    "rootTraceName": "GET /api/tasks", "startTimeUnixNano": (now - i as u128 * 1_000_000_000).to_string(),
                    "durationMs": 3 })
        })
        .collect();
    let metrics = json!({ "inspectedTraces": matching, "inspectedBytes": "4096", "totalBlocks": 0 });
    if traces.is_empty() {
        // An empty list may be left out of protobuf JSON: the doctor reads both.
        Json(json!({ "metrics": metrics })).into_response()
    } else {
        Json(json!({ "traces": traces, "metrics": metrics })).into_response()
    }
}

// ---- Grafana, as documented -----------------------------------------------
// Grafana HTTP API: `GET /api/health` → {"commit","database":"ok","version"};
// `GET /api/datasources` (permission datasources:read) → [{"id","uid","name","type",…}];
// `GET /api/datasources/uid/{uid}/health` → 200 {"status":"OK","message"} or
// 400 {"status":"ERROR","message"}; 404 for a plugin without a backend
// health check (Alertmanager), whose "Test" Grafana's UI does through the
// data source proxy `GET /api/datasources/proxy/uid/{uid}/api/v2/status`;
// the data source proxy relays any path to the data source's URL (Tempo's
// API at /api/datasources/proxy/uid/tempo/…: /ready, /api/search,
// /api/echo), 502 when it cannot reach it. Whether Grafana's Tempo plugin
// has a backend health check is not assumed: the stand-in answers 404, so
// the doctor takes the longer road (Tempo's /api/echo through the proxy);
// `GET /api/search?type=dash-db&folderUIDs=…` → [{"id","uid","title","type":"dash-db","folderUid",…}].

/// `admin:secret`, base64.
const GRAFANA_LOGIN: &str = "Basic YWRtaW46c2VjcmV0";

#[derive(Clone)]
struct FakeGrafana {
    /// (uid, error message) of a data source whose health check fails.
    failing: Option<(&'static str, &'static str)>,
    dashboards: Vec<&'static str>,
    /// Where the data source proxy relays uid `tempo` (none: 502).
    tempo: Option<String>,
}

impl FakeGrafana {
    fn healthy(tempo: &str) -> Self {
        FakeGrafana {
            failing: None,
            dashboards: vec![
                "vigie-overview",
                "vigie-bluegreen",
                "vigie-logs",
                "vigie-stack",
                "vigie-traces",
                "vigie-slo",
            ],
            tempo: Some(tempo.to_owned()),
        }
    }

    async fn serve(&self) -> String {
        let app = Router::new()
            .route(
                "/api/health",
                get(|| async { Json(json!({ "commit": "087143285", "database": "ok", "version": "13.2.0" })) }),
            )
            .route("/api/datasources", get(grafana_datasources))
            .route("/api/datasources/uid/{uid}/health", get(grafana_datasource_health))
            .route("/api/datasources/proxy/uid/{uid}/{*rest}", get(grafana_proxy))
            .route("/api/search", get(grafana_search))
            .with_state(self.clone());
        serve(app).await
    }
}

const DATASOURCES: [(&str, &str, &str); 4] = [
    ("prometheus", "Prometheus", "prometheus"),
    ("loki", "Loki", "loki"),
    ("tempo", "Tempo", "tempo"),
    ("alertmanager", "Alertmanager", "alertmanager"),
];

async fn grafana_datasources(headers: HeaderMap) -> Response {
    let logged_in = headers.get("authorization").is_some_and(|v| v == GRAFANA_LOGIN);
    if !logged_in {
        let message = "You'll need additional permissions to perform this action. Permissions needed: datasources:read";
        return (StatusCode::FORBIDDEN, Json(json!({ "message": message }))).into_response();
    }
    let list: Vec<Value> = DATASOURCES
        .iter()
        .enumerate()
        .map(|(i, (uid, name, kind))| {
            json!({ "id": i + 1, "orgId": 1, "uid": uid, "name": name, "type": kind, "access": "proxy",
                    "url": format!("http://{uid}:1234"), "isDefault": i == 0, "readOnly": true })
        })
        .collect();
    Json(list).into_response()
}

async fn grafana_datasource_health(State(grafana): State<FakeGrafana>, UrlPath(uid): UrlPath<String>) -> Response {
    match DATASOURCES.iter().find(|(u, _, _)| *u == uid) {
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "message": "Data source not found" })),
        )
            .into_response(),
        Some((_, _, "alertmanager" | "tempo")) => {
            (StatusCode::NOT_FOUND, Json(json!({ "message": "Plugin not found" }))).into_response()
        }
        Some(_) => match grafana.failing {
            Some((failing, message)) if failing == uid => (
                StatusCode::BAD_REQUEST,
                Json(json!({ "status": "ERROR", "message": message })),
            )
                .into_response(),
            _ => Json(json!({ "status": "OK", "message": "Successfully queried the data source." })).into_response(),
        },
    }
}

async fn grafana_proxy(
    State(grafana): State<FakeGrafana>,
    UrlPath((uid, rest)): UrlPath<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    match (uid.as_str(), rest.as_str()) {
        ("alertmanager", "api/v2/status") => {
            Json(json!({ "cluster": { "status": "disabled" }, "versionInfo": { "version": "0.34.0" } })).into_response()
        }
        ("tempo", _) => {
            let Some(tempo) = &grafana.tempo else {
                return StatusCode::BAD_GATEWAY.into_response();
            };
            let query = query.map(|q| format!("?{q}")).unwrap_or_default();
            match client().get(format!("{tempo}/{rest}{query}")).send().await {
                Ok(answer) => {
                    let status = StatusCode::from_u16(answer.status().as_u16()).expect("status");
                    (status, answer.bytes().await.unwrap_or_default()).into_response()
                }
                Err(_) => StatusCode::BAD_GATEWAY.into_response(),
            }
        }
        _ => (StatusCode::NOT_FOUND, "404 page not found").into_response(),
    }
}

async fn grafana_search(
    State(grafana): State<FakeGrafana>,
    Query(params): Query<HashMap<String, String>>,
) -> Json<Value> {
    let in_vigie =
        params.get("type").is_some_and(|t| t == "dash-db") && params.get("folderUIDs").is_some_and(|f| f == "vigie");
    let hits: Vec<Value> = if in_vigie {
        grafana
            .dashboards
            .iter()
            .enumerate()
            .map(|(i, uid)| {
                json!({ "id": i + 10, "uid": uid, "title": format!("vigie / {uid}"), "url": format!("/d/{uid}/x"),
                        "type": "dash-db", "tags": [], "isStarred": false, "folderId": 2, "folderUid": "vigie",
                        "folderTitle": "vigie", "folderUrl": "/dashboards/f/vigie/vigie" })
            })
            .collect()
    } else {
        Vec::new()
    };
    Json(Value::Array(hits))
}

// ---- Alertmanager (the real one) ------------------------------------------

struct Alertmanager {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Alertmanager {
    /// Starts Debian's Alertmanager on the stack's configuration, a free
    /// port, clustering off, and waits for `/-/ready`.
    async fn start(dir: &Path) -> Alertmanager {
        let binary = require_program("prometheus-alertmanager", "prometheus-alertmanager");
        std::fs::create_dir_all(dir).expect("create alertmanager dir");
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../stack/alertmanager/alertmanager.yml");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("alertmanager.log")).expect("create alertmanager.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn alertmanager");
        let mut alertmanager = Alertmanager {
            child,
            addr,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + ALERTMANAGER_READY;
        loop {
            if let Ok(Some(status)) = alertmanager.child.try_wait() {
                panic!(
                    "alertmanager exited with {status} before it was ready:\n{}",
                    alertmanager.log()
                );
            }
            let ready = client()
                .get(format!("http://{}/-/ready", alertmanager.addr))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return alertmanager;
            }
            assert!(
                Instant::now() < deadline,
                "alertmanager not ready within {ALERTMANAGER_READY:?}:\n{}",
                alertmanager.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("alertmanager.log")).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- the real part of the stack -------------------------------------------

/// The fixture's stack with Prometheus (blue active), and optionally the
/// real Alertmanager as Prometheus' `alertmanager` target.
struct RealStack {
    stack: Stack,
    alertmanager: Option<Alertmanager>,
}

impl std::ops::Deref for RealStack {
    type Target = Stack;

    fn deref(&self) -> &Stack {
        &self.stack
    }
}

impl std::ops::DerefMut for RealStack {
    fn deref_mut(&mut self) -> &mut Stack {
        &mut self.stack
    }
}

impl RealStack {
    async fn start(tag: &str, with_alertmanager: bool) -> RealStack {
        let stack = Stack::builder(tag).prometheus().start().await;
        let alertmanager = if with_alertmanager {
            let alertmanager = Alertmanager::start(&stack.dir.join("alertmanager")).await;
            set_static_target(&stack.prometheus().config_dir, "alertmanager", &alertmanager.addr);
            Some(alertmanager)
        } else {
            None
        };
        let stack = RealStack { stack, alertmanager };
        let expected = if with_alertmanager { 4 } else { 3 };
        stack
            .wait_for_targets(&format!("{expected} targets up"), |targets| {
                targets.len() == expected && targets.iter().all(|t| t["health"] == "up")
            })
            .await;
        stack
    }

    async fn wait_for_targets(&self, what: &str, done: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + SEEN_WITHIN;
        loop {
            let targets = self.prometheus().targets().await;
            if done(&targets) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus: timed out after {SEEN_WITHIN:?} waiting for {what}; targets: {targets:#?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `--admin`, `--prometheus` and (when running) `--alertmanager`.
    fn urls(&self) -> Vec<String> {
        let mut args = strings(&[
            "--admin",
            &self.router.admin_url(""),
            "--prometheus",
            &self.prometheus().url(""),
        ]);
        if let Some(alertmanager) = &self.alertmanager {
            args.extend(strings(&["--alertmanager", &format!("http://{}", alertmanager.addr)]));
        }
        args
    }
}

const TOKEN_ENV: (&str, &str) = ("VIGIE_ADMIN_TOKEN", ADMIN_TOKEN);

fn role_of(target: &Value, color: &str) -> Option<String> {
    (target["labels"]["job"] == "backend" && target["labels"]["color"] == color)
        .then(|| target["labels"]["role"].as_str().unwrap_or("").to_owned())
}

// ---- tests ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_every_check_on_a_healthy_stack_and_json_parses() {
    let stack = RealStack::start("doctor-healthy", true).await;
    let loki = FakeLoki::new(true, &[("blue", 42), ("green", 3)]);
    let loki_url = loki.serve().await;
    let tempo = FakeTempo::new(true, &[("blue", 25), ("green", 2)]);
    let tempo_url = tempo.serve().await;
    let grafana_url = FakeGrafana::healthy(&tempo_url).serve().await;
    let mut args = stack.urls();
    args.extend(strings(&["--loki", &loki_url, "--grafana", &grafana_url]));
    let host_defaults = args.clone();
    args.extend(strings(&["--tempo", &tempo_url]));
    let envs = [
        TOKEN_ENV,
        ("VIGIE_GRAFANA_USER", "admin"),
        ("VIGIE_GRAFANA_PASSWORD", "secret"),
    ];

    let run = doctor(&args, &envs).await;
    assert_eq!(run.code, 0, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let lines = run.report_lines();
    assert_eq!(lines.len(), 12, "{}", run.stdout);
    assert!(
        lines.iter().all(|l| l.starts_with("ok ")),
        "every line ok:\n{}",
        run.stdout
    );
    assert!(run
        .line("router active color")
        .ends_with("blue (router) = blue (Prometheus role=\"active\")"));
    assert!(run.line("prometheus targets").ends_with("4/4 up"), "{}", run.stdout);
    assert!(run.line("prometheus rules").contains("alerting"), "{}", run.stdout);
    assert!(
        run.line("loki logs")
            .ends_with("blue: 42 lines in the last 5m (green: 3)"),
        "{}",
        run.stdout
    );
    assert!(run.line("tempo ready").ends_with("  ready"), "{}", run.stdout);
    assert!(
        run.line("tempo traces").ends_with(&format!(
            "blue: 20+ traces of vigie-backend in the last 5m, latest vigie-router GET /api/tasks (trace {:032x})",
            1
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.line("grafana datasources")
            .ends_with("4/4 answer: prometheus, loki, tempo, alertmanager"),
        "{}",
        run.stdout
    );
    assert!(
        run.line("grafana dashboards")
            .ends_with("6/6 provisioned in folder vigie"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("stack ok: 12 ok, 0 warnings, 0 failed, 0 skipped"),
        "{}",
        run.stdout
    );
    assert!(
        loki.queries()
            .iter()
            .any(|q| q == r#"sum by (color) (count_over_time({color=~"blue|green"}[5m]))"#),
        "LogQL sent: {:?}",
        loki.queries()
    );

    args.push("--json".to_owned());
    let run = doctor(&args, &envs).await;
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let report = run.json();
    assert_eq!(report["ok"], true);
    assert_eq!(report["counts"], json!({ "ok": 12, "warn": 0, "fail": 0, "skip": 0 }));
    let checks = report["checks"].as_array().expect("checks array");
    let ids: Vec<&str> = checks.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(
        ids,
        [
            "router-active",
            "prometheus-targets",
            "prometheus-rules",
            "prometheus-alerts",
            "loki-ready",
            "loki-logs",
            "tempo-ready",
            "tempo-traces",
            "grafana-health",
            "grafana-datasources",
            "grafana-dashboards",
            "alertmanager-ready"
        ]
    );
    assert!(
        checks.iter().all(|c| c["status"] == "ok" && c["elapsed_ms"].is_u64()),
        "{report:#}"
    );
    assert_eq!(
        checks[0]["data"],
        json!({ "router": "blue", "prometheus": ["blue"], "router_seen_through": "admin-api" })
    );
    assert_eq!(checks[1]["data"]["up"], 4);
    assert_eq!(checks[7]["data"]["traces"], 20);
    assert_eq!(checks[7]["data"]["through"], "direct");

    // On the host, compose publishes neither the admin port nor Tempo's:
    // with the default admin URL unreachable, the router is checked through
    // Prometheus; without --tempo, Tempo is asked through Grafana.
    assert!(
        std::net::TcpStream::connect_timeout(&"127.0.0.1:8081".parse().expect("addr"), Duration::from_secs(1)).is_err(),
        "this test needs nothing listening on 127.0.0.1:8081 (the doctor's default admin URL)"
    );
    let host_defaults: Vec<String> = host_defaults.into_iter().skip(2).collect();
    assert!(!host_defaults.contains(&"--admin".to_owned()) && !host_defaults.contains(&"--tempo".to_owned()));
    let searches_before = tempo.searches().len();
    let run = doctor(&host_defaults, &envs).await;
    assert_eq!(run.code, 0, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let line = run.line("router active color");
    assert!(line.starts_with("ok "), "{line}");
    assert!(
        line.contains("blue (router's gauge in Prometheus) = blue (Prometheus role=\"active\")"),
        "{line}"
    );
    let relayed = " (through Grafana's data source proxy: Tempo is not published on the host)";
    for name in ["tempo ready", "tempo traces"] {
        let line = run.line(name);
        assert!(line.starts_with("ok ") && line.ends_with(relayed), "{line}");
    }
    assert_eq!(
        tempo.searches().len(),
        searches_before + 1,
        "one search, relayed by Grafana"
    );
}

/// Both backends and the router (blue active), without Prometheus.
struct App {
    stack: Stack,
}

impl App {
    async fn start(tag: &str) -> App {
        App {
            stack: Stack::start(tag).await,
        }
    }

    /// The doctor's arguments to check only Tempo (and ask the router its color).
    fn tempo_only(&self, tempo: &str) -> Vec<String> {
        strings(&[
            "--admin",
            &self.stack.router.admin_url(""),
            "--tempo",
            tempo,
            "--skip",
            "prometheus,loki,grafana,alertmanager",
        ])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempo_checks_pass_when_tempo_is_ready_and_has_traces_of_the_active_color() {
    let app = App::start("doctor-tempo-ok").await;
    let tempo = FakeTempo::new(true, &[("blue", 3), ("green", 1)]);
    let url = tempo.serve().await;
    let mut args = app.tempo_only(&url);
    args.extend(strings(&["--logs-window", "2m"]));

    let run = doctor(&args, &[TOKEN_ENV]).await;
    assert_eq!(run.code, 0, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let line = run.line("tempo ready");
    assert!(line.starts_with("ok ") && line.ends_with("  ready"), "{line}");
    assert!(
        run.line("tempo traces").ends_with(&format!(
            "blue: 3 traces of vigie-backend in the last 2m, latest vigie-router GET /api/tasks (trace {:032x})",
            1
        )),
        "{}",
        run.stdout
    );

    // One search: the backend's spans of the active color over the window.
    let searches = tempo.searches();
    assert_eq!(searches.len(), 1, "{searches:?}");
    let search = &searches[0];
    assert_eq!(
        search["q"],
        r#"{ resource.service.name = "vigie-backend" && resource.vigie.color = "blue" }"#
    );
    assert_eq!(search["limit"], "20");
    let (start, end): (u64, u64) = (
        search["start"].parse().expect("start in unix seconds"),
        search["end"].parse().expect("end in unix seconds"),
    );
    assert_eq!(end - start, 120, "{search:?}");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    assert!(now.abs_diff(end) < 60, "end {end}, now {now}");

    args.push("--json".to_owned());
    let report = doctor(&args, &[TOKEN_ENV]).await.json();
    let traces = report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["id"] == "tempo-traces"))
        .expect("tempo-traces in the report");
    assert_eq!(traces["component"], "tempo");
    assert_eq!(traces["status"], "ok");
    assert_eq!(traces["data"]["active"], "blue");
    assert_eq!(traces["data"]["traces"], 3);
    assert_eq!(traces["data"]["window"], "2m");
    assert_eq!(traces["data"]["latest"]["trace_id"], format!("{:032x}", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempo_checks_fail_when_tempo_is_not_ready_or_has_no_trace_of_the_active_color() {
    let app = App::start("doctor-tempo-fail").await;

    let starting = FakeTempo::new(false, &[]).serve().await;
    let run = doctor(&app.tempo_only(&starting), &[TOKEN_ENV]).await;
    assert_eq!(run.code, 1, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let line = run.line("tempo ready");
    assert!(line.starts_with("FAIL "), "{line}");
    assert!(
        line.contains(&format!(
            "not ready: answered 503 at {starting}/ready: Ingester not ready"
        )),
        "{line}"
    );
    assert!(
        line.contains(" — Tempo says ready about 15 s after it starts"),
        "{line}"
    );
    assert!(line.contains("docker compose logs tempo --tail 50"), "{line}");
    assert_eq!(run.status("tempo traces"), "FAIL", "{}", run.stdout);

    // Blue is active; only green's spans reach Tempo.
    let silent_blue = FakeTempo::new(true, &[("green", 5)]);
    let url = silent_blue.serve().await;
    let run = doctor(&app.tempo_only(&url), &[TOKEN_ENV]).await;
    assert_eq!(run.code, 1, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert_eq!(run.status("tempo ready"), "ok", "{}", run.stdout);
    let line = run.line("tempo traces");
    assert!(line.starts_with("FAIL "), "{line}");
    assert!(
        line.contains("no trace of vigie-backend with the active color blue in the last 5m — "),
        "{line}"
    );
    assert!(line.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{line}");
    assert!(line.contains("vigie_trace_spans_dropped_total"), "{line}");
    assert!(line.contains("docker compose ps loadgen"), "{line}");
    assert_eq!(silent_blue.searches().len(), 1);

    // From the host with Grafana skipped, nothing can reach Tempo: said, not failed.
    let args = strings(&[
        "--admin",
        &app.stack.router.admin_url(""),
        "--skip",
        "prometheus,loki,grafana,alertmanager",
    ]);
    let run = doctor(&args, &[TOKEN_ENV]).await;
    assert_eq!(run.code, 0, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let line = run.line("tempo traces");
    assert!(line.starts_with("skip "), "{line}");
    assert!(
        line.contains("not checked: Tempo is not published on the host and Grafana, its relay, is skipped"),
        "{line}"
    );
    assert!(line.contains("--tempo URL") && line.contains("--compose"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_when_prometheus_sees_another_active_color_than_the_router() {
    let stack = RealStack::start("doctor-disagree", false).await;
    // The router (blue active) rewrites this file only on a switch: swap the
    // roles behind its back, as a stale or foreign file would.
    let swapped = json!([
        { "targets": [stack.green.addr.to_string()], "labels": { "color": "green", "role": "active" } },
        { "targets": [stack.blue.addr.to_string()], "labels": { "color": "blue", "role": "standby" } },
    ]);
    let targets_file = stack.targets_file();
    let temp = targets_file.with_extension("json.tmp");
    std::fs::write(&temp, format!("{swapped}\n")).expect("write targets");
    std::fs::rename(&temp, &targets_file).expect("replace targets file");
    stack
        .wait_for_targets("green labelled active, every target scraped", |targets| {
            targets.iter().any(|t| role_of(t, "green").as_deref() == Some("active"))
                && targets.iter().any(|t| role_of(t, "blue").as_deref() == Some("standby"))
                && targets.len() == 3
                && targets.iter().all(|t| t["health"] == "up")
        })
        .await;

    let mut args = stack.urls();
    args.extend(strings(&["--skip", "loki,tempo,grafana,alertmanager"]));
    let run = doctor(&args, &[TOKEN_ENV]).await;
    assert_eq!(run.code, 1, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let line = run.line("router active color");
    assert!(line.starts_with("FAIL "), "{line}");
    assert!(
        line.contains("router: blue active, but Prometheus labels green role=\"active\""),
        "{line}"
    );
    assert!(
        line.contains(" — Prometheus takes the role labels from the targets file the router writes"),
        "{line}"
    );
    assert_eq!(run.status("prometheus targets"), "ok", "{}", run.stdout);
    for skipped in [
        "loki ready",
        "loki logs",
        "tempo ready",
        "tempo traces",
        "grafana health",
        "grafana datasources",
        "grafana dashboards",
        "alertmanager ready",
    ] {
        assert_eq!(run.status(skipped), "skip", "{}", run.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_down_target_and_its_scrape_error() {
    let mut stack = RealStack::start("doctor-down", false).await;
    let green_instance = stack.green.addr.to_string();
    stack.green.kill();
    stack
        .wait_for_targets("green down", |targets| {
            targets
                .iter()
                .any(|t| role_of(t, "green").is_some() && t["health"] == "down")
        })
        .await;

    let mut args = stack.urls();
    args.extend(strings(&["--skip", "loki,tempo,grafana,alertmanager", "--json"]));
    let run = doctor(&args, &[TOKEN_ENV]).await;
    assert_eq!(run.code, 1, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let report = run.json();
    let targets = &report["checks"][1];
    assert_eq!(targets["id"], "prometheus-targets");
    assert_eq!(targets["status"], "fail", "{report:#}");
    let detail = targets["detail"].as_str().expect("detail");
    assert!(detail.starts_with("2/3 up; down: "), "{detail}");
    assert!(
        detail.contains(&format!("backend/{green_instance} (green, standby): ")),
        "{detail}"
    );
    assert!(
        targets["hint"]
            .as_str()
            .is_some_and(|h| h.contains("docker compose ps backend-green")),
        "{targets:#}"
    );
    assert_eq!(targets["data"]["down"][0]["instance"], green_instance.as_str());
    assert!(
        targets["data"]["down"][0]["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{targets:#}"
    );
    // The active color is still the one Prometheus labels active.
    assert_eq!(report["checks"][0]["status"], "ok", "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_the_metric_families_a_backend_lacks() {
    let dir = TempDir::new("doctor-families");
    // A service with prom-client's request counter and nothing else.
    let backend = serve(Router::new().route(
        "/metrics",
        get(|| async {
            "# TYPE http_requests_total counter\nhttp_requests_total{method=\"GET\",route=\"/api/x\",status_code=\"200\"} 5\n"
        }),
    ))
    .await;
    let config = copy_stack_config(&dir.join("prometheus"));
    let instance = backend.trim_start_matches("http://");
    let targets = json!([{"targets": [instance], "labels": {"color": "blue", "role": "active"}}]);
    std::fs::write(config.join("targets/backend.json"), targets.to_string()).expect("targets");
    let prometheus = Prometheus::start(&config).await;
    crate::helpers::eventually(SEEN_WITHIN, "the backend scraped", || async {
        let up = prometheus.query(r#"up{job="backend"} == 1"#).await;
        let stored = prometheus
            .query(r#"http_requests_total{job="backend",status="200"}"#)
            .await;
        (!up.is_empty() && !stored.is_empty()).then_some(())
    })
    .await;
    let args = strings(&[
        "--prometheus",
        &prometheus.url(""),
        "--skip",
        "router,loki,tempo,grafana,alertmanager",
        "--json",
    ]);
    let run = doctor(&args, &[]).await;
    assert_eq!(run.code, 1, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let report = run.json();
    let targets = report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["id"] == "prometheus-targets")
        .expect("the targets check")
        .clone();
    assert_eq!(targets["status"], "fail", "{targets:#}");
    let detail = targets["detail"].as_str().expect("detail");
    assert!(
        detail.contains("the backend's metrics lack http_request_duration_seconds_bucket (a latency histogram")
            && detail.contains("OpenTelemetry's http_server_request_duration_seconds")
            && detail.contains("process_start_time_seconds (the standard process metric"),
        "{detail}"
    );
    assert!(
        !detail.contains("http_requests_total ("),
        "the counter is there (status_code renamed): {detail}"
    );
    assert!(
        targets["hint"]
            .as_str()
            .is_some_and(|h| h.contains("Watch your own service")),
        "{targets:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_fast_with_the_url_when_nothing_answers() {
    let refused = [dead_url(), dead_url(), dead_url(), dead_url(), dead_url()];
    let silent = silent_server().await;
    let args = strings(&[
        "--admin",
        &refused[0],
        "--prometheus",
        &refused[1],
        "--loki",
        &refused[2],
        "--alertmanager",
        &refused[3],
        "--tempo",
        &refused[4],
        "--grafana",
        &silent,
        "--timeout",
        "1s",
    ]);
    let run = doctor(&args, &[]).await;
    assert_eq!(run.code, 1, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    // Concurrent checks, each at most two requests of 1 s.
    assert!(run.elapsed < Duration::from_secs(8), "took {:?}", run.elapsed);
    let lines = run.report_lines();
    assert_eq!(lines.len(), 12, "{}", run.stdout);
    assert!(lines.iter().all(|l| l.starts_with("FAIL ")), "{}", run.stdout);
    let line = run.line("tempo ready");
    assert!(
        line.contains(&format!("connection refused at {}/ready", refused[4])),
        "{line}"
    );
    assert!(line.contains("docker compose ps tempo"), "{line}");
    assert!(
        run.line("loki ready")
            .contains(&format!("connection refused at {}/ready", refused[2])),
        "{}",
        run.stdout
    );
    assert!(
        run.line("loki ready").contains("docker compose ps loki"),
        "{}",
        run.stdout
    );
    assert!(run
        .line("alertmanager ready")
        .contains(&format!("connection refused at {}/-/ready", refused[3])));
    assert!(run
        .line("prometheus rules")
        .contains(&format!("connection refused at {}/api/v1/rules", refused[1])));
    assert!(run
        .line("router active color")
        .contains(&format!("connection refused at {}/status", refused[0])));
    assert!(
        run.line("grafana health")
            .contains(&format!("no answer within 1s at {silent}/api/health")),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_service_that_is_not_running_is_named_and_skipped_but_a_faulty_one_fails() {
    let colors = App::start("doctor-optional").await;
    let router = &colors.stack.router;
    let with_loki = |loki: &str, optional: bool| {
        let mut args = strings(&[
            "--admin",
            &router.admin_url(""),
            "--loki",
            loki,
            "--skip",
            "prometheus,tempo,grafana,alertmanager",
            "--timeout",
            "1s",
        ]);
        if optional {
            args.extend(strings(&["--optional", "loki,tempo"]));
        }
        args
    };

    // Nothing listens: absent, so skipped and named, and the run passes.
    let absent = dead_url();
    let run = doctor(&with_loki(&absent, true), &[TOKEN_ENV]).await;
    assert_eq!(run.code, 0, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    for name in ["loki ready", "loki logs"] {
        let line = run.line(name);
        assert!(line.starts_with("skip "), "{line}");
        assert!(
            line.contains(&format!("not running (optional): connection refused at {absent}")),
            "{line}"
        );
    }
    // The same without --optional: a failure.
    let run = doctor(&with_loki(&absent, false), &[TOKEN_ENV]).await;
    assert_eq!(run.code, 1, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert_eq!(run.status("loki ready"), "FAIL", "{}", run.stdout);

    // Running but hung: optional forgives absence, not a fault.
    let hung = silent_server().await;
    let run = doctor(&with_loki(&hung, true), &[TOKEN_ENV]).await;
    assert_eq!(run.code, 1, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(run.line("loki ready").contains("no answer within 1s"), "{}", run.stdout);

    // Running and well: checked as usual.
    let loki = FakeLoki::new(true, &[("blue", 3)]).serve().await;
    let run = doctor(&with_loki(&loki, true), &[TOKEN_ENV]).await;
    assert_eq!(run.code, 0, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert_eq!(run.status("loki ready"), "ok", "{}", run.stdout);
    assert_eq!(run.status("loki logs"), "ok", "{}", run.stdout);

    // Inside the compose network (--compose) only a name that does not
    // resolve is absent; a refused port there is a container still
    // starting, which fails.
    let in_compose = |loki: &str| {
        let mut args = with_loki(loki, true);
        args.push("--compose".to_owned());
        args
    };
    let unresolved = "http://loki.invalid:3100";
    let run = doctor(&in_compose(unresolved), &[TOKEN_ENV]).await;
    assert_eq!(run.code, 0, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(run.line("loki ready").starts_with("skip "), "{}", run.stdout);
    assert!(
        run.line("loki ready").contains("not running (optional)"),
        "{}",
        run.stdout
    );
    let run = doctor(&in_compose(&absent), &[TOKEN_ENV]).await;
    assert_eq!(run.code, 1, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(
        run.line("loki ready")
            .contains(&format!("connection refused at {absent}/ready")),
        "{}",
        run.stdout
    );

    let refused = doctor(&strings(&["--optional", "prometheus"]), &[]).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("cannot be optional"), "{}", refused.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_checks_again_until_a_starting_service_is_ready_and_gives_up_at_its_deadline() {
    let colors = App::start("doctor-wait").await;
    let router = &colors.stack.router;
    let loki = FakeLoki::new(false, &[("blue", 3)]);
    let url = loki.serve().await;
    let args = |wait: &str| {
        strings(&[
            "--admin",
            &router.admin_url(""),
            "--loki",
            &url,
            "--skip",
            "prometheus,tempo,grafana,alertmanager",
            "--wait",
            wait,
        ])
    };

    // Never ready: the last round's failure, once the wait is over.
    let run = doctor(&args("3s"), &[TOKEN_ENV]).await;
    assert_eq!(run.code, 1, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(run.elapsed >= Duration::from_secs(2), "gave up after {:?}", run.elapsed);
    assert!(run.elapsed < Duration::from_secs(10), "took {:?}", run.elapsed);
    assert!(run.stderr.contains("doctor: waiting for loki ready"), "{}", run.stderr);
    assert_eq!(run.status("loki ready"), "FAIL", "{}", run.stdout);

    // Ready after 3 s: the run passes then, well before its deadline.
    let ready = Arc::clone(&loki.ready);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        ready.store(true, Ordering::SeqCst);
    });
    let run = doctor(&args("25s"), &[TOKEN_ENV]).await;
    assert_eq!(run.code, 0, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(run.elapsed >= Duration::from_secs(3), "passed after {:?}", run.elapsed);
    assert!(run.elapsed < Duration::from_secs(15), "took {:?}", run.elapsed);
    assert!(run.stderr.contains("doctor: waiting for loki ready"), "{}", run.stderr);
    assert_eq!(run.status("loki ready"), "ok", "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_checks_fail_when_loki_is_not_ready_or_has_no_line_of_the_active_color() {
    let colors = App::start("doctor-loki").await;
    let router = &colors.stack.router;
    let only = |loki: &str| {
        strings(&[
            "--admin",
            &router.admin_url(""),
            "--loki",
            loki,
            "--skip",
            "prometheus,tempo,grafana,alertmanager",
        ])
    };

    let starting = FakeLoki::new(false, &[]).serve().await;
    let run = doctor(&only(&starting), &[TOKEN_ENV]).await;
    assert_eq!(run.code, 1, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let line = run.line("loki ready");
    assert!(line.starts_with("FAIL "), "{line}");
    assert!(
        line.contains(&format!(
            "not ready: answered 503 at {starting}/ready: Ingester not ready"
        )),
        "{line}"
    );
    assert_eq!(run.status("loki logs"), "FAIL", "{}", run.stdout);

    // Blue is active; only green's lines reach Loki.
    let silent_blue = FakeLoki::new(true, &[("green", 7)]);
    let url = silent_blue.serve().await;
    let mut args = only(&url);
    args.extend(strings(&["--logs-window", "2m"]));
    let run = doctor(&args, &[TOKEN_ENV]).await;
    assert_eq!(run.code, 1, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert_eq!(run.status("loki ready"), "ok", "{}", run.stdout);
    let line = run.line("loki logs");
    assert!(line.contains("FAIL  loki logs"), "{line}");
    assert!(
        line.contains("no line from the active color blue in the last 2m (green: 7)"),
        "{line}"
    );
    assert!(line.contains("docker compose ps promtail"), "{line}");
    assert!(
        silent_blue.queries().iter().all(|q| q.ends_with("[2m]))")),
        "{:?}",
        silent_blue.queries()
    );
    // Prometheus is skipped: the router's color is not compared, not failed.
    assert!(run
        .line("router active color")
        .contains("router: blue active (Prometheus skipped: not compared)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_checks_name_a_failing_data_source_and_missing_dashboards() {
    let grafana = FakeGrafana {
        failing: Some((
            "loki",
            "Unable to connect with Loki. Please check the server logs for more details.",
        )),
        dashboards: vec!["vigie-overview", "vigie-bluegreen", "vigie-stack"],
        tempo: Some(FakeTempo::new(true, &[]).serve().await),
    };
    let url = grafana.serve().await;
    // Anonymous: the data source list is forbidden, the expected uids are
    // checked one by one (Alertmanager and Tempo through the data source proxy).
    let args = strings(&["--grafana", &url, "--skip", "router,prometheus,loki,tempo,alertmanager"]);
    let run = doctor(&args, &[]).await;
    assert_eq!(run.code, 1, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert_eq!(run.status("grafana health"), "ok", "{}", run.stdout);
    assert!(run.line("grafana health").ends_with("database ok, version 13.2.0"));
    let line = run.line("grafana datasources");
    assert!(
        line.contains(
            "FAIL  grafana datasources  3/4 answer; loki: ERROR: Unable to connect with Loki. Please check the server \
             logs for more details. (list not readable without a login: checked the expected uids)"
        ),
        "{line}"
    );
    let line = run.line("grafana dashboards");
    assert!(
        line.contains("3/6 in folder vigie; missing: vigie-logs, vigie-traces, vigie-slo"),
        "{line}"
    );
    assert!(line.contains("provisioning"), "{line}");

    // With a login the list is read, and a data source nobody expected is checked too.
    let run = doctor(
        &args,
        &[("VIGIE_GRAFANA_USER", "admin"), ("VIGIE_GRAFANA_PASSWORD", "secret")],
    )
    .await;
    assert!(
        run.line("grafana datasources").contains("3/4 answer; loki: ERROR"),
        "{}",
        run.stdout
    );
    assert!(
        !run.line("grafana datasources").contains("without a login"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn router_check_asks_for_the_admin_token_when_refused() {
    let colors = App::start("doctor-token").await;
    let router = &colors.stack.router;
    let args = strings(&[
        "--admin",
        &router.admin_url(""),
        "--skip",
        "prometheus,loki,tempo,grafana,alertmanager",
    ]);
    let run = doctor(&args, &[]).await;
    assert_eq!(run.code, 1, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let line = run.line("router active color");
    assert!(
        line.contains("the admin API refused the request: answered 401"),
        "{line}"
    );
    assert!(line.contains("set VIGIE_ADMIN_TOKEN"), "{line}");

    let run = doctor(&args, &[TOKEN_ENV]).await;
    assert_eq!(run.code, 0, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
}

#[tokio::test]
async fn doctor_rejects_bad_flags_with_exit_status_2() {
    for (args, complaint) in [
        (vec!["--skip", "lokki"], "unknown check \"lokki\""),
        (vec!["--timeout", "0s"], "more than 0"),
        (vec!["--timeout", "soon"], "invalid duration"),
        (
            vec!["--prometheus", "https://prometheus:9090"],
            "must be an http:// URL",
        ),
    ] {
        let run = doctor(&strings(&args), &[]).await;
        assert_eq!(
            run.code, 2,
            "{args:?}: stdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        );
        assert!(run.stderr.contains(complaint), "{args:?}: {}", run.stderr);
    }
}
