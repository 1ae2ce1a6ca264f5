//! Starts real `vigie` processes on 127.0.0.1 port 0 and reads their JSON
//! log lines; every process is killed when its handle drops.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest wait for a process to print its `listening` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

pub fn vigie_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vigie")
}

/// A temporary directory (tempfile's) named after its test, removed on drop.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("vigie-test-{tag}-"))
            .tempdir()
            .expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

/// A blue and a green backend on one database (`<dir>/tasks.db`) in a
/// fresh directory: what most router tests put a router in front of.
pub struct Pair {
    pub dir: TempDir,
    pub blue: Proc,
    pub green: Proc,
}

impl Pair {
    pub fn start(tag: &str) -> Pair {
        Pair::with_flags(tag, &[], &[])
    }

    /// With extra backend flags for each color (e.g. injected faults).
    pub fn with_flags(tag: &str, blue_flags: &[&str], green_flags: &[&str]) -> Pair {
        let dir = TempDir::new(tag);
        let db = dir.join("tasks.db");
        let blue = Proc::backend("blue", &db, blue_flags);
        let green = Proc::backend("green", &db, green_flags);
        Pair { dir, blue, green }
    }
}

/// A running `vigie` process with its captured stdout lines.
pub struct Proc {
    child: Child,
    /// Address of the listener logged as `listener="public"`.
    pub addr: SocketAddr,
    /// Address of the listener logged as `listener="admin"`, if any.
    pub admin_addr: Option<SocketAddr>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `vigie <args>` with `envs` and waits for its listeners.
    pub fn start(args: &[&str], envs: &[(&str, &str)], listeners: &[&str]) -> Proc {
        let mut command = Command::new(vigie_bin());
        command.args(args);
        Proc::spawn(command, args, envs, listeners)
    }

    /// Like [`Proc::start`], with the process' open file limit lowered to
    /// `limit` (by the shell's `ulimit`, which then execs vigie).
    pub fn start_with_fd_limit(limit: u32, args: &[&str], envs: &[(&str, &str)], listeners: &[&str]) -> Proc {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
            .arg(vigie_bin())
            .args(args);
        Proc::spawn(command, args, envs, listeners)
    }

