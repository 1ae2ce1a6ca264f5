//! `vigie router`: the blue/green "service alias". A reverse proxy that
//! sends every request to the active color, switches colors after
//! health checks without dropping a request, keeps Prometheus' file_sd
//! target in step with the active color, and remembers the color across
//! restarts. `vigie switch` and `vigie status` ([`cli`]) drive it through
//! its admin API.
//!
//! One concern per module: [`proxy`] and [`headers`] (the public
//! listener), [`upstream`] (a color's in-flight count and state) and
//! [`pool`] (its keep-alive connections), [`routing`] (the active color),
//! [`switch`] (health-checked switch and drain), [`guard`] (the guarded
//! switch's checks in Prometheus and automatic rollback, through
//! [`prometheus_api`]), [`health`], [`admin`], [`state_file`], [`targets`],
//! [`metrics`], [`error`], [`config`] (the flags; only this file imports
//! it). Modules depend one way (a test of the `vigie` crate checks it).
//!
//! [`run`] is [`build`] (state loaded, listeners bound) then
//! [`Router::run_until_stopped`] with SIGTERM/SIGINT as the stop; a test can
//! run the two in its own process with a stop of its own.
#![forbid(unsafe_code)]

pub mod admin;
pub mod atomic_file;
pub mod cli;
pub mod config;
pub mod error;
pub mod guard;
pub mod guard_record;
pub mod h1;
pub mod headers;
pub mod health;
pub mod metrics;
pub mod pool;
pub mod prometheus_api;
pub mod proxy;
pub mod routing;
pub mod state_file;
pub mod switch;
pub mod target;
pub mod targets;
pub mod upload;
pub mod upstream;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use vigie_telemetry::lanes::{self, Lanes};
use vigie_telemetry::listener::{self, Limits};
use vigie_telemetry::{logging, process, shutdown, Color, Registry};

pub use crate::config::Config;
use crate::health::HealthCheck;
use crate::metrics::RouterMetrics;
use crate::proxy::Proxy;
use crate::routing::Routing;
use crate::state_file::{now_ms, rfc3339, SavedState, StateFile};
use crate::switch::Switcher;
use crate::target::TargetState;
use crate::targets::TargetsFile;
use crate::upstream::Upstream;

pub const SERVICE: &str = "vigie-router";
pub use vigie_telemetry::VERSION;
/// Log bytes gathered into one write to stdout.
const LOG_BUFFER_BYTES: usize = 64 * 1024;

/// Runs `vigie router` until SIGTERM/SIGINT and the drain are over.
pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let filter = config.log_level.clone();
    logging::run_logged(
        &filter,
        vec![("service", SERVICE.to_owned()), ("version", VERSION.to_owned())],
        // The log thread writes a batch at a time, so buffering adds no
        // delay; under load it turns one write(2) per line into one per batch.
        std::io::BufWriter::with_capacity(LOG_BUFFER_BYTES, std::io::stdout()),
        async |log_guard| serve(config, log_guard).await,
    )
    .await
}

/// The color to start on, from the state file: blue when there is none, and
/// blue with an error logged when it cannot be read (see [`state_file`]).
fn initial_state(state_file: &StateFile) -> SavedState {
    let fresh = SavedState {
        active: Color::Blue,
        since: now_ms(),
        switches: 0,
        guard: None,
    };
    match state_file.load() {
        Ok(Some(saved)) => {
            tracing::info!(active = %saved.active, since = %rfc3339(saved.since), path = %state_file.path().display(), "state restored");
            saved
        }
        Ok(None) => {
            tracing::info!(active = "blue", path = %state_file.path().display(), "no state file; starting on blue");
            fresh
        }
        Err(e) => {
            tracing::error!(error = %e, active = "blue", "state file unusable; starting on blue (the next switch replaces the file)");
            fresh
        }
    }
}

