//! `vigie switch` and `vigie status`: clients of the router's admin API for
//! people (a short summary) and scripts (`--json`, exit status).
//!
//! Exit status of `vigie switch` ([`exit`], docs/router.md): 0 when the
//! switch happened or was not needed (already active) and, with `--wait`,
//! the guard passed; 1 when the admin API could not be reached or answered
//! an error, or the switch happened but its state could not be saved; 2 for
//! a bad command line; 3 rolled back; 4 rollback failed; 5 not judged
//! (insufficient data, a window that ended while the router was down, or
//! failed Prometheus queries with `keep`); 6 refused (not ready, or a
//! standby failing in Prometheus); 7 the guard was ended by another switch.
//! Without `--wait`, a guarded switch returns once the switch is done.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use vigie_telemetry::config::parse_duration;
use vigie_telemetry::Color;

use crate::admin::AdminToken;

/// Admin answers are small; a bigger one is not from our router.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Exit statuses of `vigie switch`; 2 is clap's, for a bad command line.
pub mod exit {
    pub const ERROR: u8 = 1;
    pub const ROLLED_BACK: u8 = 3;
    pub const ROLLBACK_FAILED: u8 = 4;
    pub const NOT_JUDGED: u8 = 5;
    pub const REFUSED: u8 = 6;
    pub const CANCELLED: u8 = 7;
}

/// The longest one `GET /guard` long poll is held.
const POLL: Duration = Duration::from_secs(30);
/// Time allowed past the window's end for the last check and the verdict
/// while the router cannot be reached.
const VERDICT_MARGIN: Duration = Duration::from_secs(30);
/// While the router answers that the guard still runs (its last check's
/// queries, a rollback's readiness checks and drain), waiting goes on up
/// to this much longer.
const RUNNING_MARGIN: Duration = Duration::from_secs(300);

