//! Telemetry for vigie's axum services: Prometheus metrics (text and
//! OpenMetrics), standard process metrics, JSON logs on stdout and request
//! ids. A service builds a [`prometheus_client::registry::Registry`], adds
//! [`http::HttpMetrics`], [`process::ProcessCollector`] and [`build_info`],
//! then wraps its router with [`http::TrackLayer`].
#![forbid(unsafe_code)]

pub mod body;
pub mod config;
pub mod exposition;
pub mod http;
pub mod lanes;
pub mod listener;
pub mod log_writer;
pub mod logging;
pub mod process;
pub mod request_id;
pub mod shutdown;
pub mod traces;

pub use config::Color;
pub use prometheus_client::registry::Registry;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// The release this binary is: `VIGIE_VERSION` when it was compiled (the
/// Dockerfile's build argument, so two images of the same code differ),
/// else the crate version. It is in `vigie_build_info`, every log line,
/// the backend's readiness answer and the router's `/status`.
pub const VERSION: &str = match option_env!("VIGIE_VERSION") {
    Some(version) if !version.is_empty() => version,
    _ => env!("CARGO_PKG_VERSION"),
};

/// A version is a label value and a log field: short, plain characters.
const fn is_plain_version(version: &str) -> bool {
    let bytes = version.as_bytes();
    if bytes.is_empty() || bytes.len() > 64 {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_' || b == b'+') {
            return false;
        }
        i += 1;
    }
    true
}

const _: () = assert!(
    is_plain_version(VERSION),
    "VIGIE_VERSION must be 1 to 64 characters of A-Z a-z 0-9 . - _ +"
);

/// Registers `vigie_build_info{...} 1` with the given labels.
pub fn build_info(registry: &mut Registry, labels: Vec<(String, String)>) {
    let family = Family::<Vec<(String, String)>, Gauge>::default();
    family.get_or_create(&labels).set(1);
    registry.register(
        "vigie_build_info",
        "Build information of this process, always 1",
        family,
    );
}
