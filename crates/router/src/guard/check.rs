//! One check of a color in Prometheus: its API request count, error ratio
//! and p95 latency over a rate window, from the backend job's own metrics,
//! and the verdict against the thresholds. Silence is never health: below
//! the minimum request count the result is `insufficient_data`.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use vigie_slo::{Kind, Objective, FAST_BURN};
use vigie_telemetry::Color;

use crate::guard::defaults;
use crate::prometheus_api::{PrometheusApi, QueryError};

pub use crate::guard_record::{CheckResult, RollbackReason};

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Thresholds {
    pub max_error_ratio: f64,
    pub max_p95_seconds: f64,
    pub min_requests: u64,
}

/// Which series a check reads: one color, and optionally one role (the
/// standby pre-check reads only `role="standby"` series).
#[derive(Debug, Clone, Copy)]
pub struct Selector<'a> {
    pub color: Color,
    pub role: Option<&'static str>,
    /// The matchers of the requests that count: [`DEFAULT_REQUESTS`], or
    /// the SLO file's `selector` for a guard judged by burn rate.
    pub requests: &'a str,
}

/// The backend job's API requests (health checks and /metrics have their own routes).
pub const DEFAULT_REQUESTS: &str = r#"job="backend",route=~"/api/.*""#;

impl Selector<'_> {
    fn matchers(&self, extra: &str) -> String {
        let role = self.role.map(|r| format!(r#",role="{r}""#)).unwrap_or_default();
        format!(r#"{{{},color="{}"{role}{extra}}}"#, self.requests.trim(), self.color)
    }

    /// When the color's serving process started, by its own metric.
    pub fn start_query(&self) -> String {
        format!(
            r#"max(process_start_time_seconds{{job="{}",color="{}"}})"#,
            defaults::GUARD_BACKEND_JOB,
            self.color
        )
    }

    /// Requests within `threshold` (a bucket bound) and all requests, for a latency SLI.
    pub fn latency_queries(&self, window: Duration, threshold: Duration) -> [String; 2] {
        let w = format!("{}s", window.as_secs());
        let le = vigie_slo::le_matcher(threshold.as_secs_f64());
        [
            format!(
                "sum(increase(http_request_duration_seconds_bucket{}[{w}]))",
                self.matchers(&format!(",{le}"))
            ),
            // The +Inf bucket, not `_count`: every convention has it once
            // normalised (stack/prometheus/prometheus.yml).
            format!(
                "sum(increase(http_request_duration_seconds_bucket{}[{w}]))",
                self.matchers(r#",le="+Inf""#)
            ),
        ]
    }

    /// The error budget left over the SLO period, per objective, from the
    /// stack's SLO recording rules (stack/prometheus/rules/slo.yml).
    pub fn budget_query(&self) -> String {
        format!(r#"slo:period_error_budget_remaining:ratio{{color="{}"}}"#, self.color)
    }

    /// The three PromQL queries: requests, 5xx answers, p95 latency.
    pub fn queries(&self, window: Duration) -> [String; 3] {
        let w = format!("{}s", window.as_secs());
        [
            format!("sum(increase(http_requests_total{}[{w}]))", self.matchers("")),
            format!(
                "sum(increase(http_requests_total{}[{w}]))",
                self.matchers(r#",status=~"5..""#)
            ),
            format!(
                "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{}[{w}])))",
                self.matchers("")
            ),
        ]
    }
}

/// What Prometheus said about a color over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    /// API requests in the window (Prometheus' `increase()`, rounded).
    pub requests: u64,
    /// Share of them answered 5xx; `None` without requests.
    pub error_ratio: Option<f64>,
    /// `None` when there is no latency data.
    pub p95_seconds: Option<f64>,
    pub window_seconds: u64,
    /// Seconds since the instance judged started, when known.
    pub instance_age_seconds: Option<u64>,
    /// With `--guard-slo`: each objective's error ratio over the window.
    pub slo: Vec<SloReading>,
}

/// One objective, as a check saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloReading {
    pub slo: String,
    /// The share of bad requests in the window; `None` without requests.
    pub error_ratio: Option<f64>,
    /// `error_ratio` over the objective's error budget.
    pub burn_rate: Option<f64>,
    /// The period's budget left (the SLO rules' series), when Prometheus has it.
    pub budget_remaining: Option<f64>,
}

/// The result of one check, with the values seen.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub result: CheckResult,
    /// Set when `result` is `breach`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breach: Option<RollbackReason>,
    pub requests: Option<u64>,
    pub error_ratio: Option<f64>,
    pub p95_seconds: Option<f64>,
    pub window_seconds: u64,
    /// Seconds since the instance judged started, when known: the window
    /// never reaches back before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_age_seconds: Option<u64>,
    /// With `--guard-slo`: the burn rate of each objective.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub slo: Vec<SloReading>,
    /// What was seen, for people.
    pub message: String,
}

impl Check {
    pub fn failed(error: &QueryError, window: Duration) -> Check {
        Check {
            result: CheckResult::PrometheusError,
            breach: None,
            requests: None,
            error_ratio: None,
            p95_seconds: None,
            window_seconds: window.as_secs(),
            instance_age_seconds: None,
            slo: Vec::new(),
            message: error.to_string(),
        }
    }
}

/// The rate window of a check made `elapsed` after the switch: the time
/// since the switch, so the window does not reach back into the color's
/// standby time, but at least [`defaults::GUARD_RATE_WINDOW_MIN_SECS`]
/// (three scrapes of the backend job) and at most
/// [`defaults::GUARD_RATE_WINDOW_MAX_SECS`].
pub fn rate_window(elapsed: Duration) -> Duration {
    let secs = elapsed.as_secs_f64().ceil() as u64;
    Duration::from_secs(secs.clamp(
        defaults::GUARD_RATE_WINDOW_MIN_SECS,
        defaults::GUARD_RATE_WINDOW_MAX_SECS,
    ))
}

/// The window a check may use: `wanted`, cut to the whole seconds since
/// the instance started (when known), so a redeployed color is judged on
/// its own requests only and never on those of the container it replaced.
pub fn instance_window(wanted: Duration, instance_age: Option<Duration>) -> Duration {
    match instance_age {
        Some(age) => wanted.min(Duration::from_secs(age.as_secs())),
        None => wanted,
    }
}

/// Seconds from `start` (Unix time) to now; 0 for a start in the future.
fn age_since(start_unix: f64) -> Duration {
    let now = OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9;
    Duration::try_from_secs_f64((now - start_unix).max(0.0)).unwrap_or_default()
}

/// Asks Prometheus about a color over `wanted`, cut by [`instance_window`]:
/// the instance started at the later of its `process_start_time_seconds`
/// and `seen_ready` (the router saw it become ready: a restart Prometheus
/// has not scraped yet). An instance younger than the shortest window
/// ([`defaults::GUARD_RATE_WINDOW_MIN_SECS`], three scrapes) reads as no
/// requests: `insufficient_data`, never a verdict on too few scrapes.
pub async fn measure(
    api: &PrometheusApi,
    selector: Selector<'_>,
    wanted: Duration,
    seen_ready: Option<OffsetDateTime>,
    objectives: &[Objective],
) -> Result<Reading, QueryError> {
    let started = api.scalar(&selector.start_query()).await?;
    let seen = seen_ready.map(|at| at.unix_timestamp_nanos() as f64 / 1e9);
    let start = match (started, seen) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let age = start.map(age_since);
    let window = instance_window(wanted, age);
    let instance_age_seconds = age.map(|a| a.as_secs());
    if window.as_secs() < defaults::GUARD_RATE_WINDOW_MIN_SECS {
        return Ok(Reading {
            requests: 0,
            error_ratio: None,
            p95_seconds: None,
            window_seconds: window.as_secs(),
            instance_age_seconds,
            slo: Vec::new(),
        });
    }
    let [requests, errors, p95] = selector.queries(window);
    let (requests, errors, p95) = tokio::join!(api.scalar(&requests), api.scalar(&errors), api.scalar(&p95));
    let requests = requests?.unwrap_or(0.0).max(0.0);
    let errors = errors?.unwrap_or(0.0).max(0.0);
    let p95_seconds = p95?;
    // Both counts are extrapolated alike; the ratio stays within 0..1.
    let error_ratio = (requests > 0.0).then(|| (errors / requests).min(1.0));
    let slo = measure_slos(api, selector, window, objectives, error_ratio).await?;
    Ok(Reading {
        requests: requests.round() as u64,
        error_ratio,
        p95_seconds,
        window_seconds: window.as_secs(),
        instance_age_seconds,
        slo,
    })
}

/// Each objective's error ratio over `window` (availability: the 5xx
/// share already measured; latency: the share above its threshold) and
/// burn rate, with the period's budget left when the SLO rules are loaded.
async fn measure_slos(
    api: &PrometheusApi,
    selector: Selector<'_>,
    window: Duration,
    objectives: &[Objective],
    availability_error_ratio: Option<f64>,
) -> Result<Vec<SloReading>, QueryError> {
    if objectives.is_empty() {
        return Ok(Vec::new());
    }
    let budgets = api.vector(&selector.budget_query(), "slo").await.unwrap_or_default();
    let mut readings = Vec::with_capacity(objectives.len());
    for objective in objectives {
        let error_ratio = match (objective.kind, objective.threshold) {
            (Kind::Latency, Some(threshold)) => {
                let [fast, all] = selector.latency_queries(window, threshold);
                let (fast, all) = tokio::join!(api.scalar(&fast), api.scalar(&all));
                let (fast, all) = (fast?.unwrap_or(0.0).max(0.0), all?.unwrap_or(0.0).max(0.0));
                (all > 0.0).then(|| (1.0 - fast / all).clamp(0.0, 1.0))
            }
            _ => availability_error_ratio,
        };
        readings.push(SloReading {
            slo: objective.name.clone(),
            error_ratio,
            burn_rate: error_ratio.map(|r| r / objective.budget()),
            budget_remaining: budgets
                .iter()
                .find(|(name, _)| *name == objective.name)
                .map(|(_, v)| *v),
        });
    }
    Ok(readings)
}

fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// The verdict on a reading.
pub fn evaluate(reading: &Reading, thresholds: &Thresholds) -> Check {
    let mut check = Check {
        result: CheckResult::Ok,
        breach: None,
        requests: Some(reading.requests),
        error_ratio: reading.error_ratio,
        p95_seconds: reading.p95_seconds,
        window_seconds: reading.window_seconds,
        instance_age_seconds: reading.instance_age_seconds,
        slo: reading.slo.clone(),
        message: String::new(),
    };
    let w = reading.window_seconds;
    if w < defaults::GUARD_RATE_WINDOW_MIN_SECS {
        check.result = CheckResult::InsufficientData;
        check.message = format!(
            "the instance started {w}s ago, less than the {}s of its own requests needed to judge",
            defaults::GUARD_RATE_WINDOW_MIN_SECS
        );
        return check;
    }
    if reading.requests < thresholds.min_requests {
        check.result = CheckResult::InsufficientData;
        check.message = format!(
            "{} API requests in the last {w}s, fewer than the {} needed to judge",
            reading.requests, thresholds.min_requests
        );
        return check;
    }
    let error_ratio = reading.error_ratio.unwrap_or(0.0);
    if error_ratio > thresholds.max_error_ratio {
        check.result = CheckResult::Breach;
        check.breach = Some(RollbackReason::GuardErrorRatio);
        check.message = format!(
            "error ratio {} > {} over the last {w}s ({} requests)",
            percent(error_ratio),
            percent(thresholds.max_error_ratio),
            reading.requests
        );
        return check;
    }
    match reading.p95_seconds {
        Some(p95) if p95 > thresholds.max_p95_seconds => {
            check.result = CheckResult::Breach;
            check.breach = Some(RollbackReason::GuardLatency);
            check.message = format!(
                "p95 latency {p95:.3}s > {:.3}s over the last {w}s ({} requests)",
                thresholds.max_p95_seconds, reading.requests
            );
        }
        Some(p95) => {
            check.message = format!(
                "error ratio {} <= {}, p95 latency {p95:.3}s <= {:.3}s over the last {w}s ({} requests)",
                percent(error_ratio),
                percent(thresholds.max_error_ratio),
                thresholds.max_p95_seconds,
                reading.requests
            );
        }
        None => {
            check.result = CheckResult::InsufficientData;
            check.message = format!("{} API requests in the last {w}s but no latency data", reading.requests);
        }
    }
    check
}

/// The verdict on a reading by burn rate (`--guard-slo`): a breach when an
/// objective's budget burns at the fast-burn rate or faster, the rate that
/// pages ([`FAST_BURN`]); the minimum request count still applies.
pub fn evaluate_slo(reading: &Reading, min_requests: u64) -> Check {
    let thresholds = Thresholds {
        max_error_ratio: 1.0,
        max_p95_seconds: f64::INFINITY,
        min_requests,
    };
    let mut check = evaluate(reading, &thresholds);
    if check.result != CheckResult::Ok
        && !(check.result == CheckResult::InsufficientData && reading.p95_seconds.is_none())
    {
        return check;
    }
    if reading.requests < min_requests || reading.window_seconds < defaults::GUARD_RATE_WINDOW_MIN_SECS {
        return check;
    }
    let w = reading.window_seconds;
    let describe = |s: &SloReading| match (s.burn_rate, s.error_ratio) {
        (Some(burn), Some(ratio)) => format!("{} burn rate {burn:.1}x ({})", s.slo, percent(ratio)),
        _ => format!("{} not measured", s.slo),
    };
    let seen: Vec<String> = reading.slo.iter().map(describe).collect();
    check.result = CheckResult::Ok;
    check.breach = None;
    if let Some(worst) = reading
        .slo
        .iter()
        .filter(|s| s.burn_rate.is_some_and(|b| b >= FAST_BURN))
        .max_by(|a, b| {
            a.burn_rate
                .partial_cmp(&b.burn_rate)
                .unwrap_or(std::cmp::Ordering::Equal)
        })
    {
        check.result = CheckResult::Breach;
        check.breach = Some(RollbackReason::GuardSloBurnRate);
        check.message = format!(
            "{} >= {FAST_BURN}x, the rate that pages, over the last {w}s ({} requests); {}",
            describe(worst),
            reading.requests,
            seen.join(", ")
        );
    } else {
        check.message = format!(
            "{}: under {FAST_BURN}x over the last {w}s ({} requests)",
            seen.join(", "),
            reading.requests
        );
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Thresholds = Thresholds {
        max_error_ratio: 0.05,
        max_p95_seconds: 0.5,
        min_requests: 20,
    };

    fn reading(requests: u64, error_ratio: f64, p95: f64) -> Reading {
        Reading {
            requests,
            error_ratio: Some(error_ratio),
            p95_seconds: Some(p95),
            window_seconds: 30,
            instance_age_seconds: None,
            slo: Vec::new(),
        }
    }

    #[test]
    fn judges_error_ratio_first_then_latency_and_never_reads_silence_as_health() {
        let judge = |r: Reading| {
            let check = evaluate(&r, &LIMITS);
            (check.result, check.breach)
        };
        assert_eq!(judge(reading(100, 0.01, 0.02)), (CheckResult::Ok, None));
        assert_eq!(
            judge(reading(100, 0.05, 0.5)),
            (CheckResult::Ok, None),
            "limits are inclusive"
        );
        assert_eq!(
            judge(reading(100, 0.3, 0.02)),
            (CheckResult::Breach, Some(RollbackReason::GuardErrorRatio))
        );
        assert_eq!(
            judge(reading(100, 0.3, 0.9)),
            (CheckResult::Breach, Some(RollbackReason::GuardErrorRatio))
        );
        assert_eq!(
            judge(reading(100, 0.0, 0.9)),
            (CheckResult::Breach, Some(RollbackReason::GuardLatency))
        );
        assert_eq!(judge(reading(19, 1.0, 9.0)), (CheckResult::InsufficientData, None));
        let no_requests = Reading {
            requests: 0,
            error_ratio: None,
            p95_seconds: None,
            window_seconds: 15,
            instance_age_seconds: None,
            slo: Vec::new(),
        };
        let check = evaluate(&no_requests, &LIMITS);
        assert_eq!(check.result, CheckResult::InsufficientData);
        assert!(check.message.contains("fewer than the 20 needed"), "{}", check.message);
        let no_latency = Reading {
            p95_seconds: None,
            ..reading(100, 0.0, 0.0)
        };
        assert_eq!(judge(no_latency), (CheckResult::InsufficientData, None));
    }

    #[test]
    fn by_slo_a_new_color_is_rolled_back_when_it_burns_at_the_paging_rate() {
        let slo = |name: &str, ratio: f64, budget: f64| SloReading {
            slo: name.into(),
            error_ratio: Some(ratio),
            burn_rate: Some(ratio / budget),
            budget_remaining: None,
        };
        // 1% errors against a 0.1% budget: 10x, under 14.4; 300 ms p95 is no
        // breach by itself (the thresholds are not used).
        let calm = Reading {
            slo: vec![slo("availability", 0.01, 0.001), slo("latency", 0.05, 0.01)],
            ..reading(100, 0.01, 0.3)
        };
        let check = evaluate_slo(&calm, 20);
        assert_eq!(
            (check.result, check.breach),
            (CheckResult::Ok, None),
            "{}",
            check.message
        );
        assert!(
            check.message.contains("availability burn rate 10.0x (1.0%)"),
            "{}",
            check.message
        );
        // 2% errors: 20x.
        let burning = Reading {
            slo: vec![slo("availability", 0.02, 0.001), slo("latency", 0.0, 0.01)],
            ..reading(100, 0.02, 0.01)
        };
        let check = evaluate_slo(&burning, 20);
        assert_eq!(
            (check.result, check.breach),
            (CheckResult::Breach, Some(RollbackReason::GuardSloBurnRate))
        );
        assert!(
            check
                .message
                .starts_with("availability burn rate 20.0x (2.0%) >= 14.4x"),
            "{}",
            check.message
        );
        // Latency alone can breach: 20% slow against a 1% budget.
        let slow = Reading {
            slo: vec![slo("availability", 0.0, 0.001), slo("latency", 0.2, 0.01)],
            ..reading(100, 0.0, 0.9)
        };
        assert_eq!(evaluate_slo(&slow, 20).breach, Some(RollbackReason::GuardSloBurnRate));
        // Too few requests: no verdict either way.
        let few = Reading {
            slo: burning.slo.clone(),
            ..reading(5, 0.02, 0.01)
        };
        assert_eq!(evaluate_slo(&few, 20).result, CheckResult::InsufficientData);
    }

    #[test]
    fn a_young_instance_is_judged_on_its_own_time_only() {
        let minute = Duration::from_secs(60);
        assert_eq!(instance_window(minute, None), minute);
        assert_eq!(
            instance_window(minute, Some(Duration::from_millis(20_900))),
            Duration::from_secs(20),
            "whole seconds since the start, never a sample before it"
        );
        assert_eq!(instance_window(minute, Some(Duration::from_secs(3600))), minute);
        let young = Reading {
            instance_age_seconds: Some(8),
            window_seconds: 8,
            ..reading(0, 0.0, 0.0)
        };
        let check = evaluate(&young, &LIMITS);
        assert_eq!(check.result, CheckResult::InsufficientData);
        assert!(check.message.contains("started 8s ago"), "{}", check.message);
    }

    #[test]
    fn the_rate_window_follows_the_time_since_the_switch_within_bounds() {
        assert_eq!(rate_window(Duration::from_secs(2)), Duration::from_secs(15));
        assert_eq!(rate_window(Duration::from_millis(20_300)), Duration::from_secs(21));
        assert_eq!(rate_window(Duration::from_secs(600)), Duration::from_secs(60));
    }

    #[test]
    fn queries_select_the_color_the_api_routes_and_optionally_the_role() {
        let [requests, errors, p95] = Selector {
            color: Color::Green,
            role: None,
            requests: DEFAULT_REQUESTS,
        }
        .queries(Duration::from_secs(15));
        assert_eq!(
            requests,
            r#"sum(increase(http_requests_total{job="backend",route=~"/api/.*",color="green"}[15s]))"#
        );
        assert_eq!(
            errors,
            r#"sum(increase(http_requests_total{job="backend",route=~"/api/.*",color="green",status=~"5.."}[15s]))"#
        );
        assert_eq!(
            p95,
            r#"histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{job="backend",route=~"/api/.*",color="green"}[15s])))"#
        );
        let [standby, ..] = Selector {
            color: Color::Blue,
            role: Some("standby"),
            requests: DEFAULT_REQUESTS,
        }
        .queries(Duration::from_secs(60));
        assert!(standby.contains(r#"color="blue",role="standby"}"#), "{standby}");
    }
}
