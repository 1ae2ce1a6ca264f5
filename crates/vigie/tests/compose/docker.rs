//! The Docker CLI, as the tests call it: every command has a deadline, its
//! output is captured, and a failure says which command and what it printed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished command printed, and how it ended.
#[derive(Debug)]
pub struct Output {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout of a successful command; else an error quoting the output.
    pub fn into_stdout(self, program: &str, args: &[&str]) -> Result<String, String> {
        if self.success {
            return Ok(self.stdout);
        }
        Err(format!(
            "`{program} {}` failed ({}):\n{}",
            args.join(" "),
            self.code.map_or("killed".to_owned(), |c| format!("exit {c}")),
            self.text().trim_end()
        ))
    }

    /// stdout and stderr together, for messages.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `program args` in `dir`, killed at `deadline`.
pub fn run_command(
    dir: &Path,
    program: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    deadline: Duration,
) -> Result<Output, String> {
    let shown = format!("{program} {}", args.join(" "));
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in envs {
        command.env(key, value);
    }
    let mut child = command.spawn().map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    let readers = [
        drain(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>)),
        drain(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>)),
    ];
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{shown}` did not finish within {}s", deadline.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for `{shown}`: {e}")),
        }
    };
    let [stdout, stderr] = readers.map(|reader| reader.join().unwrap_or_default());
    Ok(Output {
        success: status.success(),
        code: status.code(),
        stdout,
        stderr,
    })
}

fn drain(stream: Option<Box<dyn Read + Send>>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stream) = stream {
            let mut bytes = Vec::new();
            let _ = stream.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// Like `run_command`, but a non-zero exit is an error quoting the output.
pub fn command_ok(
    dir: &Path,
    program: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    deadline: Duration,
) -> Result<String, String> {
    run_command(dir, program, args, envs, deadline)?.into_stdout(program, args)
}

/// `docker compose` for one project, with its compose files.
pub struct Compose {
    pub dir: PathBuf,
    pub project: String,
    pub files: Vec<PathBuf>,
}

impl Compose {
    fn base_args(&self) -> Vec<String> {
        let mut args = vec!["compose".to_owned(), "-p".to_owned(), self.project.clone()];
        for file in &self.files {
            args.push("-f".to_owned());
            args.push(file.display().to_string());
        }
        args
    }

    /// `docker compose <args>`, its output whatever its exit status.
    pub fn run(&self, args: &[&str], envs: &[(&str, &str)], deadline: Duration) -> Result<Output, String> {
        let mut all = self.base_args();
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run_command(&self.dir, "docker", &all, envs, deadline)
    }

    /// `docker compose <args>`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str], deadline: Duration) -> Result<String, String> {
        let mut shown = vec!["compose"];
        shown.extend_from_slice(args);
        self.run(args, &[], deadline)?.into_stdout("docker", &shown)
    }

    /// `docker compose exec -T <service> <command…>`.
    pub fn exec(&self, service: &str, command: &[&str], deadline: Duration) -> Result<Output, String> {
        let mut args = vec!["exec", "-T", service];
        args.extend_from_slice(command);
        self.run(&args, &[], deadline)
    }

    /// The name compose gives a named volume of this project.
    pub fn volume(&self, name: &str) -> String {
        format!("{}_{name}", self.project)
    }
}

/// `docker <args>` in `dir`, which must succeed.
pub fn docker(dir: &Path, args: &[&str], deadline: Duration) -> Result<String, String> {
    command_ok(dir, "docker", args, &[], deadline)
}

/// Whether the engine has an image by that reference.
pub fn has_image(dir: &Path, reference: &str) -> bool {
    run_command(
        dir,
        "docker",
        &["image", "inspect", reference],
        &[],
        Duration::from_secs(30),
    )
    .is_ok_and(|o| o.success)
}
