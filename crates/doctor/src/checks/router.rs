//! The router answers, and the color it sends traffic to is the one
//! Prometheus labels `role="active"` (from the router's file_sd file).

use serde_json::json;

use crate::check::{Component, Outcome};
use crate::stack::Stack;

/// Where to look when Prometheus and the router disagree.
const DISAGREE_HINT: &str = "Prometheus takes the role labels from the targets file the router writes \
    (file_sd, refreshed within ~15 s): right after a switch, wait and run again; otherwise compare \
    `docker compose exec router vigie status` with \
    `docker compose exec prometheus cat /etc/prometheus/targets/backend.json`";

pub async fn active_color(stack: &Stack) -> Outcome {
    let router = match stack.router_status().await {
        Ok(status) => status.active.to_string(),
        Err(failure) => return failure.into(),
    };
    if stack.skips_component(Component::Prometheus) {
        return Outcome::ok(format!("router: {router} active (Prometheus skipped: not compared)"))
            .data(json!({ "router": router }));
    }
    let colors = match stack.prometheus_active_colors().await {
        Ok(colors) => colors,
        Err(failure) => {
            return Outcome::fail(format!("router: {router} active; Prometheus: {}", failure.detail))
                .hint(failure.hint.unwrap_or_default())
        }
    };
    compare(&router, &colors)
}

fn compare(router: &str, prometheus: &[String]) -> Outcome {
    let data = json!({ "router": router, "prometheus": prometheus });
    match prometheus {
        [] => Outcome::fail(format!("router: {router} active; Prometheus has no backend target with role=\"active\""))
            .hint(
                "the router writes the backend targets file at start and on each switch: \
                 docker compose exec prometheus cat /etc/prometheus/targets/backend.json",
            )
            .data(data),
        [color] if color == router => {
            Outcome::ok(format!("{router} (router) = {color} (Prometheus role=\"active\")")).data(data)
        }
        [color] => Outcome::fail(format!("router: {router} active, but Prometheus labels {color} role=\"active\""))
            .hint(DISAGREE_HINT)
            .data(data),
        many => Outcome::fail(format!(
            "router: {router} active; Prometheus labels {} backend targets role=\"active\" ({})",
            many.len(),
            many.join(", ")
        ))
        .hint(DISAGREE_HINT)
        .data(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    fn colors(list: &[&str]) -> Vec<String> {
        list.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn agreement_passes_and_disagreement_fails_with_a_hint() {
        let agree = compare("green", &colors(&["green"]));
        assert_eq!(agree.status, Status::Ok);
        assert_eq!(agree.detail, "green (router) = green (Prometheus role=\"active\")");

        let disagree = compare("green", &colors(&["blue"]));
        assert_eq!(disagree.status, Status::Fail);
        assert!(disagree.detail.contains("Prometheus labels blue"), "{}", disagree.detail);
        assert!(disagree.hint.is_some());

        assert_eq!(compare("blue", &[]).status, Status::Fail);
        assert_eq!(compare("blue", &colors(&["blue", "green"])).status, Status::Fail);
    }
}