async fn serve(config: Config, log_guard: &logging::LogGuard) -> anyhow::Result<ExitCode> {
    let mut registry = Registry::default();
    log_guard.register_metrics(&mut registry);
    build(config, registry)
        .await?
        .run_until_stopped(shutdown::signal())
        .await
}

/// A router ready to serve: state loaded, listeners bound, metrics
/// registered. [`build`] makes one, [`Router::run_until_stopped`] runs it,
/// so a test can drive the proxy and the switch in its own process.
pub struct Router {
    public: TcpListener,
    /// The threads the public listener's connections run on, if any.
    lanes: Option<Arc<Lanes>>,
    admin: TcpListener,
    proxy: Arc<Proxy>,
    admin_app: axum::Router,
    guard: Arc<guard::Guard>,
    routing: Arc<Routing>,
    traces: vigie_telemetry::traces::Traces,
    metrics: RouterMetrics,
    health_check: HealthCheck,
    status_check_interval: std::time::Duration,
    drain_timeout: std::time::Duration,
    public_limits: Limits,
    admin_limits: Limits,
}

/// Loads the state, writes the targets file, binds both listeners and
/// registers the router's metrics into `registry` (served by the admin
/// listener's `/metrics`).
pub async fn build(config: Config, mut registry: Registry) -> anyhow::Result<Router> {
    let metrics = RouterMetrics::register(&mut registry);
    process::ProcessCollector::register(&mut registry);
    vigie_telemetry::build_info(
        &mut registry,
        vec![("version".into(), VERSION.into()), ("role".into(), "router".into())],
    );
    let traces = vigie_telemetry::traces::Traces::from_env(
        "vigie-router",
        vec![opentelemetry::KeyValue::new("service.version", VERSION)],
        &mut registry,
    )?;

    let state_file = StateFile::new(config.state_file.clone());
    let SavedState {
        active,
        since,
        switches,
        guard: saved_guard,
    } = initial_state(&state_file);
    let upstream = |color: Color, url: &upstream::UpstreamUrl| {
        let state = if color == active {
            TargetState::Active
        } else {
            TargetState::Standby
        };
        Arc::new(Upstream::new(
            color,
            url.clone(),
            config.connect_timeout,
            state,
            metrics.in_flight_gauge(color),
        ))
    };
    let routing = Arc::new(Routing::new(
        upstream(Color::Blue, &config.blue),
        upstream(Color::Green, &config.green),
        active,
        since,
        switches,
    ));
    metrics.set_active(active);
    if switches > 0 {
        metrics.set_last_switch_time(since.unix_timestamp_nanos() as f64 / 1e9);
    }
    let health_check = HealthCheck {
        path: config.health_check_path.clone(),
        interval: config.health_check_interval,
        timeout: config.health_check_timeout,
        successes: config.health_check_successes,
    };
    let switcher = Arc::new(Switcher::new(
        Arc::clone(&routing),
        metrics.clone(),
        state_file,
        TargetsFile::new(
            config.targets_file.clone(),
            !config.no_standby_target,
            config.metrics_path.clone(),
        ),
        health_check.clone(),
        config.deploy_timeout,
        config.drain_timeout,
    ));
    // A missing targets file only blinds Prometheus; traffic matters more,
    // so the router serves anyway (the error is logged and counted).
    let _ = switcher.write_targets().await;
    if config.admin_token.is_none() {
        tracing::warn!(
            env = admin::AdminToken::ENV,
            "no admin token set: anyone reaching the admin listener can switch colors"
        );
    }

    let guard = guard::Guard::new(config.guard.settings(), Arc::clone(&switcher), metrics.clone());
    if let Some(record) = saved_guard {
        guard.resume(record);
        let _ = switcher.persist().await;
    }

    let proxy = Arc::new(Proxy {
        routing: Arc::clone(&routing),
        metrics: metrics.clone(),
        request_timeout: config.request_timeout,
        traces: traces.clone(),
    });
    let admin_app = admin::app(
        admin::Admin {
            guard: Arc::clone(&guard),
            switcher,
            token: config.admin_token.clone(),
        },
        Arc::new(registry),
    );

    let public = bind(config.listen, "public").await?;
    let admin = bind(config.admin_listen, "admin").await?;
    tracing::info!(
        active = %active, blue = %config.blue, green = %config.green,
        targets_file = %config.targets_file.display(), "router started"
    );
    let public_limits = config.limits.direct();
    let proxy_threads = config.proxy_threads.map_or_else(lanes::default_count, usize::from);
    let lanes = match proxy_threads {
        0 => None,
        count => Some(Arc::new(
            Lanes::start(count, "vigie-proxy").context("cannot start the proxy threads")?,
        )),
    };
    Ok(Router {
        public,
        lanes,
        admin,
        proxy,
        admin_app,
        guard,
        routing,
        traces,
        metrics,
        health_check,
        status_check_interval: config.status_check_interval,
        drain_timeout: config.drain_timeout,
        public_limits,
        admin_limits: Limits {
            max_connections: config.admin_max_connections,
            ..public_limits
        },
    })
}

