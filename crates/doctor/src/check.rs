//! What a check is: its id, the component it looks at, and its outcome
//! (status, what it saw, and on failure what to look at).

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// The service a check looks at; `--skip <component>` skips all its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Router,
    Prometheus,
    Loki,
    Tempo,
    Grafana,
    Alertmanager,
}

impl Component {
    pub const ALL: [Component; 6] = [
        Component::Router,
        Component::Prometheus,
        Component::Loki,
        Component::Tempo,
        Component::Grafana,
        Component::Alertmanager,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Component::Router => "router",
            Component::Prometheus => "prometheus",
            Component::Loki => "loki",
            Component::Tempo => "tempo",
            Component::Grafana => "grafana",
            Component::Alertmanager => "alertmanager",
        }
    }
}

/// Every check the doctor runs, in the order of its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckId {
    RouterActive,
    PrometheusTargets,
    PrometheusRules,
    PrometheusAlerts,
    LokiReady,
    LokiLogs,
    TempoReady,
    TempoTraces,
    GrafanaHealth,
    GrafanaDatasources,
    GrafanaDashboards,
    AlertmanagerReady,
}

impl CheckId {
    pub const ALL: [CheckId; 12] = [
        CheckId::RouterActive,
        CheckId::PrometheusTargets,
        CheckId::PrometheusRules,
        CheckId::PrometheusAlerts,
        CheckId::LokiReady,
        CheckId::LokiLogs,
        CheckId::TempoReady,
        CheckId::TempoTraces,
        CheckId::GrafanaHealth,
        CheckId::GrafanaDatasources,
        CheckId::GrafanaDashboards,
        CheckId::AlertmanagerReady,
    ];

    /// Stable identifier, for `--skip` and the JSON report.
    pub fn id(self) -> &'static str {
        match self {
            CheckId::RouterActive => "router-active",
            CheckId::PrometheusTargets => "prometheus-targets",
            CheckId::PrometheusRules => "prometheus-rules",
            CheckId::PrometheusAlerts => "prometheus-alerts",
            CheckId::LokiReady => "loki-ready",
            CheckId::LokiLogs => "loki-logs",
            CheckId::TempoReady => "tempo-ready",
            CheckId::TempoTraces => "tempo-traces",
            CheckId::GrafanaHealth => "grafana-health",
            CheckId::GrafanaDatasources => "grafana-datasources",
            CheckId::GrafanaDashboards => "grafana-dashboards",
            CheckId::AlertmanagerReady => "alertmanager-ready",
        }
    }

    /// The name on the human report's line.
    pub fn title(self) -> &'static str {
        match self {
            CheckId::RouterActive => "router active color",
            CheckId::PrometheusTargets => "prometheus targets",
            CheckId::PrometheusRules => "prometheus rules",
            CheckId::PrometheusAlerts => "prometheus alerts",
            CheckId::LokiReady => "loki ready",
            CheckId::LokiLogs => "loki logs",
            CheckId::TempoReady => "tempo ready",
            CheckId::TempoTraces => "tempo traces",
            CheckId::GrafanaHealth => "grafana health",
            CheckId::GrafanaDatasources => "grafana datasources",
            CheckId::GrafanaDashboards => "grafana dashboards",
            CheckId::AlertmanagerReady => "alertmanager ready",
        }
    }

    pub fn component(self) -> Component {
        match self {
            CheckId::RouterActive => Component::Router,
            CheckId::PrometheusTargets | CheckId::PrometheusRules | CheckId::PrometheusAlerts => Component::Prometheus,
            CheckId::LokiReady | CheckId::LokiLogs => Component::Loki,
            CheckId::TempoReady | CheckId::TempoTraces => Component::Tempo,
            CheckId::GrafanaHealth | CheckId::GrafanaDatasources | CheckId::GrafanaDashboards => Component::Grafana,
            CheckId::AlertmanagerReady => Component::Alertmanager,
        }
    }
}

/// A check's verdict. Only `Fail` makes the doctor exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, but something deserves a look (e.g. an alert fires).
    Warn,
    Fail,
    Skip,
}

impl Status {
    /// The status column of the human report.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Said of an `--optional` service that is not running, on its lines.
pub const NOT_RUNNING: &str = "not running (optional)";

/// What a check found.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: Status,
    /// What it saw, one line.
    pub detail: String,
    /// What to look at, when the status is not ok.
    pub hint: Option<String>,
    /// Facts for scripts (`--json`), e.g. the down targets.
    pub data: Value,
    /// A state that passes by itself (a target not scraped yet): `--wait`
    /// checks again, as for a failure.
    pub settling: bool,
}

impl Outcome {
    fn new(status: Status, detail: impl Into<String>) -> Self {
        Outcome {
            status,
            detail: detail.into(),
            hint: None,
            data: Value::Null,
            settling: false,
        }
    }

    pub fn ok(detail: impl Into<String>) -> Self {
        Outcome::new(Status::Ok, detail)
    }

    pub fn warn(detail: impl Into<String>) -> Self {
        Outcome::new(Status::Warn, detail)
    }

    pub fn fail(detail: impl Into<String>) -> Self {
        Outcome::new(Status::Fail, detail)
    }

    /// Not checked, for a reason other than `--skip` (the detail says which).
    pub fn skip(detail: impl Into<String>) -> Self {
        Outcome::new(Status::Skip, detail)
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    pub fn settling(mut self) -> Self {
        self.settling = true;
        self
    }
}

/// A check that could not get what it needed: the failure line and its hint.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub detail: String,
    pub hint: Option<String>,
    /// No answer at all (refused, timed out), as opposed to a bad one.
    pub unreachable: bool,
}

impl Failure {
    pub fn new(detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Failure {
            detail: detail.into(),
            hint: Some(hint.into()),
            unreachable: false,
        }
    }

    pub fn unreachable(mut self) -> Self {
        self.unreachable = true;
        self
    }
}

impl From<Failure> for Outcome {
    fn from(failure: Failure) -> Self {
        Outcome {
            status: Status::Fail,
            detail: failure.detail,
            hint: failure.hint,
            data: Value::Null,
            settling: false,
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub id: &'static str,
    pub component: Component,
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub data: Value,
    /// Passes by itself shortly (see [`Outcome::settling`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub settling: bool,
    pub elapsed_ms: u64,
}

impl CheckResult {
    pub fn new(id: CheckId, outcome: Outcome, elapsed: Duration) -> Self {
        CheckResult {
            id: id.id(),
            component: id.component(),
            name: id.title(),
            status: outcome.status,
            detail: outcome.detail,
            hint: outcome.hint,
            data: outcome.data,
            settling: outcome.settling,
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        }
    }

    pub fn skipped(id: CheckId) -> Self {
        CheckResult::new(id, Outcome::new(Status::Skip, "skipped (--skip)"), Duration::ZERO)
    }
}
