//! Grafana: healthy, each data source answers its health check, and the
//! provisioned dashboards are in their folder. API (Grafana HTTP API docs):
//! - `GET /api/health` → `{"commit": …, "database": "ok", "version": …}`,
//!   503 when the database cannot be reached;
//! - `GET /api/datasources` (needs `datasources:read`, which an anonymous
//!   Viewer does not have) → `[{"uid", "name", "type", …}]`;
//! - `GET /api/datasources/uid/{uid}/health` (needs `datasources:query`) →
//!   200 `{"status": "OK", "message": …}`, 400 `{"status": "ERROR", …}`; a
//!   plugin without a backend health check (the Alertmanager data source)
//!   answers 404, and Grafana's own "Test" button then calls the
//!   Alertmanager's `/api/v2/status` through the data source proxy
//!   (`/api/datasources/proxy/uid/{uid}/…`): the doctor does the same. A
//!   Tempo data source answering 404 is tested the way Tempo's API docs
//!   intend for Grafana: `GET /api/echo` (200, body `echo`) through the proxy;
//! - `GET /api/search?type=dash-db&folderUIDs={uid}` →
//!   `[{"uid", "title", "type": "dash-db", "folderUid", …}]`.

use serde::Deserialize;
use serde_json::json;
use tokio::task::JoinSet;

use crate::check::Outcome;
use crate::http::{Credentials, Http};
use crate::stack::{Stack, GRAFANA_AUTH_HINT as AUTH_HINT};