impl Router {
    /// The address clients reach the active color at.
    pub fn public_addr(&self) -> std::io::Result<SocketAddr> {
        self.public.local_addr()
    }

    /// The address of `/status`, `/switch`, `/guard` and `/metrics`.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serves until `stop` resolves, then stops the guard, closes the
    /// listeners and waits for in-flight requests (at most the drain
    /// timeout).
    pub async fn run_until_stopped(self, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<ExitCode> {
        let routing = self.routing;
        let watching = tokio::spawn(health::watch(
            Arc::clone(&routing),
            self.health_check,
            self.status_check_interval,
            self.metrics,
        ));
        let (public_limits, admin_limits) = (self.public_limits, self.admin_limits);
        let proxy = self.proxy;
        let closing = shutdown::Closing::default();
        // The accept loop in a worker of its own, not the entry thread.
        let public_server = tokio::spawn(listener::serve(
            self.public,
            "public",
            public_limits,
            move |peer: SocketAddr| {
                let proxy = Arc::clone(&proxy);
                let client = headers::ClientAddr::new(peer.ip());
                service_fn(move |request| proxy::handle(Arc::clone(&proxy), client.clone(), request))
            },
            self.lanes.clone(),
            closing.closed(),
        ));
        let admin_server = listener::serve(
            self.admin,
            "admin",
            admin_limits,
            listener::app_service(self.admin_app, admin_limits.header_read_timeout),
            None,
            closing.closed(),
        );
        // Both run until drained; one that ends before ends the run.
        let servers = async {
            tokio::try_join!(
                closing.serve(async { drop(public_server.await) }, "public"),
                closing.serve(admin_server, "admin")
            )
        };
        let guard = Arc::clone(&self.guard);
        let stop = async move {
            stop.await;
            guard.stop();
        };
        match shutdown::until_drained(servers, stop, &closing, self.drain_timeout).await {
            shutdown::Ended::Drained => {}
            shutdown::Ended::TimedOut => tracing::warn!(
                in_flight = routing.upstream(Color::Blue).in_flight() + routing.upstream(Color::Green).in_flight(),
                "drain timeout reached; exiting with requests in flight"
            ),
            shutdown::Ended::Early(ended) => {
                watching.abort();
                // Before the stop, only a failed server ends the join.
                let name = ended.err().unwrap_or("public and admin");
                anyhow::bail!("the {name} listener stopped");
            }
        }
        watching.abort();
        tracing::info!("stopped");
        self.traces.shutdown();
        Ok(ExitCode::SUCCESS)
    }
}

async fn bind(addr: SocketAddr, name: &'static str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({name})"))?;
    let local = listener.local_addr()?;
    tracing::info!(listener = name, addr = %local, "listening");
    Ok(listener)
}
