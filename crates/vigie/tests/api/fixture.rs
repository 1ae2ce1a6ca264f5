//! The stack a test runs, built in one place: a blue and a green backend on
//! one database, the router in front, and when asked the real Prometheus
//! scraping the backends through the router's targets file (and the
//! router's admin listener as the `router` job), as compose.yaml wires
//! them. A method per thing a test does to it: switch, redeploy a color,
//! restart the router, stop Prometheus.
//!
//! ```ignore
//! let stack = Stack::builder("guard-errors")
//!     .green_flags(&["--fault-error-rate", "0.3"])
//!     .guarded_by_prometheus()
//!     .start()
//!     .await;
//! let (status, body) = stack.switch_to("green").await;
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{client, Pair, Proc, TempDir, ADMIN_TOKEN};
use crate::prometheus::{copy_stack_config, set_static_target, Prometheus};

/// What [`Stack::builder`] will start.
pub struct StackBuilder {
    tag: String,
    green_flags: Vec<String>,
    router_flags: Vec<String>,
    router_token: bool,
    prometheus: Option<PrometheusRole>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PrometheusRole {
    /// Prometheus scrapes; the router does not ask it anything.
    Scrapes,
    /// The router's guard also queries it (`--prometheus-url`).
    Guards,
}

/// A running stack. Fields drop in order: the router first, the directory last.
pub struct Stack {
    pub router: Proc,
    pub prometheus: Option<Prometheus>,
    pub blue: Proc,
    pub green: Proc,
    pub dir: TempDir,
    router_args: Vec<String>,
    router_envs: Vec<(&'static str, &'static str)>,
    targets_file: PathBuf,
}

fn owned(flags: &[&str]) -> Vec<String> {
    flags.iter().map(|f| (*f).to_owned()).collect()
}

impl StackBuilder {
    /// Extra flags for the green backend (e.g. an injected fault).
    pub fn green_flags(mut self, flags: &[&str]) -> Self {
        self.green_flags = owned(flags);
        self
    }

    /// Router flags; each replaces its default from [`Proc::router_args`].
    pub fn router_flags(mut self, flags: &[&str]) -> Self {
        self.router_flags.extend(owned(flags));
        self
    }

    /// The router without `VIGIE_ADMIN_TOKEN` (its admin API then refuses every call).
    pub fn without_token(mut self) -> Self {
        self.router_token = false;
        self
    }

    /// The real Prometheus on a copy of the stack's configuration.
    pub fn prometheus(mut self) -> Self {
        self.prometheus.get_or_insert(PrometheusRole::Scrapes);
        self
    }

    /// Prometheus, and the router's guard querying it.
    pub fn guarded_by_prometheus(mut self) -> Self {
        self.prometheus = Some(PrometheusRole::Guards);
        self
    }

    pub async fn start(self) -> Stack {
        let green_flags: Vec<&str> = self.green_flags.iter().map(String::as_str).collect();
        let Pair { dir, blue, green } = Pair::with_flags(&self.tag, &[], &green_flags);
        let router_dir = dir.join("router");
        let (prometheus, targets_file, config) = match self.prometheus {
            None => (None, router_dir.join("targets").join("backend.json"), None),
            Some(_) => {
                let config = copy_stack_config(&dir.join("prometheus"));
                let prometheus = Prometheus::start(&config).await;
                let targets_file = config.join("targets").join("backend.json");
                (Some(prometheus), targets_file, Some(config))
            }
        };
        let mut flags = vec![
            "--targets-file".to_owned(),
            targets_file.to_str().expect("utf-8 path").to_owned(),
        ];
        if let (Some(PrometheusRole::Guards), Some(prometheus)) = (self.prometheus, &prometheus) {
            flags.extend(["--prometheus-url".to_owned(), format!("http://{}", prometheus.addr)]);
        }
        flags.extend(self.router_flags);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let router_args = Proc::router_args(&blue.url(""), &green.url(""), &router_dir, &flags);
        let router_envs = if self.router_token {
            vec![("VIGIE_ADMIN_TOKEN", ADMIN_TOKEN)]
        } else {
            Vec::new()
        };
        let router = start_router(&router_args, &router_envs);
        if let Some(config) = config {
            // Prometheus watches its file_sd files: the router job joins at once.
            let admin = router.admin_addr.expect("admin address").to_string();
            set_static_target(&config, "router", &admin);
        }
        Stack {
            router,
            prometheus,
            blue,
            green,
            dir,
            router_args,
            router_envs,
            targets_file,
        }
    }
}

/// The color that answered `GET /api/info` through `router`, checked
/// against the `x-vigie-color` header.
pub async fn served_by(router: &Proc) -> String {
    let response = client()
        .get(router.url("/api/info"))
        .send()
        .await
        .expect("GET /api/info");
    assert_eq!(response.status(), 200);
    let header = response.headers()["x-vigie-color"].to_str().expect("ascii").to_owned();
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["color"],
        header.as_str(),
        "x-vigie-color must name the color that answered"
    );
    header
}

