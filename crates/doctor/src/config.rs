//! Command-line flags of `vigie doctor` and every default, in one place.
//!
//! The URLs default to the ports `compose.yaml` publishes on the host
//! (127.0.0.1), where a person runs the doctor after `docker compose up`.
//! `--compose` switches the defaults to the compose service names, for a
//! doctor run inside the compose network (`docker compose exec router vigie
//! doctor --compose`); a URL given explicitly always wins.

use std::time::Duration;

use vigie_telemetry::config::parse_duration;

use crate::check::{CheckId, Component};

/// Default values of the flags, as a person would type them.
pub mod defaults {
    /// Router admin API. Compose does not publish it on the host (see
    /// docs/doctor.md); `vigie status` uses the same default.
    pub const ADMIN_URL: &str = "http://127.0.0.1:8081";
    pub const PROMETHEUS_URL: &str = "http://127.0.0.1:9090";
    pub const ALERTMANAGER_URL: &str = "http://127.0.0.1:9093";
    pub const LOKI_URL: &str = "http://127.0.0.1:3100";
    pub const GRAFANA_URL: &str = "http://127.0.0.1:3000";

    /// The same services by their compose names (`--compose`).
    pub const COMPOSE_ADMIN_URL: &str = "http://router:8081";
    pub const COMPOSE_PROMETHEUS_URL: &str = "http://prometheus:9090";
    pub const COMPOSE_ALERTMANAGER_URL: &str = "http://alertmanager:9093";
    pub const COMPOSE_LOKI_URL: &str = "http://loki:3100";
    pub const COMPOSE_GRAFANA_URL: &str = "http://grafana:3000";
    /// Tempo's HTTP API (query, `/ready`). Compose publishes it nowhere, so
    /// it has no host default: from the host, without `--tempo`, the doctor
    /// asks Tempo through Grafana's data source proxy (see docs/doctor.md).
    pub const COMPOSE_TEMPO_URL: &str = "http://tempo:3200";
    /// The uid of the provisioned Tempo data source, Grafana's relay to Tempo
    /// (stack/grafana/provisioning/datasources/datasources.yaml).
    pub const TEMPO_DATASOURCE_UID: &str = "tempo";

    /// Longest wait for one HTTP request, connect included. Every service of
    /// the stack answers its health endpoints in milliseconds; 5 s leaves
    /// room for a cold Grafana datasource health check.
    pub const TIMEOUT: &str = "5s";
    /// How far back the Loki check looks for lines, and the Tempo check for
    /// traces, of the active color. The traffic generator makes the backend
    /// log (and trace) several requests a second.
    pub const LOGS_WINDOW: &str = "5m";
    /// The provisioned data source uids (stack/grafana/provisioning).
    pub const GRAFANA_DATASOURCES: &str = "prometheus,loki,tempo,alertmanager";
    /// The provisioned dashboards' folder and uids (stack/grafana/dashboards).
    pub const GRAFANA_FOLDER: &str = "vigie";
    pub const GRAFANA_DASHBOARDS: &str = "vigie-overview,vigie-bluegreen,vigie-logs,vigie-stack,vigie-traces,vigie-slo";
    /// The APIs the doctor reads answer kilobytes; more is not our stack.
    pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
    /// With `--wait`: the pause between two rounds of checks.
    pub const WAIT_RETRY: std::time::Duration = std::time::Duration::from_secs(2);
    /// The compose services `--optional` may name: the ones the stack can
    /// do without (the application, Prometheus and its router target are
    /// what the doctor is for). Each is also the name of its Prometheus job.
    pub const OPTIONAL_SERVICES: &[&str] = &["loki", "promtail", "alloy", "tempo", "grafana", "alertmanager"];
}

