#!/usr/bin/env bash
# User-space instructions per request of GET /api/info, counted by valgrind
# (callgrind): the bare routes (crates/backend/examples/bare.rs), the
# backend with its request log off (--log-level warn: metrics, request ids)
# and the full backend. Unlike req/s on a shared machine, these counts
# repeat within about 1% from run to run, so they show what a change to the
# telemetry layers costs; they leave out the kernel (most of a loopback
# request's CPU time), so they are not a throughput ratio.
#
#   bash bench/instructions.sh        # needs valgrind and wrk
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in valgrind callgrind_control wrk curl; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install -y valgrind wrk curl)" >&2; exit 1; }
done
cargo build --release -q -p vigie
cargo build --release -q -p vigie-backend --example bare
TMP="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$TMP"' EXIT
PORT=18460

count() { # name command... -> "name instructions-per-request"
    local name="$1"; shift
    valgrind --tool=callgrind --callgrind-out-file="$TMP/$name.%p" "$@" >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/api/info" >/dev/null && break; sleep 0.2; done
    wrk -t1 -c4 -d3s "http://127.0.0.1:$PORT/api/info" >/dev/null   # warm-up, then counters to zero
    callgrind_control -z "$pid" >/dev/null
    local out n
    out="$(wrk -t1 -c4 -d8s "http://127.0.0.1:$PORT/api/info")"
    n="$(awk '/requests in/ {print $1}' <<<"$out")"
    callgrind_control -d "$pid" >/dev/null
    sleep 1
    kill "$pid"; wait "$pid" 2>/dev/null || true
    local total
    total="$(awk '/^summary:/ {print $2}' "$TMP/$name.$pid.1")"
    echo "$name $(awk -v t="$total" -v n="$n" 'BEGIN {printf "%.0f", t / n}')"
}
read -r _ bare < <(count bare ./target/release/examples/bare "127.0.0.1:$PORT" "$TMP/b.db")
read -r _ nolog < <(count nolog ./target/release/vigie backend --color blue --listen "127.0.0.1:$PORT" --database "$TMP/n.db" --log-level warn)
read -r _ full < <(count full ./target/release/vigie backend --color blue --listen "127.0.0.1:$PORT" --database "$TMP/f.db")
echo
echo "| GET /api/info | user-space instructions per request | vs bare |"
echo "|---|---:|---:|"
for row in "bare routes:$bare" "metrics and request ids, no request log:$nolog" "instrumented (request log on):$full"; do
    printf '| %s | %s | %.2f |\n' "${row%%:*}" "${row##*:}" "$(awk -v a="${row##*:}" -v b="$bare" 'BEGIN {print a / b}')"
done