#[derive(clap::Args, Debug, Clone)]
pub struct AdminArgs {
    /// Base URL of the router's admin API.
    #[arg(long = "admin", env = "VIGIE_ADMIN_URL", default_value = "http://127.0.0.1:8081")]
    pub admin: String,
    /// Print the admin API's JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Give up after this long (a switch waits for readiness checks and the drain).
    #[arg(long, env = "VIGIE_ADMIN_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(clap::Args, Debug)]
pub struct SwitchArgs {
    /// The color to make active.
    #[arg(value_enum)]
    pub to: Color,
    /// Why, for the router's switch log line.
    #[arg(long)]
    pub reason: Option<String>,
    /// Watch the new color in Prometheus for this long (e.g. 2m) and switch
    /// back on its own if its error ratio or p95 latency is over the
    /// router's thresholds; the standby is checked before the switch too.
    #[arg(long, value_parser = parse_guard)]
    pub guard: Option<String>,
    /// Switch even if the standby pre-check of a guarded switch says the color is failing.
    #[arg(long, requires = "guard")]
    pub force: bool,
    /// Judge the new color by its error budget burn rate (the router's SLO
    /// file): roll back when an objective burns at the rate that pages
    /// (14.4x), instead of the error-ratio and p95 thresholds.
    #[arg(long, requires = "guard")]
    pub guard_slo: bool,
    /// Wait for the guard's verdict, print it with the figures it was based
    /// on, and exit 0 only when the new color passed (see the exit statuses).
    #[arg(long, requires = "guard")]
    pub wait: bool,
    #[command(flatten)]
    pub common: AdminArgs,
}

/// Checks the duration syntax here (exit 2 on a typo); the router parses it again.
fn parse_guard(text: &str) -> Result<String, String> {
    parse_duration(text).map(|_| text.trim().to_owned())
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub common: AdminArgs,
}

/// One answer of the admin API.
struct Answer {
    status: StatusCode,
    body: Value,
}

async fn call(args: &AdminArgs, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Answer> {
    let base = args.admin.trim_end_matches('/');
    let url = format!("{base}{path}");
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("invalid --admin URL {:?}", args.admin))?;
    if uri.scheme_str() != Some("http") {
        bail!("--admin must be an http:// URL, got {:?}", args.admin);
    }
    let mut request = http::Request::builder().method(method).uri(uri);
    if let Some(token) = AdminToken::from_env() {
        request = request.header(AUTHORIZATION, format!("Bearer {}", token.0));
    }
    let payload = match body {
        Some(body) => {
            request = request.header(CONTENT_TYPE, "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    let request = request
        .body(Full::new(payload))
        .context("cannot build the request (is the token valid header text?)")?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let exchange = async {
        let response = client
            .request(request)
            .await
            .with_context(|| format!("cannot reach the admin API at {base}"))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the admin API's answer: {e}"))?
            .to_bytes();
        let body = serde_json::from_slice(&bytes)
            .with_context(|| format!("the admin API at {base} answered {status} with a body that is not JSON"))?;
        anyhow::Ok(Answer { status, body })
    };
    tokio::time::timeout(args.timeout, exchange)
        .await
        .with_context(|| format!("no answer from the admin API at {base} within {:?}", args.timeout))?
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("?")
}

fn number(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// An error answer (4xx/5xx other than a refused switch): message, exit 1.
fn fail(answer: &Answer, json: bool) -> ExitCode {
    if json {
        println!("{}", answer.body);
    }
    let hint = if answer.status == StatusCode::UNAUTHORIZED {
        " (set VIGIE_ADMIN_TOKEN)"
    } else {
        ""
    };
    eprintln!(
        "error: the admin API answered {}: {}{hint}",
        answer.status,
        text(&answer.body, "message")
    );
    ExitCode::FAILURE
}

pub async fn switch(args: SwitchArgs) -> anyhow::Result<ExitCode> {
    let mut request = json!({ "to": args.to });
    if let Some(reason) = &args.reason {
        request["reason"] = json!(reason);
    }
    if let Some(guard) = &args.guard {
        request["guard"] = json!(guard);
        request["force"] = json!(args.force);
        if args.guard_slo {
            request["slo"] = json!(true);
        }
    }
    let answer = call(&args.common, Method::POST, "/switch", Some(request)).await?;
    let body = &answer.body;
    let refused = text(body, "result") == "refused";
    if answer.status != StatusCode::OK && answer.status != StatusCode::CONFLICT && !refused {
        return Ok(fail(&answer, args.common.json));
    }
    if args.common.json {
        println!("{body}");
    }
    let errors: Vec<&str> = body
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    match text(body, "result") {
        "noop" if answer.status == StatusCode::OK => {
            if !args.common.json {
                println!("{} is already active; nothing changed", text(body, "active"));
            }
            Ok(ExitCode::SUCCESS)
        }
        "ok" if answer.status == StatusCode::OK => {
            if !args.common.json {
                println!(
                    "switched {} -> {}: ready after {} checks in {} ms; {} in {} ms",
                    text(body, "from"),
                    text(body, "to"),
                    number(body, "checks"),
                    number(body, "check_ms"),
                    if body.get("drained") == Some(&Value::Bool(true)) {
                        "old color drained".to_owned()
                    } else {
                        format!(
                            "drain timeout with {} requests still in flight",
                            number(body, "in_flight_left")
                        )
                    },
                    number(body, "drain_ms"),
                );
                print_guard_started(body);
            }
            for error in &errors {
                eprintln!("warning: {error}");
            }
            if !errors.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
            if args.wait {
                return wait_for_verdict(&args.common, &body["guard"], text(body, "to")).await;
            }
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!("switch refused: {}", text(body, "message"));
            Ok(ExitCode::from(exit::REFUSED))
        }
    }
}

/// `vigie switch --guard … --wait`: long-polls `GET /guard` until the
/// verdict of the guard this switch started, across a router restart (a
/// refused connection is retried until the window's end plus the interval
/// and [`VERDICT_MARGIN`]; a router that answers "still running" is waited
/// for [`RUNNING_MARGIN`] more).
async fn wait_for_verdict(common: &AdminArgs, guard: &Value, to: &str) -> anyhow::Result<ExitCode> {
    let Some(switch) = guard
        .get("switch")
        .and_then(Value::as_u64)
        .filter(|_| guard["color"] == to)
    else {
        bail!("the router started no guard for this switch (is it older than this client?)");
    };
    let left = Duration::from_secs(number(guard, "time_left_seconds"));
    let interval = guard["settings"]["interval_seconds"].as_f64().unwrap_or(0.0);
    let deadline =
        tokio::time::Instant::now() + left + Duration::try_from_secs_f64(interval).unwrap_or_default() + VERDICT_MARGIN;
    let running_deadline = deadline + RUNNING_MARGIN;
    if !common.json {
        println!(
            "waiting for the guard's verdict (up to {} s)",
            (deadline - tokio::time::Instant::now()).as_secs()
        );
    }
    let mut status = guard.clone();
    let mut retrying = false;
    while status["running"] == Value::Bool(true) && status["switch"] == switch {
        let limit = if retrying { deadline } else { running_deadline };
        let remaining = limit.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            let why = if retrying {
                "the router cannot be reached"
            } else {
                "the router still reports it running"
            };
            eprintln!("error: no verdict from the guard of switch {switch} in time ({why}); see `vigie status`");
            return Ok(ExitCode::FAILURE);
        }
        let wait = remaining.min(POLL);
        let poll = AdminArgs {
            timeout: wait + Duration::from_secs(10),
            ..common.clone()
        };
        let path = format!("/guard?switch={switch}&wait={}ms", wait.as_millis());
        match call(&poll, Method::GET, &path, None).await {
            Ok(answer) if answer.status == StatusCode::OK => {
                retrying = false;
                status = answer.body;
            }
            Ok(answer) => return Ok(fail(&answer, common.json)),
            Err(error) => {
                // A router restarting resumes the guard: ask again.
                if !retrying {
                    eprintln!("warning: {error:#}; retrying until the deadline");
                    retrying = true;
                }
                tokio::time::sleep(Duration::from_secs(1).min(remaining)).await;
            }
        }
    }
    if common.json {
        println!("{status}");
    }
    if status["switch"] != switch {
        eprintln!("guard of switch {switch} replaced by a later switch; see `vigie status`");
        return Ok(ExitCode::from(exit::CANCELLED));
    }
    let verdict = &status["verdict"];
    if !common.json {
        print_verdict(&status);
    }
    Ok(match text(verdict, "result") {
        "passed" => ExitCode::SUCCESS,
        "rolled_back" => ExitCode::from(exit::ROLLED_BACK),
        "rollback_failed" => ExitCode::from(exit::ROLLBACK_FAILED),
        "insufficient_data" | "interrupted" | "prometheus_error" => ExitCode::from(exit::NOT_JUDGED),
        "cancelled" => ExitCode::from(exit::CANCELLED),
        other => {
            eprintln!("error: unknown guard verdict {other:?}");
            ExitCode::from(exit::ERROR)
        }
    })
}

/// The verdict, and the last check's figures it was based on.
fn print_verdict(guard: &Value) {
    let verdict = &guard["verdict"];
    println!(
        "guard verdict on {} ({}): {}: {}",
        text(verdict, "color"),
        text(guard, "version"),
        text(verdict, "result"),
        text(verdict, "reason")
    );
    if let Some(last) = guard.get("last").filter(|l| !l.is_null()) {
        println!(
            "based on {} checks; the last: {}",
            number(guard, "checks"),
            check_figures(last)
        );
    }
    if let Some(at) = verdict.get("at").and_then(Value::as_str) {
        if let Ok(at) = OffsetDateTime::parse(at, &Rfc3339) {
            let ago = (OffsetDateTime::now_utc() - at).whole_seconds();
            if ago > 5 {
                println!("(the verdict was reached {ago} s ago)");
            }
        }
    }
}

/// `ok (error ratio 0.0%, p95 0.012s, 143 requests over 20s)`, and with
/// `--guard-slo` each objective's burn rate and budget left.
fn check_figures(check: &Value) -> String {
    let mut text_out = format!(
        "{} (error ratio {}, p95 {}, {} requests over {} s)",
        text(check, "result"),
        ratio(&check["error_ratio"]),
        seconds(&check["p95_seconds"]),
        check
            .get("requests")
            .and_then(Value::as_u64)
            .map_or("-".to_owned(), |n| n.to_string()),
        number(check, "window_seconds")
    );
    for slo in check.get("slo").and_then(Value::as_array).into_iter().flatten() {
        let burn = slo["burn_rate"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |b| format!("{b:.1}x"));
        text_out.push_str(&format!(
            "; {} burn rate {burn}, error budget left {}",
            text(slo, "slo"),
            ratio(&slo["budget_remaining"])
        ));
    }
    text_out
}

/// After a guarded switch: what the guard watches and until when.
fn print_guard_started(body: &Value) {
    if let Some(check) = body.get("precheck") {
        let forced = if check.get("forced") == Some(&Value::Bool(true)) {
            " (forced)"
        } else {
            ""
        };
        println!(
            "pre-check of {} as standby: {}{forced}: {}",
            text(body, "to"),
            text(check, "result"),
            text(check, "message")
        );
    }
    let guard = &body["guard"];
    if guard.get("running") == Some(&Value::Bool(true)) && guard["color"] == body["to"] {
        println!(
            "guard: watching {} until {} ({} s); `vigie status` shows its checks and verdict",
            text(guard, "color"),
            text(guard, "ends_at"),
            number(guard, "window_seconds")
        );
    }
}

fn ratio(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

fn seconds(value: &Value) -> String {
    value.as_f64().map_or_else(|| "-".to_owned(), |s| format!("{s:.3}s"))
}

/// The guard lines of `vigie status`.
fn print_guard(guard: &Value) {
    if guard.get("color").is_none_or(Value::is_null) {
        println!("guard: none since the router started");
        return;
    }
    if guard.get("running") == Some(&Value::Bool(true)) {
        println!(
            "guard: watching {} ({}, from {} {}), {} s left, until {}",
            text(guard, "color"),
            text(guard, "version"),
            text(guard, "from"),
            text(guard, "from_version"),
            number(guard, "time_left_seconds"),
            text(guard, "ends_at")
        );
    }
    match guard.get("last").filter(|l| !l.is_null()) {
        Some(last) => println!(
            "guard: last check at {}: {}: {}",
            text(last, "at"),
            check_figures(last),
            text(last, "message")
        ),
        None => println!("guard: no check yet"),
    }
    if let Some(verdict) = guard.get("verdict").filter(|v| !v.is_null()) {
        println!(
            "guard: verdict on {} at {}: {}: {}",
            text(verdict, "color"),
            text(verdict, "at"),
            text(verdict, "result"),
            text(verdict, "reason")
        );
    }
}

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let answer = call(&args.common, Method::GET, "/status", None).await?;
    if answer.status != StatusCode::OK {
        return Ok(fail(&answer, args.common.json));
    }
    let body = &answer.body;
    if args.common.json {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let active = text(body, "active");
    println!(
        "active: {active} ({}) since {} (switches: {})",
        body["upstreams"][active]
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or("version unknown"),
        text(body, "since"),
        number(body, "switches")
    );
    for color in Color::ALL {
        let upstream = &body["upstreams"][color.as_str()];
        let health = match upstream.get("healthy").and_then(Value::as_bool) {
            Some(true) => "ready".to_owned(),
            Some(false) => format!("NOT READY ({})", text(upstream, "error")),
            None => "not checked yet".to_owned(),
        };
        let version = upstream.get("version").and_then(Value::as_str).unwrap_or("unknown");
        println!(
            "{:<6} {:<9} {:<12} {}  in flight {}  {}",
            color.as_str(),
            text(upstream, "state"),
            version,
            text(upstream, "url"),
            number(upstream, "in_flight"),
            health
        );
    }
    print_guard(&body["guard"]);
    Ok(ExitCode::SUCCESS)
}
