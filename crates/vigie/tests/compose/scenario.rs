//! The steps, in the order a user meets them, against one running stack.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::images::{IMAGE, LAB_IMAGE, NEXT_IMAGE, NEXT_VERSION};
use crate::stack::{eventually, http_client, Stack, Written, APP, COMMAND_DEADLINE};

type Step = fn(&mut Stack) -> Result<(), String>;

pub const STEPS: [(&str, Step); 12] = [
    (
        "every_service_is_healthy_and_published_on_loopback_only",
        every_service_is_healthy_and_published_on_loopback_only,
    ),
    (
        "the_api_answers_on_8080_and_a_write_is_seen_by_both_colors",
        the_api_answers_on_8080_and_a_write_is_seen_by_both_colors,
    ),
    (
        "the_doctor_passes_and_names_the_services_left_out",
        the_doctor_passes_and_names_the_services_left_out,
    ),
    (
        "a_switch_moves_traffic_and_the_prometheus_target",
        a_switch_moves_traffic_and_the_prometheus_target,
    ),
    ("a_router_restart_keeps_the_color", a_router_restart_keeps_the_color),
    (
        "a_guarded_switch_passes_on_a_healthy_color",
        a_guarded_switch_passes_on_a_healthy_color,
    ),
    (
        "down_then_up_keeps_tasks_and_prometheus_data",
        down_then_up_keeps_tasks_and_prometheus_data,
    ),
    (
        "a_killed_active_backend_is_a_502_and_the_doctor_names_it",
        a_killed_active_backend_is_a_502_and_the_doctor_names_it,
    ),
    (
        "the_grafana_password_is_grafanas_to_read_and_never_printed",
        the_grafana_password_is_grafanas_to_read_and_never_printed,
    ),
    (
        "a_release_passes_its_guard_and_a_broken_one_is_rolled_back",
        a_release_passes_its_guard_and_a_broken_one_is_rolled_back,
    ),
    (
        "errors_on_the_active_color_burn_its_budget_and_page_through_alertmanager",
        errors_on_the_active_color_burn_its_budget_and_page_through_alertmanager,
    ),
    (
        "a_service_that_is_not_vigie_runs_as_blue_and_green",
        a_service_that_is_not_vigie_runs_as_blue_and_green,
    ),
];

/// file_sd picks up a rewritten targets file within its refresh (5s) and
/// the next scrape (5s) relabels the series; a busy machine gets slack.
const PROMETHEUS_SEES_SWITCH: Duration = Duration::from_secs(45);
/// The router's connect timeout (1s) plus a loaded machine's slack.
const ROUTER_ERROR_WITHIN: Duration = Duration::from_secs(5);

