//! What `GET /status` shows of the guard: the running guard or the last
//! one, its last check and its verdict.

use serde::Serialize;
use vigie_telemetry::Color;

use crate::guard::check::Check;
use crate::guard::OnPrometheusError;
use crate::guard_record::{Verdict, VerdictResult};
use crate::state_file::rfc3339;

/// A verdict as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct VerdictStatus {
    pub result: VerdictResult,
    pub color: Color,
    pub reason: String,
    pub at: String,
}

impl From<&Verdict> for VerdictStatus {
    fn from(verdict: &Verdict) -> Self {
        VerdictStatus {
            result: verdict.result,
            color: verdict.color,
            reason: verdict.reason.clone(),
            at: rfc3339(verdict.at),
        }
    }
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
    /// The objectives a `--guard-slo` switch is judged against (the SLO
    /// file), e.g. `availability 99.9%`; empty without one.
    pub slo_objectives: Vec<String>,
}

/// `GET /status`'s `guard` object: the running guard, or the last one.
#[derive(Debug, Clone, Serialize)]
pub struct GuardStatus {
    pub running: bool,
    /// The switch count the guarded switch left: the guard's identity
    /// (what `vigie switch --wait` waits for), kept across restarts.
    pub switch: Option<u64>,
    pub color: Option<Color>,
    /// The version of the guarded color, and of the one it came from.
    pub version: Option<String>,
    pub from_version: Option<String>,
    /// `thresholds`, or `slo` (judged by error budget burn rate).
    pub judge: Option<&'static str>,
    pub from: Option<Color>,
    pub started: Option<String>,
    pub ends_at: Option<String>,
    pub window_seconds: Option<u64>,
    pub time_left_seconds: Option<u64>,
    pub checks: u32,
    pub last: Option<LastCheck>,
    /// How the last guard ended; `null` while it runs.
    pub verdict: Option<VerdictStatus>,
    pub settings: Settings,
}
