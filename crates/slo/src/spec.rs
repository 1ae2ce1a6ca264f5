//! The SLO file: what it may say, and its checks. Every mistake is an
//! error naming the field, never a silently odd rule.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// The histogram bucket bounds a latency threshold may use: the backend's
/// (`vigie_telemetry::http::LATENCY_BUCKETS`); a threshold between two
/// bounds could not be counted exactly.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not a valid SLO file: {source}")]
    Parse { path: String, source: serde_yaml_ng::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// What an objective measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The share of requests not answered 5xx.
    Availability,
    /// The share of requests answered within `threshold`.
    Latency,
}

/// One objective, as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    /// Lower-case name: the `slo` label and part of the alert names.
    pub name: String,
    pub kind: Kind,
    /// The target share of good requests, e.g. 99.9 (percent).
    pub objective_percent: f64,
    /// Latency only: the bound, e.g. `250ms`; must be a bucket bound.
    #[serde(default, with = "opt_duration")]
    pub threshold: Option<Duration>,
    #[serde(default)]
    pub description: String,
}

impl Objective {
    /// The objective as a ratio, e.g. 0.999.
    pub fn ratio(&self) -> f64 {
        self.objective_percent / 100.0
    }

    /// The error budget as a ratio, e.g. 0.001.
    pub fn budget(&self) -> f64 {
        1.0 - self.ratio()
    }

    /// The alert name part, e.g. `Availability`.
    pub fn title(&self) -> String {
        let mut chars = self.name.chars();
        chars
            .next()
            .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
            .unwrap_or_default()
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slos {
    /// The `service` label of every series and alert.
    pub service: String,
    /// The period the budget is counted over, e.g. `28d`.
    #[serde(with = "duration")]
    pub period: Duration,
    /// The label matchers of the service's HTTP series (its scrape job and
    /// the requests that count).
    pub selector: String,
    pub objectives: Vec<Objective>,
}

impl Slos {
    pub fn load(path: &Path) -> Result<Slos, SpecError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: shown.clone(),
            source,
        })?;
        Slos::parse(&text, &shown)
    }

    /// Parses and checks the text of an SLO file named `path` (for errors).
    pub fn parse(text: &str, path: &str) -> Result<Slos, SpecError> {
        let slos: Slos = serde_yaml_ng::from_str(text).map_err(|source| SpecError::Parse {
            path: path.to_owned(),
            source,
        })?;
        slos.check().map_err(|message| SpecError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(slos)
    }

    fn check(&self) -> Result<(), String> {
        if !is_label_value(&self.service) {
            return Err(format!("service {:?}: use a-z, 0-9, - and _", self.service));
        }
        let days = self.period.as_secs() / 86_400;
        if self.period.as_secs() % 86_400 != 0 || !(1..=90).contains(&days) {
            return Err("period: a whole number of days from 1d to 90d, e.g. 28d".into());
        }
        if self.selector.trim().is_empty() || self.selector.contains(['{', '}']) {
            return Err(format!(
                "selector {:?}: label matchers without braces, e.g. job=\"backend\", route=~\"/api/.*\"",
                self.selector
            ));
        }
        if self.objectives.is_empty() {
            return Err("objectives: at least one".into());
        }
        let mut names = Vec::new();
        for objective in &self.objectives {
            let name = &objective.name;
            if !is_label_value(name) || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
                return Err(format!("objective name {name:?}: a lower-case word (a-z, 0-9, _)"));
            }
            if names.contains(name) {
                return Err(format!("objective name {name:?} is used twice"));
            }
            names.push(name.clone());
            let percent = objective.objective_percent;
            if !(percent > 0.0 && percent < 100.0) {
                return Err(format!(
                    "{name}: objective_percent {percent} must be above 0 and below 100"
                ));
            }
            // A 14.4x burn must stay a ratio below 1 to be measurable.
            if objective.budget() * crate::FAST_BURN >= 1.0 {
                return Err(format!(
                    "{name}: objective_percent {percent} leaves a budget too big for a {}x burn rate to be measured; use at least 93.1",
                    crate::FAST_BURN
                ));
            }
            match (objective.kind, objective.threshold) {
                (Kind::Availability, None) => {}
                (Kind::Availability, Some(_)) => {
                    return Err(format!("{name}: threshold is for latency objectives only"))
                }
                (Kind::Latency, None) => {
                    return Err(format!("{name}: a latency objective needs a threshold, e.g. 250ms"))
                }
                (Kind::Latency, Some(threshold)) => {
                    let seconds = threshold.as_secs_f64();
                    if !BUCKETS.iter().any(|b| (b - seconds).abs() < 1e-9) {
                        return Err(format!(
                            "{name}: threshold {}ms is not a histogram bucket bound ({})",
                            threshold.as_millis(),
                            BUCKETS.map(|b| format!("{}ms", b * 1000.0)).join(", ")
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The period in whole days.
    pub fn period_days(&self) -> u64 {
        self.period.as_secs() / 86_400
    }
}

fn is_label_value(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A duration written the Prometheus way: a number and one of ms, s, m, h, d, w.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (examples: 250ms, 28d)"))?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(format!("invalid duration unit in {text:?} (ms, s, m, h, d or w)")),
    };
    value
        .checked_mul(millis)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is out of range"))
}

mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

mod opt_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_duration(&text).map(Some).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
service: vigie-backend
period: 28d
selector: 'job="backend", route=~"/api/.*"'
objectives:
  - name: availability
    kind: availability
    objective_percent: 99.9
  - name: latency
    kind: latency
    objective_percent: 99
    threshold: 250ms
"#;

    #[test]
    fn reads_a_good_file() {
        let slos = Slos::parse(GOOD, "slo.yaml").expect("valid");
        assert_eq!(slos.period_days(), 28);
        assert_eq!(slos.objectives[1].threshold, Some(Duration::from_millis(250)));
        assert!((slos.objectives[0].budget() - 0.001).abs() < 1e-12);
        assert_eq!(slos.objectives[0].title(), "Availability");
    }

    #[test]
    fn names_what_is_wrong() {
        let cases = [
            ("period: 28d", "period: 36h", "a whole number of days"),
            ("objective_percent: 99.9", "objective_percent: 100", "below 100"),
            ("objective_percent: 99.9", "objective_percent: 90", "at least 93.1"),
            ("threshold: 250ms", "threshold: 300ms", "not a histogram bucket bound"),
            ("    threshold: 250ms\n", "", "needs a threshold"),
            ("name: latency", "name: availability", "used twice"),
            ("name: latency", "name: Latency", "a lower-case word"),
            ("kind: latency", "kind: speed", "unknown variant"),
            ("period: 28d", "period: 28 days", "invalid duration"),
            (
                "service: vigie-backend",
                "service: vigie-backend\ncolour: blue",
                "unknown field",
            ),
            (
                "selector: 'job=\"backend\", route=~\"/api/.*\"'",
                "selector: '{job=\"backend\"}'",
                "without braces",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(GOOD.contains(from), "{from}");
            let text = GOOD.replacen(from, to, 1);
            let error = Slos::parse(&text, "slo.yaml").expect_err(to).to_string();
            assert!(error.contains(expected), "{to}: {error}");
            assert!(error.starts_with("slo.yaml"), "{error}");
        }
    }

    #[test]
    fn durations_are_prometheus_ones() {
        assert_eq!(parse_duration("28d"), Ok(Duration::from_secs(28 * 86_400)));
        assert_eq!(parse_duration("4w"), Ok(Duration::from_secs(28 * 86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("1.5h").is_err());
        assert!(parse_duration("d").is_err());
    }
}
