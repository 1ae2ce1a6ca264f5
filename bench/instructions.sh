#!/usr/bin/env bash
# User-space instructions per request of GET /api/info, counted by valgrind
# (callgrind): the bare routes (crates/backend/examples/bare.rs), the
# backend with its request log off (--log-level warn: metrics, request ids)
# and the full backend; then the proxies alone: `vigie router` and nginx as
# the same proxy (bench/nginx-router.conf; skipped without nginx). Unlike
# req/s on a shared machine, these counts repeat within about 1% from run to
# run, so they show what a change costs; they leave out the kernel (most of
# a loopback request's CPU time), so they are not a throughput ratio.
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

# shellcheck source=bench/callgrind.sh
source bench/callgrind.sh
URL="http://127.0.0.1:$PORT/api/info"
bare=$(count_instructions "$TMP" "$URL" ./target/release/examples/bare "127.0.0.1:$PORT" "$TMP/b.db")
nolog=$(count_instructions "$TMP" "$URL" ./target/release/vigie backend --color blue --listen "127.0.0.1:$PORT" --database "$TMP/n.db" --log-level warn)
full=$(count_instructions "$TMP" "$URL" ./target/release/vigie backend --color blue --listen "127.0.0.1:$PORT" --database "$TMP/f.db")

# The proxies: the router and nginx configured as the same proxy
# (bench/nginx-router.conf, one process), in front of a backend that runs
# outside valgrind; only the proxy's instructions are counted.
BACKEND_PORT=$((PORT + 2)) NGINX_PORT=$((PORT + 3))
./target/release/vigie backend --color blue --listen "127.0.0.1:$BACKEND_PORT" --database "$TMP/p.db" >/dev/null 2>&1 &
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$BACKEND_PORT/health/ready" && break; sleep 0.1; done
count_proxies "$TMP" "$PORT" "$NGINX_PORT" "127.0.0.1:$BACKEND_PORT" "127.0.0.1:$((PORT + 4))"
echo
echo "| GET /api/info | user-space instructions per request | vs bare |"
echo "|---|---:|---:|"
for row in "bare routes:$bare" "metrics and request ids, no request log:$nolog" "instrumented (request log on):$full"; do
    printf '| %s | %s | %.2f |\n' "${row%%:*}" "${row##*:}" "$(awk -v a="${row##*:}" -v b="$bare" 'BEGIN {print a / b}')"
done
echo
echo "| proxy, GET /api/info to a backend | user-space instructions per request | vs nginx |"
echo "|---|---:|---:|"
printf '| vigie router | %s | %s |\n' "$I_router" "$(awk -v a="$I_router" -v b="$I_nginx" 'BEGIN {if (b + 0 > 0) printf "%.2f", a / b; else print "n/a"}')"
printf '| nginx (bench/nginx-router.conf, one process) | %s | 1.00 |\n' "$I_nginx"
