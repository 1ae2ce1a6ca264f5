#!/usr/bin/env bash
# Slow connections against the listeners' limits (docs/benchmarks.md): 20,000
# slow connections opened at once and held (two client processes of 10,000:
# the per-process descriptor limit here is 20,000), each having sent part of
# a request head, against a backend limited to 4,096 descriptors, then
# against the router's admin port, while real requests (one every 20 ms,
# fresh connection, 5 s timeout) go to the backend and to the router's
# public port. RECONNECT=1 reopens each slow connection as soon as it is
# closed (a flood that never ends). Loopback only.
#
#   bash bench/slowloris.sh          # SECONDS_PER_RUN=20 SLOW=10000 to change
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${SECONDS_PER_RUN:-20}"
SLOW="${SLOW:-10000}"
cargo build --release -q -p vigie --bin vigie --example slowloris
vigie="${VIGIE:-target/release/vigie}"
flood=target/release/examples/slowloris
work="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n 20000

wait_for() { for _ in $(seq 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; echo "no answer at $1" >&2; exit 1; }

(ulimit -n 4096; exec "$vigie" backend --color blue --listen 127.0.0.1:18090 --database "$work/t.db" >"$work/backend.log") &
pids+=($!)
wait_for http://127.0.0.1:18090/health/ready
(ulimit -n 4096; exec "$vigie" router --listen 127.0.0.1:18091 --admin-listen 127.0.0.1:18092 \
    --blue http://127.0.0.1:18090 --green http://127.0.0.1:18099 \
    --state-file "$work/state.json" --targets-file "$work/targets/backend.json" >"$work/router.log") &
pids+=($!)
wait_for http://127.0.0.1:18092/health/live

run() { # flood-address url label
  # Two flooding processes, and the real requests from a third, so that
  # the flood's own tasks never delay them on the client side.
  "$flood" "$1" "$SLOW" "$RUN" >"$work/flood1" &
  local one=$!
  "$flood" "$1" "$SLOW" "$RUN" >"$work/flood2" &
  local two=$!
  sleep 1
  printf '%s: ' "$3"
  "$flood" "$1" 0 "$((RUN - 1))" "$2" | sed 's/^slow connections: 0 at once[^;]*; //'
  wait "$one" "$two"
  for f in "$work/flood1" "$work/flood2"; do printf '    flood: %s\n' "$(sed 's/; real requests.*//' "$f")"; done
}
echo "backend (4,096 descriptors, --max-connections 1024, --header-read-timeout 5s), $((2 * SLOW)) slow connections for ${RUN}s:"
run 127.0.0.1:18090 http://127.0.0.1:18090/api/info "  real requests to the backend"
echo "router admin port flooded (--admin-max-connections 64), $((2 * SLOW)) slow connections for ${RUN}s:"
run 127.0.0.1:18092 http://127.0.0.1:18091/api/info "  real requests through the router's public port"
for name in backend router; do
  printf '%s: %s accept failures (out of descriptors)\n' "$name" "$(grep -c '"accept failed"' "$work/$name.log" || true)"
done
