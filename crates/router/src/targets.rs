//! The Prometheus file_sd file listing the backends: the active color with
//! `role="active"`, the standby one with `role="standby"` (unless turned
//! off). Prometheus watches the file and picks up a new version by itself.
//! A backend whose metrics are not on `/metrics` gets `__metrics_path__`,
//! which Prometheus takes as the target's metrics path.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::atomic_file;
use crate::upstream::Upstream;

/// The path Prometheus scrapes by default.
pub const DEFAULT_METRICS_PATH: &str = "/metrics";

pub struct TargetsFile {
    path: PathBuf,
    with_standby: bool,
    metrics_path: String,
}

impl TargetsFile {
    pub fn new(path: PathBuf, with_standby: bool, metrics_path: String) -> Self {
        TargetsFile {
            path,
            with_standby,
            metrics_path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn render(&self, active: &Upstream, standby: &Upstream) -> Value {
        let group = |upstream: &Upstream, role: &str| {
            let mut labels = json!({ "color": upstream.color.as_str(), "role": role });
            if self.metrics_path != DEFAULT_METRICS_PATH {
                labels["__metrics_path__"] = json!(self.metrics_path);
            }
            json!({ "targets": [upstream.url.host_port()], "labels": labels })
        };
        let mut groups = vec![group(active, "active")];
        if self.with_standby {
            groups.push(group(standby, "standby"));
        }
        Value::Array(groups)
    }

    pub async fn write(&self, active: &Upstream, standby: &Upstream) -> std::io::Result<()> {
        let mut text = self.render(active, standby).to_string().into_bytes();
        text.push(b'\n');
        atomic_file::write(&self.path, text).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::TargetState;
    use crate::upstream::UpstreamUrl;
    use prometheus_client::metrics::gauge::Gauge;
    use std::time::Duration;
    use vigie_telemetry::Color;

    fn upstream(color: Color, url: &str) -> Upstream {
        let url = UpstreamUrl::parse(url).expect("url");
        Upstream::new(
            color,
            url,
            Duration::from_secs(1),
            TargetState::Standby,
            Gauge::default(),
        )
    }

    #[tokio::test]
    async fn lists_the_active_then_the_standby_color() {
        let blue = upstream(Color::Blue, "http://backend-blue:3000");
        let green = upstream(Color::Green, "http://backend-green:3000");
        let both = TargetsFile::new(PathBuf::from("unused"), true, DEFAULT_METRICS_PATH.into());
        assert_eq!(
            both.render(&green, &blue).to_string(),
            r#"[{"targets":["backend-green:3000"],"labels":{"color":"green","role":"active"}},{"targets":["backend-blue:3000"],"labels":{"color":"blue","role":"standby"}}]"#
        );
        let active_only = TargetsFile::new(PathBuf::from("unused"), false, DEFAULT_METRICS_PATH.into());
        assert_eq!(
            active_only.render(&blue, &green).to_string(),
            r#"[{"targets":["backend-blue:3000"],"labels":{"color":"blue","role":"active"}}]"#
        );
        let elsewhere = TargetsFile::new(PathBuf::from("unused"), false, "/internal/metrics".into());
        assert_eq!(
            elsewhere.render(&blue, &green).to_string(),
            r#"[{"targets":["backend-blue:3000"],"labels":{"color":"blue","role":"active","__metrics_path__":"/internal/metrics"}}]"#
        );
    }
}
