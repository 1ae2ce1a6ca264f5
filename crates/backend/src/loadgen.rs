//! `vigie loadgen`: a steady, small mix of API calls so the dashboards have
//! something to show on a fresh stack. Not a benchmark tool.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use vigie_telemetry::config::parse_duration;
use vigie_telemetry::logging;

/// How long one call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Larger answers are cut: the generator only reads ids from them.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How often a summary line is logged.
const SUMMARY_EVERY: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Base URL of the router (or a backend).
    #[arg(long, env = "VIGIE_LOADGEN_TARGET", default_value = "http://127.0.0.1:8080")]
    target: String,
    /// Requests per second.
    #[arg(long, env = "VIGIE_LOADGEN_RATE", default_value_t = 5.0, value_parser = parse_rate)]
    rate: f64,
    /// Stop after this long (0s: run until SIGTERM).
    #[arg(long, env = "VIGIE_LOADGEN_DURATION", default_value = "0s", value_parser = parse_duration)]
    duration: Duration,
    /// Log filter in RUST_LOG syntax.
    #[arg(long, env = "VIGIE_LOG_LEVEL", default_value = "info", value_parser = logging::parse_filter)]
    log_level: String,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 10_000.0 => Ok(r),
        _ => Err(format!(
            "invalid rate {text:?} (requests per second, 0 < rate <= 10000)"
        )),
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let _guard = logging::init(
        &args.log_level,
        vec![("service", "vigie-loadgen".into()), ("version", crate::VERSION.into())],
        std::io::stdout(),
    )?;
    let base: hyper::Uri = args
        .target
        .parse()
        .with_context(|| format!("invalid --target {:?}", args.target))?;
    let base = base.to_string().trim_end_matches('/').to_owned();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut last_summary = Instant::now();
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut last_id: Option<i64> = None;
    tracing::info!(target = %base, rate = args.rate, "load generator started");
    let stop = vigie_telemetry::shutdown::signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => {}
        }
        if !args.duration.is_zero() && started.elapsed() >= args.duration {
            break;
        }
        let (method, path, body) = pick_call(last_id);
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)));
        let Ok(request) = request else { continue };
        // Head and body under one deadline, the body read up to a bound:
        // a target that stalls mid-body cannot hang the generator.
        let call = async {
            let response = client.request(request).await?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES).collect().await;
            Ok::<_, hyper_util::client::legacy::Error>((status, body.map(|b| b.to_bytes()).unwrap_or_default()))
        };
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok((status, bytes))) => {
                if method == "POST" && status.is_success() {
                    last_id = serde_json::from_slice::<serde_json::Value>(&bytes)
                        .ok()
                        .and_then(|v| v["id"].as_i64())
                        .or(last_id);
                }
                if status.is_server_error() {
                    failed += 1
                } else {
                    ok += 1
                }
            }
            Ok(Err(e)) => {
                failed += 1;
                tracing::warn!(error = %e, path, "call failed");
            }
            Err(_) => {
                failed += 1;
                tracing::warn!(path, timeout_ms = CALL_TIMEOUT.as_millis() as u64, "call timed out");
            }
        }
        if last_summary.elapsed() >= SUMMARY_EVERY {
            tracing::info!(ok, failed, "load generator summary");
            last_summary = Instant::now();
        }
    }
    tracing::info!(ok, failed, "load generator stopped");
    Ok(ExitCode::SUCCESS)
}

/// A weighted mix of reads, writes and the odd unknown route.
fn pick_call(last_id: Option<i64>) -> (&'static str, String, String) {
    let id = last_id.unwrap_or(1);
    match fastrand::u32(0..100) {
        0..=44 => ("GET", "/api/info".into(), String::new()),
        45..=64 => ("GET", "/api/tasks?limit=20".into(), String::new()),
        65..=79 => (
            "POST",
            "/api/tasks".into(),
            format!(r#"{{"title":"load task {}"}}"#, fastrand::u32(..)),
        ),
        80..=89 => ("GET", format!("/api/tasks/{id}"), String::new()),
        90..=95 => ("PATCH", format!("/api/tasks/{id}"), r#"{"done":true}"#.into()),
        _ => ("GET", "/api/does-not-exist".into(), String::new()),
    }
}
