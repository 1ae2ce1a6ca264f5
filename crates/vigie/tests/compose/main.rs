//! The compose stack under a real Docker engine: `compose.yaml` itself,
//! unchanged, with the image built from the repository's Dockerfile, as a
//! user starts it with `docker compose up -d`.
//!
//! No image registry is assumed: every image is built on this machine
//! (images.rs). Services whose pinned upstream image is not on the engine
//! (Loki, Promtail, Tempo, Grafana where nothing can be pulled) are left
//! out, with the list printed; Prometheus and Alertmanager are stood in by
//! images made from Debian's binaries. The steps (scenario.rs) then run in
//! order against the one stack, each a sentence of what a user would see,
//! and the stack is removed at the end, volumes included.
//!
//! Needs a Docker engine and the compose v2 plugin. Without them every
//! step fails and says how to install them; `VIGIE_COMPOSE_TESTS=skip`
//! skips them, saying so. `VIGIE_COMPOSE_KEEP=1` leaves the stack running
//! after the steps (then `docker compose -p vigie down -v` removes it).
//!
//! `cargo test -p vigie --test compose -- --prepare` only builds the images
//! and prints the compose files and services to start (bench/compose.sh).
#![forbid(unsafe_code)]

mod docker;
mod images;
mod scenario;
mod stack;

use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    if std::env::var("VIGIE_COMPOSE_TESTS").is_ok_and(|v| v == "skip") {
        println!(
            "compose: SKIPPED (VIGIE_COMPOSE_TESTS=skip): compose.yaml, the Dockerfile and stack/ were not run under Docker"
        );
        println!("0 passed, 0 failed, {} skipped", scenario::STEPS.len());
        return ExitCode::SUCCESS;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--prepare") {
        return prepare_only();
    }
    // As a libtest binary would: `--list` names the one test, and a name
    // filter or `--ignored` that selects it not runs nothing.
    if args.iter().any(|a| a == "--list") {
        println!("compose: test\n\n1 test, 0 benchmarks");
        return ExitCode::SUCCESS;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let selected = filters.is_empty()
        || filters.iter().any(|f| {
            "compose".contains(f.as_str()) || scenario::STEPS.iter().any(|(name, _)| name.contains(f.as_str()))
        });
    if !selected || args.iter().any(|a| a == "--ignored") {
        println!("running 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out");
        return ExitCode::SUCCESS;
    }
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut stack = match stack::Stack::start() {
        Ok(stack) => stack,
        Err(error) => {
            eprintln!("compose: FAILED to start the stack:\n{error}");
            println!("0 passed, {} failed", scenario::STEPS.len());
            return ExitCode::FAILURE;
        }
    };
    for (name, step) in scenario::STEPS {
        // The steps build on each other: after a failure the rest would
        // only report its consequences.
        if failed > 0 {
            println!("compose: {name} ... not run");
            skipped += 1;
            continue;
        }
        let started = Instant::now();
        match step(&mut stack) {
            Ok(()) => {
                println!("compose: {name} ... ok ({:.1}s)", started.elapsed().as_secs_f64());
                passed += 1;
            }
            Err(error) => {
                println!(
                    "compose: {name} ... FAILED ({:.1}s)\n{error}",
                    started.elapsed().as_secs_f64()
                );
                stack.print_diagnostics();
                failed += 1;
            }
        }
    }
    stack.stop();
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Builds the images and prints, one `key: value` line each, what a script
/// needs to start the same stack.
fn prepare_only() -> ExitCode {
    match stack::Stack::prepare() {
        Ok(stack) => {
            let files: Vec<String> = stack.compose.files.iter().map(|f| f.display().to_string()).collect();
            let (jobs, services) = stack.jobs_apart();
            let join = |names: Vec<&String>| names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
            println!("compose-files: {}", files.join(":"));
            println!("services: {}", join(services));
            println!("jobs: {}", join(jobs));
            println!("optional: {}", stack.optional());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("compose: {error}");
            ExitCode::FAILURE
        }
    }
}