/// `vigie doctor`: check the running stack from the outside.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Router admin API; its bearer token is read from VIGIE_ADMIN_TOKEN
    /// [default: http://127.0.0.1:8081; with --compose: http://router:8081]
    #[arg(long = "admin", visible_alias = "router", env = "VIGIE_ADMIN_URL", value_name = "URL", value_parser = parse_base_url)]
    pub admin: Option<String>,
    /// Prometheus [default: http://127.0.0.1:9090; with --compose: http://prometheus:9090]
    #[arg(long, env = "VIGIE_PROMETHEUS_URL", value_name = "URL", value_parser = parse_base_url)]
    pub prometheus: Option<String>,
    /// Alertmanager [default: http://127.0.0.1:9093; with --compose: http://alertmanager:9093]
    #[arg(long, env = "VIGIE_ALERTMANAGER_URL", value_name = "URL", value_parser = parse_base_url)]
    pub alertmanager: Option<String>,
    /// Loki [default: http://127.0.0.1:3100; with --compose: http://loki:3100]
    #[arg(long, env = "VIGIE_LOKI_URL", value_name = "URL", value_parser = parse_base_url)]
    pub loki: Option<String>,
    /// Grafana [default: http://127.0.0.1:3000; with --compose: http://grafana:3000]
    #[arg(long, env = "VIGIE_GRAFANA_URL", value_name = "URL", value_parser = parse_base_url)]
    pub grafana: Option<String>,
    /// Tempo's HTTP API [default on the host: none, Tempo is asked through
    /// Grafana's data source proxy (compose does not publish Tempo); with
    /// --compose: http://tempo:3200]
    #[arg(long, env = "VIGIE_TEMPO_URL", value_name = "URL", value_parser = parse_base_url)]
    pub tempo: Option<String>,
    /// Default every URL to its compose service name (run inside the compose network).
    #[arg(long, env = "VIGIE_DOCTOR_COMPOSE", value_parser = clap::builder::BoolishValueParser::new())]
    pub compose: bool,
    /// Grafana user for basic auth (optional: the stack lets anonymous viewers read).
    #[arg(long, env = "VIGIE_GRAFANA_USER", value_name = "USER")]
    pub grafana_user: Option<String>,
    /// Grafana password for --grafana-user.
    #[arg(long, env = "VIGIE_GRAFANA_PASSWORD", value_name = "PASSWORD", hide_env_values = true,
          value_parser = parse_secret)]
    pub grafana_password: Option<Secret>,
    /// Grafana data source uids that must answer their health check (comma-separated).
    #[arg(long, env = "VIGIE_GRAFANA_DATASOURCES", value_name = "UIDS", value_delimiter = ',',
          default_value = defaults::GRAFANA_DATASOURCES)]
    pub grafana_datasources: Vec<String>,
    /// Grafana folder uid holding the provisioned dashboards.
    #[arg(long, env = "VIGIE_GRAFANA_FOLDER", value_name = "UID", default_value = defaults::GRAFANA_FOLDER)]
    pub grafana_folder: String,
    /// Dashboard uids that must be in that folder (comma-separated).
    #[arg(long, env = "VIGIE_GRAFANA_DASHBOARDS", value_name = "UIDS", value_delimiter = ',',
          default_value = defaults::GRAFANA_DASHBOARDS)]
    pub grafana_dashboards: Vec<String>,
    /// Longest wait for each HTTP request (e.g. 500ms, 5s).
    #[arg(long, env = "VIGIE_DOCTOR_TIMEOUT", value_name = "DURATION", default_value = defaults::TIMEOUT,
          value_parser = parse_positive_duration)]
    pub timeout: Duration,
    /// How far back Loki must have lines, and Tempo traces, of the active color (e.g. 5m).
    #[arg(long, env = "VIGIE_DOCTOR_LOGS_WINDOW", value_name = "DURATION", default_value = defaults::LOGS_WINDOW,
          value_parser = parse_logs_window)]
    pub logs_window: Duration,
    /// Checks to skip, by component (router, prometheus, loki, tempo,
    /// grafana, alertmanager) or by check id (e.g. prometheus-alerts);
    /// comma-separated.
    #[arg(long, env = "VIGIE_DOCTOR_SKIP", value_name = "LIST", value_delimiter = ',', value_parser = parse_skip)]
    pub skip: Vec<String>,
    /// Compose services that may be absent (loki, promtail, alloy, tempo,
    /// grafana, alertmanager; comma-separated): when one is not running, its
    /// checks say so and are skipped instead of failing. A running one is
    /// checked as usual.
    #[arg(long, env = "VIGIE_DOCTOR_OPTIONAL", value_name = "SERVICES", value_delimiter = ',',
          value_parser = parse_optional)]
    pub optional: Vec<String>,
    /// Check again every 2s until no check fails and no Prometheus target
    /// awaits its first scrape, or DURATION has passed (e.g. 2m), then
    /// report the last round: for scripts that run right
    /// after `docker compose up -d`, while services are still starting.
    #[arg(long, env = "VIGIE_DOCTOR_WAIT", value_name = "DURATION", value_parser = parse_positive_duration)]
    pub wait: Option<Duration>,
    /// Print one JSON document instead of the lines (for scripts).
    #[arg(long, env = "VIGIE_DOCTOR_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub json: bool,
}

/// A password: kept out of `Debug` output.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

fn parse_secret(text: &str) -> Result<Secret, String> {
    Ok(Secret(text.to_owned()))
}

/// The base URL of each service, defaults resolved.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub admin: String,
    pub prometheus: String,
    pub alertmanager: String,
    pub loki: String,
    pub grafana: String,
    /// None from the host without `--tempo`: Tempo is not published there.
    pub tempo: Option<String>,
}

