//! The images the compose tests start, all built on this machine (no image
//! is ever pulled):
//!
//! - `vigie:<version>` from the repository's Dockerfile. On a Linux host of
//!   the engine's architecture, from a static binary compiled here
//!   (`VIGIE_BINARY=prebuilt`: the real runtime stage, no Rust image
//!   needed); elsewhere (a Mac), through the Dockerfile's own build stage.
//! - Prometheus and Alertmanager, when their pinned upstream images are not
//!   on this engine: stand-ins made from Debian's binaries with busybox (the
//!   compose health checks call `wget`), selected by `stand-ins.yaml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::docker::{self, command_ok, Compose};

/// The stand-in image of each service, as `stand-ins.yaml` names them.
pub const STAND_INS: [StandIn; 2] = [
    StandIn {
        service: "prometheus",
        image: "vigie-standin/prometheus:debian",
        binary: "/usr/bin/prometheus",
        entrypoint: "/bin/prometheus",
        package: "prometheus",
        data_dir: "prometheus",
        share: Some("/usr/share/prometheus/web"),
    },
    StandIn {
        service: "alertmanager",
        image: "vigie-standin/alertmanager:debian",
        binary: "/usr/bin/prometheus-alertmanager",
        entrypoint: "/bin/alertmanager",
        package: "prometheus-alertmanager",
        data_dir: "alertmanager",
        // Debian's Alertmanager reads its default notification templates
        // from here and refuses its configuration without them.
        share: Some("/usr/share/prometheus/alertmanager"),
    },
];

/// Debian's statically linked busybox (package busybox-static).
const BUSYBOX: &str = "/bin/busybox";
/// The upstream images run as nobody, who owns their data directory.
const NOBODY: &str = "65534";

pub struct StandIn {
    pub service: &'static str,
    pub image: &'static str,
    binary: &'static str,
    entrypoint: &'static str,
    package: &'static str,
    data_dir: &'static str,
    share: Option<&'static str>,
}

pub const BUILD_DEADLINE: Duration = Duration::from_secs(1800);

/// lab-service (crates/lab), a backend that is not vigie's, as an image.
pub const LAB_IMAGE: &str = "vigie-lab:compose";

/// The image compose.yaml builds from the checkout (both colors' default).
pub const IMAGE: &str = "vigie:0.1.0";
/// A second release of the same code, as a deploy would bring: built with
/// `VIGIE_VERSION` and deployed to one color by the release step.
pub const NEXT_VERSION: &str = "0.2.0-compose";
pub const NEXT_IMAGE: &str = "vigie:0.2.0-compose";

/// Builds [`NEXT_IMAGE`] and [`IMAGE`] for the engine, through compose.yaml's
/// own build. `prebuilt` compiles a static binary with this machine's
/// toolchain into target/image/vigie first; otherwise the Dockerfile's
/// build stage compiles it with the `VIGIE_VERSION` build argument.
pub fn build_vigie(compose: &Compose, prebuilt: Option<&str>) -> Result<(), String> {
    let root = &compose.dir;
    // The next release first: IMAGE is the tag compose builds, re-tagged.
    for (version, tag) in [(NEXT_VERSION, Some(NEXT_IMAGE)), ("", None)] {
        let binary_source = match prebuilt {
            Some(rust_target) => {
                compile_static(root, rust_target, version)?;
                "prebuilt"
            }
            None => "build",
        };
        let envs = [("VIGIE_BINARY", binary_source), ("VIGIE_VERSION", version)];
        let output = compose.run(&["build", "router"], &envs, BUILD_DEADLINE)?;
        if !output.success {
            return Err(format!("docker compose build failed:\n{}", output.text()));
        }
        if let Some(tag) = tag {
            docker::docker(root, &["tag", IMAGE, tag], Duration::from_secs(60))?;
        }
    }
    Ok(())
}