    fn spawn(mut command: Command, args: &[&str], envs: &[(&str, &str)], listeners: &[&str]) -> Proc {
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null());
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn vigie");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("TEST_LOG").is_some() {
                    eprintln!("{line}");
                }
                sink.lock().expect("lines lock").push(line);
            }
        });
        let mut proc = Proc {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: None,
            lines,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let found: Vec<(String, SocketAddr)> = proc
                .logs()
                .iter()
                .filter(|l| l["msg"] == "listening")
                .filter_map(|l| Some((l["listener"].as_str()?.to_owned(), l["addr"].as_str()?.parse().ok()?)))
                .collect();
            if listeners.iter().all(|want| found.iter().any(|(name, _)| name == want)) {
                for (name, addr) in found {
                    match name.as_str() {
                        "public" => proc.addr = addr,
                        "admin" => proc.admin_addr = Some(addr),
                        _ => {}
                    }
                }
                return proc;
            }
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!(
                    "vigie {args:?} exited with {status} before listening; output:\n{}",
                    proc.raw_output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "vigie {args:?} did not listen within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a backend of `color` on a free port (or the `--listen` of
    /// `extra`) with the given database.
    pub fn backend(color: &str, database: &Path, extra: &[&str]) -> Proc {
        let db = database.to_str().expect("utf-8 path");
        let mut args = vec!["backend", "--color", color, "--database", db];
        if !extra.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        args.extend_from_slice(extra);
        Proc::start(&args, &[], &["public"])
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}{}",
            self.admin_addr.expect("process has an admin listener"),
            path
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn raw_output(&self) -> String {
        self.lines.lock().expect("lines lock").join("\n")
    }

    /// Every stdout line parsed as JSON; a line that is not JSON fails the test.
    pub fn logs(&self) -> Vec<Value> {
        self.lines
            .lock()
            .expect("lines lock")
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}")))
            .collect()
    }

    /// The log lines once `ready` holds for them, waiting up to 5 s: lines
    /// reach stdout in batches a few milliseconds after they are logged.
    pub fn logs_when(&self, what: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let logs = self.logs();
            if ready(&logs) {
                return logs;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in the log within 5 s:\n{}",
                self.raw_output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM (through kill(1): no unsafe code needed).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for exit, failing the test after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Give the reader thread a moment to take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP client that never waits forever.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build client")
}

/// Finds an installed program or fails with how to install it.
pub fn require_program(name: &str, debian_package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{name}` is not installed; install it with `apt-get install -y {debian_package}` (the CI script .ci/run does this)")
    })
}

/// Polls `check` every 50 ms until it returns Some, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- router helpers -------------------------------------------------------

/// The admin token the router tests run with.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A free TCP port on 127.0.0.1 with nothing listening on it (the port is
/// released before returning; nothing else in the test binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// `http://127.0.0.1:<port>` where nothing listens.
pub fn dead_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

impl Proc {
    /// Starts `vigie router` on free ports in front of `blue` and `green`,
    /// with `<dir>/state.json`, `<dir>/targets/backend.json`, fast readiness
    /// checks and [`ADMIN_TOKEN`]; a flag given in `extra` replaces its default.
    pub fn router(blue: &str, green: &str, dir: &Path, extra: &[&str]) -> Proc {
        let args = Proc::router_args(blue, green, dir, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::start(&args, &[("VIGIE_ADMIN_TOKEN", ADMIN_TOKEN)], &["public", "admin"])
    }

    /// The arguments of [`Proc::router`], for a router started otherwise
    /// (without a token, with a lower descriptor limit).
    pub fn router_args(blue: &str, green: &str, dir: &Path, extra: &[&str]) -> Vec<String> {
        let state = dir.join("state.json");
        let targets = dir.join("targets").join("backend.json");
        let defaults = [
            ("--listen", "127.0.0.1:0"),
            ("--admin-listen", "127.0.0.1:0"),
            ("--state-file", state.to_str().expect("utf-8 path")),
            ("--targets-file", targets.to_str().expect("utf-8 path")),
            ("--health-check-interval", "20ms"),
            ("--deploy-timeout", "2s"),
            ("--drain-timeout", "5s"),
            ("--status-check-interval", "1s"),
        ];
        let mut args = vec!["router", "--blue", blue, "--green", green];
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect()
    }

    /// `POST /switch {"to": color}` with the token: (status, JSON body).
    pub async fn switch_to(&self, color: &str) -> (u16, Value) {
        let response = client()
            .post(self.admin_url("/switch"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "to": color }))
            .send()
            .await
            .expect("POST /switch");
        let status = response.status().as_u16();
        (status, response.json().await.expect("switch answer is JSON"))
    }

    /// `GET /status` with the token.
    pub async fn router_status(&self) -> Value {
        self.admin_get("/status").await
    }

    /// `GET path` of the admin API with the token; asserts a 200 JSON answer.
    pub async fn admin_get(&self, path: &str) -> Value {
        let response = client()
            .get(self.admin_url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("a JSON answer")
    }

    /// The admin listener's `/metrics` text (the router's).
    pub async fn metrics_text(&self) -> String {
        scrape(&self.admin_url("/metrics")).await
    }

    /// Runs `vigie <args>` against this router's admin API: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str], token: Option<&str>) -> (i32, String, String) {
        let mut command = Command::new(vigie_bin());
        command
            .args(args)
            .env("VIGIE_ADMIN_URL", self.admin_url(""))
            .env_remove("VIGIE_ADMIN_TOKEN");
        if let Some(token) = token {
            command.env("VIGIE_ADMIN_TOKEN", token);
        }
        let output = command.output().expect("run vigie cli");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// The text of a `/metrics` URL, as Prometheus' classic scrape gets it.
pub async fn scrape(url: &str) -> String {
    scrape_as(url, "text/plain").await
}

/// The text of a `/metrics` URL in OpenMetrics (with exemplars).
pub async fn scrape_openmetrics(url: &str) -> String {
    scrape_as(url, "application/openmetrics-text; version=1.0.0").await
}

async fn scrape_as(url: &str, accept: &str) -> String {
    client()
        .get(url)
        .header("accept", accept)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .expect("metrics text")
}

/// Asserts that `promtool check metrics` accepts `text` without a
/// complaint (it reports naming problems on stdout and still exits 0).
pub fn assert_promtool_accepts(text: &str) {
    let promtool = require_program("promtool", "prometheus");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes()).expect("feed promtool");
    let output = child.wait_with_output().expect("promtool output");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && report.trim().is_empty(),
        "promtool check metrics: {report}\n{text}"
    );
}

/// The value of the sample `name{labels}` (labels written exactly as
/// exposed, e.g. `color="blue",status_class="2xx"`), if present.
pub fn metric_value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}
