#!/usr/bin/env bash
# Overhead of the telemetry layers: GET /api/info on the instrumented backend
# (metrics + JSON request log to /dev/null + request ids) against the same
# routes without the layers (crates/backend/examples/bare.rs), in one run on
# loopback, plus /metrics latency and RSS under load.
#
# The machine is shared: the two servers run side by side and are loaded in
# turn, ROUNDS times; each round gives a throughput ratio and the median of
# those is the result. CPU µs per request (user + system time of the server
# over the requests it served) is printed too: it moves less than req/s.
#
#   bash bench/backend.sh      # DURATION=3s CONNECTIONS=32 ROUNDS=15 to change
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-3s}"
CONNECTIONS="${CONNECTIONS:-32}"
ROUNDS="${ROUNDS:-15}"
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
pids+=($!); BARE_PID=$!
for port in 18080 18081; do
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/api/info" >/dev/null && break; sleep 0.1; done
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# wrk prints latency percentiles in mixed units; normalize to ms.
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f", v}'; }
run() { # pid url [connections] -> "rps p50 p99 cpu_us_per_request"
  local c="${3:-$CONNECTIONS}" t=2 out before after
  [ "$c" -lt 2 ] && t=1
  before="$(cpu_ticks "$1")"
  out="$(wrk -t"$t" -c"$c" -d"$DURATION" --latency "$2")"
  after="$(cpu_ticks "$1")"
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "errors on $2:" >&2; grep "Non-2xx\|Socket errors" <<<"$out" >&2; fi
  local rps p50 p99 n
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  n="$(awk '/requests in/ {print $1}' <<<"$out")"
  p50="$(awk '$1=="50%" {print $2}' <<<"$out" | to_ms)"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)"
  echo "$rps $p50 $p99 $(awk -v t=$((after - before)) -v n="$n" 'BEGIN {printf "%.2f", t * 10000 / n}')"
}
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

wrk -t2 -c"$CONNECTIONS" -d2s http://127.0.0.1:18080/api/info >/dev/null   # warm-up
wrk -t2 -c"$CONNECTIONS" -d2s http://127.0.0.1:18081/api/info >/dev/null
ratios="" i_rps="" b_rps="" i_cpu="" b_cpu="" i_p50="" i_p99="" b_p50="" b_p99=""
for round in $(seq "$ROUNDS"); do
  # Alternate which side goes first, so a drift hits both alike.
  if [ $((round % 2)) -eq 1 ]; then
    read -r ir ip50 ip99 ic < <(run "$INSTRUMENTED_PID" http://127.0.0.1:18080/api/info)
    read -r br bp50 bp99 bc < <(run "$BARE_PID" http://127.0.0.1:18081/api/info)
  else
    read -r br bp50 bp99 bc < <(run "$BARE_PID" http://127.0.0.1:18081/api/info)
    read -r ir ip50 ip99 ic < <(run "$INSTRUMENTED_PID" http://127.0.0.1:18080/api/info)
  fi
  ratio="$(awk -v a="$ir" -v b="$br" 'BEGIN {printf "%.3f", a / b}')"
  echo "round $round: instrumented $ir req/s ($ic µs CPU/req), bare $br req/s ($bc µs CPU/req), ratio $ratio" >&2
  ratios+=" $ratio" i_rps+=" $ir" b_rps+=" $br" i_cpu+=" $ic" b_cpu+=" $bc"
  i_p50+=" $ip50" i_p99+=" $ip99" b_p50+=" $bp50" b_p99+=" $bp99"
done
rss_kb="$(awk '/VmHWM/ {print $2}' "/proc/$INSTRUMENTED_PID/status")"
read -r _ mp50 mp99 _ < <(run "$INSTRUMENTED_PID" http://127.0.0.1:18080/metrics 1)

m() { median <<<"$1"; }
printf '\n| GET /api/info (%s x %s rounds, %s connections) | req/s (median) | p50 ms | p99 ms | CPU µs/req |\n|---|---:|---:|---:|---:|\n' "$DURATION" "$ROUNDS" "$CONNECTIONS"
printf '| bare routes | %.0f | %s | %s | %s |\n' "$(m "$b_rps")" "$(m "$b_p50")" "$(m "$b_p99")" "$(m "$b_cpu")"
printf '| instrumented | %.0f | %s | %s | %s |\n' "$(m "$i_rps")" "$(m "$i_p50")" "$(m "$i_p99")" "$(m "$i_cpu")"
printf '\nthroughput ratio instrumented/bare, median of the rounds: %s (rounds:%s; goal >= 0.90)\n' "$(m "$ratios")" "$ratios"
printf 'GET /metrics, one connection, after the load: p50 %s ms, p99 %s ms (goal: render < 1 ms)\n' "$mp50" "$mp99"
printf 'peak RSS of the instrumented backend under load: %.1f MiB (goal < 20 MiB)\n' "$(awk -v k="$rss_kb" 'BEGIN {print k/1024}')"