fn every_service_is_healthy_and_published_on_loopback_only(stack: &mut Stack) -> Result<(), String> {
    let containers = stack.containers()?;
    let mut problems = Vec::new();
    for name in &stack.services {
        let service = &stack.config[name];
        let Some(container) = containers.iter().find(|c| c["Service"] == name.as_str()) else {
            problems.push(format!("{name}: no container"));
            continue;
        };
        let (state, health) = (
            container["State"].as_str().unwrap_or(""),
            container["Health"].as_str().unwrap_or(""),
        );
        if service.one_shot {
            if state != "exited" || container["ExitCode"] != 0 {
                problems.push(format!(
                    "{name} (one-shot): {state}, exit code {}",
                    container["ExitCode"]
                ));
            }
        } else if state != "running" || (service.healthcheck && health != "healthy") {
            problems.push(format!("{name}: {state}, health {health:?}"));
        }
        for publisher in container["Publishers"].as_array().into_iter().flatten() {
            let published = publisher["PublishedPort"].as_u64().unwrap_or(0);
            if published != 0 && publisher["URL"] != "127.0.0.1" {
                problems.push(format!(
                    "{name}: port {published} published on {} (not 127.0.0.1)",
                    publisher["URL"]
                ));
            }
        }
    }
    // Every port compose.yaml publishes, for the services running here,
    // is asked for on 127.0.0.1 and published there.
    for service in &stack.services {
        for (host_ip, port) in &stack.config[service].published {
            if host_ip != "127.0.0.1" {
                problems.push(format!(
                    "{service}: compose.yaml publishes {port} on {host_ip:?}, not 127.0.0.1"
                ));
            }
            let published = containers
                .iter()
                .filter(|c| c["Service"] == service.as_str())
                .flat_map(|c| c["Publishers"].as_array().cloned().unwrap_or_default())
                .any(|p| p["PublishedPort"] == *port && p["URL"] == "127.0.0.1");
            if !published {
                problems.push(format!("{service}: port {port} not published on 127.0.0.1"));
            }
        }
    }
    for (service, port) in [("router", 8080), ("prometheus", 9090)] {
        if !stack.config[service].published.iter().any(|(_, p)| *p == port) {
            problems.push(format!("{service}: compose.yaml does not publish {port}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

fn the_api_answers_on_8080_and_a_write_is_seen_by_both_colors(stack: &mut Stack) -> Result<(), String> {
    let info = stack.get(&format!("{APP}/api/info"))?;
    let info_body = info.json()?;
    if info.status != 200 || info_body["color"] != "blue" {
        return Err(format!("GET /api/info: {} {}", info.status, info.body));
    }
    let title = format!("written through the router at {:?}", Instant::now());
    let created = stack.post_json(&format!("{APP}/api/tasks"), &json!({ "title": title }))?;
    let task = created.json()?;
    let id = task["id"]
        .as_i64()
        .ok_or_else(|| format!("POST /api/tasks: {} {}", created.status, created.body))?;
    if created.status != 201 {
        return Err(format!("POST /api/tasks: {} {}", created.status, created.body));
    }
    stack.written = Some(Written { id, title });
    // Each color reads it from the shared SQLite volume, asked inside its
    // own container; an unknown id must fail the same way (not found).
    for color in ["blue", "green"] {
        let service = format!("backend-{color}");
        let found = stack.vigie(
            &service,
            &["healthcheck", &format!("http://127.0.0.1:3000/api/tasks/{id}")],
        )?;
        if !found.success {
            return Err(format!("{service} does not see task {id}: {}", found.text()));
        }
        let missing = stack.vigie(&service, &["healthcheck", "http://127.0.0.1:3000/api/tasks/999999999"])?;
        if missing.success {
            return Err(format!("{service}: an unknown task answered 2xx"));
        }
    }
    Ok(())
}

fn the_doctor_passes_and_names_the_services_left_out(stack: &mut Stack) -> Result<(), String> {
    let optional = stack.optional();
    let mut args = vec!["doctor", "--compose", "--wait", "90s"];
    if !optional.is_empty() {
        args.extend(["--optional", optional.as_str()]);
    }
    let output = stack.vigie("router", &args)?;
    let text = output.text();
    if !output.success {
        return Err(format!("vigie {} failed:\n{text}", args.join(" ")));
    }
    for (name, _) in &stack.left_out {
        if !text
            .lines()
            .any(|line| line.contains("not running (optional") && line.contains(name.as_str()))
        {
            return Err(format!("the doctor does not say that {name} is not running:\n{text}"));
        }
    }
    println!("{text}");
    Ok(())
}

fn a_switch_moves_traffic_and_the_prometheus_target(stack: &mut Stack) -> Result<(), String> {
    let before = eventually("Prometheus labels blue active", PROMETHEUS_SEES_SWITCH, || {
        stack
            .active_target()
            .and_then(|t| if t == "backend-blue:3000" { Ok(t) } else { Err(t) })
    })?;
    let switched = stack.vigie("router", &["switch", "green"])?;
    if !switched.success {
        return Err(format!("vigie switch green: {}", switched.text()));
    }
    let color = stack.serving_color()?;
    if color != "green" {
        return Err(format!("after the switch /api/info answers from {color}"));
    }
    let started = Instant::now();
    eventually("Prometheus labels green active", PROMETHEUS_SEES_SWITCH, || {
        stack
            .active_target()
            .and_then(|t| if t == "backend-green:3000" { Ok(t) } else { Err(t) })
    })?;
    println!(
        "compose: Prometheus' active target {before} -> backend-green:3000 in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn a_router_restart_keeps_the_color(stack: &mut Stack) -> Result<(), String> {
    stack.compose.ok(&["restart", "router"], COMMAND_DEADLINE)?;
    let color = eventually("the router answers after its restart", Duration::from_secs(30), || {
        stack.serving_color()
    })?;
    if color != "green" {
        return Err(format!("after a restart the router serves {color}, not green"));
    }
    let status = stack.vigie("router", &["status", "--json"])?;
    let body: Value =
        serde_json::from_str(&status.stdout).map_err(|e| format!("vigie status --json: {e}: {}", status.text()))?;
    if body["active"] != "green" {
        return Err(format!("vigie status after restart: {}", status.stdout));
    }
    Ok(())
}

fn a_guarded_switch_passes_on_a_healthy_color(stack: &mut Stack) -> Result<(), String> {
    let switched = stack.vigie("router", &["switch", "blue", "--guard", "30s", "--wait"])?;
    if switched.code != Some(0) || !switched.stdout.contains("guard verdict on blue (0.1.0): passed") {
        return Err(format!("vigie switch blue --guard 30s --wait: {}", switched.text()));
    }
    if stack.serving_color()? != "blue" {
        return Err("blue passed its guard but does not serve".to_owned());
    }
    Ok(())
}

fn down_then_up_keeps_tasks_and_prometheus_data(stack: &mut Stack) -> Result<(), String> {
    // A moment before the restart, Prometheus holds the router's samples.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let query = format!("/api/v1/query?query=count_over_time(up%7Bjob%3D%22router%22%7D%5B10m%5D)&time={before}");
    let samples_before = samples(&stack.prometheus(&query)?)?;
    if samples_before == 0.0 {
        return Err("Prometheus has no router sample before the restart".to_owned());
    }
    stack
        .compose
        .ok(&["down", "--timeout", "10"], Duration::from_secs(120))?;
    stack.up()?;
    let written = stack.written.clone().ok_or("no task was written")?;
    let id = written.id;
    let answer = eventually("GET the task after up", Duration::from_secs(30), || {
        let answer = stack.get(&format!("{APP}/api/tasks/{id}"))?;
        if answer.status == 200 {
            Ok(answer)
        } else {
            Err(format!("{} {}", answer.status, answer.body))
        }
    })?;
    if answer.json()?["title"] != written.title.as_str() {
        return Err(format!("the task came back different: {}", answer.body));
    }
    let samples_after = eventually("Prometheus answers after up", Duration::from_secs(30), || {
        samples(&stack.prometheus(&query)?)
    })?;
    if samples_after < samples_before {
        return Err(format!(
            "Prometheus lost data: {samples_before} router samples in the 10 minutes before the restart, {samples_after} after it"
        ));
    }
    let color = stack.serving_color()?;
    if color != "blue" {
        return Err(format!(
            "after down and up the router serves {color}, not blue (its saved state)"
        ));
    }
    Ok(())
}

/// The value of a one-series instant vector (0 when empty).
fn samples(data: &Value) -> Result<f64, String> {
    match data["result"].as_array().map(Vec::as_slice) {
        Some([]) => Ok(0.0),
        Some([series]) => series["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("unexpected sample {series}")),
        _ => Err(format!("unexpected result {data}")),
    }
}

fn a_killed_active_backend_is_a_502_and_the_doctor_names_it(stack: &mut Stack) -> Result<(), String> {
    stack.compose.ok(&["kill", "backend-blue"], COMMAND_DEADLINE)?;
    let started = Instant::now();
    let answer = stack.get(&format!("{APP}/api/info"))?;
    let elapsed = started.elapsed();
    let body = answer.json()?;
    if answer.status != 502 || body["error"].as_str().is_none() || body["message"].as_str().is_none() {
        return Err(format!(
            "with the active backend killed: {} {}",
            answer.status, answer.body
        ));
    }
    if elapsed > ROUTER_ERROR_WITHIN {
        return Err(format!("the 502 took {:.1}s", elapsed.as_secs_f64()));
    }
    println!(
        "compose: active backend killed: {} {} in {} ms",
        answer.status,
        body["error"],
        elapsed.as_millis()
    );
    let optional = stack.optional();
    let mut args = vec!["doctor", "--compose"];
    if !optional.is_empty() {
        args.extend(["--optional", optional.as_str()]);
    }
    // Prometheus notices at its next scrape of the backend job (5s).
    let report = eventually("the doctor names backend-blue", Duration::from_secs(30), || {
        let output = stack.vigie("router", &args)?;
        let text = output.text();
        let targets = text.lines().find(|l| l.contains("prometheus targets")).unwrap_or("");
        if !output.success && targets.starts_with("FAIL") && targets.contains("backend-blue:3000 (blue, active)") {
            Ok(text)
        } else {
            Err(text)
        }
    })?;
    println!("{report}");
    stack.compose.ok(&["start", "backend-blue"], COMMAND_DEADLINE)?;
    eventually("blue serves again", Duration::from_secs(60), || {
        stack
            .serving_color()
            .and_then(|c| if c == "blue" { Ok(()) } else { Err(c) })
    })
}

fn the_grafana_password_is_grafanas_to_read_and_never_printed(stack: &mut Stack) -> Result<(), String> {
    let volume = stack.compose.volume("grafana-secrets");
    // Prometheus' image, upstream's or the stand-in, has busybox: sh, cat,
    // stat, touch.
    let busybox = stack.config["prometheus"].image.clone();
    let file = "/s/grafana-admin-password";
    let as_user = |user: &str, script: &str| -> Result<crate::docker::Output, String> {
        crate::docker::run_command(
            &stack.compose.dir,
            "docker",
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "--user",
                user,
                "-v",
                &format!("{volume}:/s"),
                "--entrypoint",
                "/bin/sh",
                &busybox,
                "-c",
                script,
            ],
            &[],
            COMMAND_DEADLINE,
        )
    };
    let read = as_user("472", &format!("cat {file}"))?;
    let password = read.stdout.trim().to_owned();
    if !read.success || password.len() < 16 {
        return Err(format!("Grafana's uid 472 cannot read a password: {}", read.text()));
    }
    let mode = as_user("0", &format!("stat -c '%u %a' {file}"))?;
    let (owner, bits) = mode.stdout.trim().split_once(' ').ok_or_else(|| mode.text())?;
    let bits = u32::from_str_radix(bits, 8).map_err(|e| format!("{e}: {}", mode.stdout))?;
    if bits & 0o022 != 0 || owner == "472" {
        return Err(format!("the password file is {owner} {bits:o}: others may change it"));
    }
    for user in ["472", "12345"] {
        let write = as_user(user, &format!("echo changed >> {file}"))?;
        if write.success {
            return Err(format!("uid {user} could change the password file"));
        }
        // Nor replace it: the directory is not theirs to write either.
        let replace = as_user(user, "touch /s/replacement")?;
        if replace.success {
            return Err(format!("uid {user} can write into the secrets volume"));
        }
    }
    let logs = stack
        .compose
        .run(&["logs", "--no-color", "grafana-secret"], &[], COMMAND_DEADLINE)?;
    if logs.text().contains(&password) {
        return Err("the grafana-secret job printed the password".to_owned());
    }
    Ok(())
}

/// Requests through the router from a thread of its own while a step goes
/// on: `work` gets a client and the stop flag, and its result comes back
/// at [`Background::finish`]. Stopped when dropped too (a step that fails
/// early).
struct Background<T> {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<T, String>>>,
}

impl<T: Send + 'static> Background<T> {
    fn start<F, Fut>(work: F) -> Background<T>
    where
        F: FnOnce(reqwest::Client, std::sync::Arc<std::sync::atomic::AtomicBool>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (runtime, http) = http_client(true)?;
            runtime.block_on(work(http, stopped))
        });
        Background {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Result<T, String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let thread = self.thread.take().ok_or("finished already")?;
        thread.join().map_err(|_| "the background thread panicked".to_owned())?
    }
}

impl<T> Drop for Background<T> {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn running(stop: &std::sync::atomic::AtomicBool) -> bool {
    !stop.load(std::sync::atomic::Ordering::Relaxed)
}

/// Tasks written through the router while a release goes on: the ones
/// acknowledged (201) with their titles.
fn writer() -> Background<Vec<(i64, String)>> {
    Background::start(|http, stop| async move {
        let mut acknowledged = Vec::new();
        let mut n = 0;
        while running(&stop) {
            n += 1;
            let title = format!("release write {n}");
            let sent = http
                .post(format!("{APP}/api/tasks"))
                .json(&json!({ "title": title }))
                .send()
                .await;
            if let Ok(response) = sent {
                if response.status() == 201 {
                    let body: Value = response.json().await.map_err(|e| e.to_string())?;
                    let id = body["id"]
                        .as_i64()
                        .ok_or_else(|| format!("201 without an id: {body}"))?;
                    acknowledged.push((id, title));
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(acknowledged)
    })
}

/// `GET path` through the router every 50 ms: (2xx answers, others).
fn reader(path: &'static str) -> Background<(u64, u64)> {
    Background::start(move |http, stop| async move {
        let (mut ok, mut failed) = (0, 0);
        while running(&stop) {
            match http.get(format!("{APP}{path}")).send().await {
                Ok(response) if response.status().is_success() => ok += 1,
                _ => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok((ok, failed))
    })
}

/// The expression of a dashboard's panel or annotation, from the file Grafana provisions.
fn dashboard_expr(stack: &Stack, file: &str, title: &str) -> Result<String, String> {
    let path = stack.compose.dir.join("stack/grafana/dashboards").join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let dashboard: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let panel = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["title"] == title);
    let annotation = dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["name"] == title);
    panel
        .and_then(|p| p["targets"][0]["expr"].as_str())
        .or_else(|| annotation.and_then(|a| a["expr"].as_str()))
        .map(str::to_owned)
        .ok_or_else(|| format!("{file}: no panel or annotation {title:?} with a query"))
}

/// The series of an instant query, as label objects.
fn series(stack: &Stack, expr: &str) -> Result<Vec<Value>, String> {
    let mut url = reqwest::Url::parse("http://127.0.0.1:9090/api/v1/query").map_err(|e| e.to_string())?;
    url.query_pairs_mut().append_pair("query", expr);
    let data = stack.prometheus(&format!("{}?{}", url.path(), url.query().unwrap_or("")))?;
    Ok(data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["metric"].clone())
        .collect())
}

/// The runbook's release, under Docker: a second version of the same code
/// to the standby color only, a guarded switch that passes; then a broken
/// deploy (fault injection) to the other color, rolled back by its guard;
/// traffic on the good version, every acknowledged write readable.
fn a_release_passes_its_guard_and_a_broken_one_is_rolled_back(stack: &mut Stack) -> Result<(), String> {
    if stack.serving_color()? != "blue" {
        return Err("the release starts from blue active".to_owned());
    }
    // An image variable naming no image: the engine's own error, and the
    // running color is left as it was.
    let missing = stack.deploy("backend-green", &[("VIGIE_GREEN_IMAGE", "vigie:no-such-release")])?;
    if missing.success || !missing.text().to_lowercase().contains("no such image") {
        return Err(format!("deploying an image that does not exist: {}", missing.text()));
    }
    println!("compose: an image that does not exist: {}", missing.text().trim());
    let containers = stack.containers()?;
    let green = containers.iter().find(|c| c["Service"] == "backend-green");
    if green.is_none_or(|c| c["State"] != "running" || c["Image"].as_str().is_none_or(|i| i != IMAGE)) {
        return Err(format!(
            "after the failed deploy, green is not the running {IMAGE}: {green:?}"
        ));
    }
    let next = [("VIGIE_GREEN_IMAGE", NEXT_IMAGE)];
    let deployed = stack.deploy("backend-green", &next)?;
    if !deployed.success {
        return Err(format!("deploying {NEXT_IMAGE} to green: {}", deployed.text()));
    }
    stack.wait_for_version("green", NEXT_VERSION)?;
    let writer = writer();

    let switched = stack.vigie("router", &["switch", "green", "--guard", "40s", "--wait"])?;
    let passed = format!("guard verdict on green ({NEXT_VERSION}): passed");
    if switched.code != Some(0) || !switched.stdout.contains(&passed) {
        return Err(format!("the release's guarded switch: {}", switched.text()));
    }
    println!("compose: {}", switched.stdout.trim().replace('\n', "\n  "));
    let status = stack.vigie("router", &["status"])?;
    if !status.stdout.contains(&format!("active: green ({NEXT_VERSION})")) {
        return Err(format!("vigie status after the release: {}", status.text()));
    }
    let versions = dashboard_expr(stack, "blue-green.json", "Versions")?;
    eventually(
        "the dashboard's versions panel shows the release active",
        PROMETHEUS_SEES_SWITCH,
        || {
            let found = series(stack, &versions)?;
            let shown = |color: &str, role: &str, version: &str| {
                found
                    .iter()
                    .any(|s| s["color"] == color && s["role"] == role && s["version"] == version)
            };
            if shown("green", "active", NEXT_VERSION) && shown("blue", "standby", "0.1.0") {
                Ok(())
            } else {
                Err(format!("{found:?}"))
            }
        },
    )?;

    // A broken deploy to the standby (half its API answers fail).
    let broken = [
        ("VIGIE_GREEN_IMAGE", NEXT_IMAGE),
        ("VIGIE_BLUE_FAULT_ERROR_RATE", "0.5"),
    ];
    let deployed = stack.deploy("backend-blue", &broken)?;
    if !deployed.success {
        return Err(format!("deploying the broken blue: {}", deployed.text()));
    }
    stack.wait_for_version("blue", "0.1.0")?;
    // Judged by error budget burn rate: the router reads the SLO file compose mounts.
    let switched = stack.vigie("router", &["switch", "blue", "--guard", "40s", "--guard-slo", "--wait"])?;
    if switched.code != Some(3)
        || !switched
            .stdout
            .contains("guard verdict on blue (0.1.0): rolled_back: guard_slo_burn_rate")
    {
        return Err(format!(
            "the broken release's guarded switch (exit 3 expected): {}",
            switched.text()
        ));
    }
    println!("compose: {}", switched.stdout.trim().replace('\n', "\n  "));
    if stack.serving_color()? != "green" {
        return Err("after the rollback the router does not serve green".to_owned());
    }
    let status = stack.vigie("router", &["status"])?;
    if !status.stdout.contains(&format!("active: green ({NEXT_VERSION})")) {
        return Err(format!("vigie status after the rollback: {}", status.text()));
    }
    let rollback = dashboard_expr(stack, "blue-green.json", "Guard rollback")?;
    eventually(
        "the rollback annotation, with the versions",
        PROMETHEUS_SEES_SWITCH,
        || {
            let found = series(stack, &rollback)?;
            let marked = found.iter().any(|s| {
                s["from"] == "blue"
                    && s["to"] == "green"
                    && s["from_version"] == "0.1.0"
                    && s["to_version"] == NEXT_VERSION
            });
            if marked {
                Ok(())
            } else {
                Err(format!("{found:?}"))
            }
        },
    )?;

    let acknowledged = writer.finish()?;
    if acknowledged.len() < 50 {
        return Err(format!(
            "only {} writes acknowledged during the release",
            acknowledged.len()
        ));
    }
    for (id, title) in &acknowledged {
        let answer = stack.get(&format!("{APP}/api/tasks/{id}"))?;
        if answer.status != 200 || answer.json()?["title"] != title.as_str() {
            return Err(format!(
                "acknowledged task {id} ({title}) reads {} {}",
                answer.status, answer.body
            ));
        }
    }
    println!(
        "compose: {} writes acknowledged during the release and the rollback, all readable on {IMAGE} and {NEXT_IMAGE}",
        acknowledged.len()
    );
    Ok(())
}

/// The SLO rules under the stack's Prometheus: errors injected on the
/// active color raise its burn rate, and the fast-burn page reaches
/// Alertmanager, labelled with the color.
fn errors_on_the_active_color_burn_its_budget_and_page_through_alertmanager(stack: &mut Stack) -> Result<(), String> {
    if stack.serving_color()? != "green" {
        return Err("the SLO step starts from green active (the release's)".to_owned());
    }
    let failing = [
        ("VIGIE_GREEN_IMAGE", NEXT_IMAGE),
        ("VIGIE_GREEN_FAULT_ERROR_RATE", "0.5"),
    ];
    let deployed = stack.deploy("backend-green", &failing)?;
    if !deployed.success {
        return Err(format!("injecting errors on green: {}", deployed.text()));
    }
    let started = Instant::now();
    let burn = r#"slo:burn_rate:ratio_rate5m{slo="availability", color="green"}"#;
    eventually("green's 5m burn rate over 14.4", Duration::from_secs(180), || {
        let found = series(stack, &format!("{burn} > 14.4"))?;
        if found.is_empty() {
            Err(format!("{burn}: {:?}", series(stack, burn)?))
        } else {
            Ok(())
        }
    })?;
    let alerts = eventually("the fast-burn page in Alertmanager", Duration::from_secs(180), || {
        let answer = stack.get("http://127.0.0.1:9093/api/v2/alerts?active=true")?;
        let alerts = answer.json()?;
        let paged = alerts.as_array().into_iter().flatten().any(|a| {
            let l = &a["labels"];
            l["alertname"] == "VigieSLOAvailabilityFastBurn"
                && l["color"] == "green"
                && l["slo_alert"] == "page"
                && l["severity"] == "critical"
                && a["annotations"]["runbook_url"] == "docs/runbook.md#slo-fast-burn"
        });
        if paged {
            Ok(alerts)
        } else {
            Err(answer.body)
        }
    })?;
    let names: Vec<&str> = alerts
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["labels"]["alertname"].as_str())
        .collect();
    println!(
        "compose: green at 50% errors paged VigieSLOAvailabilityFastBurn in {:.0}s (firing: {})",
        started.elapsed().as_secs_f64(),
        names.join(", ")
    );
    Ok(())
}

/// lab-service (prom-client names, pino lines, not vigie's code) as both
/// colors, set by the variables of docs/stack.md "Watch your own service":
/// the doctor finds what the stack reads, a switch moves traffic and
/// Prometheus' target, a guarded switch passes on a healthy color and
/// rolls back a faulty one.
fn a_service_that_is_not_vigie_runs_as_blue_and_green(stack: &mut Stack) -> Result<(), String> {
    let lab = |fault: &'static str| {
        vec![
            ("VIGIE_BLUE_IMAGE", LAB_IMAGE),
            ("VIGIE_GREEN_IMAGE", LAB_IMAGE),
            ("VIGIE_BLUE_COMMAND", "serve"),
            ("VIGIE_GREEN_COMMAND", "serve"),
            ("VIGIE_BACKEND_HEALTHCHECK", "/usr/local/bin/lab-service"),
            ("VIGIE_GREEN_FAULT_ERROR_RATE", fault),
        ]
    };
    let deployed = stack.compose.run(
        &["up", "-d", "--no-deps", "--wait", "backend-blue", "backend-green"],
        &lab("0"),
        Duration::from_secs(120),
    )?;
    if !deployed.success {
        return Err(format!("deploying lab-service as both colors: {}", deployed.text()));
    }
    let items = eventually(
        "lab-service answers through the router",
        Duration::from_secs(30),
        || {
            let answer = stack.get(&format!("{APP}/api/items"))?;
            if answer.status == 200 && answer.json()?.is_array() {
                Ok(answer.body)
            } else {
                Err(format!("{} {}", answer.status, answer.body))
            }
        },
    )?;
    println!("compose: lab-service through the router: GET /api/items -> {items}");
    let optional = stack.optional();
    let mut args = vec!["doctor", "--compose", "--wait", "60s"];
    if !optional.is_empty() {
        args.extend(["--optional", optional.as_str()]);
    }
    let doctor = eventually("the doctor passes with lab-service", Duration::from_secs(60), || {
        let output = stack.vigie("router", &args)?;
        if output.success {
            Ok(output.text())
        } else {
            Err(output.text())
        }
    })?;
    println!("{doctor}");

    // The load generator calls vigie's API, which lab-service does not
    // have (route "unmatched"): the guard needs lab-service's own.
    let traffic = reader("/api/items");
    let active = stack.active_color()?;
    let other = if active == "green" { "blue" } else { "green" };
    let switched = stack.vigie("router", &["switch", other, "--guard", "30s", "--wait"])?;
    if switched.code != Some(0)
        || !switched
            .stdout
            .contains(&format!("guard verdict on {other} (unknown): passed"))
    {
        return Err(format!("lab-service's guarded switch to {other}: {}", switched.text()));
    }
    eventually(
        &format!("Prometheus labels {other} active"),
        PROMETHEUS_SEES_SWITCH,
        || {
            stack.active_target().and_then(|t| {
                if t == format!("backend-{other}:3000") {
                    Ok(t)
                } else {
                    Err(t)
                }
            })
        },
    )?;
    println!("compose: {}", switched.stdout.trim().replace('\n', "\n  "));

    // A faulty lab-service on green, then a guarded switch to it.
    if other == "green" {
        let back = stack.vigie("router", &["switch", "blue"])?;
        if !back.success {
            return Err(format!("switch back to blue: {}", back.text()));
        }
    }
    let deployed = stack.compose.run(
        &["up", "-d", "--no-deps", "--wait", "backend-green"],
        &lab("0.5"),
        Duration::from_secs(120),
    )?;
    if !deployed.success {
        return Err(format!("deploying a faulty lab-service to green: {}", deployed.text()));
    }
    let switched = stack.vigie("router", &["switch", "green", "--guard", "40s", "--wait"])?;
    if switched.code != Some(3) || !switched.stdout.contains("rolled_back: guard_error_ratio") {
        return Err(format!(
            "the faulty lab-service's guarded switch (exit 3 expected): {}",
            switched.text()
        ));
    }
    println!("compose: {}", switched.stdout.trim().replace('\n', "\n  "));
    if stack.active_color()? != "blue" {
        return Err("after the rollback lab-service's blue does not serve".to_owned());
    }
    let (ok, failed) = traffic.finish()?;
    println!("compose: GET /api/items through the router during both guards: {ok} answered 2xx, {failed} not");
    Ok(())
}
