//! The stack's Grafana dashboards: structure, and — end to end with the real
//! Prometheus on the stack's own configuration — that every Prometheus panel
//! query returns data after traffic and a switch.
//!
//! Loki cannot run on the test machines: its panel queries are checked only
//! when `VIGIE_TEST_LOKI_URL` names a Loki that receives the stack's logs;
//! otherwise they are listed as not checked, never silently passed.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{client, free_port, require_program, Pair, Proc, TempDir};

use crate::prometheus::{copy_stack_config, set_static_target, Prometheus};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every dashboard JSON file with its parsed content.
fn dashboards() -> Vec<(String, Value)> {
    let dir = repo().join("stack/grafana/dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| {
            let text = std::fs::read_to_string(e.path()).expect("read dashboard");
            let value =
                serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: invalid JSON: {err}", e.path().display()));
            (e.file_name().to_string_lossy().into_owned(), value)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 4, "expected the four dashboards, found {}", out.len());
    out
}

/// The provisioned data sources: uid → type.
fn provisioned_datasources() -> std::collections::HashMap<String, String> {
    let path = repo().join("stack/grafana/provisioning/datasources/datasources.yaml");
    let doc = crate::stack_files::load(&path).unwrap_or_else(|e| panic!("{e}"));
    doc["datasources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| Some((d["uid"].as_str()?.to_owned(), d["type"].as_str()?.to_owned())))
        .collect()
}

/// Panels, rows unfolded.
fn panels(dashboard: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        if panel["type"] == "row" {
            out.extend(panel["panels"].as_array().into_iter().flatten().cloned());
        } else {
            out.push(panel.clone());
        }
    }
    out
}

/// A panel's queries: (datasource uid, expression). Prometheus and Loki
/// queries are `expr`, Tempo's TraceQL is `query`.
fn queries(panel: &Value) -> Vec<(String, String)> {
    let panel_uid = panel["datasource"]["uid"].as_str().unwrap_or_default();
    panel["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let uid = t["datasource"]["uid"].as_str().unwrap_or(panel_uid).to_owned();
            let field = if uid == "tempo" { "query" } else { "expr" };
            (uid, t[field].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

#[test]
fn dashboards_name_provisioned_datasources_and_every_panel_has_a_query() {
    let datasources = provisioned_datasources();
    for required in ["prometheus", "loki", "alertmanager", "tempo"] {
        assert!(
            datasources.contains_key(required),
            "datasource uid {required} is not provisioned: {datasources:?}"
        );
    }
    let mut dashboard_uids = HashSet::new();
    let mut promql = Vec::new();
    for (file, dashboard) in dashboards() {
        let uid = dashboard["uid"].as_str().unwrap_or_else(|| panic!("{file}: no uid"));
        assert!(
            dashboard_uids.insert(uid.to_owned()),
            "{file}: duplicate dashboard uid {uid}"
        );
        assert!(
            dashboard["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: no title"
        );
        let mut ids = HashSet::new();
        let panels = panels(&dashboard);
        assert!(!panels.is_empty(), "{file}: no panels");
        for panel in &panels {
            let title = panel["title"].as_str().unwrap_or("?");
            let id = panel["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{file}: panel {title:?} has no id"));
            assert!(ids.insert(id), "{file}: duplicate panel id {id}");
            assert!(panel.get("gridPos").is_some(), "{file}: panel {title:?} has no gridPos");
            let panel_uid = panel["datasource"]["uid"].as_str().unwrap_or_default();
            assert!(
                datasources.contains_key(panel_uid),
                "{file}: panel {title:?} names datasource {panel_uid:?}, not provisioned"
            );
            let queries = queries(panel);
            assert!(!queries.is_empty(), "{file}: panel {title:?} has no query");
            for (ds, expr) in queries {
                assert_eq!(ds, panel_uid, "{file}: panel {title:?} mixes data sources");
                assert!(!expr.trim().is_empty(), "{file}: panel {title:?} has an empty query");
                if ds == "prometheus" {
                    promql.push((format!("{file} / {title}"), fill_variables(&expr)));
                }
            }
        }
        for annotation in dashboard["annotations"]["list"].as_array().into_iter().flatten() {
            if annotation["builtIn"].as_u64() == Some(1) {
                continue;
            }
            let ds = annotation["datasource"]["uid"].as_str().unwrap_or_default();
            assert!(
                datasources.contains_key(ds),
                "{file}: annotation {} names datasource {ds:?}",
                annotation["name"]
            );
            let expr = annotation["expr"]
                .as_str()
                .or_else(|| annotation["target"]["expr"].as_str())
                .unwrap_or_default();
            assert!(
                !expr.trim().is_empty(),
                "{file}: annotation {} has no query",
                annotation["name"]
            );
            if ds == "prometheus" {
                promql.push((
                    format!("{file} / annotation {}", annotation["name"]),
                    fill_variables(expr),
                ));
            }
        }
        for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
            if variable["type"] == "query" {
                let ds = variable["datasource"]["uid"].as_str().unwrap_or_default();
                assert!(
                    datasources.contains_key(ds),
                    "{file}: variable {} names datasource {ds:?}",
                    variable["name"]
                );
                let query = variable["query"]
                    .as_str()
                    .or_else(|| variable["query"]["query"].as_str())
                    .unwrap_or_default();
                assert!(!query.is_empty(), "{file}: variable {} has no query", variable["name"]);
            }
        }
    }
    for (title, expr) in &promql {
        assert!(!expr.contains('$'), "{title}: a variable is left unfilled in {expr}");
    }
    assert_promql_parses(&promql);
}

/// `promtool check rules` on every expression as a recording rule: the
/// queries that cannot run here (Loki's, Promtail's) are still parsed.
fn assert_promql_parses(promql: &[(String, String)]) {
    let promtool = require_program("promtool", "prometheus");
    let dir = TempDir::new("promql");
    let rules: Vec<Value> = promql
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| json!({"record": format!("dashboard_expr:check:{i}"), "expr": expr}))
        .collect();
    let file = dir.join("dashboards.yml");
    let doc = json!({"groups": [{"name": "dashboard-expressions", "rules": rules}]});
    // JSON is YAML: promtool reads it as is.
    std::fs::write(&file, doc.to_string()).expect("write rules");
    let output = std::process::Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("run promtool");
    let report = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let named: Vec<String> = promql
            .iter()
            .enumerate()
            .map(|(i, (t, e))| format!("dashboard_expr:check:{i} = {t}: {e}"))
            .collect();
        panic!("dashboard PromQL does not parse:\n{report}\n{}", named.join("\n"));
    }
}

