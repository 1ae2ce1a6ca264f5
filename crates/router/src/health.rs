//! Readiness checks of an upstream: the consecutive checks a switch waits
//! for, and the background probe whose last result `/status` shows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use crate::error::describe;
use crate::metrics::RouterMetrics;
use crate::pool::{empty_body, SendError};
use crate::routing::Routing;
use crate::upstream::{ProbeFailure, Upstream};

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

/// A readiness answer is small; a bigger one is read no further.
const MAX_READY_BODY_BYTES: usize = 16 * 1024;

/// One GET of the readiness path: Ok on a 2xx answered within `timeout`,
/// with the `version` of a JSON answer that has one (vigie's backend says
/// which release it is; another service may say nothing).
pub async fn probe(upstream: &Upstream, path: &str, timeout: Duration) -> Result<Option<String>, ProbeFailure> {
    let failed = |message: String| ProbeFailure {
        message,
        nothing_listening: false,
    };
    let request = http::Request::get(path)
        .header(http::header::USER_AGENT, "vigie-router-health")
        .body(empty_body())
        .map_err(|e| failed(format!("cannot build health check request: {e}")))?;
    let timed_out = || failed(format!("{path} did not answer within {} ms", timeout.as_millis()));
    let check = async {
        let response = upstream
            .pool
            .send(request, std::iter::empty(), timeout)
            .await
            .map_err(|e| match e {
                SendError::TimedOut(_) => timed_out(),
                e => ProbeFailure {
                    nothing_listening: matches!(e, SendError::Connect(_)),
                    message: describe(&e),
                },
            })?;
        let status = response.status();
        // Read the (small) body so the connection goes back to the pool.
        let body = http_body_util::Limited::new(response.into_body(), MAX_READY_BODY_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            Ok(version_of(&body))
        } else {
            Err(failed(format!("{path} answered {status}")))
        }
    };
    // The body too must come within the time.
    match tokio::time::timeout(timeout, check).await {
        Ok(result) => result,
        Err(_) => Err(timed_out()),
    }
}

/// The `version` string of a JSON object, if it is one and has a plain one.
fn version_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Ready {
        version: Option<String>,
    }
    let version = serde_json::from_slice::<Ready>(body).ok()?.version?;
    let plain = !version.is_empty()
        && version.len() <= 64
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+'));
    plain.then_some(version)
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
            Ok(version) => {
                upstream.record_version(version);
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
                        last_error: error.message,
                    });
                }
                last_error = Some(error.message);
            }
        }
        tokio::time::sleep(check.interval.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// Probes both colors every `every`, for `/status` and the healthy gauge,
/// and closes their pools' expired idle connections.
/// Logs only changes, so a steady state costs no log lines.
pub async fn watch(routing: Arc<Routing>, check: HealthCheck, every: Duration, metrics: RouterMetrics) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for color in vigie_telemetry::Color::ALL {
            let upstream = routing.upstream(color);
            upstream.pool.prune();
            let result = probe(upstream, &check.path, check.timeout).await;
            let healthy = result.is_ok();
            metrics.set_healthy(color, healthy);
            let error = result.as_ref().err().map(|e| e.message.clone()).unwrap_or_default();
            let (previous, version_changed) = upstream.record_health(result);
            if previous != Some(healthy) || version_changed {
                if healthy {
                    let version = upstream.health().version;
                    tracing::info!(color = %color, url = %upstream.url, version, "upstream is ready");
                } else {
                    tracing::warn!(color = %color, url = %upstream.url, error = %error, "upstream is not ready");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::version_of;

    #[test]
    fn takes_a_plain_version_from_a_json_readiness_answer_and_nothing_else() {
        assert_eq!(
            version_of(br#"{"status":"ready","version":"1.4.0-rc.1+g3a2b"}"#).as_deref(),
            Some("1.4.0-rc.1+g3a2b")
        );
        for body in [
            &b"ok"[..],
            br#"{"status":"ready"}"#,
            br#"{"version":""}"#,
            br#"{"version":"1.0 \"quoted\""}"#,
            br#"{"version":12}"#,
        ] {
            assert_eq!(version_of(body), None, "{}", String::from_utf8_lossy(body));
        }
    }
}
