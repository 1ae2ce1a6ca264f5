//! Readiness checks of an upstream: the consecutive checks a switch waits
//! for, and the background probe whose last result `/status` shows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use crate::metrics::RouterMetrics;
use crate::routing::Routing;
use crate::upstream::{empty_body, Upstream};

#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub successes: u32,
}

/// Why a target did not become ready.
#[derive(Debug, Clone)]
pub struct NotReady {
    pub checks: u32,
    pub last_error: String,
}

/// One GET of the readiness path: Ok on a 2xx answered within `timeout`.
pub async fn probe(upstream: &Upstream, path: &str, timeout: Duration) -> Result<(), String> {
    let uri = upstream
        .url
        .uri(path)
        .map_err(|e| format!("invalid health check URL: {e}"))?;
    let request = http::Request::get(uri)
        .header(http::header::USER_AGENT, "vigie-router-health")
        .body(empty_body())
        .map_err(|e| format!("cannot build health check request: {e}"))?;
    let check = async {
        let response = upstream.client.request(request).await.map_err(|e| describe(&e))?;
        let status = response.status();
        // Read the (small) body so the connection goes back to the pool.
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{path} answered {status}"))
        }
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(result) => result,
        Err(_) => Err(format!("{path} did not answer within {} ms", timeout.as_millis())),
    }
}

/// Text of an error and its causes, e.g. `client error (Connect): tcp
/// connect error: Connection refused (os error 111)`.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Checks until `check.successes` consecutive successes, or fails once the
/// deadline leaves no room for them.
pub async fn wait_ready(upstream: &Upstream, check: &HealthCheck, deadline: Instant) -> Result<u32, NotReady> {
    let mut checks = 0;
    let mut consecutive = 0;
    // Reported when the deadline passes: a late timer must not hide why.
    let mut last_error: Option<String> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NotReady {
                checks,
                last_error: last_error.unwrap_or_else(|| "no check completed within the deploy timeout".into()),
            });
        }
        checks += 1;
        match probe(upstream, &check.path, check.timeout.min(left)).await {
            Ok(()) => {
                consecutive += 1;
                if consecutive >= check.successes {
                    return Ok(checks);
                }
            }
            Err(error) => {
                consecutive = 0;
                tracing::debug!(color = %upstream.color, error = %error, "readiness check failed");
                if Instant::now() + check.interval >= deadline {
                    return Err(NotReady {
                        checks,
                        last_error: error,
                    });
                }
                last_error = Some(error);
            }
        }
        tokio::time::sleep(check.interval.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// Probes both colors every `every`, for `/status` and the healthy gauge.
/// Logs only changes, so a steady state costs no log lines.
pub async fn watch(routing: Arc<Routing>, check: HealthCheck, every: Duration, metrics: RouterMetrics) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for color in vigie_telemetry::Color::ALL {
            let upstream = routing.upstream(color);
            let result = probe(upstream, &check.path, check.timeout).await;
            let healthy = result.is_ok();
            metrics.set_healthy(color, healthy);
            let error = result.as_ref().err().cloned().unwrap_or_default();
            let previous = upstream.record_health(result);
            if previous != Some(healthy) {
                if healthy {
                    tracing::info!(color = %color, url = %upstream.url, "upstream is ready");
                } else {
                    tracing::warn!(color = %color, url = %upstream.url, error = %error, "upstream is not ready");
                }
            }
        }
    }
}
