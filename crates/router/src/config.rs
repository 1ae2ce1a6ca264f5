//! Command-line configuration of `vigie router`: its flags, and the
//! defaults of those that belong to no other module (the guard's are in
//! [`crate::guard::defaults`]). Only the crate's entry point imports this.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use vigie_telemetry::config::{parse_duration, parse_positive_duration, parse_ratio};
use vigie_telemetry::logging;

use crate::admin::AdminToken;
use crate::guard::check::Thresholds;
use crate::guard::{self, GuardSettings, OnPrometheusError};
use crate::prometheus_api::PrometheusApi;
use crate::prometheus_api::PrometheusUrl;
use crate::upstream::UpstreamUrl;

/// Default values of the flags. Durations are strings in the flag syntax so
/// that `--help` shows them exactly as a person would type them.
pub mod defaults {
    pub const LISTEN: &str = "0.0.0.0:8080";
    pub const ADMIN_LISTEN: &str = "127.0.0.1:8081";
    pub const BLUE: &str = "http://backend-blue:3000";
    pub const GREEN: &str = "http://backend-green:3000";
    pub const STATE_FILE: &str = "/var/lib/vigie/router/state.json";
    pub const TARGETS_FILE: &str = "/var/lib/vigie/targets/backend.json";
    /// A TCP connect to a backend on the same network takes well under 1 ms;
    /// a second means it is gone.
    pub const CONNECT_TIMEOUT: &str = "1s";
    /// Until the response head arrives (the body may stream for longer).
    pub const REQUEST_TIMEOUT: &str = "30s";
    /// How long a switch waits for the target to pass its readiness checks.
    pub const DEPLOY_TIMEOUT: &str = "10s";
    /// How long a switch (or a shutdown) waits for in-flight requests.
    pub const DRAIN_TIMEOUT: &str = "30s";
    pub const HEALTH_CHECK_PATH: &str = "/health/ready";
    /// Pause between the readiness checks of a switch.
    pub const HEALTH_CHECK_INTERVAL: &str = "100ms";
    /// One readiness probe may take this long.
    pub const HEALTH_CHECK_TIMEOUT: &str = "1s";
    /// Consecutive successful checks that make a target ready.
    pub const HEALTH_CHECK_SUCCESSES: u32 = 3;
    /// Period of the background probe shown by `/status`.
    pub const STATUS_CHECK_INTERVAL: &str = "5s";
}

