//! The blue/green router (being written).
#![forbid(unsafe_code)]

use std::process::ExitCode;

pub mod cli;

#[derive(clap::Args, Debug)]
pub struct Config {}

pub async fn run(_config: Config) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the router is not built yet")
}
