//! Renders a registry in the format the scraper asks for: OpenMetrics when
//! the `Accept` header names it (Prometheus does), else the classic
//! Prometheus text format 0.0.4 (curl, promtool, older scrapers).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, StatusCode};
use prometheus_client::registry::Registry;

pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    PrometheusText,
}

impl Format {
    /// Picks the format from an `Accept` header value.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::PrometheusText,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::PrometheusText => TEXT_CONTENT_TYPE,
        }
    }
}

/// Encodes the registry; an error means a collector failed to write.
pub fn render(registry: &Registry, format: Format) -> Result<String, std::fmt::Error> {
    let mut out = String::with_capacity(8 * 1024);
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(match format {
        Format::OpenMetrics => out,
        Format::PrometheusText => openmetrics_to_text(&out),
    })
}

/// axum handler for `GET /metrics`.
pub async fn metrics_handler(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(headers.get(ACCEPT).and_then(|v| v.to_str().ok()));
    match render(&registry, format) {
        Ok(body) => {
            let mut response = body.into_response();
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
            response
        }
        Err(_) => {
            tracing::error!(target: "telemetry", "failed to encode metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "failed to encode metrics\n").into_response()
        }
    }
}

/// Rewrites OpenMetrics text into Prometheus text 0.0.4: counter families
/// take their `_total` name, `info` becomes a gauge named `*_info`, `unknown`
/// becomes `untyped`; `# UNIT`, `# EOF` and exemplars are dropped.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut pending_help: Option<&str> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            pending_help = Some(rest);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                other => (name.to_string(), other),
            };
            if let Some(help) = pending_help.take() {
                let text = help.split_once(' ').map(|(_, t)| t).unwrap_or("");
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            let sample = line.split_once(" # {").map(|(s, _)| s).unwrap_or(line);
            out.push_str(sample);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_openmetrics_only_when_asked() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::PrometheusText);
        assert_eq!(Format::negotiate(None), Format::PrometheusText);
    }

    #[test]
    fn converts_counters_info_units_and_exemplars() {
        let om = "# HELP http_requests Requests.\n# TYPE http_requests counter\nhttp_requests_total{route=\"/a\"} 3\n# HELP build Build.\n# TYPE build info\nbuild_info{v=\"1\"} 1\n# HELP d Duration.\n# TYPE d histogram\n# UNIT d seconds\nd_bucket{le=\"0.1\"} 1 # {trace_id=\"abc\"} 0.05\n# EOF\n";
        let text = openmetrics_to_text(om);
        assert_eq!(
            text,
            "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\nhttp_requests_total{route=\"/a\"} 3\n# HELP build_info Build.\n# TYPE build_info gauge\nbuild_info{v=\"1\"} 1\n# HELP d Duration.\n# TYPE d histogram\nd_bucket{le=\"0.1\"} 1\n"
        );
    }
}
