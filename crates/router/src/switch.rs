//! A switch, kamal-proxy style: check the target's readiness with a
//! deadline → flip the active color → persist the state and the targets
//! file → drain the old color with a deadline. Switches are serialized by
//! one lock, and run in their own task so that an admin client that hangs
//! up cannot leave one half done (the admin API's through
//! [`crate::guard::Guard::switch_detached`], a guard's rollback through
//! [`Switcher::rollback_detached`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Mutex;
use tokio::task::JoinError;
use vigie_telemetry::Color;

use vigie_telemetry::event_at;
use vigie_telemetry::logging::Level;

use crate::guard_record::GuardRecord;
use crate::health::{self, HealthCheck};
use crate::metrics::RouterMetrics;
use crate::routing::Routing;
use crate::state_file::{now_ms, rfc3339, SavedState, StateFile};
use crate::target::TargetState;
use crate::targets::TargetsFile;

/// Who asked for a switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SwitchKind {
    /// Through the admin API.
    Switch,
    /// A guard switching back.
    Rollback,
}

impl SwitchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchKind::Switch => "switch",
            SwitchKind::Rollback => "rollback",
        }
    }
}

/// How a switch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SwitchResult {
    /// Traffic moved to the target color.
    Ok,
    /// The target was already active: nothing changed.
    Noop,
    /// The target did not become ready: nothing changed.
    Refused,
}

impl SwitchResult {
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchResult::Ok => "ok",
            SwitchResult::Noop => "noop",
            SwitchResult::Refused => "refused",
        }
    }
}

/// What a switch did; the admin API's response body.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchOutcome {
    pub result: SwitchResult,
    pub from: Color,
    pub to: Color,
    /// The versions the two colors said they run (readiness answers), or `unknown`.
    pub from_version: String,
    pub to_version: String,
    pub kind: SwitchKind,
    /// The color active once the switch is over.
    pub active: Color,
    pub reason: String,
    /// Readiness checks made, and how long they took.
    pub checks: u32,
    pub check_ms: u64,
    /// Whether the old color's in-flight requests all ended within the drain timeout.
    pub drained: bool,
    pub drain_ms: u64,
    pub in_flight_left: usize,
    pub state_saved: bool,
    pub targets_written: bool,
    /// Failures that did not stop the switch (e.g. a state file not saved).
    pub errors: Vec<String>,
    pub total_ms: u64,
    /// The router's switch count once this switch is over (see [`Switcher::rollback`]).
    #[serde(skip)]
    pub switch_number: u64,
}

/// A file a switch writes that could not be written (logged and counted
/// where it happens; the switch itself stands).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot save state file {}: {source}; the change is made but will not survive a restart", path.display())]
    State { path: PathBuf, source: std::io::Error },
    #[error("cannot write targets file {}: {source}", path.display())]
    Targets { path: PathBuf, source: std::io::Error },
}

