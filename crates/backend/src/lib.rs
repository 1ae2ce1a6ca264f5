//! The monitored service: a small tasks API on SQLite with health checks,
//! Prometheus metrics and JSON request logs. Runs as one color of a
//! blue/green pair; both colors share the database file.
#![forbid(unsafe_code)]

pub mod db;
pub mod error;
pub mod fault;
pub mod health;
pub mod loadgen;
pub mod tasks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::response::Response;
use axum::routing::get;
use axum::{middleware, Json, Router};
use http::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use vigie_telemetry::config::{parse_duration, parse_ratio};
use vigie_telemetry::http::{HttpMetrics, HttpTelemetry, TrackLayer};
use vigie_telemetry::traces::Traces;
use vigie_telemetry::{exposition, listener, logging, process, shutdown, Color, Registry};

use crate::db::Database;
use crate::error::{error_response, AppError};
use crate::fault::Faults;

pub const SERVICE: &str = "vigie-backend";
pub use vigie_telemetry::VERSION;
/// Request bodies above this size get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// The color this instance runs as.
    #[arg(long, env = "VIGIE_COLOR", value_enum)]
    pub color: Color,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "VIGIE_LISTEN", default_value = "0.0.0.0:3000")]
    pub listen: SocketAddr,
    /// SQLite database file, shared by both colors.
    #[arg(long, env = "VIGIE_DATABASE", default_value = "vigie.db")]
    pub database: PathBuf,
    /// Log filter in RUST_LOG syntax, e.g. `info` or `debug,hyper=info`.
    #[arg(long, env = "VIGIE_LOG_LEVEL", default_value = "info", value_parser = logging::parse_filter)]
    pub log_level: String,
    /// Share of /api/* requests that fail with an injected 500 (0..1).
    #[arg(long, env = "VIGIE_FAULT_ERROR_RATE", default_value = "0", value_parser = parse_ratio)]
    pub fault_error_rate: f64,
    /// Delay added to every /api/* request, in milliseconds.
    #[arg(long, env = "VIGIE_FAULT_LATENCY_MS", default_value_t = 0)]
    pub fault_latency_ms: u64,
    /// After SIGTERM, how long readiness reports 503 before the listener closes.
    #[arg(long, env = "VIGIE_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// Longest wait for in-flight requests once the listener has closed.
    #[arg(long, env = "VIGIE_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    #[command(flatten)]
    pub limits: listener::LimitArgs,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub color: Color,
    pub db: Database,
    pub draining: Arc<AtomicBool>,
}

/// Runs `vigie backend` until SIGTERM/SIGINT and the drain are over.
pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let filter = config.log_level.clone();
    logging::run_logged(
        &filter,
        vec![
            ("service", SERVICE.to_owned()),
            ("color", config.color.to_string()),
            ("version", VERSION.to_owned()),
        ],
        std::io::stdout(),
        async |log_guard| serve(config, log_guard).await,
    )
    .await
}

