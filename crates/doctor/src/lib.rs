//! `vigie doctor`: checks the running vigie stack from the outside, the way
//! a person would after `docker compose up`, and prints one line per check
//! with what it saw and, when a check fails, what to look at.
//!
//! The checks (see docs/doctor.md): the router's active color is the one
//! Prometheus labels active; every Prometheus target is up, the rules are
//! loaded, which alerts fire; Loki is ready and received lines from the
//! active color; Tempo is ready and holds traces of the active color;
//! Grafana is healthy, its data sources answer and its
//! dashboards are provisioned; Alertmanager is ready. They run
//! concurrently, every request bounded by `--timeout`. Exit status: 0 when
//! no check failed (warnings allowed), 1 otherwise.
#![forbid(unsafe_code)]

mod check;
mod checks;
mod config;
mod http;
mod report;
mod stack;

use std::process::ExitCode;

pub use check::{CheckId, CheckResult, Component, Status};
pub use config::{defaults, Args, Endpoints};
pub use report::Report;

/// Runs every check that is not skipped and returns the report.
pub async fn examine(args: Args) -> anyhow::Result<Report> {
    let mut stack = stack::Stack::new(args)?;
    stack.find_absent().await;
    Ok(Report::new(checks::run_all(&stack).await))
}

/// With `--wait`: examines until a round has no failed check and nothing
/// settling (a target not scraped yet), or the wait is over, saying on
/// stderr what it waits for; the last round's report.
async fn examine_until_ok(args: Args) -> anyhow::Result<Report> {
    let Some(wait) = args.wait else {
        return examine(args).await;
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let report = examine(args.clone()).await?;
        let now = tokio::time::Instant::now();
        let failing = waiting_for(&report);
        if failing.is_empty() || now >= deadline {
            return Ok(report);
        }
        eprintln!(
            "doctor: waiting for {} ({}s left)",
            failing.join(", "),
            (deadline - now).as_secs()
        );
        // The last round runs at the deadline.
        tokio::time::sleep(defaults::WAIT_RETRY.min(deadline - now)).await;
    }
}

/// The checks `--wait` runs again for: failed, or settling.
fn waiting_for(report: &Report) -> Vec<&'static str> {
    report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail || c.settling)
        .map(|c| c.name)
        .collect()
}

/// `vigie doctor`: prints the report; exit 0 when no check failed, else 1.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let report = examine_until_ok(args).await?;
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::check::{CheckId, CheckResult, Outcome};

    fn report(outcomes: Vec<(CheckId, Outcome)>) -> Report {
        Report::new(
            outcomes
                .into_iter()
                .map(|(id, outcome)| CheckResult::new(id, outcome, Duration::ZERO))
                .collect(),
        )
    }

    #[test]
    fn wait_runs_again_for_failed_and_settling_checks_only() {
        let settled = report(vec![
            (CheckId::RouterActive, Outcome::ok("blue")),
            (CheckId::PrometheusAlerts, Outcome::warn("one firing")),
        ]);
        assert!(waiting_for(&settled).is_empty());
        let unscraped = report(vec![
            (CheckId::RouterActive, Outcome::ok("blue")),
            (CheckId::PrometheusTargets, Outcome::warn("not scraped yet").settling()),
            (CheckId::LokiReady, Outcome::fail("not ready")),
        ]);
        // A warning that passes by itself is waited for, as a failure is.
        assert_eq!(waiting_for(&unscraped), ["prometheus targets", "loki ready"]);
    }
}