pub struct Switcher {
    pub routing: Arc<Routing>,
    pub metrics: RouterMetrics,
    pub state_file: StateFile,
    pub targets: TargetsFile,
    pub health_check: HealthCheck,
    pub deploy_timeout: Duration,
    pub drain_timeout: Duration,
    lock: Mutex<()>,
    /// The guard's record, saved with the state ([`Switcher::persist`]).
    guard_record: parking_lot::Mutex<Option<GuardRecord>>,
    /// Serializes state file writes; each writes the state of its moment.
    save_lock: Mutex<()>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Switcher {
    pub fn new(
        routing: Arc<Routing>,
        metrics: RouterMetrics,
        state_file: StateFile,
        targets: TargetsFile,
        health_check: HealthCheck,
        deploy_timeout: Duration,
        drain_timeout: Duration,
    ) -> Self {
        Switcher {
            routing,
            metrics,
            state_file,
            targets,
            health_check,
            deploy_timeout,
            drain_timeout,
            lock: Mutex::new(()),
            guard_record: parking_lot::Mutex::new(None),
            save_lock: Mutex::new(()),
        }
    }

    pub fn guard_record(&self) -> Option<GuardRecord> {
        self.guard_record.lock().clone()
    }

    /// Sets the guard's record; [`Switcher::persist`] saves it.
    pub fn set_guard_record(&self, record: Option<GuardRecord>) {
        *self.guard_record.lock() = record;
    }

    /// Saves the state as it is now (active color, switch count, guard
    /// record). Writes are serialized and each takes the state of its own
    /// moment, so the file always ends with the latest state, whatever
    /// order concurrent callers run in. A failure is logged and counted.
    pub async fn persist(&self) -> Result<(), FileError> {
        let _serialized = self.save_lock.lock().await;
        let state = SavedState {
            active: self.routing.active(),
            since: self.routing.since(),
            switches: self.routing.switches(),
            guard: self.guard_record(),
        };
        self.state_file.save(&state).await.map_err(|source| {
            self.metrics.file_write_error("state");
            let error = FileError::State {
                path: self.state_file.path().to_owned(),
                source,
            };
            tracing::error!(error = %error, "state file not saved");
            error
        })
    }

    /// Writes the targets file for the current active color; a failure is
    /// logged, counted and returned.
    pub async fn write_targets(&self) -> Result<(), FileError> {
        let active = self.routing.active();
        let result = self
            .targets
            .write(self.routing.upstream(active), self.routing.upstream(active.other()))
            .await;
        result.map_err(|source| {
            self.metrics.file_write_error("targets");
            let error = FileError::Targets {
                path: self.targets.path().to_owned(),
                source,
            };
            tracing::error!(error = %error, "targets file not written");
            error
        })
    }

    pub async fn switch(&self, to: Color, reason: &str) -> SwitchOutcome {
        let _serialized = self.lock.lock().await;
        self.switch_locked(to, reason, SwitchKind::Switch).await
    }

    /// Switches to `to` only if no switch happened since the switch count
    /// was `switch_number` (checked under the switch lock), so that a guard's
    /// rollback never undoes a later switch. `None` when one did.
    pub async fn rollback(&self, to: Color, reason: &str, switch_number: u64) -> Option<SwitchOutcome> {
        let _serialized = self.lock.lock().await;
        if self.routing.switches() != switch_number {
            return None;
        }
        Some(self.switch_locked(to, reason, SwitchKind::Rollback).await)
    }

    /// [`Switcher::rollback`] in a task of its own, so that cancelling the
    /// caller cannot leave the switch half done.
    pub async fn rollback_detached(
        self: &Arc<Self>,
        to: Color,
        reason: &'static str,
        switch_number: u64,
    ) -> Result<Option<SwitchOutcome>, JoinError> {
        let switcher = Arc::clone(self);
        tokio::spawn(async move { switcher.rollback(to, reason, switch_number).await }).await
    }

    /// A switch; the caller holds the switch lock.
    async fn switch_locked(&self, to: Color, reason: &str, kind: SwitchKind) -> SwitchOutcome {
        let started = Instant::now();
        let from = self.routing.active();
        let mut outcome = SwitchOutcome {
            result: SwitchResult::Noop,
            from,
            to,
            from_version: self.routing.upstream(from).version(),
            to_version: self.routing.upstream(to).version(),
            kind,
            active: from,
            reason: reason.to_owned(),
            checks: 0,
            check_ms: 0,
            drained: true,
            drain_ms: 0,
            in_flight_left: 0,
            // Set once the files are written: a noop writes none.
            state_saved: false,
            targets_written: false,
            errors: Vec::new(),
            total_ms: 0,
            switch_number: self.routing.switches(),
        };
        if from == to {
            outcome.reason = format!("{to} is already active");
            return self.finish(outcome, started);
        }

        let target = self.routing.upstream(to);
        target.set_state(TargetState::Checking, reason);
        let checked = health::wait_ready(target, &self.health_check, started + self.deploy_timeout).await;
        outcome.check_ms = millis(started.elapsed());
        match checked {
            Ok(checks) => outcome.checks = checks,
            Err(not_ready) => {
                target.set_state(TargetState::Standby, "not ready");
                outcome.result = SwitchResult::Refused;
                outcome.checks = not_ready.checks;
                outcome.reason = format!(
                    "{to} is not ready: {} consecutive successful checks of {} not reached within {} ms (last error: {})",
                    self.health_check.successes,
                    self.health_check.path,
                    millis(self.deploy_timeout),
                    not_ready.last_error
                );
                return self.finish(outcome, started);
            }
        }

        let now = now_ms();
        self.routing.activate(to, now);
        outcome.result = SwitchResult::Ok;
        outcome.active = to;
        target.set_state(TargetState::Active, reason);
        let old = self.routing.upstream(from);
        old.set_state(TargetState::Draining, reason);
        self.metrics.set_active(to);
        // The readiness checks just read the new color's version.
        outcome.to_version = target.version();
        self.metrics.set_last_switch(
            now.unix_timestamp_nanos() as f64 / 1e9,
            kind.as_str(),
            (from, outcome.from_version.clone()),
            (to, outcome.to_version.clone()),
        );

        outcome.state_saved = true;
        outcome.targets_written = true;
        if let Err(error) = self.persist().await {
            outcome.state_saved = false;
            outcome.errors.push(error.to_string());
        }
        if let Err(error) = self.write_targets().await {
            outcome.targets_written = false;
            outcome.errors.push(error.to_string());
        }

        let drain_started = Instant::now();
        outcome.drained = old.wait_idle(self.drain_timeout).await;
        outcome.drain_ms = millis(drain_started.elapsed());
        outcome.in_flight_left = old.in_flight();
        if !outcome.drained {
            // They go on: cutting them would fail requests that may still finish.
            tracing::warn!(color = %from, in_flight = outcome.in_flight_left, timeout_ms = millis(self.drain_timeout),
                "drain timeout reached; requests still in flight on the old color");
        }
        old.set_state(
            TargetState::Standby,
            if outcome.drained { "drained" } else { "drain timeout" },
        );
        self.finish(outcome, started)
    }

    fn finish(&self, mut outcome: SwitchOutcome, started: Instant) -> SwitchOutcome {
        outcome.total_ms = millis(started.elapsed());
        outcome.switch_number = self.routing.switches();
        self.metrics.switch(outcome.from, outcome.to, outcome.result.as_str());
        // Left out of the line when there are none.
        let errors = (!outcome.errors.is_empty()).then(|| outcome.errors.join("; "));
        let level = if !outcome.errors.is_empty() {
            Level::ERROR
        } else if outcome.result == SwitchResult::Refused || !outcome.drained {
            Level::WARN
        } else {
            Level::INFO
        };
        event_at!(
            target: "switch", level,
            from = %outcome.from, to = %outcome.to, from_version = %outcome.from_version,
            to_version = %outcome.to_version, kind = outcome.kind.as_str(), result = outcome.result.as_str(), reason = %outcome.reason,
            checks = outcome.checks, check_ms = outcome.check_ms, drained = outcome.drained,
            drain_ms = outcome.drain_ms, in_flight_left = outcome.in_flight_left,
            total_ms = outcome.total_ms, errors, since = %rfc3339(self.routing.since()),
            "switch"
        );
        outcome
    }
}
