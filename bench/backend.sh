#!/usr/bin/env bash
# Overhead of the telemetry layers: GET /api/info on the instrumented backend
# (metrics + JSON request log to /dev/null + request ids) against the same
# routes without the layers (crates/backend/examples/bare.rs), in one run on
# loopback, plus /metrics latency and RSS under load.
#
#   bash bench/backend.sh            # DURATION=10s CONNECTIONS=32 to change
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
for tool in wrk curl; do command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y $tool)" >&2; exit 1; }; done

cargo build --release -q -p vigie
cargo build --release -q -p vigie-backend --example bare
work="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

./target/release/vigie backend --color blue --listen 127.0.0.1:18080 --database "$work/i.db" >/dev/null &
pids+=($!); INSTRUMENTED_PID=$!
./target/release/examples/bare 127.0.0.1:18081 "$work/b.db" >/dev/null &
pids+=($!)
for port in 18080 18081; do
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/api/info" >/dev/null && break; sleep 0.1; done
done

# wrk prints latency percentiles in mixed units; normalize to ms.
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f", v}'; }
run() { # name url [connections] -> "rps p50 p99"
  local c="${3:-$CONNECTIONS}" t=2 out
  [ "$c" -lt 2 ] && t=1
  out="$(wrk -t"$t" -c"$c" -d"$DURATION" --latency "$2")"
  local rps p50 p99
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p50="$(awk '$1=="50%" {print $2}' <<<"$out" | to_ms)"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)"
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "errors during $1:" >&2; grep "Non-2xx\|Socket errors" <<<"$out" >&2; fi
  echo "$rps $p50 $p99"
}

# Interleaved, two rounds each, so a noisy neighbour hits both sides alike.
read -r i1 ip50 ip99 < <(run instrumented http://127.0.0.1:18080/api/info)
read -r b1 bp50 bp99 < <(run bare http://127.0.0.1:18081/api/info)
read -r i2 _ _ < <(run instrumented http://127.0.0.1:18080/api/info)
read -r b2 _ _ < <(run bare http://127.0.0.1:18081/api/info)
rss_kb="$(awk '/VmHWM/ {print $2}' "/proc/$INSTRUMENTED_PID/status")"
read -r _ mp50 mp99 < <(run metrics http://127.0.0.1:18080/metrics 1)

inst=$(awk -v a="$i1" -v b="$i2" 'BEGIN {print (a+b)/2}')
bare=$(awk -v a="$b1" -v b="$b2" 'BEGIN {print (a+b)/2}')
printf '\n| GET /api/info (%s, %s connections) | req/s (mean of 2) | p50 ms | p99 ms |\n|---|---|---|---|\n' "$DURATION" "$CONNECTIONS"
printf '| bare routes | %.0f | %s | %s |\n' "$bare" "$bp50" "$bp99"
printf '| instrumented | %.0f | %s | %s |\n' "$inst" "$ip50" "$ip99"
printf '\nthroughput ratio instrumented/bare: %.3f (goal >= 0.90)\n' "$(awk -v a="$inst" -v b="$bare" 'BEGIN {print a/b}')"
printf 'GET /metrics, one connection, after the load: p50 %s ms, p99 %s ms (goal: render < 1 ms)\n' "$mp50" "$mp99"
printf 'peak RSS of the instrumented backend under load: %.1f MiB (goal < 20 MiB)\n' "$(awk -v k="$rss_kb" 'BEGIN {print k/1024}')"
