//! Admin API clients (being written).
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct SwitchArgs {}
#[derive(clap::Args, Debug)]
pub struct StatusArgs {}

pub async fn switch(_args: SwitchArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
pub async fn status(_args: StatusArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