fn credentials(stack: &Stack) -> Credentials {
    stack.grafana_credentials()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Health {
    database: String,
    version: String,
}

pub async fn health(stack: &Stack) -> Outcome {
    let url = format!("{}/api/health", stack.urls.grafana);
    let answer = match stack.http.get(&url, &[], credentials(stack).auth()).await {
        Ok(answer) => answer,
        Err(error) => return Outcome::fail(error.to_string()).hint(Stack::unreachable_hint("grafana")),
    };
    let health: Health = match answer.json() {
        Ok(health) if answer.is_success() => health,
        _ => return Outcome::fail(answer.unexpected()).hint("docker compose logs grafana --tail 50"),
    };
    let data = json!({ "database": health.database, "version": health.version });
    if health.database == "ok" {
        Outcome::ok(format!("database ok, version {}", health.version)).data(data)
    } else {
        Outcome::fail(format!("database {:?} at {url}", health.database))
            .hint("Grafana cannot use its database: docker compose logs grafana --tail 50")
            .data(data)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct DataSource {
    uid: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DataSourceHealth {
    status: String,
    message: String,
}

/// What one data source's check found.
#[derive(Debug)]
struct Verdict {
    uid: String,
    ok: bool,
    message: String,
}

pub async fn datasources(stack: &Stack) -> Outcome {
    let base = stack.urls.grafana.clone();
    let creds = credentials(stack);
    // A data source named after an --optional service that is not running
    // cannot answer; it is not expected then.
    let expected: Vec<String> = stack
        .args
        .datasource_uids()
        .into_iter()
        .filter(|uid| stack.absent(uid).is_none())
        .collect();

    // The list tells the type of each data source and the extra ones; an
    // anonymous Viewer may not read it, then the expected uids are checked.
    let list_url = format!("{base}/api/datasources");
    let listed: Option<Vec<DataSource>> = match stack.http.get(&list_url, &[], creds.auth()).await {
        Ok(answer) if answer.status == 200 => match answer.json() {
            Ok(list) => Some(list),
            Err(error) => return Outcome::fail(error.to_string()).hint("is this Grafana?"),
        },
        Ok(answer) if answer.status == 401 || answer.status == 403 => None,
        Ok(answer) => return Outcome::fail(answer.unexpected()).hint("docker compose logs grafana --tail 50"),
        Err(error) => return Outcome::fail(error.to_string()).hint(Stack::unreachable_hint("grafana")),
    };

    let mut to_check: Vec<(String, Option<String>)> = Vec::new();
    let mut verdicts: Vec<Verdict> = Vec::new();
    for uid in &expected {
        match &listed {
            Some(list) => match list.iter().find(|ds| &ds.uid == uid) {
                Some(ds) => to_check.push((uid.clone(), Some(ds.kind.clone()))),
                None => verdicts.push(Verdict {
                    uid: uid.clone(),
                    ok: false,
                    message: "not provisioned".to_owned(),
                }),
            },
            None => to_check.push((uid.clone(), None)),
        }
    }
    for ds in listed.iter().flatten().filter(|ds| !expected.contains(&ds.uid)) {
        to_check.push((ds.uid.clone(), Some(ds.kind.clone())));
    }

    let mut tasks = JoinSet::new();
    for (index, (uid, kind)) in to_check.iter().cloned().enumerate() {
        let (http, base, creds) = (stack.http.clone(), base.clone(), creds.clone());
        tasks.spawn(async move { (index, check_one(&http, &base, &creds, uid, kind).await) });
    }
    let mut checked: Vec<(usize, Verdict)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(pair) => checked.push(pair),
            Err(error) => verdicts.push(Verdict {
                uid: "?".to_owned(),
                ok: false,
                message: error.to_string(),
            }),
        }
    }
    checked.sort_by_key(|(index, _)| *index);
    verdicts.extend(checked.into_iter().map(|(_, verdict)| verdict));
    summarize(
        &verdicts,
        listed.is_none(),
        listed.map(|l| l.into_iter().map(|ds| ds.name).collect()),
    )
}

async fn check_one(http: &Http, base: &str, creds: &Credentials, uid: String, kind: Option<String>) -> Verdict {
    let verdict = |ok: bool, message: String| Verdict {
        uid: uid.clone(),
        ok,
        message,
    };
    let url = format!("{base}/api/datasources/uid/{uid}/health");
    let answer = match http.get(&url, &[], creds.auth()).await {
        Ok(answer) => answer,
        Err(error) => return verdict(false, error.to_string()),
    };
    match (answer.status, proxy_probe(&uid, kind.as_deref())) {
        (200 | 400, _) => match answer.json::<DataSourceHealth>() {
            Ok(health) if health.status == "OK" => verdict(true, health.message),
            Ok(health) => verdict(false, format!("{}: {}", health.status, health.message)),
            Err(error) => verdict(false, error.to_string()),
        },
        (404, Some((path, what))) => {
            let proxy = format!("{base}/api/datasources/proxy/uid/{uid}{path}");
            match http.get(&proxy, &[], creds.auth()).await {
                Ok(status) if status.is_success() => {
                    verdict(true, format!("{what} answers through the data source proxy"))
                }
                Ok(status) => verdict(
                    false,
                    format!(
                        "no health check ({}); through the data source proxy: {}",
                        answer.snippet(),
                        status.unexpected()
                    ),
                ),
                Err(error) => verdict(false, error.to_string()),
            }
        }
        (401 | 403, _) => verdict(false, format!("refused: {}", answer.unexpected())),
        _ => verdict(false, answer.unexpected()),
    }
}

/// For a data source without a backend health check: the path its "Test"
/// asks through the data source proxy, and what answers there. Without the
/// list (anonymous), the kind is not known: the uid names it.
fn proxy_probe(uid: &str, kind: Option<&str>) -> Option<(&'static str, &'static str)> {
    match kind {
        Some("tempo") => Some(("/api/echo", "Tempo's echo endpoint")),
        Some("alertmanager") => Some(("/api/v2/status", "Alertmanager status API")),
        Some(_) => None,
        None if uid == "tempo" => Some(("/api/echo", "Tempo's echo endpoint")),
        None => Some(("/api/v2/status", "Alertmanager status API")),
    }
}

fn summarize(verdicts: &[Verdict], unlisted: bool, names: Option<Vec<String>>) -> Outcome {
    let total = verdicts.len();
    let passed: Vec<&Verdict> = verdicts.iter().filter(|v| v.ok).collect();
    let failed: Vec<&Verdict> = verdicts.iter().filter(|v| !v.ok).collect();
    let data = json!({
        "listed": names,
        "datasources": verdicts.iter().map(|v| json!({ "uid": v.uid, "ok": v.ok, "message": v.message })).collect::<Vec<_>>(),
    });
    let note = if unlisted {
        " (list not readable without a login: checked the expected uids)"
    } else {
        ""
    };
    if total == 0 {
        return Outcome::fail("no data source to check")
            .hint("pass --grafana-datasources")
            .data(data);
    }
    if failed.is_empty() {
        let uids: Vec<&str> = passed.iter().map(|v| v.uid.as_str()).collect();
        return Outcome::ok(format!("{total}/{total} answer: {}{note}", uids.join(", "))).data(data);
    }
    let listed: Vec<String> = failed.iter().map(|v| format!("{}: {}", v.uid, v.message)).collect();
    let refused = failed.iter().any(|v| v.message.starts_with("refused"));
    let hint = if refused {
        AUTH_HINT.to_owned()
    } else {
        "Grafana reaches its data sources over the compose network: docker compose ps prometheus loki tempo alertmanager; \
         in Grafana: Connections > Data sources > Test"
            .to_owned()
    };
    Outcome::fail(format!("{}/{total} answer; {}{note}", passed.len(), listed.join("; ")))
        .hint(hint)
        .data(data)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SearchHit {
    uid: String,
    title: String,
    folder_uid: Option<String>,
}

pub async fn dashboards(stack: &Stack) -> Outcome {
    let folder = stack.args.grafana_folder.as_str();
    let url = format!("{}/api/search", stack.urls.grafana);
    let query = [("type", "dash-db"), ("folderUIDs", folder)];
    let answer = match stack.http.get(&url, &query, credentials(stack).auth()).await {
        Ok(answer) => answer,
        Err(error) => return Outcome::fail(error.to_string()).hint(Stack::unreachable_hint("grafana")),
    };
    if answer.status == 401 || answer.status == 403 {
        return Outcome::fail(format!("refused: {}", answer.unexpected())).hint(AUTH_HINT);
    }
    if !answer.is_success() {
        return Outcome::fail(answer.unexpected()).hint("docker compose logs grafana --tail 50");
    }
    let hits: Vec<SearchHit> = match answer.json() {
        Ok(hits) => hits,
        Err(error) => return Outcome::fail(error.to_string()).hint("is this Grafana?"),
    };
    judge_dashboards(folder, &stack.args.dashboard_uids(), &hits)
}

fn judge_dashboards(folder: &str, expected: &[String], hits: &[SearchHit]) -> Outcome {
    // A Grafana that ignored folderUIDs would list every dashboard: keep
    // those it says are in the folder.
    let in_folder: Vec<&SearchHit> = hits
        .iter()
        .filter(|h| h.folder_uid.as_deref().is_none_or(|uid| uid == folder))
        .collect();
    let found: Vec<&str> = in_folder.iter().map(|h| h.uid.as_str()).collect();
    let missing: Vec<&str> = expected
        .iter()
        .map(String::as_str)
        .filter(|uid| !found.contains(uid))
        .collect();
    let data = json!({
        "folder": folder,
        "found": in_folder.iter().map(|h| json!({ "uid": h.uid, "title": h.title })).collect::<Vec<_>>(),
        "missing": missing,
    });
    let hint = "Grafana provisions them from stack/grafana/dashboards at start and every 30 s: \
                docker compose logs grafana | grep -i provisioning";
    if expected.is_empty() {
        return if in_folder.is_empty() {
            Outcome::fail(format!("no dashboard in folder {folder}"))
                .hint(hint)
                .data(data)
        } else {
            Outcome::ok(format!("{} in folder {folder}", in_folder.len())).data(data)
        };
    }
    if missing.is_empty() {
        Outcome::ok(format!(
            "{}/{} provisioned in folder {folder}",
            expected.len(),
            expected.len()
        ))
        .data(data)
    } else {
        Outcome::fail(format!(
            "{}/{} in folder {folder}; missing: {}",
            expected.len() - missing.len(),
            expected.len(),
            missing.join(", ")
        ))
        .hint(hint)
        .data(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    fn verdict(uid: &str, ok: bool, message: &str) -> Verdict {
        Verdict {
            uid: uid.to_owned(),
            ok,
            message: message.to_owned(),
        }
    }

    #[test]
    fn every_data_source_must_answer() {
        let all = [verdict("prometheus", true, "ok"), verdict("loki", true, "ok")];
        let outcome = summarize(&all, false, None);
        assert_eq!(
            (outcome.status, outcome.detail.as_str()),
            (Status::Ok, "2/2 answer: prometheus, loki")
        );

        let one_down = [
            verdict("prometheus", true, "ok"),
            verdict("loki", false, "ERROR: connection refused"),
        ];
        let outcome = summarize(&one_down, true, None);
        assert_eq!(outcome.status, Status::Fail);
        assert!(
            outcome
                .detail
                .starts_with("1/2 answer; loki: ERROR: connection refused"),
            "{}",
            outcome.detail
        );
    }

    #[test]
    fn dashboards_parse_from_the_documented_search_shape_and_missing_ones_fail() {
        let body = r#"[{"id":1,"uid":"vigie-overview","title":"vigie / Service overview","url":"/d/vigie-overview/x",
            "type":"dash-db","tags":[],"isStarred":false,"folderId":2,"folderUid":"vigie","folderTitle":"vigie",
            "folderUrl":"/dashboards/f/vigie/vigie"},
            {"id":9,"uid":"elsewhere","title":"Other","type":"dash-db","folderUid":"other"}]"#;
        let hits: Vec<SearchHit> = serde_json::from_str(body).expect("hits");
        let expected = vec!["vigie-overview".to_owned(), "vigie-logs".to_owned()];
        let outcome = judge_dashboards("vigie", &expected, &hits);
        assert_eq!(outcome.status, Status::Fail);
        assert_eq!(outcome.detail, "1/2 in folder vigie; missing: vigie-logs");

        let ok = judge_dashboards("vigie", &expected[..1], &hits);
        assert_eq!(
            (ok.status, ok.detail.as_str()),
            (Status::Ok, "1/1 provisioned in folder vigie")
        );
        assert_eq!(judge_dashboards("vigie", &[], &hits[1..]).status, Status::Fail);
    }
}
