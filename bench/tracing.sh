#!/usr/bin/env bash
# Cost of tracing: GET /api/info through `vigie router` to a backend, with
# tracing off, with 10% sampling and with 100% sampling (both processes
# export OTLP/HTTP to a local sink, bench/otlp-sink.conf), in one run.
# Goal: <= 5% throughput cost at 10%, <= 15% at 100%.
#
# The machine is shared and its speed drifts by more than these goals from
# one minute to the next. So the three settings run side by side (a router
# and a backend each, idle but for their turn) and take short turns under
# load, ROUNDS times, in a rotating order; each round gives a ratio to "off"
# and the median of those is the result. CPU µs per request (user + system
# of router and backend, export thread included) is printed too: it is the
# cost itself, and moves less than req/s.
#
#   bash bench/tracing.sh      # BENCH_DURATION=3s BENCH_ROUNDS=15 to change
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${BENCH_DURATION:-3s}"
ROUNDS="${BENCH_ROUNDS:-15}"
for tool in wrk nginx curl; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install -y wrk nginx curl)" >&2; exit 1; }
done
cargo build --release -q -p vigie
BIN=./target/release/vigie
TMP="$(mktemp -d)"
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

SINK_PORT=18420
sed -e "s|@TMP@|$TMP|g" -e "s|@PORT@|$SINK_PORT|g" bench/otlp-sink.conf >"$TMP/sink.conf"
nginx -p "$TMP" -c "$TMP/sink.conf" -e "$TMP/sink-error.log" -g 'daemon off;' &
PIDS+=($!)

wait_up() { for _ in $(seq 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.05; done; echo "bench: $1 did not come up" >&2; exit 1; }

MODES=(off 0.1 1.0)
declare -A BACKEND_PID ROUTER_PID ROUTER_PORT ADMIN_PORT BACKEND_PORT
# Starts a backend and a router with the given sampling ("off", or a ratio).
start() { # mode port_base
    local mode="$1" base="$2" env=() dir="$TMP/$1"
    if [ "$mode" != off ]; then
        env=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT" OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG="$mode")
    fi
    mkdir -p "$dir"
    BACKEND_PORT[$mode]=$base ROUTER_PORT[$mode]=$((base + 1)) ADMIN_PORT[$mode]=$((base + 2))
    env "${env[@]}" "$BIN" backend --color blue --listen "127.0.0.1:${BACKEND_PORT[$mode]}" --database "$dir/v.db" >/dev/null &
    BACKEND_PID[$mode]=$!
    PIDS+=($!)
    env "${env[@]}" "$BIN" router --listen "127.0.0.1:${ROUTER_PORT[$mode]}" --admin-listen "127.0.0.1:${ADMIN_PORT[$mode]}" \
        --blue "http://127.0.0.1:${BACKEND_PORT[$mode]}" --green http://127.0.0.1:9 \
        --state-file "$dir/state.json" --targets-file "$dir/targets/backend.json" >/dev/null &
    ROUTER_PID[$mode]=$!
    PIDS+=($!)
    wait_up "http://127.0.0.1:${ROUTER_PORT[$mode]}/api/info"
}
start off 18430
start 0.1 18440
start 1.0 18450

to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f", v}'; }
cpu_ticks() { echo $(( $(awk '{print $14 + $15}' "/proc/${BACKEND_PID[$1]}/stat") + $(awk '{print $14 + $15}' "/proc/${ROUTER_PID[$1]}/stat") )); }
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

for mode in "${MODES[@]}"; do
    wrk -t2 -c32 -d2s "http://127.0.0.1:${ROUTER_PORT[$mode]}/api/info" >/dev/null   # warm-up
done
declare -A RPS P50 P99 CPU RATIO LAST
for round in $(seq "$ROUNDS"); do
    # Rotate the order, so no setting always follows the same one.
    shift_by=$((round % 3))
    order=("${MODES[@]:$shift_by}" "${MODES[@]:0:$shift_by}")
    for mode in "${order[@]}"; do
        before="$(cpu_ticks "$mode")"
        out="$(wrk -t2 -c32 -d"$DURATION" --latency "http://127.0.0.1:${ROUTER_PORT[$mode]}/api/info")"
        after="$(cpu_ticks "$mode")"
        if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "bench: errors with tracing $mode:" >&2; grep "Non-2xx\|Socket errors" <<<"$out" >&2; fi
        LAST[$mode]="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
        n="$(awk '/requests in/ {print $1}' <<<"$out")"
        RPS[$mode]="${RPS[$mode]:-} ${LAST[$mode]}"
        CPU[$mode]="${CPU[$mode]:-} $(awk -v t=$((after - before)) -v n="$n" 'BEGIN {printf "%.2f", t * 10000 / n}')"
        P50[$mode]="${P50[$mode]:-} $(awk '$1=="50%" {print $2}' <<<"$out" | to_ms)"
        P99[$mode]="${P99[$mode]:-} $(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)"
    done
    for mode in 0.1 1.0; do
        RATIO[$mode]="${RATIO[$mode]:-} $(awk -v a="${LAST[$mode]}" -v b="${LAST[off]}" 'BEGIN {printf "%.3f", a / b}')"
    done
    echo "bench: round $round: req/s off ${LAST[off]}, 10% ${LAST[0.1]}, 100% ${LAST[1.0]}" >&2
done
sleep 1.5   # let the last batches go out
m() { median <<<"$1"; }
OFF_CPU="$(m "${CPU[off]}")"
echo
echo "| tracing | req/s (median) | p50 ms | p99 ms | throughput vs off (median of $ROUNDS rounds) | CPU µs/req, router + backend | CPU vs off | spans exported | spans dropped |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for mode in "${MODES[@]}"; do
    scrape="$(curl -s "http://127.0.0.1:${BACKEND_PORT[$mode]}/metrics"; curl -s "http://127.0.0.1:${ADMIN_PORT[$mode]}/metrics")"
    exported="$(awk '/^vigie_trace_spans_exported_total/ {s+=$2} END {print s+0}' <<<"$scrape")"
    dropped="$(awk '/^vigie_trace_spans_dropped_total/ {s+=$2} END {print s+0}' <<<"$scrape")"
    ratio=1.000
    [ "$mode" != off ] && ratio="$(m "${RATIO[$mode]}")"
    cpu="$(m "${CPU[$mode]}")"
    printf '| %s | %.0f | %s | %s | %s | %s | %.3f | %s | %s |\n' "$mode" "$(m "${RPS[$mode]}")" "$(m "${P50[$mode]}")" "$(m "${P99[$mode]}")" \
        "$ratio" "$cpu" "$(awk -v a="$cpu" -v b="$OFF_CPU" 'BEGIN {print a / b}')" "$exported" "$dropped"
done
echo
echo "per-round ratios to off: 10%:${RATIO[0.1]}; 100%:${RATIO[1.0]}"
