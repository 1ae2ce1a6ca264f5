//! The admin listener: `GET /status`, `POST /switch` (optionally guarded,
//! see [`crate::guard`]), `GET /guard` (the guard, long-polled for a
//! verdict with `?switch=N&wait=30s`; these three behind the bearer
//! token when one is set), `GET /metrics` and `GET /health/live` (open, so
//! Prometheus and container health checks need no secret; neither reveals
//! or changes anything sensitive).
//!
//! `POST /switch` takes `application/json` only and refuses a request from
//! another origin: a web page can send a form (`text/plain`, no preflight)
//! to any address its browser reaches, the admin port on the same machine
//! included, and without a token nothing else would stop it. Without a
//! token it also takes only a `Host` that is an IP address or `localhost`:
//! a page whose own name was rebound to the admin address (DNS rebinding)
//! is same-origin for its browser, but its `Host` still carries that name.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use vigie_telemetry::config::parse_duration;
use vigie_telemetry::{exposition, Color, Registry};

use crate::error::{json_error, AdminError};
use crate::guard::{Guard, Precheck};
use crate::state_file::rfc3339;
use crate::switch::{SwitchResult, Switcher};

/// The admin bearer token; its `Debug` form never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub String);

impl AdminToken {
    pub const ENV: &'static str = "VIGIE_ADMIN_TOKEN";

    pub fn from_env() -> Option<AdminToken> {
        std::env::var(Self::ENV).ok().filter(|t| !t.is_empty()).map(AdminToken)
    }

