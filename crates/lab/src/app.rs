//! The service: a small items API, health, `/metrics`, and the request
//! middleware that counts, times and logs every request.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

/// prom-client's default histogram buckets (seconds).
const PROM_CLIENT_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// pino's numeric levels.
const INFO: u8 = 30;
const WARN: u8 = 40;
const ERROR: u8 = 50;

pub struct Settings {
    pub port: u16,
    /// Share of `/api/*` requests answered 500 (a broken release, for demos and tests).
    pub fault_error_rate: f64,
}

impl Settings {
    pub fn from_env() -> Result<Settings, String> {
        let port = match std::env::var("PORT") {
            Ok(text) => text
                .parse()
                .map_err(|_| format!("PORT={text:?} is not a port number"))?,
            Err(_) => 3000,
        };
        let fault_error_rate = match std::env::var("VIGIE_FAULT_ERROR_RATE") {
            Ok(text) if !text.is_empty() => text
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| format!("VIGIE_FAULT_ERROR_RATE={text:?} is not a ratio in 0..1"))?,
            _ => 0.0,
        };
        Ok(Settings { port, fault_error_rate })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status_code: String,
}

#[derive(Clone)]
struct AppState {
    items: Arc<Mutex<Vec<Value>>>,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RequestLabels, Histogram>,
    registry: Arc<Registry>,
    fault_error_rate: f64,
    hostname: Arc<str>,
}

pub fn app(fault_error_rate: f64) -> Router {
    let mut registry = Registry::default();
    let requests = Family::<RequestLabels, Counter>::default();
    let durations = Family::<RequestLabels, Histogram>::new_with_constructor(|| Histogram::new(PROM_CLIENT_BUCKETS));
    registry.register("http_requests", "Total number of HTTP requests", requests.clone());
    registry.register(
        "http_request_duration_seconds",
        "Duration of HTTP requests in seconds",
        durations.clone(),
    );
    let state = AppState {
        items: Arc::new(Mutex::new(Vec::new())),
        requests,
        durations,
        registry: Arc::new(registry),
        fault_error_rate,
        hostname: std::env::var("HOSTNAME").unwrap_or_else(|_| "lab".into()).into(),
    };
    Router::new()
        .route("/api/items", get(list).post(create))
        .route("/api/items/{id}", get(one))
        .route("/health/live", get(health))
        .route("/health/ready", get(health))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

pub async fn serve(settings: Settings) -> ExitCode {
    crate::process::start_time_seconds();
    let address = std::net::SocketAddr::from(([0, 0, 0, 0], settings.port));
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {address}: {e}");
            return ExitCode::FAILURE;
        }
    };
    log_line(
        json!({ "level": INFO, "msg": format!("Nest application successfully started on port {}", settings.port) }),
    );
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    match axum::serve(listener, app(settings.fault_error_rate))
        .with_graceful_shutdown(shutdown)
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One pino line on stdout: `time`, `pid` and `hostname` added.
fn log_line(mut line: Value) {
    if let Value::Object(fields) = &mut line {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        fields.insert("time".into(), json!(now));
        fields.insert("pid".into(), json!(std::process::id()));
        fields
            .entry("hostname")
            .or_insert_with(|| json!(std::env::var("HOSTNAME").unwrap_or_else(|_| "lab".into())));
    }
    println!("{line}");
}

/// Counts, times and logs a request the way `@willsoto/nestjs-prometheus`
/// and `nestjs-pino` do; answers `/api/*` 500 at the fault rate.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let url = request.uri().to_string();
    // Express-style templates, as Nest reports them.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().replace("{id}", ":id"))
        .unwrap_or_else(|| "unmatched".into());
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut response = if route.starts_with("/api/") && fastrand::f64() < state.fault_error_rate {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "statusCode": 500, "message": "Internal server error" })),
        )
            .into_response()
    } else {
        next.run(request).await
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let labels = RequestLabels {
        method: method.clone(),
        route,
        status_code: status.to_string(),
    };
    state.requests.get_or_create(&labels).inc();
    state.durations.get_or_create(&labels).observe(elapsed.as_secs_f64());
    let level = match status {
        500.. => ERROR,
        400..=499 => WARN,
        _ => INFO,
    };
    log_line(json!({
        "level": level,
        "hostname": &*state.hostname,
        "req": { "id": id, "method": method, "url": url },
        "res": { "statusCode": status },
        "responseTime": elapsed.as_millis() as u64,
        "msg": "request completed",
    }));
    response
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "info": {}, "error": {}, "details": {} }))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &state.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    // The process metrics go before OpenMetrics' closing line.
    let body = match text.strip_suffix("# EOF\n") {
        Some(families) => format!("{families}{}# EOF\n", crate::process::exposition()),
        None => text,
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn list(State(state): State<AppState>) -> Json<Value> {
    let items = state.items.lock().map(|items| items.clone()).unwrap_or_default();
    Json(Value::Array(items))
}

async fn create(State(state): State<AppState>, body: Option<Json<Value>>) -> Response {
    let Some(name) = body
        .as_ref()
        .and_then(|b| b.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "statusCode": 400, "message": ["name must be a string"], "error": "Bad Request" })),
        )
            .into_response();
    };
    let Ok(mut items) = state.items.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let item = json!({ "id": items.len() + 1, "name": name });
    items.push(item.clone());
    (StatusCode::CREATED, Json(item)).into_response()
}

async fn one(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let items = state.items.lock().map(|items| items.clone()).unwrap_or_default();
    match id
        .parse::<usize>()
        .ok()
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| items.get(i).cloned())
    {
        Some(item) => Json(item).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "statusCode": 404, "message": format!("item {id} not found"), "error": "Not Found" })),
        )
            .into_response(),
    }
}