/// Fills in Grafana's variables the way the dashboards use them: every
/// `$var` selects all of its values.
fn fill_variables(expr: &str) -> String {
    let mut out = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m");
    for var in ["$color", "$route", "$service", "$level", "$search", "$request_id"] {
        let value = match var {
            "$search" => "",
            "$request_id" => "00000000-0000-0000-0000-000000000000",
            _ => ".+",
        };
        out = out.replace(var, value);
    }
    out
}

/// Queries about components that cannot run on the test machines.
pub fn needs_unavailable_component(expr: &str) -> bool {
    ["loki_", "promtail_", "alloy_", "grafana_", "tempo_"]
        .iter()
        .any(|p| expr.contains(p))
}

/// Starts the real Alertmanager on a free port.
struct Alertmanager(std::process::Child, String);

impl Alertmanager {
    async fn start(dir: &Path) -> Alertmanager {
        let binary = require_program("prometheus-alertmanager", "prometheus-alertmanager");
        let addr = format!("127.0.0.1:{}", free_port());
        let child = std::process::Command::new(binary)
            .arg(format!(
                "--config.file={}",
                repo().join("stack/alertmanager/alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.join("am").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn alertmanager");
        let am = Alertmanager(child, addr);
        crate::helpers::eventually(Duration::from_secs(15), "alertmanager ready", || {
            let url = format!("http://{}/-/ready", am.1);
            async move {
                client()
                    .get(url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
        am
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The API a backend serves, for steady traffic through the router.
pub struct Api {
    pub read: &'static str,
    pub create: &'static str,
    pub create_body: fn(u32) -> Value,
    /// Prefix of one item's path; the item number follows.
    pub item: &'static str,
}

pub const VIGIE_API: Api = Api {
    read: "/api/info",
    create: "/api/tasks",
    create_body: |i| json!({ "title": format!("t{i}") }),
    item: "/api/tasks/",
};

#[tokio::test]
async fn every_prometheus_panel_query_returns_data_after_traffic_and_a_switch() {
    // Green fails a share of requests, so the error panels have data.
    let Pair { dir, blue, green } = Pair::with_flags("dashboards", &[], &["--fault-error-rate", "0.2"]);
    let unchecked = panels_have_data(&dir, &blue.url(""), &green.url(""), &[], &VIGIE_API, &[]).await;
    assert!(unchecked.is_empty(), "{unchecked:?}");
}

/// Starts a router in front of `blue` and `green` (with `router_flags`),
/// the real Prometheus and Alertmanager on a copy of the stack's
/// configuration, sends traffic, switches to green, then checks that every
/// dashboard's Prometheus query returns data and every switch annotation
/// marks the switch. Queries containing one of `backend_specific` are
/// only reported (returned) when empty, not failed: they read metrics
/// only vigie's own backend has.
pub async fn panels_have_data(
    dir: &TempDir,
    blue: &str,
    green: &str,
    router_flags: &[&str],
    api: &Api,
    backend_specific: &[&str],
) -> Vec<String> {
    let config = copy_stack_config(&dir.join("prometheus"));
    let targets_file = config.join("targets").join("backend.json");
    let mut flags = vec!["--targets-file", targets_file.to_str().expect("utf-8")];
    flags.extend_from_slice(router_flags);
    let args = Proc::router_args(blue, green, dir.path(), &flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let router = Proc::start(&args, &[], &["public", "admin"]);
    let alertmanager = Alertmanager::start(dir.path()).await;
    set_static_target(&config, "router", &router.admin_addr.expect("admin").to_string());
    set_static_target(&config, "alertmanager", &alertmanager.1);
    let prometheus = Prometheus::start(&config).await;
    // file_sd watches its files: Prometheus picks up its own address at once.
    set_static_target(&config, "prometheus", &prometheus.addr);

    // Steady traffic through the router for the whole test.
    let public = router.url("");
    let (read, create, create_body, item) = (api.read, api.create, api.create_body, api.item);
    let traffic = tokio::spawn(async move {
        let http = client();
        for i in 0..4000u32 {
            let _ = http.get(format!("{public}{read}")).send().await;
            let _ = http
                .post(format!("{public}{create}"))
                .json(&create_body(i))
                .send()
                .await;
            let _ = http.get(format!("{public}{item}{}", i / 2 + 1)).send().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // Both colors scraped before the switch, then traffic lands on green.
    crate::helpers::eventually(Duration::from_secs(30), "both colors scraped", || {
        let p = &prometheus;
        async move { (p.query("up{job=\"backend\"} == 1").await.len() == 2).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let switched = client()
        .post(router.admin_url("/switch"))
        .json(&json!({"to": "green"}))
        .send()
        .await
        .expect("switch");
    assert!(
        switched.status().is_success(),
        "switch failed: {}",
        switched.text().await.unwrap_or_default()
    );

    let mut checked = BTreeSet::new();
    let mut not_checked = BTreeSet::new();
    let mut expressions = Vec::new();
    for (file, dashboard) in dashboards() {
        for panel in panels(&dashboard) {
            for (ds, expr) in queries(&panel) {
                let title = format!("{file} / {}", panel["title"].as_str().unwrap_or("?"));
                if ds == "prometheus" && !needs_unavailable_component(&expr) {
                    expressions.push((title, fill_variables(&expr)));
                } else {
                    not_checked.insert(format!("{title} [{ds}]: {expr}"));
                }
            }
        }
        // Annotations mark events (a rollback may never happen), so they
        // must be valid queries; the switch, which happened, is marked
        // with its kind, colors and versions.
        for annotation in dashboard["annotations"]["list"].as_array().into_iter().flatten() {
            if annotation["datasource"]["uid"] == "prometheus" {
                if let Some(expr) = annotation["expr"].as_str() {
                    let found = prometheus.query(&fill_variables(expr)).await;
                    if annotation["name"] == "Blue/green switch" {
                        let marked = |found: &[Value]| {
                            found.iter().any(|s| {
                                let m = &s["metric"];
                                (&m["kind"], &m["from"], &m["to"])
                                    == (&json!("switch"), &json!("blue"), &json!("green"))
                            })
                        };
                        let deadline = std::time::Instant::now() + Duration::from_secs(40);
                        let mut found = found;
                        while !marked(&found) {
                            assert!(
                                std::time::Instant::now() < deadline,
                                "{file}: no switch annotation: {found:?}"
                            );
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            found = prometheus.query(&fill_variables(expr)).await;
                        }
                    }
                }
            }
        }
    }
    assert!(
        expressions.len() >= 20,
        "only {} Prometheus queries found",
        expressions.len()
    );
    let mut empty_backend_specific = Vec::new();
    for (title, expr) in &expressions {
        let specific = backend_specific.iter().any(|m| expr.contains(m));
        let deadline = std::time::Instant::now() + Duration::from_secs(if specific { 5 } else { 40 });
        while prometheus.query(expr).await.is_empty() {
            if std::time::Instant::now() >= deadline {
                assert!(
                    specific,
                    "no data for {title}: {expr}\nprometheus log:\n{}",
                    prometheus.log()
                );
                empty_backend_specific.push(format!("{title}: {expr}"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        checked.insert(title.clone());
    }
    traffic.abort();

    match std::env::var("VIGIE_TEST_LOKI_URL") {
        Ok(loki) => check_loki_queries(&loki).await,
        Err(_) => eprintln!(
            "checked {} Prometheus queries; not checked here (no Loki/Promtail on this machine, set VIGIE_TEST_LOKI_URL to check the Loki ones):\n  {}",
            checked.len(),
            not_checked.into_iter().collect::<Vec<_>>().join("\n  ")
        ),
    }
    empty_backend_specific
}

/// With a Loki that receives the stack's logs: every Loki panel query
/// answers with data over the last 15 minutes.
async fn check_loki_queries(loki: &str) {
    for (file, dashboard) in dashboards() {
        for panel in panels(&dashboard) {
            for (ds, expr) in queries(&panel) {
                if ds != "loki" {
                    continue;
                }
                let expr = fill_variables(&expr).replace("request_id = \"$request_id\"", "request_id != \"\"");
                let response = client()
                    .get(format!("{loki}/loki/api/v1/query_range"))
                    .query(&[("query", expr.as_str()), ("since", "15m")])
                    .send()
                    .await
                    .expect("loki query");
                let body: Value = response.json().await.expect("loki JSON");
                assert_eq!(body["status"], "success", "{file}: {expr}: {body}");
                let result = body["data"]["result"].as_array().map(Vec::len).unwrap_or(0);
                assert!(result > 0, "{file} / {}: no data for {expr}", panel["title"]);
            }
        }
    }
}