async fn serve(config: Config, log_guard: &logging::LogGuard) -> anyhow::Result<ExitCode> {
    let mut registry = Registry::default();
    let http_metrics = HttpMetrics::register(&mut registry);
    process::ProcessCollector::register(&mut registry);
    log_guard.register_metrics(&mut registry);
    vigie_telemetry::build_info(
        &mut registry,
        vec![
            ("version".into(), VERSION.into()),
            ("role".into(), "backend".into()),
            ("color".into(), config.color.to_string()),
        ],
    );
    let traces = Traces::from_env(
        SERVICE,
        vec![
            opentelemetry::KeyValue::new("service.version", VERSION),
            opentelemetry::KeyValue::new("vigie.color", config.color.as_str()),
        ],
        &mut registry,
    )?;
    let db_path = config.database.clone();
    let db = Database::open(&db_path, &mut registry, traces.clone())
        .with_context(|| format!("cannot use database {}", db_path.display()))?;
    let state = AppState {
        color: config.color,
        db,
        draining: Arc::new(AtomicBool::new(false)),
    };
    let faults = Faults {
        error_rate: config.fault_error_rate,
        latency: Duration::from_millis(config.fault_latency_ms),
    };
    if faults.enabled() {
        tracing::warn!(
            error_rate = faults.error_rate,
            latency_ms = config.fault_latency_ms,
            "fault injection is on"
        );
    }
    let telemetry = HttpTelemetry {
        metrics: http_metrics,
        traces: traces.clone(),
    };
    let app = app(state.clone(), Arc::new(registry), telemetry, faults);

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(listener = "public", addr = %addr, database = %db_path.display(), "listening");

    // Readiness goes 503 first, so the router and load balancers stop
    // sending; the listener closes after the delay.
    let stop = {
        let draining = Arc::clone(&state.draining);
        let delay = config.shutdown_delay;
        async move {
            shutdown::signal().await;
            draining.store(true, Ordering::Release);
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "readiness now 503; closing listener after the delay"
            );
            tokio::time::sleep(delay).await;
        }
    };
    // Behind the router: room for the header fields it adds.
    let limits = config.limits.behind_proxy();
    let closing = shutdown::Closing::default();
    let server = listener::serve(
        listener,
        "public",
        limits,
        listener::app_service(app, limits.header_read_timeout),
        None,
        closing.closed(),
    );
    match shutdown::until_drained(server, stop, &closing, config.drain_timeout).await {
        shutdown::Ended::Drained => {}
        shutdown::Ended::TimedOut => tracing::warn!(
            timeout_ms = config.drain_timeout.as_millis() as u64,
            "drain timeout reached; exiting with requests in flight"
        ),
        shutdown::Ended::Early(()) => tracing::error!("the listener stopped without a shutdown signal"),
    }
    traces.shutdown();
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The service's routes, without the telemetry layers.
pub fn routes(state: AppState, registry: Arc<Registry>, faults: Faults) -> Router {
    let api = Router::new()
        .route("/api/info", get(info))
        .route("/api/tasks", get(tasks::list).post(tasks::create))
        .route(
            "/api/tasks/{id}",
            get(tasks::get).patch(tasks::update).delete(tasks::delete),
        )
        .route_layer(middleware::from_fn_with_state(faults, fault::inject));
    Router::new()
        .merge(api)
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .with_state(state)
        .route("/metrics", get(exposition::metrics_handler).with_state(registry))
}

/// Adds the JSON 404/405 answers, the body limit and panic recovery.
pub fn harden(routes: Router) -> Router {
    with_fallbacks(routes).layer(
        ServiceBuilder::new()
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(CatchPanicLayer::custom(panic_response)),
    )
}

/// [`harden`], with metrics, traces, the request log and request ids
/// outside it (a panic is counted and logged as the 500 it becomes).
/// One `Router::layer` call for all three: each call wraps every route in a
/// boxed service of its own, a cost on every request.
pub fn instrument(routes: Router, telemetry: HttpTelemetry) -> Router {
    with_fallbacks(routes).layer(
        ServiceBuilder::new()
            .layer(TrackLayer::new(telemetry))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(CatchPanicLayer::custom(panic_response)),
    )
}

fn with_fallbacks(routes: Router) -> Router {
    routes
        .fallback(|| async { AppError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
}

pub fn app(state: AppState, registry: Arc<Registry>, telemetry: HttpTelemetry, faults: Faults) -> Router {
    instrument(routes(state, registry, faults), telemetry)
}

async fn info(axum::extract::State(state): axum::extract::State<AppState>) -> Json<Value> {
    Json(json!({ "service": SERVICE, "version": VERSION, "color": state.color }))
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "handler panicked");
    error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_is_counted() {
        let dir = std::env::temp_dir().join(format!("vigie-panic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut registry = Registry::default();
        let metrics = HttpMetrics::register(&mut registry);
        let db = Database::open(&dir.join("p.db"), &mut registry, Traces::disabled()).expect("db");
        let state = AppState {
            color: Color::Blue,
            db,
            draining: Arc::new(AtomicBool::new(false)),
        };
        let registry = Arc::new(registry);
        let routes = routes(state, Arc::clone(&registry), Faults::default())
            .route("/api/boom", get(|| async { panic!("boom") as &'static str }));
        let app = instrument(
            routes,
            HttpTelemetry {
                metrics,
                traces: Traces::disabled(),
            },
        );
        for _ in 0..2 {
            let response = app
                .clone()
                .oneshot(http::Request::get("/api/boom").body(Body::empty()).expect("request"))
                .await
                .expect("infallible");
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
        let text = exposition::render(&registry, exposition::Format::PrometheusText).expect("render");
        assert!(
            text.contains("http_requests_total{method=\"GET\",route=\"/api/boom\",status=\"500\"} 2"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
