//! The switch guard. A guarded switch (`POST /switch {"guard": "2m"}`)
//! first checks the standby color it goes to, when Prometheus has data on
//! it, and refuses a color that is already failing (unless forced); after
//! the switch, the guard checks the new color in Prometheus every
//! `--guard-interval` until the window ends and switches back by itself, through
//! the serialized switch path, on a breach of a threshold or (by default)
//! when Prometheus cannot be queried.
//!
//! One guard runs at a time. A later switch ends it (`cancelled`): the
//! admin API cancels it when another switch succeeds, the guard notices a
//! switch it did not make at its next tick, and its rollback happens only
//! if no switch happened since its own ([`Switcher::rollback`]). Router
//! shutdown cancels it too. Every decision is a log line (`target: "guard"`),
//! a metric and part of `GET /status`.

pub mod check;
mod status;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinError;
use tokio::time::Instant;
use vigie_telemetry::Color;

use crate::guard::check::{
    evaluate, evaluate_slo, measure, rate_window, Check, CheckResult, RollbackReason, Selector, Thresholds,
};
use vigie_telemetry::event_at;
use vigie_telemetry::logging::Level;

use crate::guard_record::{GuardRecord, Verdict, VerdictResult};
use crate::metrics::RouterMetrics;
use crate::prometheus_api::PrometheusApi;
use crate::state_file::{now_ms, rfc3339};
use crate::switch::{SwitchOutcome, SwitchResult, Switcher};

pub use self::status::{GuardStatus, LastCheck, Settings};

/// Default values of the guard's flags (the flags are in
/// [`crate::config`]); durations in the flag syntax.
pub mod defaults {
    /// The compose service name of Prometheus.
    pub const PROMETHEUS_URL: &str = "http://prometheus:9090";
    /// Pause between two checks of a guarded switch: two scrapes of the
    /// backend job (5 s), so each check sees new samples.
    pub const GUARD_INTERVAL: &str = "10s";
    /// The threshold of the `VigieActiveErrorRatioHigh` alert.
    pub const GUARD_MAX_ERROR_RATIO: &str = "0.05";
    /// The threshold of the `VigieActiveLatencyHigh` alert, a histogram
    /// bucket boundary (so the p95 estimate is exact there).
    pub const GUARD_MAX_P95: &str = "500ms";
    /// API requests a check needs in its rate window to judge the color:
    /// 20 is 4 s of the traffic generator's 5 requests per second.
    pub const GUARD_MIN_REQUESTS: u64 = 20;
    /// One Prometheus query (connect, answer, body) may take this long.
    pub const GUARD_QUERY_TIMEOUT: &str = "5s";
    pub const GUARD_ON_PROMETHEUS_ERROR: &str = "rollback";
    /// The scrape job whose series the guard reads (stack/prometheus/prometheus.yml).
    pub const GUARD_BACKEND_JOB: &str = "backend";
    /// Shortest rate window: three scrapes of the backend job (every 5 s),
    /// so `increase()` always has two samples even across a target's
    /// relabelling at the switch.
    pub const GUARD_RATE_WINDOW_MIN_SECS: u64 = 15;
    /// Longest rate window, also the pre-check's window.
    pub const GUARD_RATE_WINDOW_MAX_SECS: u64 = 60;
    /// Longest guard window a switch may ask for.
    pub const GUARD_MAX_WINDOW_SECS: u64 = 24 * 3600;
    /// Shortest pause between two checks.
    pub const GUARD_MIN_INTERVAL_MS: u64 = 100;
}

/// What the guard does when Prometheus cannot be queried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnPrometheusError {
    /// Switch back (reason `guard_prometheus_error`); before a switch: refuse it.
    Rollback,
    /// Keep the new color; the failed checks are still reported.
    Keep,
}

impl OnPrometheusError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnPrometheusError::Rollback => "rollback",
            OnPrometheusError::Keep => "keep",
        }
    }
}

