//! `lab-service`: a stand-in for the NestJS backend of the original lab,
//! written without any of vigie's code, so that the stack, the router and
//! the guard are shown to work for a service that speaks other
//! conventions:
//!
//! - metrics as prom-client names them (`@willsoto/nestjs-prometheus`):
//!   `http_requests_total` and `http_request_duration_seconds` labelled
//!   `method`, `route`, `status_code`, prom-client's default buckets, and
//!   the standard `process_*` metrics;
//! - one pino JSON line per request (`nestjs-pino`): numeric `level`,
//!   `time` in epoch milliseconds, `req.id`, `req.method`, `req.url`,
//!   `res.statusCode`, `responseTime`, `msg: "request completed"`;
//! - health as @nestjs/terminus answers it on `/health/live` and
//!   `/health/ready`; port from `PORT` (3000).
//!
//! `lab-service serve` runs it; `lab-service healthcheck URL` exits 0 when
//! URL answers 2xx (the container health check: the image has no shell).
#![forbid(unsafe_code)]

mod app;
mod healthcheck;
mod process;

use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: lab-service serve | lab-service healthcheck URL");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["serve"] => match app::Settings::from_env() {
            Ok(settings) => runtime.block_on(app::serve(settings)),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        ["healthcheck", url] => runtime.block_on(healthcheck::run(url)),
        _ => usage(),
    }
}
