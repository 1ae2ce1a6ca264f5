//! `vigie`: one binary, one subcommand per role. Parsing and wiring only;
//! the roles live in the library crates.
#![forbid(unsafe_code)]

mod healthcheck;
mod secret;
mod slo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc rather than the C library's allocator: requests allocate on one
/// thread and trace export frees on another, which glibc's and musl's (the
/// static image's) allocators handle with locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "vigie",
    version = vigie_telemetry::VERSION,
    about = "A blue/green backend and the stack that watches it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the monitored backend service as one color.
    Backend(vigie_backend::Config),
    /// Run the blue/green router in front of both colors.
    Router(vigie_router::Config),
    /// Switch the router to a color (client of the admin API).
    Switch(vigie_router::cli::SwitchArgs),
    /// Show the router's state (client of the admin API).
    Status(vigie_router::cli::StatusArgs),
    /// Exit 0 when URL answers 2xx: the container health check.
    Healthcheck(healthcheck::Args),
    /// Send a steady, small mix of API traffic so dashboards have data.
    Loadgen(vigie_backend::loadgen::Args),
    /// Check the running stack: router, Prometheus, Loki, Grafana, Alertmanager.
    Doctor(vigie_doctor::Args),
    /// Create a secret file (e.g. Grafana's admin password) unless it exists.
    Secret(secret::Args),
    /// Render the Prometheus rules of the SLO file (stack/slo.yaml).
    Slo(slo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The OTEL_* variables are configuration too: a bad one exits 2 like a bad flag.
    if matches!(cli.command, Command::Backend(_) | Command::Router(_)) {
        if let Err(e) = vigie_telemetry::traces::Traces::check_env() {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Backend(config) => vigie_backend::run(config).await,
            Command::Router(config) => vigie_router::run(config).await,
            Command::Switch(args) => vigie_router::cli::switch(args).await,
            Command::Status(args) => vigie_router::cli::status(args).await,
            Command::Healthcheck(args) => healthcheck::run(args).await,
            Command::Loadgen(args) => vigie_backend::loadgen::run(args).await,
            Command::Doctor(args) => vigie_doctor::run(args).await,
            Command::Secret(args) => secret::run(args).await,
            Command::Slo(args) => slo::run(args),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