    /// Compares in time independent of where the first difference is
    /// (`subtle`; only a length difference answers early).
    pub fn matches(&self, candidate: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.as_bytes().ct_eq(candidate.as_bytes()))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

/// A switch request is a few bytes; anything bigger is a mistake.
const MAX_BODY_BYTES: usize = 4 * 1024;
/// Reasons end up in log lines: keep them short.
const MAX_REASON_CHARS: usize = 200;

#[derive(Clone)]
pub struct Admin {
    pub switcher: Arc<Switcher>,
    pub guard: Arc<Guard>,
    pub token: Option<AdminToken>,
}

pub fn app(admin: Admin, registry: Arc<Registry>) -> Router {
    let protected = Router::new()
        .route("/status", get(status))
        .route("/switch", post(switch))
        .route("/guard", get(guard_status))
        .route_layer(middleware::from_fn_with_state(admin.token.clone(), require_token))
        .with_state(admin);
    Router::new()
        .merge(protected)
        .route("/health/live", get(|| async { Json(json!({ "status": "live" })) }))
        .route("/metrics", get(exposition::metrics_handler).with_state(registry))
        .fallback(|| async { AdminError::NotFound })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

async fn require_token(State(token): State<Option<AdminToken>>, request: Request, next: Next) -> Response {
    if let Some(token) = token {
        let given = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|given| token.matches(given)) {
            tracing::warn!(target: "admin", path = %request.uri().path(), "admin request refused: missing or wrong token");
            return AdminError::Unauthorized.into_response();
        }
    }
    next.run(request).await
}

async fn status(State(admin): State<Admin>) -> Json<Value> {
    let routing = &admin.switcher.routing;
    let upstream = |color: Color| {
        let upstream = routing.upstream(color);
        let health = upstream.health();
        json!({
            "url": upstream.url.to_string(),
            "target": upstream.url.host_port(),
            "state": upstream.state(),
            "healthy": health.healthy,
            "checked_at": health.checked_at.map(rfc3339),
            "error": health.error,
            "version": health.version,
            "in_flight": upstream.in_flight(),
        })
    };
    Json(json!({
        "active": routing.active(),
        "since": rfc3339(routing.since()),
        "switches": routing.switches(),
        "upstreams": { "blue": upstream(Color::Blue), "green": upstream(Color::Green) },
        "guard": admin.guard.status(),
    }))
}

/// The longest a `GET /guard` long poll is held; the client asks again.
const MAX_GUARD_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardQuery {
    /// The guard to wait for: the `switch` number of its guarded switch.
    switch: Option<u64>,
    /// How long to hold the answer for its verdict, e.g. `30s` (at most 60s).
    wait: Option<String>,
}

/// `GET /guard`: the guard's status at once, or with `switch` and `wait`,
/// once that guard has a verdict (or a later one replaced it), or when the
/// wait ran out (`running` still true).
async fn guard_status(
    State(admin): State<Admin>,
    query: Result<Query<GuardQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, AdminError> {
    let Query(query) =
        query.map_err(|e| AdminError::BadRequest(format!("expected ?switch=N&wait=DURATION: {}", e.body_text())))?;
    let wait = match query.wait.as_deref() {
        Some(text) => {
            let wait = parse_duration(text).map_err(|e| AdminError::BadRequest(format!("wait: {e}")))?;
            if wait > MAX_GUARD_WAIT {
                return Err(AdminError::BadRequest(format!(
                    "wait: {text:?} is longer than {}s; ask again instead",
                    MAX_GUARD_WAIT.as_secs()
                )));
            }
            wait
        }
        None => std::time::Duration::ZERO,
    };
    let status = match (query.switch, wait.is_zero()) {
        (Some(switch), false) => admin.guard.wait_verdict(switch, wait).await,
        (None, false) => {
            return Err(AdminError::BadRequest(
                "wait needs switch=N, the guarded switch to wait for".into(),
            ))
        }
        _ => admin.guard.status(),
    };
    Ok(Json(json!(status)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchRequest {
    to: String,
    #[serde(default)]
    reason: Option<String>,
    /// Guard window, e.g. `"2m"`: check the new color in Prometheus for
    /// this long after the switch and switch back on a breach.
    #[serde(default)]
    guard: Option<String>,
    /// Switch even when the standby pre-check says the color is failing.
    #[serde(default)]
    force: bool,
    /// Judge by error budget burn rate (the router's SLO file) instead of
    /// the thresholds.
    #[serde(default)]
    slo: bool,
}

/// A guard window: within 1s..24h, and no shorter than one check interval
/// (a window that ends before its first check would judge nothing).
fn parse_guard(text: &str, interval: std::time::Duration) -> Result<std::time::Duration, AdminError> {
    let window = parse_duration(text).map_err(|e| AdminError::BadRequest(format!("guard: {e}")))?;
    let max = Guard::max_window();
    if window < std::time::Duration::from_secs(1) || window > max {
        return Err(AdminError::BadRequest(format!(
            "guard: {text:?} is outside 1s..{}s",
            max.as_secs()
        )));
    }
    if window < interval {
        return Err(AdminError::BadRequest(format!(
            "guard: {text:?} is shorter than the router's check interval ({} ms, --guard-interval): \
             the window would end before its first check",
            interval.as_millis()
        )));
    }
    Ok(window)
}

/// The refusal of a switch by the standby pre-check.
fn refused_by_precheck(to: Color, active: Color, precheck: &Precheck) -> Response {
    let check = &precheck.check;
    let (status, kind, message) = if check.result == crate::guard::check::CheckResult::PrometheusError {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "prometheus_error",
            format!(
                "cannot check {to} in Prometheus before the switch: {}; nothing changed (retry, or force the switch)",
                check.message
            ),
        )
    } else {
        (
            StatusCode::CONFLICT,
            "standby_failing",
            format!(
                "{to} is failing as the standby: {}; nothing changed (force the switch to override)",
                check.message
            ),
        )
    };
    let extra = json!({ "result": "refused", "from": active, "to": to, "active": active, "precheck": check });
    json_error(status, kind, &message, Some(extra))
}

/// A state-changing request must be JSON from no browser page of another
/// origin: a `Content-Type` a form cannot send, and no foreign `Origin`
/// (browsers send one with every POST; the CLI and scripts send none);
/// without a token, at an address rather than a name (see the module doc).
fn require_json_same_origin(headers: &HeaderMap, token_set: bool) -> Result<(), AdminError> {
    let host = headers.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !token_set && !is_address(host) {
        return Err(AdminError::ForbiddenOrigin(format!(
            "without an admin token a switch is taken only at an IP address or localhost, not at {host:?} \
             (set VIGIE_ADMIN_TOKEN to switch through a host name)"
        )));
    }
    let media_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if media_type.as_deref() != Some("application/json") {
        return Err(AdminError::UnsupportedMediaType(format!(
            "send the switch as Content-Type: application/json (got {})",
            media_type.as_deref().unwrap_or("none")
        )));
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let same = !host.is_empty()
            && [format!("http://{host}"), format!("https://{host}")]
                .iter()
                .any(|o| o == origin);
        if !same {
            return Err(AdminError::ForbiddenOrigin(format!(
                "a switch from the web page of another origin ({origin}) is refused"
            )));
        }
    }
    Ok(())
}

/// `127.0.0.1:8081`, `[::1]:8081`, `localhost:8081`: no name a page's
/// DNS could have rebound.
fn is_address(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

async fn switch(
    State(admin): State<Admin>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AdminError> {
    require_json_same_origin(&headers, admin.token.is_some())?;
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => AdminError::PayloadTooLarge(MAX_BODY_BYTES),
        _ => AdminError::BadRequest(rejection.body_text()),
    })?;
    let request: SwitchRequest = serde_json::from_slice(&body).map_err(|e| {
        AdminError::BadRequest(format!(
            "expected {{\"to\": \"blue\"|\"green\", \"guard\"?: \"2m\", \"force\"?: false, \"slo\"?: false}}: {e}"
        ))
    })?;
    let to: Color = request.to.parse().map_err(AdminError::UnknownColor)?;
    let interval = admin.guard.interval();
    let guard_window = request
        .guard
        .as_deref()
        .map(|text| parse_guard(text, interval))
        .transpose()?;
    let reason = match request.reason {
        Some(r) if !r.trim().is_empty() => r.trim().chars().take(MAX_REASON_CHARS).collect(),
        _ => "requested through the admin API".to_owned(),
    };
    if request.slo && guard_window.is_none() {
        return Err(AdminError::BadRequest(
            "slo: judging by burn rate is for a guarded switch; give a guard window too".into(),
        ));
    }
    if request.slo && !admin.guard.has_slos() {
        return Err(AdminError::BadRequest(
            "slo: this router has no SLO file (--slo-file / VIGIE_SLO_FILE, e.g. stack/slo.yaml)".into(),
        ));
    }
    let active = admin.switcher.routing.active();
    // A guarded switch first checks the standby it goes to.
    let precheck = match guard_window {
        Some(_) if to != active => Some(admin.guard.precheck(to, request.force, request.slo).await),
        _ => None,
    };
    if let Some(precheck) = precheck.as_ref().filter(|p| p.refused) {
        return Ok(refused_by_precheck(to, active, precheck));
    }
    let outcome = admin
        .guard
        .switch_detached(to, reason, guard_window, request.slo)
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    let mut body = serde_json::to_value(&outcome).map_err(|e| AdminError::Internal(e.to_string()))?;
    if let Value::Object(fields) = &mut body {
        if let Some(precheck) = &precheck {
            let mut value = json!(precheck.check);
            value["forced"] = json!(precheck.forced);
            fields.insert("precheck".into(), value);
        }
        fields.insert("guard".into(), json!(admin.guard.status()));
    }
    Ok(if outcome.result == SwitchResult::Refused {
        json_error(StatusCode::CONFLICT, "not_ready", &outcome.reason, Some(body))
    } else {
        (StatusCode::OK, Json(body)).into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_exactly_and_never_print() {
        let token = AdminToken("s3cret".into());
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!token.matches("s3cret!"));
        assert!(!token.matches(""));
        assert_eq!(format!("{token:?}"), "AdminToken(***)");
    }

    #[test]
    fn only_addresses_and_localhost_are_hosts_no_page_can_rebind() {
        for host in [
            "127.0.0.1:8081",
            "127.0.0.1",
            "[::1]:8081",
            "::1",
            "localhost:8081",
            "LOCALHOST",
            "172.18.0.4:8081",
        ] {
            assert!(is_address(host), "{host}");
        }
        for host in [
            "evil.example:8081",
            "evil.example",
            "router:8081",
            "",
            "127.0.0.1.evil.example",
        ] {
            assert!(!is_address(host), "{host}");
        }
    }
}
