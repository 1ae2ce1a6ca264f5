//! What `GET /status` shows of the guard: the running guard or the last
//! one, its last check and its verdict.

use serde::Serialize;
use vigie_telemetry::Color;

use crate::guard::check::Check;
use crate::guard::OnPrometheusError;

/// How a guard ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictResult {
    /// The window ended with no breach and at least one check with enough data.
    Passed,
    /// A breach (or a Prometheus error, by default) switched back.
    RolledBack,
    /// The switch back was refused (the old color not ready): the new color stays.
    RollbackFailed,
    /// The window ended without one check having enough requests: kept, with a warning.
    InsufficientData,
    /// With `--guard-on-prometheus-error keep`, the window ended on a failed query: kept.
    PrometheusError,
    /// Another switch, a new guard or the router's shutdown ended it.
    Cancelled,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub result: VerdictResult,
    /// The guarded color.
    pub color: Color,
    pub reason: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastCheck {
    #[serde(flatten)]
    pub check: Check,
    pub at: String,
}

/// The guard's configuration, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub prometheus_url: String,
    pub interval_seconds: f64,
    pub max_error_ratio: f64,
    pub max_p95_seconds: f64,
    pub min_requests: u64,
    pub on_prometheus_error: OnPrometheusError,
}

/// `GET /status`'s `guard` object: the running guard, or the last one.
#[derive(Debug, Clone, Serialize)]
pub struct GuardStatus {
    pub running: bool,
    pub color: Option<Color>,
    pub from: Option<Color>,
    pub started: Option<String>,
    pub ends_at: Option<String>,
    pub window_seconds: Option<u64>,
    pub time_left_seconds: Option<u64>,
    pub checks: u32,
    pub last: Option<LastCheck>,
    /// How the last guard ended; `null` while it runs.
    pub verdict: Option<Verdict>,
    pub settings: Settings,
}

impl VerdictResult {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictResult::Passed => "passed",
            VerdictResult::RolledBack => "rolled_back",
            VerdictResult::RollbackFailed => "rollback_failed",
            VerdictResult::InsufficientData => "insufficient_data",
            VerdictResult::PrometheusError => "prometheus_error",
            VerdictResult::Cancelled => "cancelled",
        }
    }
}