/// Builds [`LAB_IMAGE`]: from a static lab-service compiled here and
/// imported with the files of image/ (`prebuilt`), else with
/// the Dockerfile's `lab-service` target.
pub fn build_lab(root: &Path, prebuilt: Option<&str>) -> Result<(), String> {
    let Some(rust_target) = prebuilt else {
        // BuildKit: the legacy builder would build every stage and has no TARGETARCH.
        return command_ok(
            root,
            "docker",
            &["build", "--target", "lab-service", "-t", LAB_IMAGE, "."],
            &[("DOCKER_BUILDKIT", "1")],
            BUILD_DEADLINE,
        )
        .map(drop);
    };
    let built = compile_static_package(root, rust_target, "lab-service", "")?;
    let work = std::env::temp_dir().join(format!("vigie-lab-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let result = (|| {
        let bin = work.join("usr/local/bin");
        mkdir(&bin)?;
        mkdir(&work.join("etc"))?;
        copy(&built, &bin.join("lab-service"))?;
        for file in ["passwd", "group"] {
            copy(&root.join("image/etc").join(file), &work.join("etc").join(file))?;
        }
        let tar = std::env::temp_dir().join(format!("vigie-lab-image-{}.tar", std::process::id()));
        let tar_path = tar.display().to_string();
        command_ok(
            root,
            "tar",
            &[
                "-cf",
                &tar_path,
                "--numeric-owner",
                "--owner=0",
                "--group=0",
                "-C",
                &work.display().to_string(),
                ".",
            ],
            &[],
            Duration::from_secs(120),
        )?;
        let imported = docker::docker(
            root,
            &[
                "import",
                "--change",
                r#"ENTRYPOINT ["/usr/local/bin/lab-service"]"#,
                "--change",
                r#"CMD ["serve"]"#,
                "--change",
                "USER 65532:65532",
                &tar_path,
                LAB_IMAGE,
            ],
            Duration::from_secs(300),
        );
        let _ = std::fs::remove_file(&tar);
        imported.map(drop)
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// `cargo build --release` of the `vigie` binary for `rust_target`,
/// statically linked (`+crt-static`: glibc's static libraries are part of
/// every Linux Rust toolchain's C setup, musl's are not installed here),
/// reporting `version` (empty: the crate version). A change of version
/// recompiles only the workspace's crates, not their dependencies.
fn compile_static(root: &Path, rust_target: &str, version: &str) -> Result<(), String> {
    let built = compile_static_package(root, rust_target, "vigie", version)?;
    let dest = root.join("target/image/vigie");
    std::fs::create_dir_all(root.join("target/image")).map_err(|e| e.to_string())?;
    std::fs::copy(&built, &dest).map_err(|e| format!("copy {} to {}: {e}", built.display(), dest.display()))?;
    Ok(())
}

/// The static release binary of `package` (named as the package) for
/// `rust_target`, reporting `version`: its path.
fn compile_static_package(root: &Path, rust_target: &str, package: &str, version: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // A target directory of its own: the outer `cargo test` may hold the
    // lock of the usual one, and these flags would rebuild it anyway.
    let target_dir = root.join("target/compose-image");
    let flags_var = format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        rust_target.to_uppercase().replace('-', "_")
    );
    eprintln!(
        "compose: compiling a static {package} {} for {rust_target} (cargo build --release; minutes the first time)",
        if version.is_empty() { "(crate version)" } else { version }
    );
    command_ok(
        root,
        &cargo,
        &[
            "build",
            "--release",
            "--locked",
            "-p",
            package,
            "--target",
            rust_target,
            "--target-dir",
            &target_dir.display().to_string(),
        ],
        &[
            (flags_var.as_str(), "-C target-feature=+crt-static"),
            ("VIGIE_VERSION", version),
        ],
        BUILD_DEADLINE,
    )?;
    let built = target_dir.join(rust_target).join("release").join(package);
    // The image is `scratch`: a dynamically linked binary would not start
    // there (e.g. when RUSTFLAGS, which cargo prefers, dropped +crt-static).
    if has_interpreter(&built)? {
        return Err(format!(
            "{} is dynamically linked; the image needs a static binary (is RUSTFLAGS set? \
             it takes precedence over {flags_var})",
            built.display()
        ));
    }
    Ok(built)
}

/// Whether an ELF64 executable names a program interpreter (PT_INTERP):
/// the dynamic loader, which a static binary does without.
fn has_interpreter(binary: &Path) -> Result<bool, String> {
    let bytes = std::fs::read(binary).map_err(|e| format!("read {}: {e}", binary.display()))?;
    let field = |at: usize, len: usize| -> Result<u64, String> {
        let slice = bytes.get(at..at + len).ok_or("not an ELF64 file")?;
        Ok(slice.iter().rev().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    };
    if bytes.get(..5) != Some(b"\x7fELF\x02".as_slice()) {
        return Err(format!("{} is not an ELF64 file", binary.display()));
    }
    let (offset, size, count) = (field(0x20, 8)?, field(0x36, 2)?, field(0x38, 2)?);
    for index in 0..count {
        const PT_INTERP: u64 = 3;
        let at = usize::try_from(offset + index * size).map_err(|e| e.to_string())?;
        if field(at, 4)? == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The Rust target whose static binary runs on the engine, when this host
/// can compile it: a Linux host of the engine's architecture.
pub fn prebuilt_target(engine_arch: &str) -> Option<&'static str> {
    if std::env::consts::OS != "linux" {
        return None;
    }
    match (engine_arch, std::env::consts::ARCH) {
        ("amd64", "x86_64") => Some("x86_64-unknown-linux-gnu"),
        ("arm64", "aarch64") => Some("aarch64-unknown-linux-gnu"),
        _ => None,
    }
}

/// Makes the stand-in images from Debian's binaries.
pub fn build_stand_ins(dir: &Path) -> Result<(), String> {
    let mut missing = Vec::new();
    for path in std::iter::once(BUSYBOX).chain(STAND_INS.iter().map(|s| s.binary)) {
        if !Path::new(path).exists() {
            missing.push(path);
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "the pinned Prometheus and Alertmanager images are not on this engine, and their stand-ins \
             are made from Debian's binaries, missing here: {}. Either pull the images (with a \
             registry: `docker compose pull prometheus alertmanager`, or VIGIE_COMPOSE_PULL=1 for every \
             pinned image) or, on Debian, `apt-get install prometheus prometheus-alertmanager busybox-static`",
            missing.join(", ")
        ));
    }
    // Made anew each run (seconds): they follow the Debian packages.
    for stand_in in &STAND_INS {
        build_stand_in(dir, stand_in)?;
    }
    Ok(())
}

/// A root file system of busybox, the binary and the shared libraries it
/// loads, imported as an image (`docker import`: nothing to pull).
fn build_stand_in(dir: &Path, stand_in: &StandIn) -> Result<(), String> {
    eprintln!("compose: making {} from Debian's {}", stand_in.image, stand_in.package);
    let work = std::env::temp_dir().join(format!("vigie-standin-{}-{}", stand_in.service, std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let root = work.join("root");
    let data = work.join("data");
    let result = (|| {
        let bin = root.join("bin");
        mkdir(&bin)?;
        mkdir(&data.join(stand_in.data_dir))?;
        mkdir(&root.join("etc"))?;
        copy(Path::new(BUSYBOX), &bin.join("busybox"))?;
        for applet in ["sh", "wget", "cat", "ls", "stat"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).map_err(|e| e.to_string())?;
        }
        copy(
            Path::new(stand_in.binary),
            &root.join(stand_in.entrypoint.trim_start_matches('/')),
        )?;
        for library in shared_libraries(dir, stand_in.binary)? {
            copy(&library, &root.join(library.strip_prefix("/").unwrap_or(&library)))?;
        }
        if let Some(share) = stand_in.share {
            let out = root.join(share.trim_start_matches('/'));
            mkdir(out.parent().unwrap_or(&root))?;
            command_ok(
                dir,
                "cp",
                &["-rL", share, &out.display().to_string()],
                &[],
                Duration::from_secs(60),
            )?;
        }
        write(
            &root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
        )?;
        write(&root.join("etc/group"), "root:x:0:\nnobody:x:65534:\n")?;
        // Everything root's, but the data directory: nobody's, as upstream.
        let tar = work.join("image.tar");
        let tar_path = tar.display().to_string();
        let owned = |owner: &str| [format!("--owner={owner}"), format!("--group={owner}")];
        let [owner, group] = owned("0");
        command_ok(
            dir,
            "tar",
            &[
                "-cf",
                &tar_path,
                "--numeric-owner",
                &owner,
                &group,
                "-C",
                &root.display().to_string(),
                ".",
            ],
            &[],
            Duration::from_secs(120),
        )?;
        let [owner, group] = owned(NOBODY);
        command_ok(
            dir,
            "tar",
            &[
                "-rf",
                &tar_path,
                "--numeric-owner",
                &owner,
                &group,
                "-C",
                &data.display().to_string(),
                stand_in.data_dir,
            ],
            &[],
            Duration::from_secs(60),
        )?;
        let entrypoint = format!("ENTRYPOINT [\"{}\"]", stand_in.entrypoint);
        let user = format!("USER {NOBODY}");
        docker::docker(
            dir,
            &[
                "import",
                "--change",
                &entrypoint,
                "--change",
                &user,
                &tar_path,
                stand_in.image,
            ],
            Duration::from_secs(300),
        )?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// The shared libraries `ldd` says the binary loads, by absolute path.
fn shared_libraries(dir: &Path, binary: &str) -> Result<Vec<PathBuf>, String> {
    // A static binary: ldd says "not a dynamic executable" and fails.
    let output = docker::run_command(dir, "ldd", &[binary], &[], Duration::from_secs(30))?;
    Ok(output
        .stdout
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .map(PathBuf::from)
        .collect())
}

fn mkdir(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("create {}: {e}", path.display()))
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(parent) = to.parent() {
        mkdir(parent)?;
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("copy {} to {}: {e}", from.display(), to.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}
