//! `vigie healthcheck URL`: for container images that have no curl.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// URL to GET, e.g. http://127.0.0.1:3000/health/ready
    url: String,
    /// Give up after this long.
    #[arg(long, default_value = "3s", value_parser = vigie_telemetry::config::parse_positive_duration)]
    timeout: Duration,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let uri: hyper::Uri = args
        .url
        .parse()
        .with_context(|| format!("invalid URL {:?}", args.url))?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// URLs are supported, got {:?}", args.url);
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let response = tokio::time::timeout(args.timeout, client.get(uri))
        .await
        .with_context(|| format!("no answer from {} within {:?}", args.url, args.timeout))?
        .with_context(|| format!("cannot reach {}", args.url))?;
    let status = response.status();
    if status.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("unhealthy: {} answered {status}", args.url);
        Ok(ExitCode::FAILURE)
    }
}