impl Args {
    pub fn endpoints(&self) -> Endpoints {
        let pick = |given: &Option<String>, host: &str, compose: &str| {
            given
                .clone()
                .unwrap_or_else(|| if self.compose { compose } else { host }.to_owned())
        };
        Endpoints {
            admin: pick(&self.admin, defaults::ADMIN_URL, defaults::COMPOSE_ADMIN_URL),
            prometheus: pick(
                &self.prometheus,
                defaults::PROMETHEUS_URL,
                defaults::COMPOSE_PROMETHEUS_URL,
            ),
            alertmanager: pick(
                &self.alertmanager,
                defaults::ALERTMANAGER_URL,
                defaults::COMPOSE_ALERTMANAGER_URL,
            ),
            loki: pick(&self.loki, defaults::LOKI_URL, defaults::COMPOSE_LOKI_URL),
            grafana: pick(&self.grafana, defaults::GRAFANA_URL, defaults::COMPOSE_GRAFANA_URL),
            tempo: self
                .tempo
                .clone()
                .or_else(|| self.compose.then(|| defaults::COMPOSE_TEMPO_URL.to_owned())),
        }
    }

    /// Whether `id` was skipped, by its own id or by its component.
    pub fn skips(&self, id: CheckId) -> bool {
        self.skip.iter().any(|s| s == id.id() || s == id.component().as_str())
    }

    /// Whether `--optional` names the compose service `service`.
    pub fn is_optional(&self, service: &str) -> bool {
        self.optional.iter().any(|s| s == service)
    }

    /// Whether every check of `component` was skipped.
    pub fn skips_component(&self, component: Component) -> bool {
        CheckId::ALL
            .iter()
            .filter(|id| id.component() == component)
            .all(|id| self.skips(*id))
    }

    /// Empty entries of the comma-separated lists (`a,,b`) are ignored.
    pub fn datasource_uids(&self) -> Vec<String> {
        non_empty(&self.grafana_datasources)
    }

    pub fn dashboard_uids(&self) -> Vec<String> {
        non_empty(&self.grafana_dashboards)
    }
}

fn non_empty(items: &[String]) -> Vec<String> {
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An `http://host[:port][/prefix]` URL, without its trailing slash. Only
/// plain HTTP: the stack's services speak nothing else on their ports.
pub fn parse_base_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text.trim()).map_err(|e| format!("invalid URL {text:?}: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "{text:?} must be an http:// URL (the stack's services speak plain HTTP)"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{text:?} must be a base URL, without ?query or #fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("the duration must be more than 0".to_owned());
    }
    Ok(duration)
}

fn parse_optional(text: &str) -> Result<String, String> {
    let text = text.trim();
    if defaults::OPTIONAL_SERVICES.contains(&text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} cannot be optional; the services that can: {}",
            defaults::OPTIONAL_SERVICES.join(", ")
        ))
    }
}

fn parse_logs_window(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_secs(1) {
        return Err("the logs window must be at least 1s".to_owned());
    }
    Ok(duration)
}

fn parse_skip(text: &str) -> Result<String, String> {
    let text = text.trim();
    let known = Component::ALL.iter().any(|c| c.as_str() == text) || CheckId::ALL.iter().any(|id| id.id() == text);
    if known {
        Ok(text.to_owned())
    } else {
        let components: Vec<&str> = Component::ALL.iter().map(|c| c.as_str()).collect();
        let checks: Vec<&str> = CheckId::ALL.iter().map(|id| id.id()).collect();
        Err(format!(
            "unknown check {text:?}; skip a component ({}) or a check ({})",
            components.join(", "),
            checks.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_lose_their_trailing_slash_and_must_be_http() {
        assert_eq!(
            parse_base_url("http://127.0.0.1:9090/").as_deref(),
            Ok("http://127.0.0.1:9090")
        );
        assert_eq!(
            parse_base_url("http://grafana:3000/sub/").as_deref(),
            Ok("http://grafana:3000/sub")
        );
        assert!(parse_base_url("https://grafana:3000").is_err());
        assert!(parse_base_url("grafana:3000").is_err());
        assert!(parse_base_url("http://grafana:3000/?x=1").is_err());
    }

    #[test]
    fn skip_accepts_components_and_check_ids_only() {
        assert!(parse_skip("loki").is_ok());
        assert!(parse_skip("tempo").is_ok());
        assert!(parse_skip("tempo-traces").is_ok());
        assert!(parse_skip("prometheus-alerts").is_ok());
        let error = parse_skip("lokki").expect_err("unknown name");
        assert!(error.contains("loki-logs"), "{error}");
    }

    #[test]
    fn optional_accepts_the_services_the_stack_can_do_without() {
        assert_eq!(parse_optional(" loki ").as_deref(), Ok("loki"));
        assert!(parse_optional("promtail").is_ok());
        let error = parse_optional("prometheus").expect_err("Prometheus is not optional");
        assert!(error.contains("loki, promtail"), "{error}");
    }

    #[test]
    fn durations_must_be_positive() {
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(parse_positive_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_logs_window("500ms").is_err());
        assert_eq!(parse_logs_window("5m"), Ok(Duration::from_secs(300)));
    }
}
