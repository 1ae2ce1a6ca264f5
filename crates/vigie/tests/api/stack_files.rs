//! The stack's configuration files, checked as files: they parse, target
//! files have the file_sd shape, compose mounts exist, Tempo's strict config
//! has no unknown block. The servers' own validators (promtool, amtool,
//! check-jsonschema, dclint) run in stack/check.sh.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
    {
        let path = entry.path();
        // The schema check's npm packages and generated files are not ours.
        if path.ends_with("node_modules") || path.ends_with(".generated") {
            continue;
        }
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Parses a YAML or JSON file into a JSON value, or says why it cannot.
pub fn load(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let parsed = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => serde_json::from_str(&text).map_err(|e| e.to_string()),
        _ => serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text)
            .and_then(|mut yaml| {
                // Compose's `<<: *anchor` merge keys, as compose applies them.
                yaml.apply_merge()?;
                Ok(yaml)
            })
            .map_err(|e| e.to_string())
            .and_then(|yaml| serde_json::to_value(yaml).map_err(|e| e.to_string())),
    };
    parsed.map_err(|e| format!("{}: {e}", path.display()))
}

#[test]
fn every_yaml_and_json_file_of_the_stack_parses() {
    let mut files = Vec::new();
    files_under(&repo().join("stack"), &mut files);
    files.retain(|p| p.extension().is_some_and(|e| e == "json" || e == "yml" || e == "yaml"));
    files.push(repo().join("compose.yaml"));
    files.push(repo().join("compose.alloy.yaml"));
    assert!(files.len() >= 20, "only {} files found", files.len());
    let problems: Vec<String> = files.iter().filter_map(|p| load(p).err()).collect();
    assert!(problems.is_empty(), "files that do not parse:\n{}", problems.join("\n"));
}

/// `[{"targets": ["host:port", ...], "labels": {"k": "v"}}]`
fn is_file_sd(doc: &Value) -> bool {
    doc.as_array().is_some_and(|groups| {
        groups.iter().all(|g| {
            g.as_object()
                .is_some_and(|o| o.keys().all(|k| k == "targets" || k == "labels"))
                && g["targets"].as_array().is_some_and(|t| t.iter().all(Value::is_string))
                && (g.get("labels").is_none()
                    || g["labels"]
                        .as_object()
                        .is_some_and(|l| l.values().all(Value::is_string)))
        })
    })
}

#[test]
fn target_files_have_the_file_sd_shape_and_every_named_one_exists() {
    let prometheus = repo().join("stack/prometheus");
    let mut files = Vec::new();
    files_under(&prometheus.join("static-targets"), &mut files);
    files_under(&repo().join("stack/alloy/prometheus"), &mut files);
    for file in files.iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
        let doc = load(file).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            is_file_sd(&doc),
            "{} is not a file_sd target list: {doc}",
            file.display()
        );
    }
    let config = load(&prometheus.join("prometheus.yml")).unwrap_or_else(|e| panic!("{e}"));
    let sd_configs = config["scrape_configs"]
        .as_array()
        .into_iter()
        .chain(config["alerting"]["alertmanagers"].as_array())
        .flatten()
        .flat_map(|c| c["file_sd_configs"].as_array().cloned().unwrap_or_default());
    let named: Vec<String> = sd_configs
        .flat_map(|sd| sd["files"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect();
    assert!(
        named.iter().any(|f| f.starts_with("targets/")),
        "no job reads the router's targets/: {named:?}"
    );
    for file in named.iter().filter(|f| f.starts_with("static-targets/")) {
        assert!(
            prometheus.join(file).is_file(),
            "prometheus.yml names {file}, which is missing"
        );
    }
    // compose.alloy.yaml mounts its files over ones of static-targets/.
    for file in std::fs::read_dir(repo().join("stack/alloy/prometheus"))
        .expect("alloy targets")
        .flatten()
    {
        assert!(
            prometheus.join("static-targets").join(file.file_name()).is_file(),
            "{:?} has no static-targets counterpart",
            file.file_name()
        );
    }
    let sample = serde_json::json!([{"targets": ["backend-blue:3000"], "labels": {"color": "blue", "role": "active"}}]);
    assert!(is_file_sd(&sample));
    assert!(!is_file_sd(&serde_json::json!({"targets": []})));
}

#[test]
fn compose_bind_mounts_exist_in_the_repository() {
    for compose in ["compose.yaml", "compose.alloy.yaml"] {
        let doc = load(&repo().join(compose)).unwrap_or_else(|e| panic!("{e}"));
        let services = doc["services"].as_object().cloned().unwrap_or_default();
        assert!(
            compose != "compose.yaml" || services.len() >= 9,
            "{compose}: {} services",
            services.len()
        );
        for (name, service) in services {
            for volume in service["volumes"].as_array().into_iter().flatten() {
                let source = match volume {
                    Value::String(s) => s.split(':').next().unwrap_or_default().to_owned(),
                    other => other["source"].as_str().unwrap_or_default().to_owned(),
                };
                if source.starts_with("./") {
                    assert!(
                        repo().join(&source).exists(),
                        "{compose}: service {name} mounts {source}, which is missing"
                    );
                }
            }
        }
    }
}

#[test]
fn every_compose_image_is_pinned_to_a_version() {
    let doc = load(&repo().join("compose.yaml")).unwrap_or_else(|e| panic!("{e}"));
    for (name, service) in doc["services"].as_object().into_iter().flatten() {
        let image = service["image"]
            .as_str()
            .unwrap_or_else(|| panic!("service {name} has no image"));
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()),
            "service {name}: image {image} is not pinned to a version"
        );
    }
}

