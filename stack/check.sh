#!/usr/bin/env bash
# Static checks of the observability stack (no Docker needed):
#   1. every YAML and JSON file under stack/ (and the compose files) parses,
#      every file_sd targets file has the file_sd shape, every path the
#      compose files bind-mount exists, and Tempo's configuration has only
#      top-level blocks Tempo knows (it refuses unknown keys at start);
#   2. promtool check config on a temporary copy of stack/prometheus;
#   3. promtool check rules and promtool test rules;
#   4. amtool check-config on the Alertmanager configuration;
#   5. compose.yaml and compose.alloy.yaml against the compose specification,
#      and dclint on both (no error, no warning);
#   6. the dashboard lint (provisioned data source uids, non-empty queries,
#      unique panel ids), then promtool parses every Prometheus expression
#      of every dashboard.
#
# Needs: python3 with PyYAML (or ruamel.yaml, which check-jsonschema brings),
# promtool and amtool (Debian: prometheus, prometheus-alertmanager),
# check-jsonschema (PyPI) and dclint (npm).
# Usage: stack/check.sh        (from anywhere; exits non-zero on the first failure)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
stack="$root/stack"
cd "$root"

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'stack/check.sh: FAILED: %s\n' "$*" >&2; exit 1; }

need() {
    command -v "$1" >/dev/null 2>&1 ||
        die "'$1' is not installed ($2)"
}
need python3 "install python3"
need promtool "Debian/Ubuntu: apt-get install prometheus"
need amtool "Debian/Ubuntu: apt-get install prometheus-alertmanager"
need check-jsonschema "pip install check-jsonschema"
need dclint "npm install -g dclint"
python3 -c 'import yaml' 2>/dev/null || python3 -c 'import ruamel.yaml' 2>/dev/null ||
    die "python3 can import neither yaml nor ruamel.yaml (pip install pyyaml)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

step "YAML and JSON files parse; file_sd shapes; compose bind mounts exist; Tempo's top-level keys"
python3 - "$stack" "$root/compose.yaml" "$root/compose.alloy.yaml" <<'PY' || die "a YAML or JSON file is malformed (see above)"
import json, sys
from pathlib import Path

stack = Path(sys.argv[1])
sys.path.insert(0, str(stack))
from lint_dashboards import load_yaml
files = sorted(p for p in stack.rglob("*")
               if p.is_file() and p.suffix in {".yml", ".yaml", ".json"})
files += [Path(p) for p in sys.argv[2:]]
bad = 0
for path in files:
    try:
        if path.suffix == ".json":
            doc = json.loads(path.read_text())
        else:
            doc = load_yaml(path.read_text())
    except Exception as err:  # report every file, then fail
        print(f"  {path}: {err}", file=sys.stderr)
        bad += 1
        continue
    # file_sd: a list of {"targets": [str, ...], "labels": {str: str}}
    if path.suffix == ".json" and path.parent.name in {"static-targets", "targets", "prometheus"}:
        ok = isinstance(doc, list) and all(
            isinstance(g, dict) and set(g) <= {"targets", "labels"}
            and isinstance(g.get("targets"), list)
            and all(isinstance(t, str) for t in g["targets"])
            and all(isinstance(k, str) and isinstance(v, str)
                    for k, v in (g.get("labels") or {}).items())
            for g in doc)
        if not ok:
            print(f"  {path}: not a file_sd target list", file=sys.stderr)
            bad += 1
# Tempo parses its configuration strictly: an unknown block stops it at
# start. The top-level keys of Tempo 2.10 (cmd/tempo/app/config.go).
tempo_keys = {
    "target", "auth_enabled", "multitenancy_enabled", "shutdown_delay",
    "stream_over_http_enabled", "http_api_prefix", "enable_go_runtime_metrics",
    "server", "internal_server", "distributor", "ingester_client",
    "metrics_generator_client", "querier", "query_frontend", "compactor",
    "ingester", "metrics_generator", "ingest", "block_builder", "storage",
    "overrides", "memberlist", "usage_report", "cache", "backend_scheduler",
    "backend_scheduler_client", "backend_worker",
}
tempo = load_yaml((stack / "tempo" / "tempo.yaml").read_text()) or {}
for key in sorted(set(tempo) - tempo_keys):
    print(f"  stack/tempo/tempo.yaml: unknown top-level key {key!r}", file=sys.stderr)
    bad += 1
# Every bind-mounted path of the compose files exists in the repository.
for compose in sys.argv[2:]:
    doc = load_yaml(Path(compose).read_text())
    for name, service in (doc.get("services") or {}).items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("./") and not (Path(compose).parent / source).exists():
                print(f"  {compose}: service {name} mounts missing {source}", file=sys.stderr)
                bad += 1
print(f"  {len(files)} files checked")
sys.exit(1 if bad else 0)
PY

step "promtool check config (temporary copy of stack/prometheus)"
cp -r "$stack/prometheus/." "$tmp/prometheus"
# The router writes targets/backend.json at run time; give the check one.
printf '%s\n' '[{"targets": ["backend-blue:3000"], "labels": {"color": "blue", "role": "active"}}, {"targets": ["backend-green:3000"], "labels": {"color": "green", "role": "standby"}}]' \
    >"$tmp/prometheus/targets/backend.json"
promtool check config "$tmp/prometheus/prometheus.yml" || die "promtool check config"
# Every static-targets file the configuration names must exist.
for file in $(grep -o 'static-targets/[a-z-]*\.json' "$stack/prometheus/prometheus.yml" | sort -u); do
    [[ -f "$stack/prometheus/$file" ]] || die "stack/prometheus/$file is named in prometheus.yml but missing"
done
for file in "$stack"/alloy/prometheus/*.json; do
    [[ -f "$stack/prometheus/static-targets/$(basename "$file")" ]] ||
        die "compose.alloy.yaml mounts $(basename "$file") over a file missing from static-targets/"
done

step "promtool check rules"
promtool check rules "$stack"/prometheus/rules/*.yml || die "promtool check rules"

step "promtool test rules"
promtool test rules "$stack"/prometheus/tests/*.yml || die "promtool test rules"

step "amtool check-config"
amtool check-config "$stack/alertmanager/alertmanager.yml" || die "amtool check-config"

step "compose files against the compose specification"
check-jsonschema --builtin-schema vendor.compose-spec "$root/compose.yaml" "$root/compose.alloy.yaml" ||
    die "compose specification"

step "dclint (compose linter; settings in stack/dclint.yaml)"
dclint --config "$stack/dclint.yaml" --max-warnings 0 "$root/compose.yaml" "$root/compose.alloy.yaml" ||
    die "dclint"
echo "  no problem"

step "dashboard lint"
python3 "$stack/lint_dashboards.py" --promql-rules "$tmp/dashboard-exprs.yml" || die "dashboard lint"
if ! promtool check rules "$tmp/dashboard-exprs.yml" >"$tmp/exprs.out" 2>&1; then
    cat "$tmp/exprs.out" >&2
    # Map the generated rule names back to dashboards and panels.
    grep -o 'dashboard_expr:check:[0-9]*' "$tmp/exprs.out" | sort -u |
        while read -r name; do grep -P "^$name\t" "$tmp/dashboard-exprs.index" >&2 || true; done
    die "a dashboard PromQL expression does not parse"
fi
echo "  every dashboard PromQL expression parses"

printf '\nstack/check.sh: all checks passed\n'
