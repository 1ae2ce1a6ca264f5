//! The router answers, and the color it sends traffic to is the one
//! Prometheus labels `role="active"` (from the router's file_sd file).

use serde_json::json;

use crate::check::{Component, Failure, Outcome};
use crate::stack::{Stack, Target};

/// Where to look when Prometheus and the router disagree.
const DISAGREE_HINT: &str = "Prometheus takes the role labels from the targets file the router writes \
    (file_sd, refreshed within ~15 s): right after a switch, wait and run again; otherwise compare \
    `docker compose exec router vigie status` with \
    `docker compose exec prometheus cat /etc/prometheus/targets/backend.json`";

/// The router's own claim, as Prometheus last scraped it from the admin
/// listener's `/metrics`.
const ROUTER_ACTIVE_GAUGE: &str = r#"vigie_router_active_color{job="router"} == 1"#;

pub async fn active_color(stack: &Stack) -> Outcome {
    let prometheus_skipped = stack.skips_component(Component::Prometheus);
    let router = match stack.router_status().await {
        Ok(status) => status.active.to_string(),
        // From the host, with the default URL, the admin API cannot answer
        // (compose does not publish it); Prometheus scrapes it from inside.
        Err(failure) if failure.unreachable && stack.admin_is_host_default() && !prometheus_skipped => {
            return through_prometheus(stack, failure).await;
        }
        Err(failure) => return failure.into(),
    };
    if prometheus_skipped {
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
    compare(&router, &colors, Source::AdminApi)
}

/// The router seen through Prometheus: its target is up (so it answers),
/// and its `vigie_router_active_color` gauge names the color it serves.
async fn through_prometheus(stack: &Stack, unreachable: Failure) -> Outcome {
    let not_even = |why: String| {
        Outcome::fail(format!("{}; {why}", unreachable.detail)).hint(unreachable.hint.clone().unwrap_or_default())
    };
    let targets = match stack.targets().await {
        Ok(targets) => targets,
        Err(failure) => return not_even(format!("Prometheus cannot tell either ({})", failure.detail)),
    };
    let routers: Vec<&Target> = targets.iter().filter(|t| t.job() == "router").collect();
    if !routers.iter().any(|t| t.health == "up") {
        let errors: Vec<&str> = routers
            .iter()
            .map(|t| t.last_error.as_str())
            .filter(|e| !e.is_empty())
            .collect();
        let why = if routers.is_empty() {
            "and Prometheus has no router target".to_owned()
        } else {
            format!("and Prometheus cannot scrape it either ({})", errors.join("; "))
        };
        return not_even(why);
    }
    let claimed = match stack.prometheus_query_labels(ROUTER_ACTIVE_GAUGE, "color").await {
        Ok(colors) => colors,
        Err(failure) => return not_even(format!("Prometheus cannot tell either ({})", failure.detail)),
    };
    let router = match claimed.as_slice() {
        [color] => color.clone(),
        other => {
            return not_even(format!(
                "and Prometheus has {} series for {ROUTER_ACTIVE_GAUGE}",
                other.len()
            ));
        }
    };
    match stack.prometheus_active_colors().await {
        Ok(colors) => compare(&router, &colors, Source::Metrics),
        Err(failure) => not_even(format!("Prometheus cannot tell either ({})", failure.detail)),
    }
}

/// Where the router's own word came from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    AdminApi,
    /// Its gauge in Prometheus: the admin API is not published on the host.
    Metrics,
}

fn compare(router: &str, prometheus: &[String], source: Source) -> Outcome {
    let data = json!({
        "router": router,
        "prometheus": prometheus,
        "router_seen_through": match source { Source::AdminApi => "admin-api", Source::Metrics => "prometheus" },
    });
    let (who, note) = match source {
        Source::AdminApi => ("router", ""),
        Source::Metrics => (
            "router's gauge in Prometheus",
            "; the admin API is not published on the host, the router was checked through Prometheus",
        ),
    };
    match prometheus {
        [] => Outcome::fail(format!(
            "{who}: {router} active; Prometheus has no backend target with role=\"active\""
        ))
        .hint(
            "the router writes the backend targets file at start and on each switch: \
                 docker compose exec prometheus cat /etc/prometheus/targets/backend.json",
        )
        .data(data),
        [color] if color == router => {
            Outcome::ok(format!("{router} ({who}) = {color} (Prometheus role=\"active\"){note}")).data(data)
        }
        [color] => Outcome::fail(format!(
            "{who}: {router} active, but Prometheus labels {color} role=\"active\""
        ))
        .hint(DISAGREE_HINT)
        .data(data),
        many => Outcome::fail(format!(
            "{who}: {router} active; Prometheus labels {} backend targets role=\"active\" ({})",
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
        let agree = compare("green", &colors(&["green"]), Source::AdminApi);
        assert_eq!(agree.status, Status::Ok);
        assert_eq!(agree.detail, "green (router) = green (Prometheus role=\"active\")");

        let disagree = compare("green", &colors(&["blue"]), Source::AdminApi);
        assert_eq!(disagree.status, Status::Fail);
        assert!(
            disagree.detail.contains("Prometheus labels blue"),
            "{}",
            disagree.detail
        );
        assert!(disagree.hint.is_some());

        assert_eq!(compare("blue", &[], Source::AdminApi).status, Status::Fail);
        assert_eq!(
            compare("blue", &colors(&["blue", "green"]), Source::AdminApi).status,
            Status::Fail
        );

        let through = compare("blue", &colors(&["blue"]), Source::Metrics);
        assert_eq!(through.status, Status::Ok);
        assert!(
            through.detail.starts_with("blue (router's gauge in Prometheus) = blue"),
            "{}",
            through.detail
        );
    }
}