#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// Public address: every request is proxied to the active color.
    #[arg(long, env = "VIGIE_LISTEN", default_value = defaults::LISTEN)]
    pub listen: SocketAddr,
    /// Admin API address (status, switch, metrics); keep it internal.
    #[arg(long, env = "VIGIE_ADMIN_LISTEN", default_value = defaults::ADMIN_LISTEN)]
    pub admin_listen: SocketAddr,
    /// Base URL of the blue backend (http://host:port).
    #[arg(long, env = "VIGIE_BLUE", default_value = defaults::BLUE, value_parser = UpstreamUrl::parse)]
    pub blue: UpstreamUrl,
    /// Base URL of the green backend (http://host:port).
    #[arg(long, env = "VIGIE_GREEN", default_value = defaults::GREEN, value_parser = UpstreamUrl::parse)]
    pub green: UpstreamUrl,
    /// Where the active color is saved so that it survives a restart.
    #[arg(long, env = "VIGIE_STATE_FILE", default_value = defaults::STATE_FILE)]
    pub state_file: PathBuf,
    /// Prometheus file_sd file listing the backends with color and role.
    #[arg(long, env = "VIGIE_TARGETS_FILE", default_value = defaults::TARGETS_FILE)]
    pub targets_file: PathBuf,
    /// List only the active color in the targets file.
    /// (The variable takes true/false, 1/0, yes/no, on/off.)
    #[arg(long, env = "VIGIE_NO_STANDBY_TARGET", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_standby_target: bool,
    /// The backends' metrics path, written into the targets file for
    /// Prometheus (`__metrics_path__`) when it is not /metrics.
    #[arg(long, env = "VIGIE_METRICS_PATH", default_value = crate::targets::DEFAULT_METRICS_PATH, value_parser = parse_metrics_path)]
    pub metrics_path: String,
    /// Longest TCP connect to a backend (then 502).
    #[arg(long, env = "VIGIE_CONNECT_TIMEOUT", default_value = defaults::CONNECT_TIMEOUT, value_parser = parse_positive_duration)]
    pub connect_timeout: Duration,
    /// Longest wait for a backend's response head (then 504).
    #[arg(long, env = "VIGIE_REQUEST_TIMEOUT", default_value = defaults::REQUEST_TIMEOUT, value_parser = parse_positive_duration)]
    pub request_timeout: Duration,
    /// Longest wait for the switch target to become ready (then 409).
    #[arg(long, env = "VIGIE_DEPLOY_TIMEOUT", default_value = defaults::DEPLOY_TIMEOUT, value_parser = parse_positive_duration)]
    pub deploy_timeout: Duration,
    /// Longest wait for the old color's in-flight requests, on a switch and on shutdown.
    #[arg(long, env = "VIGIE_DRAIN_TIMEOUT", default_value = defaults::DRAIN_TIMEOUT, value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Readiness path checked before a switch and by the background probe.
    #[arg(long, env = "VIGIE_HEALTH_CHECK_PATH", default_value = defaults::HEALTH_CHECK_PATH, value_parser = parse_path)]
    pub health_check_path: String,
    /// Pause between the readiness checks of a switch.
    #[arg(long, env = "VIGIE_HEALTH_CHECK_INTERVAL", default_value = defaults::HEALTH_CHECK_INTERVAL, value_parser = parse_positive_duration)]
    pub health_check_interval: Duration,
    /// Longest wait for one readiness check.
    #[arg(long, env = "VIGIE_HEALTH_CHECK_TIMEOUT", default_value = defaults::HEALTH_CHECK_TIMEOUT, value_parser = parse_positive_duration)]
    pub health_check_timeout: Duration,
    /// Consecutive successful checks needed before a switch.
    #[arg(long, env = "VIGIE_HEALTH_CHECK_SUCCESSES", default_value_t = defaults::HEALTH_CHECK_SUCCESSES,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub health_check_successes: u32,
    /// Period of the background health probe reported by /status.
    #[arg(long, env = "VIGIE_STATUS_CHECK_INTERVAL", default_value = defaults::STATUS_CHECK_INTERVAL, value_parser = parse_positive_duration)]
    pub status_check_interval: Duration,
    /// Log filter in RUST_LOG syntax, e.g. `info` or `debug,hyper=info`.
    #[arg(long, env = "VIGIE_LOG_LEVEL", default_value = "info", value_parser = logging::parse_filter)]
    pub log_level: String,
    #[command(flatten)]
    pub guard: GuardArgs,
    #[command(flatten)]
    pub limits: vigie_telemetry::listener::LimitArgs,
    /// Open connections at most on the admin listener (its own cap, so
    /// the admin port can never take what the public one needs).
    #[arg(long, env = "VIGIE_ADMIN_MAX_CONNECTIONS", value_name = "N",
          default_value_t = vigie_telemetry::listener::defaults::ADMIN_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub admin_max_connections: usize,
    /// Threads serving the public listener, each running its share of the
    /// client connections, and their upstream connections, from start to
    /// end (0: on the runtime shared with the admin API). Default: one per
    /// CPU the process may use.
    #[arg(long, env = "VIGIE_PROXY_THREADS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(0..=vigie_telemetry::lanes::MAX_LANES as i64))]
    pub proxy_threads: Option<u16>,
    /// Bearer token required by /status and /switch (unset: no auth).
    /// Read from `VIGIE_ADMIN_TOKEN` only: a flag would show in `ps`.
    #[arg(skip = AdminToken::from_env())]
    pub admin_token: Option<AdminToken>,
}

