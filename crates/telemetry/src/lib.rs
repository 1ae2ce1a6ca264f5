//! Telemetry for vigie's axum services: Prometheus metrics (text and
//! OpenMetrics), standard process metrics, JSON logs on stdout and request
//! ids. A service builds a [`prometheus_client::registry::Registry`], adds
//! [`http::HttpMetrics`], [`process::ProcessCollector`] and [`build_info`],
//! then wraps its router with [`http::TrackLayer`].
#![forbid(unsafe_code)]

pub mod config;
pub mod exposition;
pub mod http;
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
