//! The router under load: switches lose no request and no write; a dead
//! backend gives fast 502/504 answers, never a hang.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fixture::Stack;
use crate::helpers::client;

/// How long the clients send requests.
const LOAD_FOR: Duration = Duration::from_secs(5);
/// Concurrent clients.
const CLIENTS: usize = 8;
/// Upper bound of requests per client, whatever the machine's speed.
const MAX_REQUESTS_PER_CLIENT: usize = 20_000;

#[derive(Default)]
struct ClientReport {
    ok: u64,
    failures: Vec<String>,
    created: Vec<i64>,
    colors: HashMap<String, u64>,
}

/// Alternates POST /api/tasks, GET /api/tasks/{id} and GET /api/info until
/// `stop`, recording every id created and every failure.
async fn run_client(base: String, n: usize, stop: Arc<AtomicBool>) -> ClientReport {
    let http = client();
    let mut report = ClientReport::default();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) && i < MAX_REQUESTS_PER_CLIENT {
        let request = match i % 3 {
            0 => http
                .post(format!("{base}/api/tasks"))
                .json(&json!({ "title": format!("client {n} task {i}") })),
            1 => match report.created.last() {
                Some(id) => http.get(format!("{base}/api/tasks/{id}")),
                None => http.get(format!("{base}/api/info")),
            },
            _ => http.get(format!("{base}/api/info")),
        };
        i += 1;
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                let color = response
                    .headers()
                    .get("x-vigie-color")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_owned();
                *report.colors.entry(color).or_default() += 1;
                let created = response.status() == 201;
                match response.json::<Value>().await {
                    Ok(body) => {
                        report.ok += 1;
                        if created {
                            report
                                .created
                                .push(body["id"].as_i64().expect("a created task has an id"));
                        }
                    }
                    Err(e) => report.failures.push(format!("body: {e}")),
                }
            }
            Ok(response) => {
                let status = response.status();
                report
                    .failures
                    .push(format!("{status}: {}", response.text().await.unwrap_or_default()));
            }
            Err(e) => report.failures.push(format!("transport: {e}")),
        }
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_back_and_forth_under_load_fails_no_request_and_loses_no_write() {
    // Quiet logs: the test reads none of them, and 8 busy clients make many.
    let stack = Stack::builder("router-load")
        .router_flags(&["--health-check-successes", "2", "--log-level", "warn,vigie_router=info"])
        .start()
        .await;
    let router = &stack.router;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(run_client(router.url(""), n, Arc::clone(&stop))))
        .collect();

    let started = Instant::now();
    let mut switches = Vec::new();
    let mut color = "blue";
    while started.elapsed() < LOAD_FOR {
        tokio::time::sleep(Duration::from_millis(150)).await;
        color = if color == "blue" { "green" } else { "blue" };
        let (status, body) = router.switch_to(color).await;
        assert_eq!((status, body["result"].as_str()), (200, Some("ok")), "{body}");
        assert_eq!(body["drained"], true, "{body}");
        switches.push(body["drain_ms"].as_u64().unwrap_or(0));
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = ClientReport::default();
    for handle in clients {
        let report = tokio::time::timeout(Duration::from_secs(15), handle)
            .await
            .expect("clients stop")
            .expect("join");
        total.ok += report.ok;
        total.failures.extend(report.failures);
        total.created.extend(report.created);
        for (color, n) in report.colors {
            *total.colors.entry(color).or_default() += n;
        }
    }

    eprintln!(
        "switch under load: {} requests ok, {} failed, {} tasks created, {} switches (drain ms {:?}), by color {:?}",
        total.ok,
        total.failures.len(),
        total.created.len(),
        switches.len(),
        switches,
        total.colors
    );
    assert!(switches.len() >= 10, "only {} switches", switches.len());
    assert!(
        total.failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        total.failures.len(),
        total.ok + total.failures.len() as u64,
        &total.failures[..total.failures.len().min(5)]
    );
    assert!(
        total.ok > 200,
        "too little load to mean anything: {} requests",
        total.ok
    );
    assert!(
        total.colors.get("blue") > Some(&0) && total.colors.get("green") > Some(&0),
        "{:?}",
        total.colors
    );

    // Every write is there, read back through the router and straight from
    // each backend (they share the database).
    let http = client();
    let mut listed = std::collections::HashSet::new();
    let mut offset = 0;
    loop {
        let page: Vec<Value> = http
            .get(stack.blue.url(&format!("/api/tasks?limit=500&offset={offset}")))
            .send()
            .await
            .expect("list tasks")
            .json()
            .await
            .expect("json list");
        if page.is_empty() {
            break;
        }
        offset += page.len();
        listed.extend(page.iter().filter_map(|t| t["id"].as_i64()));
    }
    let missing: Vec<_> = total.created.iter().filter(|id| !listed.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} created tasks are missing: {:?}",
        missing.len(),
        total.created.len(),
        &missing[..missing.len().min(10)]
    );
    for id in total.created.iter().step_by((total.created.len() / 20).max(1)) {
        let response = http
            .get(router.url(&format!("/api/tasks/{id}")))
            .send()
            .await
            .expect("GET task");
        assert_eq!(response.status(), 200, "task {id}");
    }
    let metrics = router.metrics_text().await;
    for color in ["blue", "green"] {
        for class in ["5xx", "4xx"] {
            let value = crate::helpers::metric_value(
                &metrics,
                "vigie_router_requests_total",
                &format!("color=\"{color}\",status_class=\"{class}\""),
            );
            assert_eq!(value, Some(0.0), "{color} {class}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_backend_mid_load_gives_fast_502_or_504_and_the_router_survives() {
    let mut stack = Stack::builder("router-kill")
        .router_flags(&[
            "--connect-timeout",
            "500ms",
            "--request-timeout",
            "2s",
            "--log-level",
            "warn,vigie_router=info",
        ])
        .start()
        .await;
    let router = &stack.router;
    let request_timeout = Duration::from_secs(2);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|n| {
            let (base, stop) = (router.url(""), Arc::clone(&stop));
            tokio::spawn(async move {
                let http = client();
                let (mut statuses, mut slowest, mut problems) =
                    (HashMap::<u16, u64>::new(), Duration::ZERO, Vec::new());
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && i < 50_000 {
                    i += 1;
                    let started = Instant::now();
                    let request = if i % 2 == 0 {
                        http.post(format!("{base}/api/tasks"))
                            .json(&json!({ "title": format!("kill {n} {i}") }))
                    } else {
                        http.get(format!("{base}/api/info"))
                    };
                    match request.send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            *statuses.entry(status).or_default() += 1;
                            if status >= 500 {
                                let body: Value = response.json().await.unwrap_or(Value::Null);
                                if !matches!(
                                    body["error"].as_str(),
                                    Some("upstream_unreachable" | "upstream_timeout")
                                ) {
                                    problems.push(format!("{status} without the JSON error body: {body}"));
                                }
                            }
                        }
                        Err(e) => problems.push(format!("transport error (the router must always answer): {e}")),
                    }
                    slowest = slowest.max(started.elapsed());
                }
                (statuses, slowest, problems)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1000)).await;
    stack.blue.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);

    let mut statuses = HashMap::<u16, u64>::new();
    for handle in clients {
        let (s, slowest, problems) = tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("no hang")
            .expect("join");
        assert!(problems.is_empty(), "{problems:?}");
        assert!(
            slowest < request_timeout + Duration::from_secs(1),
            "a request took {slowest:?}"
        );
        for (status, n) in s {
            *statuses.entry(status).or_default() += n;
        }
    }
    let errors: u64 = statuses
        .iter()
        .filter(|(s, _)| **s == 502 || **s == 504)
        .map(|(_, n)| n)
        .sum();
    let other: Vec<_> = statuses.keys().filter(|s| ![200, 201, 502, 504].contains(*s)).collect();
    assert!(other.is_empty(), "unexpected statuses: {statuses:?}");
    eprintln!("active backend killed mid-load: statuses {statuses:?}");
    assert!(errors > 0 && statuses.get(&200) > Some(&0), "{statuses:?}");

    // The router is fine: it reports, switches away, and serves again.
    assert_eq!(router.router_status().await["active"], "blue");
    let (status, body) = router.switch_to("green").await;
    assert_eq!(status, 200, "{body}");
    let response = client().get(router.url("/api/info")).send().await.expect("GET");
    assert_eq!(
        (
            response.status().as_u16(),
            response.headers()["x-vigie-color"].to_str().ok()
        ),
        (200, Some("green"))
    );
    let metrics = router.metrics_text().await;
    let connect = crate::helpers::metric_value(
        &metrics,
        "vigie_router_upstream_errors_total",
        r#"color="blue",kind="connect""#,
    );
    assert!(connect > Some(0.0), "{metrics}");
}
