//! `vigie slo`: renders the Prometheus rules of an SLO file (the
//! `vigie-slo` crate), to stdout or a file, or checks that a committed file
//! is current.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The SLO file.
    #[arg(default_value = "stack/slo.yaml")]
    pub file: PathBuf,
    /// Write the rules here (replaced whole) instead of printing them.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// With --output: change nothing, exit 1 if that file is not what
    /// the SLO file renders to.
    #[arg(long, requires = "output")]
    pub check: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let slos = match vigie_slo::Slos::load(&args.file) {
        Ok(slos) => slos,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let rules = vigie_slo::render(&slos, &args.file.display().to_string());
    let Some(output) = args.output else {
        print!("{rules}");
        return Ok(ExitCode::SUCCESS);
    };
    if args.check {
        let current = std::fs::read_to_string(&output).unwrap_or_default();
        if current == rules {
            println!("{} is up to date with {}", output.display(), args.file.display());
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!(
            "{} is stale: run `vigie slo {} --output {}`",
            output.display(),
            args.file.display(),
            output.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    // Beside the target, then renamed: Prometheus never reads half a file.
    let tmp = output.with_extension("yml.tmp");
    std::fs::write(&tmp, &rules).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &output).with_context(|| format!("cannot replace {}", output.display()))?;
    println!(
        "wrote {} ({} objectives) from {}",
        output.display(),
        slos.objectives.len(),
        args.file.display()
    );
    Ok(ExitCode::SUCCESS)
}
