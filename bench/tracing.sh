#!/usr/bin/env bash
# Cost of tracing: GET /api/info through `vigie router` to a backend, with
# tracing off, with 10% sampling and with 100% sampling (both processes
# export OTLP/HTTP to a local sink, bench/otlp-sink.conf), in one run.
# Goal: <= 5% throughput cost at 10%, <= 15% at 100%.
#
#   bash bench/tracing.sh      # BENCH_DURATION=10s BENCH_ROUNDS=2 to change
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${BENCH_DURATION:-10s}"
ROUNDS="${BENCH_ROUNDS:-2}"
for tool in wrk nginx curl; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install -y wrk nginx curl)" >&2; exit 1; }
done
cargo build --release -q -p vigie
BIN=./target/release/vigie
TMP="$(mktemp -d)"
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

SINK_PORT=18420 BACKEND_PORT=18421 ROUTER_PORT=18422 ADMIN_PORT=18423
sed -e "s|@TMP@|$TMP|g" -e "s|@PORT@|$SINK_PORT|g" bench/otlp-sink.conf >"$TMP/sink.conf"
nginx -p "$TMP" -c "$TMP/sink.conf" -e "$TMP/sink-error.log" -g 'daemon off;' &
PIDS+=($!)

wait_up() { for _ in $(seq 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.05; done; echo "bench: $1 did not come up" >&2; exit 1; }

# Starts backend and router with the given sampling ("off", or a ratio).
start() {
    local env=()
    if [ "$1" != off ]; then
        env=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT" OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG="$1")
    fi
    rm -f "$TMP"/*.db* "$TMP/state.json"
    env "${env[@]}" "$BIN" backend --color blue --listen "127.0.0.1:$BACKEND_PORT" --database "$TMP/v.db" >/dev/null &
    BACKEND_PID=$!
    env "${env[@]}" "$BIN" router --listen "127.0.0.1:$ROUTER_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
        --blue "http://127.0.0.1:$BACKEND_PORT" --green http://127.0.0.1:9 \
        --state-file "$TMP/state.json" --targets-file "$TMP/targets/backend.json" >/dev/null &
    ROUTER_PID=$!
    wait_up "http://127.0.0.1:$ROUTER_PORT/api/info"
}
stop() { kill "$BACKEND_PID" "$ROUTER_PID"; wait "$BACKEND_PID" "$ROUTER_PID" 2>/dev/null || true; }
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f", v}'; }

declare -A RPS P50 P99 EXPORTED DROPPED
for round in $(seq "$ROUNDS"); do
    for mode in off 0.1 1.0; do
        start "$mode"
        wrk -t2 -c32 -d2s "http://127.0.0.1:$ROUTER_PORT/api/info" >/dev/null   # warm-up
        out="$(wrk -t2 -c32 -d"$DURATION" --latency "http://127.0.0.1:$ROUTER_PORT/api/info")"
        if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "bench: errors with tracing $mode:" >&2; grep "Non-2xx\|Socket errors" <<<"$out" >&2; fi
        RPS[$mode]="${RPS[$mode]:-} $(awk '/Requests\/sec/ {print $2}' <<<"$out")"
        P50[$mode]="$(awk '$1=="50%" {print $2}' <<<"$out" | to_ms)"
        P99[$mode]="$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)"
        sleep 1.5   # let the last batch go out
        scrape="$(curl -s "http://127.0.0.1:$BACKEND_PORT/metrics"; curl -s "http://127.0.0.1:$ADMIN_PORT/metrics")"
        EXPORTED[$mode]="$(awk '/^vigie_trace_spans_exported_total/ {s+=$2} END {print s+0}' <<<"$scrape")"
        DROPPED[$mode]="$(awk '/^vigie_trace_spans_dropped_total/ {s+=$2} END {print s+0}' <<<"$scrape")"
        stop
    done
done
mean() { awk '{s=0; for (i=1;i<=NF;i++) s+=$i; printf "%.0f", s/NF}' <<<"$1"; }
OFF="$(mean "${RPS[off]}")"
echo
echo "| tracing | req/s (mean of $ROUNDS) | p50 ms | p99 ms | vs off | spans exported | spans dropped |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for mode in off 0.1 1.0; do
    r="$(mean "${RPS[$mode]}")"
    printf '| %s | %s | %s | %s | %.3f | %s | %s |\n' "$mode" "$r" "${P50[$mode]}" "${P99[$mode]}" "$(awk -v a="$r" -v b="$OFF" 'BEGIN {print a/b}')" "${EXPORTED[$mode]}" "${DROPPED[$mode]}"
done
