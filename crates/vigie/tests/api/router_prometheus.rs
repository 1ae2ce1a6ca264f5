//! The real Prometheus, on the stack's scrape configuration, follows the
//! router's targets file: after a switch it sees the new color as active.

use std::time::Duration;

use serde_json::Value;

use crate::fixture::Stack;
use crate::helpers::eventually;
use crate::prometheus::Prometheus;

/// Backend job scrape interval (5 s) + file_sd refresh (5 s, and Prometheus
/// also watches the file) + the discovery manager's 5 s update batching,
/// with room for a slow machine.
const SEEN_WITHIN: Duration = Duration::from_secs(20);

/// (color, role, health) of each backend target Prometheus knows.
async fn backend_targets(prometheus: &Prometheus) -> Vec<(String, String, String)> {
    let text = |t: &Value, k: &str| t["labels"][k].as_str().unwrap_or("").to_owned();
    let mut targets: Vec<_> = prometheus
        .job_targets("backend")
        .await
        .iter()
        .map(|t| {
            (
                text(t, "color"),
                text(t, "role"),
                t["health"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    targets.sort();
    targets
}

#[tokio::test]
async fn prometheus_sees_the_new_active_color_after_a_switch() {
    let stack = Stack::builder("router-prometheus").prometheus().start().await;
    let prometheus = stack.prometheus();

    let up = |color: &str, role: &str| (color.to_owned(), role.to_owned(), "up".to_owned());
    eventually(SEEN_WITHIN, "Prometheus scrapes blue as active", || {
        let want = vec![up("blue", "active"), up("green", "standby")];
        async move { (backend_targets(prometheus).await == want).then_some(()) }
    })
    .await;

    let (status, body) = stack.switch_to("green").await;
    assert_eq!(status, 200, "{body}");
    eventually(
        SEEN_WITHIN,
        "Prometheus sees green as active after the switch",
        || async move {
            let targets = backend_targets(prometheus).await;
            let want = vec![up("blue", "standby"), up("green", "active")];
            (targets == want).then_some(())
        },
    )
    .await;

    // The router job scrapes the admin listener; its active-color gauge agrees.
    eventually(
        SEEN_WITHIN,
        "vigie_router_active_color{color=\"green\"} == 1 in Prometheus",
        || async move {
            let result = prometheus
                .query(r#"vigie_router_active_color{job="router",color="green"} == 1"#)
                .await;
            (!result.is_empty()).then_some(())
        },
    )
    .await;
}
