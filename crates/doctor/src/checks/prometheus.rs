//! Prometheus: every target is up, the rules are loaded and healthy, and
//! which alerts fire. API shapes: https://prometheus.io/docs/prometheus/latest/querying/api/
//! (`/api/v1/targets`, `/api/v1/rules`, `/api/v1/alerts`).
//!
//! A firing alert is a warning, not a failure: the doctor checks that the
//! stack works, and an alert that fires is the stack doing its job. The
//! alert itself says what is wrong with the application.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;

use crate::check::{Outcome, NOT_RUNNING};
use crate::stack::{Stack, Target};

pub async fn targets(stack: &Stack) -> Outcome {
    match stack.targets().await {
        Ok(targets) => {
            let (absent, present): (Vec<Target>, Vec<Target>) = targets
                .into_iter()
                .partition(|t| is_absent(t, |job| stack.args.is_optional(job)));
            let mut outcome = summarize_targets(&present, &stack.urls.prometheus);
            let backend_up = present.iter().any(|t| t.job() == "backend" && t.health == "up");
            if outcome.status == crate::check::Status::Ok && backend_up {
                outcome = match missing_backend_families(stack).await {
                    Ok(missing) if missing.is_empty() => outcome,
                    Ok(missing) => backend_families_missing(&outcome.detail, &missing),
                    Err(failure) => failure.into(),
                };
            }
            with_absent(outcome, &absent)
        }
        Err(failure) => failure.into(),
    }
}

/// What the dashboards, alert and SLO rules and the guard read of the
/// backend, after the scrape-time renaming of stack/prometheus/prometheus.yml:
/// (family as stored, what each convention exposes for it).
const BACKEND_FAMILIES: [(&str, &str); 3] = [
    (
        "http_requests_total",
        "a request counter labelled method, route and status: vigie's; prom-client's http_requests_total \
         with status_code; or OpenTelemetry's http_server_request_duration_seconds_count",
    ),
    (
        "http_request_duration_seconds_bucket",
        "a latency histogram in seconds: vigie's or prom-client's http_request_duration_seconds, or \
         OpenTelemetry's http_server_request_duration_seconds",
    ),
    (
        "process_start_time_seconds",
        "the standard process metric (prom-client's collectDefaultMetrics, an OpenTelemetry process \
         instrumentation): the guard judges an instance from its start",
    ),
];

