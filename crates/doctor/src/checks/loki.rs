//! Loki: ready, and it received lines from the active color recently.
//! API: https://grafana.com/docs/loki/latest/reference/loki-http-api/
//! (`GET /ready`: 200 when ready to accept traffic; `GET /loki/api/v1/query`:
//! an instant query whose metric result is `{"status": "success", "data":
//! {"resultType": "vector", "result": [{"metric": {…}, "value": [<unix
//! seconds>, "<value>"]}]}}`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::check::Outcome;
use crate::http::Auth;
use crate::stack::Stack;

const NOT_READY_HINT: &str = "Loki says ready about 15 s after it starts (its ingester joins the ring); \
    if it stays not ready: docker compose logs loki --tail 50";

const NO_LINES_HINT: &str = "Promtail ships the containers' logs to Loki: docker compose ps promtail; \
    docker compose logs promtail --tail 50. The backend logs API requests only (probes and scrapes are \
    dropped): is the traffic generator running? docker compose ps loadgen";

pub async fn ready(stack: &Stack) -> Outcome {
    let url = format!("{}/ready", stack.urls.loki);
    match stack.http.get(&url, &[], Auth::None).await {
        Ok(answer) if answer.status == 200 => Outcome::ok("ready"),
        Ok(answer) => Outcome::fail(format!("not ready: {}", answer.unexpected())).hint(NOT_READY_HINT),
        Err(error) => Outcome::fail(error.to_string()).hint(Stack::unreachable_hint("loki")),
    }
}

/// A LogQL range as a person writes it: `5m`, `90s`, `1h`.
pub fn logql_duration(window: Duration) -> String {
    let seconds = window.as_secs().max(1);
    if seconds % 3600 == 0 {
        format!("{}h", seconds / 3600)
    } else if seconds % 60 == 0 {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

/// Lines per color over `window`, in one instant query.
pub fn lines_by_color_query(window: Duration) -> String {
    format!(
        "sum by (color) (count_over_time({{color=~\"blue|green\"}}[{}]))",
        logql_duration(window)
    )
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryAnswer {
    status: String,
    data: Option<QueryData>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryData {
    result_type: String,
    #[serde(default)]
    result: Vec<VectorSample>,
}

#[derive(Debug, Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    /// `[<unix seconds>, "<value>"]`.
    value: (Value, String),
}

pub async fn logs(stack: &Stack) -> Outcome {
    let active = match stack.active_color().await {
        Ok(color) => color,
        Err(failure) => return failure.into(),
    };
    let window = stack.args.logs_window;
    let query = lines_by_color_query(window);
    let url = format!("{}/loki/api/v1/query", stack.urls.loki);
    let answer = match stack.http.get(&url, &[("query", &query)], Auth::None).await {
        Ok(answer) => answer,
        Err(error) => return Outcome::fail(error.to_string()).hint(Stack::unreachable_hint("loki")),
    };
    if !answer.is_success() {
        return Outcome::fail(format!("query {query}: {}", answer.unexpected())).hint(NOT_READY_HINT);
    }
    let parsed: QueryAnswer = match answer.json() {
        Ok(parsed) => parsed,
        Err(error) => return Outcome::fail(error.to_string()).hint("is this Loki?"),
    };
    match lines_by_color(parsed) {
        Ok(counts) => judge(&active, &counts, window),
        Err(why) => Outcome::fail(format!("query {query} at {url}: {why}")).hint("is this Loki?"),
    }
}

fn lines_by_color(answer: QueryAnswer) -> Result<BTreeMap<String, u64>, String> {
    let data = match (answer.status.as_str(), answer.data) {
        ("success", Some(data)) => data,
        (status, _) => return Err(format!("status {status:?} without data")),
    };
    if data.result_type != "vector" {
        return Err(format!("expected a vector result, got {:?}", data.result_type));
    }
    let mut counts = BTreeMap::new();
    for sample in data.result {
        let color = sample.metric.get("color").cloned().unwrap_or_default();
        let value: f64 = sample
            .value
            .1
            .parse()
            .map_err(|_| format!("sample value {:?} is not a number", sample.value.1))?;
        // Counts of lines: whole, non-negative numbers.
        let lines = if value.is_finite() && value > 0.0 {
            value.round() as u64
        } else {
            0
        };
        *counts.entry(color).or_insert(0) += lines;
    }
    Ok(counts)
}

fn judge(active: &str, counts: &BTreeMap<String, u64>, window: Duration) -> Outcome {
    let window = logql_duration(window);
    let lines = counts.get(active).copied().unwrap_or(0);
    let others: Vec<String> = counts
        .iter()
        .filter(|(color, _)| color.as_str() != active)
        .map(|(c, n)| format!("{c}: {n}"))
        .collect();
    let others = if others.is_empty() {
        String::new()
    } else {
        format!(" ({})", others.join(", "))
    };
    let data = json!({ "active": active, "window": window, "lines": counts });
    if lines > 0 {
        Outcome::ok(format!("{active}: {lines} lines in the last {window}{others}")).data(data)
    } else {
        Outcome::fail(format!(
            "no line from the active color {active} in the last {window}{others}"
        ))
        .hint(NO_LINES_HINT)
        .data(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    #[test]
    fn the_query_counts_lines_per_color_over_the_window() {
        assert_eq!(
            lines_by_color_query(Duration::from_secs(300)),
            r#"sum by (color) (count_over_time({color=~"blue|green"}[5m]))"#
        );
        assert_eq!(logql_duration(Duration::from_secs(90)), "90s");
        assert_eq!(logql_duration(Duration::from_secs(7200)), "2h");
    }

    #[test]
    fn counts_come_from_the_documented_vector_shape() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"color":"green"},"value":[1588889221,"1267"]},
            {"metric":{"color":"blue"},"value":[1588889221,"3"]}],"stats":{}}}"#;
        let counts = lines_by_color(serde_json::from_str(body).expect("answer")).expect("counts");
        assert_eq!(counts.get("green"), Some(&1267));

        let ok = judge("green", &counts, Duration::from_secs(300));
        assert_eq!(ok.status, Status::Ok);
        assert_eq!(ok.detail, "green: 1267 lines in the last 5m (blue: 3)");

        let silent = judge("green", &BTreeMap::new(), Duration::from_secs(300));
        assert_eq!(silent.status, Status::Fail);
        assert_eq!(silent.detail, "no line from the active color green in the last 5m");
    }

    #[test]
    fn a_stream_answer_is_not_a_count() {
        let body = r#"{"status":"success","data":{"resultType":"streams","result":[]}}"#;
        assert!(lines_by_color(serde_json::from_str(body).expect("answer")).is_err());
    }
}
