//! `vigie secret --file PATH`: makes sure a secret file exists, so that a
//! plain `docker compose up` never leaves Grafana with a known password.
//! A value given in `VIGIE_SECRET_VALUE` is written as is; otherwise an
//! existing file is kept, and a missing one gets 32 random hex characters.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The secret file to create.
    #[arg(long)]
    file: PathBuf,
    /// Use this value instead of a generated one (empty: generate).
    #[arg(long, env = "VIGIE_SECRET_VALUE", default_value = "", hide_env_values = true)]
    value: String,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let value = args.value.trim();
    if value.is_empty() && args.file.exists() {
        println!("keeping the existing secret in {}", args.file.display());
        return Ok(ExitCode::SUCCESS);
    }
    let secret = if value.is_empty() { generate() } else { value.to_owned() };
    write_atomically(&args.file, &secret).with_context(|| format!("cannot write {}", args.file.display()))?;
    println!("wrote the secret to {}", args.file.display());
    Ok(ExitCode::SUCCESS)
}

/// 128 bits from the OS random source, as hex.
fn generate() -> String {
    uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string()[..8]
}

fn write_atomically(path: &Path, secret: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("secret")
    ));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generates_once_then_keeps_and_honours_a_given_value() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path();
        let file = dir.join("sub").join("pw");
        run(Args {
            file: file.clone(),
            value: String::new(),
        })
        .await
        .expect("generate");
        let first = std::fs::read_to_string(&file).expect("read");
        assert_eq!(first.len(), 40);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        run(Args {
            file: file.clone(),
            value: String::new(),
        })
        .await
        .expect("keep");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), first);
        run(Args {
            file: file.clone(),
            value: " chosen ".into(),
        })
        .await
        .expect("given");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "chosen");
    }
}
