//! The real Prometheus (Debian's binary) run against a copy of the stack's
//! configuration, for tests that check what Prometheus sees.
//!
//! `stack/prometheus/prometheus.yml` takes every target from file_sd files
//! relative to itself (`targets/*.json` for the backend job,
//! `static-targets/<job>.json` for the others), so a test copies the
//! directory, empties the static targets (`[]`), points the jobs it cares
//! about at 127.0.0.1 addresses, and hands `targets/backend.json` to the
//! router.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{client, free_port, require_program};

/// Longest wait for `/-/ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The repository's `stack/prometheus` directory.
pub fn stack_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../stack/prometheus")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create config dir");
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy config file");
        }
    }
}

/// Copies the stack's Prometheus configuration into `dest`: every static
/// target file emptied, `targets/` emptied (the router writes there).
pub fn copy_stack_config(dest: &Path) -> PathBuf {
    copy_dir(&stack_dir(), dest);
    for dir in ["static-targets", "targets"] {
        let dir = dest.join(dir);
        std::fs::create_dir_all(&dir).expect("create targets dir");
        for entry in std::fs::read_dir(&dir).expect("list targets").flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                if dir.file_name().is_some_and(|n| n == "targets") {
                    std::fs::remove_file(&path).expect("remove stale target file");
                } else {
                    std::fs::write(&path, "[]\n").expect("empty static targets");
                }
            }
        }
    }
    dest.to_owned()
}

/// Points job `job` (its `static-targets/<job>.json`) at `addr`.
pub fn set_static_target(config_dir: &Path, job: &str, addr: &str) {
    let path = config_dir.join("static-targets").join(format!("{job}.json"));
    std::fs::write(&path, format!("[{{\"targets\":[\"{addr}\"]}}]\n")).expect("write static target");
}

/// A running Prometheus, killed on drop.
pub struct Prometheus {
    child: Child,
    pub addr: String,
    pub config_dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus on `<config_dir>/prometheus.yml` with its TSDB in
    /// `<config_dir>/data`, on a free port, and waits until it is ready.
    /// Fails with the install hint when Prometheus is not installed.
    pub async fn start(config_dir: &Path) -> Prometheus {
        let binary = require_program("prometheus", "prometheus");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(config_dir.join("prometheus.log")).expect("create prometheus.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", config_dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn prometheus");
        let mut prometheus = Prometheus {
            child,
            addr,
            config_dir: config_dir.to_owned(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!(
                    "prometheus exited with {status} before it was ready:\n{}",
                    prometheus.log()
                );
            }
            if let Ok(response) = client().get(prometheus.url("/-/ready")).send().await {
                if response.status().is_success() {
                    return prometheus;
                }
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within {READY_TIMEOUT:?}:\n{}",
                prometheus.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Prometheus' own log (stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config_dir.join("prometheus.log")).unwrap_or_default()
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let response = client()
            .get(self.url(path))
            .query(query)
            .send()
            .await
            .expect("prometheus API call");
        let body: Value = response.json().await.expect("prometheus answers JSON");
        assert_eq!(body["status"], "success", "prometheus API {path} failed: {body}");
        body["data"].clone()
    }

    /// An instant query; the `result` array.
    pub async fn query(&self, promql: &str) -> Vec<Value> {
        let data = self.api("/api/v1/query", &[("query", promql)]).await;
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// The active targets of every job.
    pub async fn targets(&self) -> Vec<Value> {
        let data = self.api("/api/v1/targets", &[("state", "active")]).await;
        data["activeTargets"].as_array().cloned().unwrap_or_default()
    }

    /// The active targets of `job`.
    pub async fn job_targets(&self, job: &str) -> Vec<Value> {
        self.targets()
            .await
            .into_iter()
            .filter(|t| t["labels"]["job"] == job)
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