fn start_router(args: &[String], envs: &[(&str, &str)]) -> Proc {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::start(&args, envs, &["public", "admin"])
}

impl Stack {
    pub fn builder(tag: &str) -> StackBuilder {
        StackBuilder {
            tag: tag.to_owned(),
            green_flags: Vec::new(),
            router_flags: Vec::new(),
            router_token: true,
            prometheus: None,
        }
    }

    /// Both backends and the router with its test defaults.
    pub async fn start(tag: &str) -> Stack {
        Stack::builder(tag).start().await
    }

    /// The file the router writes Prometheus' backend targets to.
    pub fn targets_file(&self) -> PathBuf {
        self.targets_file.clone()
    }

    /// The router's state file.
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("router").join("state.json")
    }

    pub fn backend(&self, color: &str) -> &Proc {
        match color {
            "blue" => &self.blue,
            "green" => &self.green,
            other => panic!("no backend color {other:?}"),
        }
    }

    pub fn prometheus(&self) -> &Prometheus {
        self.prometheus
            .as_ref()
            .expect("the stack was built with Prometheus, still running")
    }

    /// Kills Prometheus (the guard then finds it gone).
    pub fn stop_prometheus(&mut self) {
        drop(self.prometheus.take());
    }

    /// `POST /switch {"to": color}` through the router's admin API: (status, JSON body).
    pub async fn switch_to(&self, color: &str) -> (u16, Value) {
        self.router.switch_to(color).await
    }

    /// The color that answered `GET /api/info` through the router.
    pub async fn served_by(&self) -> String {
        served_by(&self.router).await
    }

    /// Stops the router with SIGTERM and asserts a clean exit.
    pub fn stop_router(&mut self) {
        self.router.terminate();
        let status = self.router.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "the router exited with {status}");
    }

    /// Starts the router again with the same flags and files, after
    /// [`Stack::stop_router`] or a kill.
    pub fn start_router(&mut self) {
        self.router = start_router(&self.router_args, &self.router_envs);
    }

    /// Kills `color`'s backend (SIGKILL), as a crash would.
    pub fn kill_backend(&mut self, color: &str) {
        self.backend_mut(color).kill();
    }

    /// Starts `color`'s backend again, with `flags`, on the address and the
    /// database the killed one had: a redeploy of that color.
    pub fn restart_backend(&mut self, color: &str, flags: &[&str]) {
        let addr = self.backend(color).addr.to_string();
        let db = self.dir.join("tasks.db");
        let mut args = vec!["--listen", addr.as_str()];
        args.extend_from_slice(flags);
        let backend = Proc::backend(color, &db, &args);
        *self.backend_mut(color) = backend;
    }

    fn backend_mut(&mut self, color: &str) -> &mut Proc {
        match color {
            "blue" => &mut self.blue,
            "green" => &mut self.green,
            other => panic!("no backend color {other:?}"),
        }
    }
}
