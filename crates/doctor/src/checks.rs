//! Runs every check concurrently and collects one result per check, in
//! report order. A skipped check, or one of an `--optional` service that is
//! not running, is reported as skipped and never started.

pub mod alertmanager;
pub mod grafana;
pub mod loki;
pub mod prometheus;
pub mod router;
pub mod tempo;

use std::future::Future;
use std::time::{Duration, Instant};

use crate::check::{CheckId, CheckResult, Outcome, NOT_RUNNING};
use crate::stack::Stack;

async fn timed(stack: &Stack, id: CheckId, check: impl Future<Output = Outcome>) -> CheckResult {
    if stack.skips(id) {
        return CheckResult::skipped(id);
    }
    if let Some(why) = stack.absent(id.component().as_str()) {
        let outcome = Outcome::skip(format!("{NOT_RUNNING}: {why}"));
        return CheckResult::new(id, outcome, Duration::ZERO);
    }
    let started = Instant::now();
    let outcome = check.await;
    CheckResult::new(id, outcome, started.elapsed())
}

pub async fn run_all(stack: &Stack) -> Vec<CheckResult> {
    let results = tokio::join!(
        timed(stack, CheckId::RouterActive, router::active_color(stack)),
        timed(stack, CheckId::PrometheusTargets, prometheus::targets(stack)),
        timed(stack, CheckId::PrometheusRules, prometheus::rules(stack)),
        timed(stack, CheckId::PrometheusAlerts, prometheus::alerts(stack)),
        timed(stack, CheckId::LokiReady, loki::ready(stack)),
        timed(stack, CheckId::LokiLogs, loki::logs(stack)),
        timed(stack, CheckId::TempoReady, tempo::ready(stack)),
        timed(stack, CheckId::TempoTraces, tempo::traces(stack)),
        timed(stack, CheckId::GrafanaHealth, grafana::health(stack)),
        timed(stack, CheckId::GrafanaDatasources, grafana::datasources(stack)),
        timed(stack, CheckId::GrafanaDashboards, grafana::dashboards(stack)),
        timed(stack, CheckId::AlertmanagerReady, alertmanager::ready(stack)),
    );
    let (a, b, c, d, e, f, g, h, i, j, k, l) = results;
    vec![a, b, c, d, e, f, g, h, i, j, k, l]
}