/// What the standby pre-check decided.
#[derive(Debug, Clone)]
pub struct Precheck {
    pub check: Check,
    /// The switch must not happen.
    pub refused: bool,
    /// The check failed but the switch was forced.
    pub forced: bool,
}

/// One guard window.
#[derive(Debug, Clone)]
struct Job {
    id: u64,
    color: Color,
    from: Color,
    version: String,
    from_version: String,
    started: OffsetDateTime,
    ends_at: OffsetDateTime,
    window: Duration,
    /// `started` and `ends_at` as instants, for the timers.
    start: Instant,
    end: Instant,
    /// The router's switch count right after the guarded switch.
    switch_number: u64,
    /// Judged by burn rate against the SLO file's objectives.
    by_slo: bool,
}

impl Job {
    fn record(&self, verdict: Option<Verdict>) -> GuardRecord {
        GuardRecord {
            switch: self.switch_number,
            color: self.color,
            from: self.from,
            version: self.version.clone(),
            from_version: self.from_version.clone(),
            started: self.started,
            ends_at: self.ends_at,
            window_seconds: self.window.as_secs(),
            by_slo: self.by_slo,
            verdict,
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    checks: u32,
    ok: u32,
}

#[derive(Default)]
struct State {
    next_id: u64,
    job: Option<Job>,
    running: bool,
    rolling_back: bool,
    /// Dropping or firing it stops the running guard's task.
    cancel: Option<watch::Sender<bool>>,
    tally: Tally,
    last: Option<LastCheck>,
    verdict: Option<Verdict>,
}

impl State {
    fn is_current(&self, job: &Job) -> bool {
        self.running && self.job.as_ref().is_some_and(|j| j.id == job.id)
    }
}

pub struct Guard {
    api: PrometheusApi,
    interval: Duration,
    thresholds: Thresholds,
    on_prometheus_error: OnPrometheusError,
    /// The SLO file's objectives, for guards judged by burn rate.
    slos: Option<Arc<vigie_slo::Slos>>,
    switcher: Arc<Switcher>,
    metrics: RouterMetrics,
    state: Mutex<State>,
    /// Woken whenever a guard starts or ends, for [`Guard::wait_verdict`].
    changed: tokio::sync::Notify,
    /// Set at shutdown: long polls answer at once instead of holding the drain.
    stopping: std::sync::atomic::AtomicBool,
}

/// What a guard judges by and how it reaches Prometheus.
pub struct GuardSettings {
    pub api: PrometheusApi,
    /// Pause between two checks.
    pub interval: Duration,
    pub thresholds: Thresholds,
    pub on_prometheus_error: OnPrometheusError,
    /// The SLO file, for a switch judged by burn rate.
    pub slos: Option<Arc<vigie_slo::Slos>>,
}

fn seconds_until(end: Instant) -> u64 {
    end.saturating_duration_since(Instant::now()).as_secs_f64().ceil() as u64
}

impl Guard {
    pub fn new(settings: GuardSettings, switcher: Arc<Switcher>, metrics: RouterMetrics) -> Arc<Guard> {
        let GuardSettings {
            api,
            interval,
            thresholds,
            on_prometheus_error,
            slos,
        } = settings;
        Arc::new(Guard {
            api,
            interval,
            thresholds,
            on_prometheus_error,
            slos,
            switcher,
            metrics,
            state: Mutex::new(State::default()),
            changed: tokio::sync::Notify::new(),
            stopping: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A switch asked for through the admin API, in a task of its own so
    /// that a client that hangs up leaves neither the switch nor its guard
    /// half done. A successful switch ends the running guard and, with a
    /// `window`, starts a new one on the color switched to.
    pub async fn switch_detached(
        self: &Arc<Self>,
        to: Color,
        reason: String,
        window: Option<Duration>,
        by_slo: bool,
    ) -> Result<SwitchOutcome, JoinError> {
        let guard = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = guard.switcher.switch(to, &reason).await;
            if outcome.result == SwitchResult::Ok {
                let cancelled = guard.cancel(&format!("superseded by a switch to {to}"));
                if let Some(window) = window {
                    let since = guard.switcher.routing.since();
                    guard.start(&outcome, window, since, by_slo);
                }
                // The guard's new record (or the verdict of the one ended)
                // is on disk before the client hears of the switch.
                if cancelled || window.is_some() {
                    let _ = guard.switcher.persist().await;
                }
            }
            outcome
        })
        .await
    }

    /// The longest guard window a switch may ask for.
    pub fn max_window() -> Duration {
        Duration::from_secs(defaults::GUARD_MAX_WINDOW_SECS)
    }

    /// Whether guards may judge by burn rate (an SLO file was given).
    pub fn has_slos(&self) -> bool {
        self.slos.is_some()
    }

    /// The objectives a guard judged by burn rate reads.
    fn objectives(&self, by_slo: bool) -> &[vigie_slo::Objective] {
        match (&self.slos, by_slo) {
            (Some(slos), true) => &slos.objectives,
            _ => &[],
        }
    }

    /// The requests a check counts: the SLO file's selector when judged by
    /// burn rate (the same requests the SLO rules count), else the API's.
    fn requests(&self, by_slo: bool) -> &str {
        match (&self.slos, by_slo) {
            (Some(slos), true) => &slos.selector,
            _ => check::DEFAULT_REQUESTS,
        }
    }

    /// A check's verdict on a reading, by burn rate or by the thresholds.
    fn judge(&self, reading: &check::Reading, by_slo: bool) -> Check {
        if by_slo {
            evaluate_slo(reading, self.thresholds.min_requests)
        } else {
            evaluate(reading, &self.thresholds)
        }
    }

    /// The pause between two checks: a window must be at least this long.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The guard status once the guard of switch `switch` has a verdict, a
    /// later guard replaced it, or `wait` ran out (then it still runs).
    pub async fn wait_verdict(&self, switch: u64, wait: Duration) -> GuardStatus {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the look, so an end in between is not missed.
            notified.as_mut().enable();
            let status = self.status();
            let stopping = self.stopping.load(std::sync::atomic::Ordering::SeqCst);
            if !status.running || status.switch != Some(switch) || stopping {
                return status;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.status();
            }
        }
    }

    /// Checks `color` as the standby over the last minute, before a switch
    /// to it. A standby with no traffic gives `insufficient_data` and does not
    /// stop the switch; a breach does, unless `force`; so does a failed
    /// query when the guard rolls back on Prometheus errors.
    pub async fn precheck(&self, color: Color, force: bool, by_slo: bool) -> Precheck {
        let window = Duration::from_secs(defaults::GUARD_RATE_WINDOW_MAX_SECS);
        let selector = Selector {
            color,
            role: Some("standby"),
            requests: self.requests(by_slo),
        };
        let seen_ready = self.switcher.routing.upstream(color).health().ready_since;
        let check = match measure(&self.api, selector, window, seen_ready, self.objectives(by_slo)).await {
            Ok(reading) => self.judge(&reading, by_slo),
            Err(error) => Check::failed(&error, window),
        };
        self.metrics.guard_precheck(check.result);
        let failing = match check.result {
            CheckResult::Breach => true,
            CheckResult::PrometheusError => self.on_prometheus_error == OnPrometheusError::Rollback,
            CheckResult::Ok | CheckResult::InsufficientData => false,
        };
        let decision = match (failing, force) {
            (false, _) => "switch",
            (true, false) => "refuse",
            (true, true) => "switch (forced)",
        };
        event_at!(
            target: "guard", if failing { Level::WARN } else { Level::INFO },
            color = %color, role = "standby", result = check.result.as_str(),
            error_ratio = check.error_ratio, p95_seconds = check.p95_seconds, requests = check.requests,
            window_seconds = check.window_seconds, instance_age_seconds = check.instance_age_seconds,
            decision, detail = %check.message,
            "guard precheck"
        );
        Precheck {
            check,
            refused: failing && !force,
            forced: failing && force,
        }
    }

    /// Starts guarding the color a switch went to (`outcome`, at `since`)
    /// for `window`; a running guard is cancelled first. The caller saves
    /// the state ([`Switcher::persist`]).
    pub fn start(self: &Arc<Self>, outcome: &SwitchOutcome, window: Duration, since: OffsetDateTime, by_slo: bool) {
        let job = |id| {
            let lag = Duration::try_from(now_ms() - since).unwrap_or_default();
            let start = Instant::now().checked_sub(lag).unwrap_or_else(Instant::now);
            Job {
                id,
                color: outcome.to,
                from: outcome.from,
                version: outcome.to_version.clone(),
                from_version: outcome.from_version.clone(),
                started: since,
                ends_at: since + window,
                window,
                start,
                end: start + window,
                switch_number: outcome.switch_number,
                by_slo,
            }
        };
        self.run(job, "guard started");
    }

    /// Makes the job `make(id)` the running guard and spawns its task.
    fn run(self: &Arc<Self>, make: impl FnOnce(u64) -> Job, message: &'static str) {
        let (cancel, cancelled) = watch::channel(false);
        let job = {
            let mut state = self.state.lock();
            let _ = self.cancel_locked(&mut state, "replaced by a new guarded switch");
            state.next_id += 1;
            let job = make(state.next_id);
            state.job = Some(job.clone());
            state.running = true;
            state.rolling_back = false;
            state.cancel = Some(cancel);
            state.tally = Tally::default();
            state.last = None;
            state.verdict = None;
            self.switcher.set_guard_record(Some(job.record(None)));
            job
        };
        self.metrics.set_guard_running(true);
        self.changed.notify_waiters();
        tracing::info!(
            target: "guard",
            color = %job.color, from = %job.from, version = %job.version, from_version = %job.from_version,
            switch = job.switch_number, judge = if job.by_slo { "slo" } else { "thresholds" },
            window_seconds = job.window.as_secs(),
            time_left_seconds = seconds_until(job.end), ends_at = %rfc3339(job.ends_at),
            interval_seconds = self.interval.as_secs_f64(), max_error_ratio = self.thresholds.max_error_ratio,
            max_p95_seconds = self.thresholds.max_p95_seconds, min_requests = self.thresholds.min_requests,
            on_prometheus_error = self.on_prometheus_error.as_str(), prometheus_url = %self.api.url(),
            "{message}"
        );
        tokio::spawn(Arc::clone(self).watch(job, cancelled));
    }

    /// At the router's start: takes up the guard saved with the state. A
    /// running one resumes for what is left of its window; one whose window
    /// ended while the router was down gets an `interrupted` verdict; one
    /// that a later switch superseded, `cancelled`. A finished one is shown
    /// as the last guard.
    pub fn resume(self: &Arc<Self>, record: GuardRecord) {
        let now = now_ms();
        let window = Duration::from_secs(record.window_seconds);
        let elapsed = Duration::try_from(now - record.started).unwrap_or_default();
        let start = Instant::now().checked_sub(elapsed).unwrap_or_else(Instant::now);
        let job = |id| Job {
            id,
            color: record.color,
            from: record.from,
            version: record.version.clone(),
            from_version: record.from_version.clone(),
            started: record.started,
            ends_at: record.ends_at,
            window,
            start,
            end: start + window,
            switch_number: record.switch,
            by_slo: record.by_slo,
        };
        if let Some(verdict) = record.verdict.clone() {
            let mut state = self.state.lock();
            state.next_id += 1;
            state.job = Some(job(state.next_id));
            state.verdict = Some(verdict);
            self.switcher.set_guard_record(Some(record));
            return;
        }
        let routing = &self.switcher.routing;
        // The guard's own switch back is saved before its verdict is: a
        // stop in between leaves exactly one more switch, back to `from`.
        let rolled_back = routing.switches() == record.switch + 1 && routing.active() == record.from;
        let ended = if rolled_back {
            Some((
                VerdictResult::RolledBack,
                format!(
                    "switched back to {} before the router stopped; the check's figures were not saved",
                    record.from
                ),
            ))
        } else if routing.switches() != record.switch || routing.active() != record.color {
            Some((VerdictResult::Cancelled, "superseded by another switch".to_owned()))
        } else if now >= record.ends_at {
            Some((
                VerdictResult::Interrupted,
                format!(
                    "the window ended at {} while the router was not running; {} kept, not judged",
                    rfc3339(record.ends_at),
                    record.color
                ),
            ))
        } else {
            None
        };
        match ended {
            None => self.run(job, "guard resumed"),
            Some((result, reason)) => {
                {
                    let mut state = self.state.lock();
                    state.next_id += 1;
                    state.job = Some(job(state.next_id));
                    state.running = true;
                }
                tracing::warn!(target: "guard", color = %record.color, result = result.as_str(), reason = %reason, "guard ended");
                let job = self.state.lock().job.clone();
                if let Some(job) = job {
                    self.end(&job, result, reason);
                }
            }
        }
    }

    /// At shutdown: stops the running guard's task and leaves its record
    /// as saved (running), for the next start to resume.
    pub fn stop(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_waiters();
        let mut state = self.state.lock();
        if let Some(cancel) = state.cancel.take() {
            let _ = cancel.send(true);
        }
        if state.running {
            let color = state.job.as_ref().map(|j| j.color);
            tracing::info!(target: "guard", color = ?color, "guard paused for the shutdown; the next start resumes it");
        }
    }

    /// Ends the running guard, if any, with a `cancelled` verdict (true
    /// then). A guard already switching back finishes that instead.
    pub fn cancel(&self, reason: &str) -> bool {
        let mut state = self.state.lock();
        self.cancel_locked(&mut state, reason)
    }

    fn cancel_locked(&self, state: &mut State, reason: &str) -> bool {
        if !state.running || state.rolling_back {
            return false;
        }
        let Some(job) = state.job.clone() else { return false };
        state.running = false;
        if let Some(cancel) = state.cancel.take() {
            let _ = cancel.send(true);
        }
        let verdict = Verdict {
            result: VerdictResult::Cancelled,
            color: job.color,
            reason: reason.to_owned(),
            at: now_ms(),
        };
        self.switcher.set_guard_record(Some(job.record(Some(verdict.clone()))));
        state.verdict = Some(verdict);
        self.metrics.set_guard_running(false);
        self.changed.notify_waiters();
        tracing::info!(target: "guard", color = %job.color, result = "cancelled", reason, checks = state.tally.checks, "guard cancelled");
        true
    }

    pub fn status(&self) -> GuardStatus {
        let state = self.state.lock();
        let job = state.job.as_ref();
        GuardStatus {
            running: state.running,
            switch: job.map(|j| j.switch_number),
            color: job.map(|j| j.color),
            version: job.map(|j| j.version.clone()),
            from_version: job.map(|j| j.from_version.clone()),
            judge: job.map(|j| if j.by_slo { "slo" } else { "thresholds" }),
            from: job.map(|j| j.from),
            started: job.map(|j| rfc3339(j.started)),
            ends_at: job.map(|j| rfc3339(j.ends_at)),
            window_seconds: job.map(|j| j.window.as_secs()),
            time_left_seconds: job.map(|j| if state.running { seconds_until(j.end) } else { 0 }),
            checks: state.tally.checks,
            last: state.last.clone(),
            verdict: state.verdict.as_ref().map(status::VerdictStatus::from),
            settings: Settings {
                prometheus_url: self.api.url().to_string(),
                interval_seconds: self.interval.as_secs_f64(),
                max_error_ratio: self.thresholds.max_error_ratio,
                max_p95_seconds: self.thresholds.max_p95_seconds,
                min_requests: self.thresholds.min_requests,
                on_prometheus_error: self.on_prometheus_error,
                slo_objectives: self
                    .slos
                    .iter()
                    .flat_map(|s| &s.objectives)
                    .map(|o| format!("{} {}%", o.name, o.objective_percent))
                    .collect(),
            },
        }
    }

    /// The guard's task: a check every interval and one at the end of the
    /// window; returns on a rollback, at the end, or when cancelled.
    async fn watch(self: Arc<Self>, job: Job, mut cancelled: watch::Receiver<bool>) {
        let mut next = job.start + self.interval;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next.min(job.end)) => {}
                _ = cancelled.changed() => return,
            }
            if self.switcher.routing.switches() != job.switch_number {
                self.end(
                    &job,
                    VerdictResult::Cancelled,
                    "superseded by another switch".to_owned(),
                );
                return;
            }
            let last = Instant::now() >= job.end;
            let window = rate_window(job.start.elapsed());
            let selector = Selector {
                color: job.color,
                role: None,
                requests: self.requests(job.by_slo),
            };
            let seen_ready = self.switcher.routing.upstream(job.color).health().ready_since;
            let measured = tokio::select! {
                measured = measure(&self.api, selector, window, seen_ready, self.objectives(job.by_slo)) => measured,
                _ = cancelled.changed() => return,
            };
            let check = match measured {
                Ok(reading) => self.judge(&reading, job.by_slo),
                Err(error) => Check::failed(&error, window),
            };
            if !self.record(&job, &check) {
                return;
            }
            let rollback = match (check.result, check.breach) {
                (CheckResult::Breach, Some(reason)) => Some(reason),
                (CheckResult::PrometheusError, _) if self.on_prometheus_error == OnPrometheusError::Rollback => {
                    Some(RollbackReason::GuardPrometheusError)
                }
                _ => None,
            };
            if let Some(reason) = rollback {
                self.roll_back(&job, reason, &check).await;
                return;
            }
            if last {
                self.finish(&job);
                return;
            }
            // A check slower than the interval delays the next one rather
            // than causing a burst.
            next = (next + self.interval).max(Instant::now());
        }
    }

    /// Logs and counts a check and keeps it as the last one; false when
    /// this guard is no longer the running one.
    fn record(&self, job: &Job, check: &Check) -> bool {
        self.metrics.guard_check(check.result);
        let level = match check.result {
            CheckResult::Ok | CheckResult::InsufficientData => Level::INFO,
            CheckResult::Breach | CheckResult::PrometheusError => Level::WARN,
        };
        event_at!(
            target: "guard", level,
            color = %job.color, result = check.result.as_str(), error_ratio = check.error_ratio,
            p95_seconds = check.p95_seconds, requests = check.requests, window_seconds = check.window_seconds,
            instance_age_seconds = check.instance_age_seconds,
            time_left_seconds = seconds_until(job.end), detail = %check.message,
            "guard check"
        );
        let mut state = self.state.lock();
        if !state.is_current(job) {
            return false;
        }
        state.tally.checks += 1;
        if check.result == CheckResult::Ok {
            state.tally.ok += 1;
        }
        state.last = Some(LastCheck {
            check: check.clone(),
            at: rfc3339(now_ms()),
        });
        true
    }

    /// Switches back to the color the guarded switch came from.
    async fn roll_back(self: &Arc<Self>, job: &Job, reason: RollbackReason, check: &Check) {
        {
            let mut state = self.state.lock();
            if !state.is_current(job) {
                return;
            }
            state.rolling_back = true;
        }
        let outcome = self
            .switcher
            .rollback_detached(job.from, reason.as_str(), job.switch_number)
            .await;
        let join_failure = outcome.as_ref().err().map(ToString::to_string);
        let (level, result, error, verdict, text) = match &outcome {
            Ok(Some(outcome)) if outcome.result == SwitchResult::Ok => {
                self.metrics.guard_rollback(reason);
                (
                    Level::WARN,
                    "ok",
                    None,
                    VerdictResult::RolledBack,
                    format!("{}: {}; switched back to {}", reason.as_str(), check.message, job.from),
                )
            }
            Ok(Some(outcome)) => (
                Level::ERROR,
                outcome.result.as_str(),
                Some(outcome.reason.as_str()),
                VerdictResult::RollbackFailed,
                format!(
                    "{}: {}; the switch back to {} was {}: {}",
                    reason.as_str(),
                    check.message,
                    job.from,
                    outcome.result.as_str(),
                    outcome.reason
                ),
            ),
            Ok(None) => (
                Level::INFO,
                "superseded",
                None,
                VerdictResult::Cancelled,
                "superseded by another switch before the rollback".to_owned(),
            ),
            Err(error) => (
                Level::ERROR,
                "failed",
                join_failure.as_deref(),
                VerdictResult::RollbackFailed,
                format!("the switch back to {} failed: {error}", job.from),
            ),
        };
        event_at!(
            target: "guard", level,
            color = %job.color, to = %job.from, reason = reason.as_str(), result,
            error_ratio = check.error_ratio, p95_seconds = check.p95_seconds, requests = check.requests,
            window_seconds = check.window_seconds, detail = %check.message, error,
            "guard rollback"
        );
        self.end(job, verdict, text);
    }

    /// The end of the window without a rollback.
    fn finish(self: &Arc<Self>, job: &Job) {
        let (tally_ok, checks, last) = {
            let state = self.state.lock();
            (state.tally.ok, state.tally.checks, state.last.clone())
        };
        let last_result = last.as_ref().map(|l| l.check.result);
        let (verdict, text) = if last_result == Some(CheckResult::PrometheusError) {
            (
                VerdictResult::PrometheusError,
                format!(
                    "the window ended on a failed Prometheus query ({}); {} kept (--guard-on-prometheus-error keep)",
                    last.as_ref().map(|l| l.check.message.as_str()).unwrap_or_default(),
                    job.color
                ),
            )
        } else if tally_ok > 0 {
            (
                VerdictResult::Passed,
                format!("{tally_ok} of {checks} checks ok, none over the thresholds"),
            )
        } else {
            (
                VerdictResult::InsufficientData,
                format!(
                    "no check saw the {} API requests needed to judge; {} kept",
                    self.thresholds.min_requests, job.color
                ),
            )
        };
        let check = last.map(|l| l.check);
        let (error_ratio, p95_seconds, requests) = check
            .as_ref()
            .map_or((None, None, None), |c| (c.error_ratio, c.p95_seconds, c.requests));
        if verdict == VerdictResult::Passed {
            tracing::info!(
                target: "guard",
                color = %job.color, result = verdict.as_str(), checks, ok_checks = tally_ok,
                error_ratio, p95_seconds, requests, reason = %text,
                "guard passed"
            );
        } else {
            tracing::warn!(
                target: "guard",
                color = %job.color, result = verdict.as_str(), checks, ok_checks = tally_ok,
                error_ratio, p95_seconds, requests, reason = %text,
                "guard ended"
            );
        }
        self.end(job, verdict, text);
    }

    /// Records the verdict of `job` if it is still the current guard.
    fn end(self: &Arc<Self>, job: &Job, result: VerdictResult, reason: String) {
        let mut state = self.state.lock();
        if state.job.as_ref().map(|j| j.id) != Some(job.id) || (!state.running && !state.rolling_back) {
            return;
        }
        if result == VerdictResult::Cancelled {
            tracing::info!(target: "guard", color = %job.color, result = "cancelled", reason = %reason, checks = state.tally.checks, "guard cancelled");
        }
        state.running = false;
        state.rolling_back = false;
        state.cancel = None;
        let verdict = Verdict {
            result,
            color: job.color,
            reason,
            at: now_ms(),
        };
        self.switcher.set_guard_record(Some(job.record(Some(verdict.clone()))));
        state.verdict = Some(verdict);
        self.metrics.set_guard_running(false);
        drop(state);
        // Saved, then told to the waiting clients: a verdict a client saw
        // is one a restart finds. Writes are serialized and each takes the
        // latest state, so the file ends with this verdict.
        let guard = Arc::clone(self);
        tokio::spawn(async move {
            let _ = guard.switcher.persist().await;
            guard.changed.notify_waiters();
        });
    }
}