/// Tempo stops at start on an unknown top-level block: the keys of Tempo
/// 2.10's configuration (cmd/tempo/app/config.go).
const TEMPO_TOP_LEVEL_KEYS: &[&str] = &[
    "target",
    "auth_enabled",
    "multitenancy_enabled",
    "shutdown_delay",
    "stream_over_http_enabled",
    "http_api_prefix",
    "enable_go_runtime_metrics",
    "server",
    "internal_server",
    "distributor",
    "ingester_client",
    "metrics_generator_client",
    "querier",
    "query_frontend",
    "compactor",
    "ingester",
    "metrics_generator",
    "ingest",
    "block_builder",
    "storage",
    "overrides",
    "memberlist",
    "usage_report",
    "cache",
    "backend_scheduler",
    "backend_scheduler_client",
    "backend_worker",
];

#[test]
fn tempo_config_uses_only_known_top_level_keys() {
    let doc = load(&repo().join("stack/tempo/tempo.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<&String> = doc.as_object().expect("a mapping").keys().collect();
    let unknown: Vec<&&String> = keys
        .iter()
        .filter(|k| !TEMPO_TOP_LEVEL_KEYS.contains(&k.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "stack/tempo/tempo.yaml: unknown top-level keys {unknown:?}"
    );
}

/// Each pinned upstream image (compose files, the Dockerfile's build stage)
/// has its row in docs/stack.md's table of pinned versions, with the same
/// tag: where and when the tag was checked upstream.
#[test]
fn every_pinned_upstream_image_is_in_the_versions_table() {
    let table = std::fs::read_to_string(repo().join("docs/stack.md")).expect("docs/stack.md");
    let mut images: Vec<String> = Vec::new();
    for compose in ["compose.yaml", "compose.alloy.yaml"] {
        let doc = load(&repo().join(compose)).unwrap_or_else(|e| panic!("{e}"));
        let services: Vec<&Value> = doc["services"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, s)| s)
            .collect();
        // The images this checkout builds; a color's `${VIGIE_*_IMAGE:-default}`
        // names one of them by default.
        let built: Vec<&str> = services
            .iter()
            .filter(|s| s["build"].is_object())
            .filter_map(|s| s["image"].as_str())
            .collect();
        for service in &services {
            if let (Some(image), false) = (service["image"].as_str(), service["build"].is_object()) {
                let default = image
                    .strip_prefix("${")
                    .and_then(|v| v.strip_suffix('}'))
                    .and_then(|v| v.split_once(":-"))
                    .map_or(image, |(_, default)| default);
                if !built.contains(&default) {
                    images.push(default.to_owned());
                }
            }
        }
    }
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    images.extend(
        dockerfile
            .lines()
            .filter_map(|l| l.strip_prefix("FROM "))
            .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
            .filter(|image| image.contains(':')),
    );
    assert!(images.len() >= 8, "images found: {images:?}");
    for image in images {
        let (name, tag) = image.rsplit_once(':').expect("a tag");
        let (first, second) = (format!("| `{name}` "), format!("| `{tag}` |"));
        assert!(
            table.lines().any(|l| l.starts_with(&first) && l.contains(&second)),
            "docs/stack.md's pinned versions table has no row for {image}"
        );
    }
}

#[test]
fn the_slo_rules_are_the_ones_the_slo_file_renders_to() {
    let slos = vigie_slo::Slos::load(&repo().join("stack/slo.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let rendered = vigie_slo::render(&slos, "stack/slo.yaml");
    let committed =
        std::fs::read_to_string(repo().join("stack/prometheus/rules/slo.yml")).expect("stack/prometheus/rules/slo.yml");
    assert!(
        rendered == committed,
        "stack/prometheus/rules/slo.yml is stale: run `cargo run -- slo stack/slo.yaml --output stack/prometheus/rules/slo.yml`"
    );
}

#[test]
fn vigie_slo_checks_a_rule_file_and_refuses_a_bad_slo_file() {
    let dir = std::env::temp_dir().join(format!("vigie-slo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let slo = |args: &[&str]| {
        let output = std::process::Command::new(crate::helpers::vigie_bin())
            .args(["slo"])
            .args(args)
            .current_dir(repo())
            .output()
            .expect("run vigie slo");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, _, stderr) = slo(&["--output", "stack/prometheus/rules/slo.yml", "--check"]);
    assert_eq!(code, Some(0), "{stderr}");
    let stale = dir.join("slo.yml");
    std::fs::write(&stale, "groups: []\n").expect("write");
    let (code, _, stderr) = slo(&["--output", stale.to_str().expect("utf-8"), "--check"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is stale: run `vigie slo"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&stale).expect("read"),
        "groups: []\n",
        "--check changes nothing"
    );
    let (code, _, _) = slo(&["--output", stale.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0));
    assert!(std::fs::read_to_string(&stale)
        .expect("read")
        .contains("VigieSLOAvailabilityFastBurn"));
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "service: s\nperiod: 28d\nselector: 'job=\"b\"'\nobjectives:\n  - {name: lat, kind: latency, objective_percent: 99, threshold: 300ms}\n")
        .expect("write");
    let (code, stdout, stderr) = slo(&[bad.to_str().expect("utf-8")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("not a histogram bucket bound") && stdout.is_empty(),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
