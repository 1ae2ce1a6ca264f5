//! The report: one line per check for people, one JSON document for
//! scripts, and the exit status (0 only when no check failed).

use serde::Serialize;

use crate::check::{CheckResult, Status};

#[derive(Debug, Serialize)]
pub struct Report {
    /// True when no check failed (warnings and skipped checks allowed).
    pub ok: bool,
    pub counts: Counts,
    pub checks: Vec<CheckResult>,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub ok: usize,
    pub warn: usize,
    pub fail: usize,
    pub skip: usize,
}

/// Width of the status column (`FAIL` and two spaces).
const STATUS_WIDTH: usize = 6;

impl Report {
    pub fn new(checks: Vec<CheckResult>) -> Self {
        let mut counts = Counts::default();
        for check in &checks {
            match check.status {
                Status::Ok => counts.ok += 1,
                Status::Warn => counts.warn += 1,
                Status::Fail => counts.fail += 1,
                Status::Skip => counts.skip += 1,
            }
        }
        Report {
            ok: counts.fail == 0,
            counts,
            checks,
        }
    }

    /// `ok    prometheus targets   9/9 up`, then a summary line.
    pub fn text(&self) -> String {
        let name_width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0) + 2;
        let mut out = String::new();
        for check in &self.checks {
            let mut line = format!(
                "{:<sw$}{:<nw$}{}",
                check.status.label(),
                check.name,
                check.detail,
                sw = STATUS_WIDTH,
                nw = name_width
            );
            if let Some(hint) = check.hint.as_deref().filter(|_| check.status != Status::Ok) {
                line.push_str(" — ");
                line.push_str(hint);
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let c = &self.counts;
        out.push_str(&format!(
            "\n{}: {} ok, {} warning{}, {} failed, {} skipped\n",
            if self.ok { "stack ok" } else { "stack NOT ok" },
            c.ok,
            c.warn,
            if c.warn == 1 { "" } else { "s" },
            c.fail,
            c.skip
        ));
        out
    }

    pub fn json(&self) -> String {
        // Only strings, numbers and maps with string keys: cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{CheckId, Outcome};
    use std::time::Duration;

    fn report() -> Report {
        Report::new(vec![
            CheckResult::new(
                CheckId::PrometheusTargets,
                Outcome::ok("9/9 up"),
                Duration::from_millis(3),
            ),
            CheckResult::new(
                CheckId::LokiReady,
                Outcome::fail("connection refused at http://127.0.0.1:3100/ready")
                    .hint("is the loki container running? docker compose ps loki"),
                Duration::from_millis(1),
            ),
            CheckResult::skipped(CheckId::GrafanaHealth),
        ])
    }

    #[test]
    fn one_aligned_line_per_check_with_the_hint_on_failure() {
        let text = report().text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ok    prometheus targets  9/9 up");
        assert_eq!(
            lines[1],
            "FAIL  loki ready          connection refused at http://127.0.0.1:3100/ready \
             — is the loki container running? docker compose ps loki"
        );
        assert_eq!(lines[2], "skip  grafana health      skipped (--skip)");
        assert_eq!(lines[4], "stack NOT ok: 1 ok, 0 warnings, 1 failed, 1 skipped");
    }

    #[test]
    fn the_json_report_carries_status_counts_and_checks() {
        let report = report();
        assert!(!report.ok);
        let value: serde_json::Value = serde_json::from_str(&report.json()).expect("json");
        assert_eq!(value["ok"], false);
        assert_eq!(value["counts"]["fail"], 1);
        assert_eq!(value["checks"][1]["id"], "loki-ready");
        assert_eq!(value["checks"][1]["component"], "loki");
        assert_eq!(value["checks"][1]["status"], "fail");
        assert_eq!(value["checks"][0].get("hint"), None);
    }
}
