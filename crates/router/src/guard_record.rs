//! What a guard window is and how it ended: saved with the router's state
//! (so a restarted router resumes a running guard) and shown by `/status`.
//! Plain data, with the results and rollback reasons of its checks (which
//! the metrics count); the guard ([`crate::guard`]) fills it in.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use vigie_telemetry::Color;

/// How a guard ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The window ended while the router was not running: kept, not judged.
    Interrupted,
    /// Another switch or a new guard ended it.
    Cancelled,
}

impl VerdictResult {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictResult::Passed => "passed",
            VerdictResult::RolledBack => "rolled_back",
            VerdictResult::RollbackFailed => "rollback_failed",
            VerdictResult::InsufficientData => "insufficient_data",
            VerdictResult::PrometheusError => "prometheus_error",
            VerdictResult::Interrupted => "interrupted",
            VerdictResult::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub result: VerdictResult,
    /// The guarded color.
    pub color: Color,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// One guarded switch: the color watched, its window, and (once over) the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardRecord {
    /// The router's switch count right after the guarded switch: the
    /// guard's identity, the same across router restarts.
    pub switch: u64,
    pub color: Color,
    pub from: Color,
    /// The versions of the two colors at the switch.
    pub version: String,
    pub from_version: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    pub window_seconds: u64,
    /// Judged by error budget burn rate (`--guard-slo`), not the thresholds.
    #[serde(default)]
    pub by_slo: bool,
    /// `None` while the guard runs.
    pub verdict: Option<Verdict>,
}

/// What a check concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckResult {
    /// Enough requests, error ratio and p95 within the thresholds.
    Ok,
    /// A threshold is exceeded.
    Breach,
    /// Fewer requests than the minimum (or no latency data): neither healthy nor failing.
    InsufficientData,
    /// Prometheus could not be queried.
    PrometheusError,
}

impl CheckResult {
    pub const ALL: [CheckResult; 4] = [
        CheckResult::Ok,
        CheckResult::Breach,
        CheckResult::InsufficientData,
        CheckResult::PrometheusError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::Ok => "ok",
            CheckResult::Breach => "breach",
            CheckResult::InsufficientData => "insufficient_data",
            CheckResult::PrometheusError => "prometheus_error",
        }
    }
}

/// Why a guard switches back: the `reason` of the rollback switch and the
/// label of `vigie_router_guard_rollbacks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackReason {
    GuardErrorRatio,
    GuardLatency,
    GuardPrometheusError,
    /// `--guard-slo`: an objective's budget burning at the fast-burn rate.
    GuardSloBurnRate,
}

impl RollbackReason {
    pub const ALL: [RollbackReason; 4] = [
        RollbackReason::GuardErrorRatio,
        RollbackReason::GuardLatency,
        RollbackReason::GuardPrometheusError,
        RollbackReason::GuardSloBurnRate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RollbackReason::GuardErrorRatio => "guard_error_ratio",
            RollbackReason::GuardLatency => "guard_latency",
            RollbackReason::GuardPrometheusError => "guard_prometheus_error",
            RollbackReason::GuardSloBurnRate => "guard_slo_burn_rate",
        }
    }
}