/// The backend families (and labels) Prometheus does not have.
async fn missing_backend_families(stack: &Stack) -> Result<Vec<String>, crate::check::Failure> {
    let names = BACKEND_FAMILIES.map(|(name, _)| name).join("|");
    let present = stack
        .prometheus_query_labels(
            &format!(r#"count by (__name__) ({{job="backend",__name__=~"{names}"}})"#),
            "__name__",
        )
        .await?;
    let mut missing: Vec<String> = BACKEND_FAMILIES
        .iter()
        .filter(|(name, _)| !present.iter().any(|p| p == name))
        .map(|(name, convention)| format!("{name} ({convention})"))
        .collect();
    if present.iter().any(|p| p == "http_requests_total") {
        for (label, conventions) in [
            (
                "status",
                "status, prom-client's status_code or OpenTelemetry's http_response_status_code",
            ),
            (
                "route",
                "route, or OpenTelemetry's http_route: the route template, never the raw path",
            ),
        ] {
            let unlabelled = stack
                .prometheus_query_labels(
                    &format!(r#"count({{job="backend",__name__="http_requests_total",{label}=""}})"#),
                    "",
                )
                .await?;
            if !unlabelled.is_empty() {
                missing.push(format!("the {label} label of http_requests_total ({conventions})"));
            }
        }
    }
    Ok(missing)
}

/// The backend answers scrapes but lacks what the stack reads.
fn backend_families_missing(detail: &str, missing: &[String]) -> Outcome {
    Outcome::fail(format!("{detail}; the backend's metrics lack {}", missing.join("; ")))
        .hint(
            "dashboards, alerts, SLOs and the guard would be empty for it: expose vigie's, prom-client's or \
             OpenTelemetry's HTTP metrics (docs/stack.md, \"Watch your own service\"); what it does expose: \
             curl the backend's metrics path",
        )
        .data(json!({ "missing": missing }))
}

/// A down target of an `--optional` service that is not running: its name
/// does not resolve on the compose network (Prometheus' Go resolver says
/// "no such host", or "server misbehaving" when Docker's DNS cannot ask the
/// host's resolvers). A refused connection is a container still starting,
/// or broken: down, not absent.
fn is_absent(target: &Target, optional: impl Fn(&str) -> bool) -> bool {
    target.health == "down"
        && optional(target.job())
        && ["no such host", "server misbehaving"]
            .iter()
            .any(|cause| target.last_error.contains(cause))
}

/// The outcome, with the optional services that are not running named.
fn with_absent(mut outcome: Outcome, absent: &[Target]) -> Outcome {
    if absent.is_empty() {
        return outcome;
    }
    let mut jobs: Vec<&str> = absent.iter().map(Target::job).collect();
    jobs.sort_unstable();
    jobs.dedup();
    outcome
        .detail
        .push_str(&format!("; {NOT_RUNNING}: {}", jobs.join(", ")));
    if let Some(data) = outcome.data.as_object_mut() {
        data.insert("absent".to_owned(), json!(jobs));
    }
    outcome
}

/// The compose service behind a target, for `docker compose ps`.
fn service(target: &Target) -> String {
    match target.job() {
        "backend" if !target.label("color").is_empty() => format!("backend-{}", target.label("color")),
        "" => target.scrape_pool.clone(),
        job => job.to_owned(),
    }
}

/// `backend/127.0.0.1:3001 (green, standby)`.
fn describe(target: &Target) -> String {
    let mut text = format!("{}/{}", target.job(), target.label("instance"));
    let extra: Vec<&str> = ["color", "role"]
        .iter()
        .map(|l| target.label(l))
        .filter(|v| !v.is_empty())
        .collect();
    if !extra.is_empty() {
        text.push_str(&format!(" ({})", extra.join(", ")));
    }
    text
}

fn summarize_targets(targets: &[Target], prometheus: &str) -> Outcome {
    let total = targets.len();
    let up = targets.iter().filter(|t| t.health == "up").count();
    let down: Vec<&Target> = targets.iter().filter(|t| t.health == "down").collect();
    let unknown: Vec<&Target> = targets
        .iter()
        .filter(|t| t.health != "up" && t.health != "down")
        .collect();
    let data = json!({
        "up": up,
        "total": total,
        "down": down.iter().map(|t| json!({
            "job": t.job(), "instance": t.label("instance"), "scrape_url": t.scrape_url, "last_error": t.last_error,
        })).collect::<Vec<_>>(),
        "unknown": unknown.iter().map(|t| describe(t)).collect::<Vec<_>>(),
    });
    if total == 0 {
        return Outcome::fail("no active target")
            .hint("Prometheus discovers its targets from the files next to prometheus.yml: docker compose logs prometheus --tail 50")
            .data(data);
    }
    if !down.is_empty() {
        let listed: Vec<String> = down
            .iter()
            .map(|t| {
                let error = if t.last_error.is_empty() {
                    "down"
                } else {
                    t.last_error.as_str()
                };
                format!("{}: {error}", describe(t))
            })
            .collect();
        let mut services: Vec<String> = down.iter().map(|t| service(t)).collect();
        services.sort();
        services.dedup();
        return Outcome::fail(format!("{up}/{total} up; down: {}", listed.join("; ")))
            .hint(format!(
                "docker compose ps {}; Prometheus' view: {prometheus}/targets",
                services.join(" ")
            ))
            .data(data);
    }
    if !unknown.is_empty() {
        let listed: Vec<String> = unknown.iter().map(|t| describe(t)).collect();
        return Outcome::warn(format!("{up}/{total} up; not scraped yet: {}", listed.join(", ")))
            .hint("a target is scraped within its scrape interval (5 to 15 s) after it appears: run again shortly")
            .data(data)
            .settling();
    }
    Outcome::ok(format!("{up}/{total} up")).data(data)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RulesData {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Rule {
    name: String,
    /// "ok", "err" or "unknown" (not evaluated yet).
    health: String,
    last_error: String,
    /// "alerting" or "recording".
    #[serde(rename = "type")]
    kind: String,
}

pub async fn rules(stack: &Stack) -> Outcome {
    match stack.prometheus_api::<RulesData>("/api/v1/rules", &[]).await {
        Ok(data) => summarize_rules(&data),
        Err(failure) => failure.into(),
    }
}

fn summarize_rules(data: &RulesData) -> Outcome {
    let rules: Vec<&Rule> = data.groups.iter().flat_map(|g| &g.rules).collect();
    let alerting = rules.iter().filter(|r| r.kind == "alerting").count();
    let recording = rules.iter().filter(|r| r.kind == "recording").count();
    let failing: Vec<&&Rule> = rules.iter().filter(|r| r.health == "err").collect();
    let data = json!({
        "groups": data.groups.iter().map(|g| &g.name).collect::<Vec<_>>(),
        "alerting": alerting,
        "recording": recording,
        "failing": failing.iter().map(|r| json!({ "name": r.name, "last_error": r.last_error })).collect::<Vec<_>>(),
    });
    let groups = data["groups"].as_array().map_or(0, Vec::len);
    if groups == 0 {
        return Outcome::fail("no rule group loaded")
            .hint(
                "prometheus.yml loads rules/*.yml: check them with `promtool check rules stack/prometheus/rules/*.yml`",
            )
            .data(data);
    }
    let seen = format!("{groups} groups, {alerting} alerting and {recording} recording rules");
    if !failing.is_empty() {
        let listed: Vec<String> = failing
            .iter()
            .map(|r| format!("{}: {}", r.name, r.last_error))
            .collect();
        return Outcome::fail(format!("{seen}; failing: {}", listed.join("; ")))
            .hint("a rule that fails to evaluate never alerts: run `promtool test rules stack/prometheus/tests/*.yml`")
            .data(data);
    }
    Outcome::ok(seen).data(data)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AlertsData {
    alerts: Vec<Alert>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Alert {
    labels: BTreeMap<String, String>,
    /// "firing" or "pending".
    state: String,
}

impl Alert {
    /// `VigieActiveErrorRatioHigh{color="green"}`: the name and the color,
    /// the label the stack's alerts are grouped by.
    fn describe(&self) -> String {
        let name = self.labels.get("alertname").map_or("?", String::as_str);
        match self.labels.get("color") {
            Some(color) => format!("{name}{{color=\"{color}\"}}"),
            None => name.to_owned(),
        }
    }
}

pub async fn alerts(stack: &Stack) -> Outcome {
    match stack.prometheus_api::<AlertsData>("/api/v1/alerts", &[]).await {
        Ok(data) => summarize_alerts(&data, &stack.urls.prometheus, &stack.urls.alertmanager),
        Err(failure) => failure.into(),
    }
}

/// The alerts in `state`, each once: `Name{color="green"}`, or `Name (×2)`
/// when several instances share it.
fn alerts_in(data: &AlertsData, state: &str) -> Vec<String> {
    let mut counted: Vec<(String, usize)> = Vec::new();
    for alert in data.alerts.iter().filter(|a| a.state == state) {
        let text = alert.describe();
        match counted.iter_mut().find(|(t, _)| *t == text) {
            Some((_, n)) => *n += 1,
            None => counted.push((text, 1)),
        }
    }
    counted
        .into_iter()
        .map(|(text, n)| if n == 1 { text } else { format!("{text} (×{n})") })
        .collect()
}

fn summarize_alerts(data: &AlertsData, prometheus: &str, alertmanager: &str) -> Outcome {
    let firing = alerts_in(data, "firing");
    let pending = alerts_in(data, "pending");
    let json = json!({ "firing": firing, "pending": pending });
    let pending_note = if pending.is_empty() {
        String::new()
    } else {
        format!("; pending: {}", pending.join(", "))
    };
    if firing.is_empty() {
        return Outcome::ok(format!("none firing{pending_note}")).data(json);
    }
    let count = data.alerts.iter().filter(|a| a.state == "firing").count();
    Outcome::warn(format!("{count} firing: {}{pending_note}", firing.join(", ")))
        .hint(format!(
            "the stack works, the application does not: see {prometheus}/alerts, {alertmanager} and docs/runbook.md"
        ))
        .data(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    /// The shape of the documented example of `GET /api/v1/targets`.
    fn target(job: &str, instance: &str, health: &str, error: &str, extra: &[(&str, &str)]) -> Target {
        let mut labels: BTreeMap<String, String> = [("job", job), ("instance", instance)]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Target {
            labels,
            scrape_pool: job.to_owned(),
            scrape_url: format!("http://{instance}/metrics"),
            last_error: error.to_owned(),
            health: health.to_owned(),
        }
    }

    #[test]
    fn targets_parse_from_the_documented_shape() {
        let body = r#"{"status":"success","data":{"activeTargets":[{"discoveredLabels":{"__address__":"127.0.0.1:9090"},
            "labels":{"instance":"127.0.0.1:9090","job":"prometheus"},"scrapePool":"prometheus",
            "scrapeUrl":"http://127.0.0.1:9090/metrics","globalUrl":"http://example:9090/metrics","lastError":"",
            "lastScrape":"2017-01-17T15:07:44.723715405+01:00","lastScrapeDuration":0.050688943,"health":"up",
            "scrapeInterval":"1m","scrapeTimeout":"10s"}],"droppedTargets":[]}}"#;
        let envelope: crate::stack::PromEnvelope<serde_json::Value> = serde_json::from_str(body).expect("envelope");
        let targets: Vec<Target> =
            serde_json::from_value(envelope.data.expect("data")["activeTargets"].clone()).expect("targets");
        assert_eq!(targets[0].job(), "prometheus");
        assert_eq!(summarize_targets(&targets, "http://p").detail, "1/1 up");
    }

    #[test]
    fn a_down_target_is_named_with_its_error_and_service() {
        let targets = vec![
            target(
                "backend",
                "127.0.0.1:3001",
                "up",
                "",
                &[("color", "blue"), ("role", "active")],
            ),
            target(
                "backend",
                "127.0.0.1:3002",
                "down",
                "connection refused",
                &[("color", "green"), ("role", "standby")],
            ),
            target("router", "127.0.0.1:8081", "up", "", &[]),
        ];
        let outcome = summarize_targets(&targets, "http://p");
        assert_eq!(outcome.status, Status::Fail);
        assert_eq!(
            outcome.detail,
            "2/3 up; down: backend/127.0.0.1:3002 (green, standby): connection refused"
        );
        assert!(outcome
            .hint
            .as_deref()
            .is_some_and(|h| h.contains("docker compose ps backend-green")));
    }

    #[test]
    fn optional_services_that_are_not_running_are_named_not_failed() {
        let lookup = "Get \"http://loki:3100/metrics\": dial tcp: lookup loki on 127.0.0.11:53: no such host";
        let loki = target("loki", "loki:3100", "down", lookup, &[]);
        let tempo_broken = target("tempo", "tempo:3200", "down", "server returned HTTP status 500", &[]);
        let optional = |job: &str| job == "loki" || job == "tempo";
        assert!(is_absent(&loki, optional));
        // Running but broken is a failure, optional or not.
        assert!(!is_absent(&tempo_broken, optional));
        // Not named optional: a failure.
        assert!(!is_absent(&loki, |_| false));
        // Refused: a container that is starting, or broken; not absent.
        let starting = target(
            "loki",
            "loki:3100",
            "down",
            "dial tcp 172.18.0.5:3100: connect: connection refused",
            &[],
        );
        assert!(!is_absent(&starting, optional));

        let router = target("router", "router:8081", "up", "", &[]);
        let tempo = target("tempo", "tempo:3200", "down", lookup, &[]);
        let outcome = with_absent(
            summarize_targets(&[router], "http://p"),
            &[tempo.clone(), loki.clone(), tempo],
        );
        assert_eq!(outcome.status, Status::Ok);
        assert_eq!(outcome.detail, "1/1 up; not running (optional): loki, tempo");
        assert_eq!(outcome.data["absent"], serde_json::json!(["loki", "tempo"]));
    }

    #[test]
    fn unscraped_targets_warn_and_settle_and_no_target_fails() {
        let unscraped = target("loki", "loki:3100", "unknown", "", &[]);
        let outcome = summarize_targets(std::slice::from_ref(&unscraped), "http://p");
        assert_eq!(outcome.status, Status::Warn);
        // `--wait` checks again until Prometheus has scraped it.
        assert!(outcome.settling);
        let up = target("loki", "loki:3100", "up", "", &[]);
        assert!(!summarize_targets(&[up], "http://p").settling);
        let down = target("loki", "loki:3100", "down", "connection refused", &[]);
        assert!(!summarize_targets(&[down, unscraped], "http://p").settling);
        assert_eq!(summarize_targets(&[], "http://p").status, Status::Fail);
    }

    #[test]
    fn rules_count_and_failing_rules_fail() {
        let body = r#"{"groups":[{"name":"example","file":"/rules.yaml","interval":60,"rules":[
            {"name":"HighRequestLatency","query":"x > 0.5","duration":600,"health":"ok","type":"alerting","alerts":[]},
            {"name":"job:http_inprogress_requests:sum","query":"sum by (job) (x)","health":"ok","type":"recording"}]}]}"#;
        let data: RulesData = serde_json::from_str(body).expect("rules");
        let outcome = summarize_rules(&data);
        assert_eq!(outcome.status, Status::Ok);
        assert_eq!(outcome.detail, "1 groups, 1 alerting and 1 recording rules");

        let broken = r#"{"groups":[{"name":"g","rules":[{"name":"r","health":"err","lastError":"many-to-many matching","type":"recording"}]}]}"#;
        let outcome = summarize_rules(&serde_json::from_str(broken).expect("rules"));
        assert_eq!(outcome.status, Status::Fail);
        assert!(
            outcome.detail.contains("r: many-to-many matching"),
            "{}",
            outcome.detail
        );

        assert_eq!(summarize_rules(&RulesData::default()).status, Status::Fail);
    }

    #[test]
    fn firing_alerts_warn_and_pending_ones_are_mentioned() {
        let body = r#"{"alerts":[
            {"activeAt":"2018-07-04T20:27:12.60602144+02:00","annotations":{},"labels":{"alertname":"VigieActiveErrorRatioHigh","color":"green"},"state":"firing","value":"1e+00"},
            {"labels":{"alertname":"LogPipelineDown","job":"loki"},"state":"pending"},
            {"labels":{"alertname":"LogPipelineDown","job":"promtail"},"state":"pending"}]}"#;
        let outcome = summarize_alerts(&serde_json::from_str(body).expect("alerts"), "http://p", "http://a");
        assert_eq!(outcome.status, Status::Warn);
        assert_eq!(
            outcome.detail,
            "1 firing: VigieActiveErrorRatioHigh{color=\"green\"}; pending: LogPipelineDown (×2)"
        );

        let quiet = summarize_alerts(&AlertsData::default(), "http://p", "http://a");
        assert_eq!((quiet.status, quiet.detail.as_str()), (Status::Ok, "none firing"));
    }
}
