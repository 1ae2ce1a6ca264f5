#!/usr/bin/env bash
# Static checks of the observability stack with the servers' own validators
# (no Docker needed):
#   1. promtool check config on a temporary copy of stack/prometheus;
#   2. promtool check rules and promtool test rules;
#   3. amtool check-config on the Alertmanager configuration;
#   4. compose.yaml and compose.alloy.yaml against the compose specification,
#      and dclint on both (no error, no warning);
#   5. every Grafana dashboard type-checked against the pinned Grafana's
#      @grafana/schema with tsc (stack/grafana/schema-check).
# The file-level checks (every YAML/JSON file parses, file_sd shapes, compose
# mounts, Tempo's top-level keys, pinned images) and the dashboard lint
# (provisioned data source uids, non-empty queries, unique panel ids, every
# dashboard PromQL parsed by promtool) are Rust tests:
# crates/vigie/tests/api/stack_files.rs and stack.rs (`cargo test`).
#
# Needs: promtool and amtool (Debian: prometheus, prometheus-alertmanager),
# check-jsonschema (PyPI), dclint (npm), Node.js and the schema check's
# packages (npm ci --prefix stack/grafana/schema-check).
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
need promtool "Debian/Ubuntu: apt-get install prometheus"
need amtool "Debian/Ubuntu: apt-get install prometheus-alertmanager"
need check-jsonschema "pip install check-jsonschema"
need dclint "npm install -g dclint"
need node "Node.js 18 or later (Debian: apt-get install nodejs npm)"
[[ -d "$stack/grafana/schema-check/node_modules" ]] ||
    die "the dashboard schema check's packages are missing: npm ci --prefix stack/grafana/schema-check"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

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

step "dashboards against the pinned Grafana's schema (@grafana/schema, tsc)"
node "$stack/grafana/schema-check/check.mjs" || die "dashboard schema check (stack/grafana/schema-check/README.md)"

printf '\nstack/check.sh: all checks passed\n'