/// Flags of the switch guard (`POST /switch {"guard": "2m"}`).
#[derive(clap::Args, Debug, Clone)]
pub struct GuardArgs {
    /// Prometheus queried by guarded switches (http://host:port[/prefix]).
    #[arg(long, env = "VIGIE_PROMETHEUS_URL", default_value = guard::defaults::PROMETHEUS_URL, value_parser = PrometheusUrl::parse)]
    pub prometheus_url: PrometheusUrl,
    /// Pause between two checks of the new color during a guard window.
    #[arg(long, env = "VIGIE_GUARD_INTERVAL", default_value = guard::defaults::GUARD_INTERVAL, value_parser = parse_interval)]
    pub guard_interval: Duration,
    /// Highest share of 5xx API answers the new color may have (0..1).
    #[arg(long, env = "VIGIE_GUARD_MAX_ERROR_RATIO", default_value = guard::defaults::GUARD_MAX_ERROR_RATIO, value_parser = parse_ratio)]
    pub guard_max_error_ratio: f64,
    /// Highest p95 API latency the new color may have.
    #[arg(long, env = "VIGIE_GUARD_MAX_P95", default_value = guard::defaults::GUARD_MAX_P95, value_parser = parse_duration)]
    pub guard_max_p95: Duration,
    /// API requests a check needs in its window; fewer is "insufficient data".
    #[arg(long, env = "VIGIE_GUARD_MIN_REQUESTS", default_value_t = guard::defaults::GUARD_MIN_REQUESTS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub guard_min_requests: u64,
    /// Longest wait for one Prometheus query.
    #[arg(long, env = "VIGIE_GUARD_QUERY_TIMEOUT", default_value = guard::defaults::GUARD_QUERY_TIMEOUT, value_parser = parse_interval)]
    pub guard_query_timeout: Duration,
    /// What the guard does when Prometheus cannot be queried: roll back, or keep the new color.
    #[arg(long, env = "VIGIE_GUARD_ON_PROMETHEUS_ERROR", value_enum, default_value = guard::defaults::GUARD_ON_PROMETHEUS_ERROR)]
    pub guard_on_prometheus_error: OnPrometheusError,
    /// The SLO file (stack/slo.yaml): lets a guarded switch judge the new
    /// color by its error budget burn rate (`vigie switch --guard-slo`).
    #[arg(long = "slo-file", env = "VIGIE_SLO_FILE", value_parser = load_slo_file)]
    pub slos: Option<std::sync::Arc<vigie_slo::Slos>>,
}

impl GuardArgs {
    /// What the guard needs of these flags.
    pub fn settings(&self) -> GuardSettings {
        GuardSettings {
            api: PrometheusApi::new(self.prometheus_url.clone(), self.guard_query_timeout),
            interval: self.guard_interval,
            thresholds: Thresholds {
                max_error_ratio: self.guard_max_error_ratio,
                max_p95_seconds: self.guard_max_p95.as_secs_f64(),
                min_requests: self.guard_min_requests,
            },
            on_prometheus_error: self.guard_on_prometheus_error,
            slos: self.slos.clone(),
        }
    }
}

/// Reads and checks the SLO file when the flags are parsed: a bad one is
/// a bad flag (exit 2).
fn load_slo_file(path: &str) -> Result<std::sync::Arc<vigie_slo::Slos>, String> {
    vigie_slo::Slos::load(std::path::Path::new(path))
        .map(std::sync::Arc::new)
        .map_err(|e| e.to_string())
}

/// A duration of at least [`guard::defaults::GUARD_MIN_INTERVAL_MS`].
fn parse_interval(text: &str) -> Result<Duration, String> {
    let value = parse_duration(text)?;
    let min = Duration::from_millis(guard::defaults::GUARD_MIN_INTERVAL_MS);
    if value < min {
        return Err(format!("{text:?} is too short (at least {} ms)", min.as_millis()));
    }
    Ok(value)
}

/// A path without a query: Prometheus escapes a `?` in `__metrics_path__`
/// (its parameters are set apart, as `params:` of the scrape job).
fn parse_metrics_path(text: &str) -> Result<String, String> {
    if text.contains('?') {
        return Err(format!(
            "{text:?} has a query string; give the path alone (parameters go into prometheus.yml's params:)"
        ));
    }
    parse_path(text)
}

fn parse_path(text: &str) -> Result<String, String> {
    if text.starts_with('/') && text.parse::<http::uri::PathAndQuery>().is_ok() {
        Ok(text.to_owned())
    } else {
        Err(format!("invalid path {text:?} (expected e.g. /health/ready)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_check_paths_must_be_absolute() {
        assert!(parse_metrics_path("/internal/metrics").is_ok());
        assert!(parse_metrics_path("/metrics?format=prometheus").is_err());
        assert!(parse_path("/health/ready").is_ok());
        assert!(parse_path("health").is_err());
        assert!(parse_path("/a b").is_err());
    }
}
