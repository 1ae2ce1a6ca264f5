#!/usr/bin/env bash
# Router overhead benchmark, in one run on loopback:
#   GET /api/info straight to a backend, through `vigie router`, and through
#   Debian's nginx configured as the same proxy (bench/nginx-router.conf);
#   and, in each round, through the router while it switches colors every
#   0.5 s.
# Prints a table with req/s, p50, p99, CPU per request and the ratios the
# router's goals are stated in (throughput vs nginx >= 0.95, CPU per request
# <= 1.1x nginx's, switching within 5% of steady), then, with valgrind
# installed, user-space instructions per request of both proxies, and of
# the router while it switches (bench/callgrind.sh). Needs wrk and nginx
# (apt-get install -y wrk nginx valgrind). Knobs: BENCH_DURATION (10s),
# BENCH_CONNECTIONS (32), BENCH_THREADS (2), BENCH_PORT_BASE (18300), BENCH_ROUNDS (3),
# BENCH_ROUTER_ARGS (extra router flags), BENCH_SKIP_BUILD (use the last
# release build), BENCH_INSTRUCTIONS=0 (skip the instruction counts).
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
THREADS=${BENCH_THREADS:-2}
BASE=${BENCH_PORT_BASE:-18300}
ROUNDS=${BENCH_ROUNDS:-3}
BLUE_PORT=$((BASE + 1)) GREEN_PORT=$((BASE + 2)) ROUTER_PORT=$((BASE + 3)) ADMIN_PORT=$((BASE + 4)) NGINX_PORT=$((BASE + 5))

for tool in wrk nginx cargo; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install -y wrk nginx)" >&2; exit 1; }
done

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
    echo "bench: building the release binary..." >&2
    cargo build --release -q -p vigie
fi
VIGIE=$PWD/target/release/vigie

TMP=$(mktemp -d /tmp/vigie-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

wait_http() { # url
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench: $1 never answered" >&2
    exit 1
}

# Every server logs one line per request, as in production, to a file.
"$VIGIE" backend --color blue --listen "127.0.0.1:$BLUE_PORT" --database "$TMP/tasks.db" >"$TMP/blue.log" 2>&1 &
PIDS+=($!) BLUE_PID=$!
"$VIGIE" backend --color green --listen "127.0.0.1:$GREEN_PORT" --database "$TMP/tasks.db" >"$TMP/green.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$BLUE_PORT/health/ready"
wait_http "http://127.0.0.1:$GREEN_PORT/health/ready"
VIGIE_ADMIN_TOKEN=bench "$VIGIE" router --listen "127.0.0.1:$ROUTER_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --blue "http://127.0.0.1:$BLUE_PORT" --green "http://127.0.0.1:$GREEN_PORT" \
    --state-file "$TMP/router/state.json" --targets-file "$TMP/targets/backend.json" ${BENCH_ROUTER_ARGS:-} >"$TMP/router.log" 2>&1 &
PIDS+=($!) ROUTER_PID=$!
sed -e "s|@TMP@|$TMP|g" -e "s|@PORT@|$NGINX_PORT|g" -e "s|@UPSTREAM@|127.0.0.1:$BLUE_PORT|g" bench/nginx-router.conf >"$TMP/nginx.conf"
nginx -p "$TMP" -c "$TMP/nginx.conf" -e "$TMP/nginx-error.log" -g 'daemon off;' &
PIDS+=($!) NGINX_PID=$!
wait_http "http://127.0.0.1:$ROUTER_PORT/api/info"
wait_http "http://127.0.0.1:$NGINX_PORT/api/info"
NGINX_PIDS="$NGINX_PID $(ps -o pid= --ppid "$NGINX_PID" | tr '\n' ' ')"

# CPU time (user + system, clock ticks of 10 ms) used so far by the pids.
cpu_ticks() {
    local total=0 pid
    for pid in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
    echo "$total"
}

# wrk's latency figure (e.g. 312.00us, 1.20ms, 2.00s) in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

# measure NAME URL PID...: one wrk run; appends its req/s, p50 and p99 (ms)
# and the CPU microseconds per request used by PID... (the server measured:
# the backend for direct, the proxy otherwise) to $TMP/NAME.results, its
# error lines to $TMP/NAME.errors.
measure() {
    local name=$1 url=$2 out before after requests
    shift 2
    before=$(cpu_ticks "$@")
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$url")
    after=$(cpu_ticks "$@")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    echo "$out" >>"$TMP/wrk-$name.txt"
    echo "$(awk '/^Requests\/sec:/ {print $2}' <<<"$out") $(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")") $(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")") $(awk -v t=$((after - before)) -v n="$requests" 'BEGIN {printf "%.1f", t * 10000 / n}')" >>"$TMP/$name.results"
    awk '/Non-2xx|Socket errors/' <<<"$out" >>"$TMP/$name.errors"
}

# switch_loop SECONDS ADMIN_URL OUT: starts a switch (`vigie switch`, to the
# other color each time) every 0.5 s, start to start, for SECONDS (a
# switch's readiness checks and drain take about 0.21 s of each period);
# appends "ok refused span" to OUT: switch counts and the seconds from the
# first switch's start to the last's.
switch_loop() {
    local seconds=$1 admin=$2 out=$3 color=green ok=0 failed=0 start last pause n
    start=$EPOCHREALTIME last=$start
    for ((n = 0; n < seconds * 2; n++)); do
        # Sleep until the n-th half second after the start, if not there yet.
        pause=$(awk -v start="$start" -v n="$n" -v now="$EPOCHREALTIME" 'BEGIN { w = start + n / 2 - now; printf "%.3f", (w > 0 ? w : 0) }')
        sleep "$pause"
        last=$EPOCHREALTIME
        if VIGIE_ADMIN_TOKEN=bench "$VIGIE" switch "$color" --admin "$admin" >/dev/null; then
            ok=$((ok + 1))
        else
            failed=$((failed + 1))
        fi
        [ "$color" = green ] && color=blue || color=green
    done
    echo "$ok $failed $(awk -v a="$start" -v b="$last" 'BEGIN { printf "%.2f", b - a }')" >>"$out"
}

# switching: one `measure switching` of the router while switch_loop runs
# beside it.
switching() {
    local switcher
    switch_loop "${DURATION%s}" "http://127.0.0.1:$ADMIN_PORT" "$TMP/switches" &
    switcher=$!
    measure switching "http://127.0.0.1:$ROUTER_PORT/api/info" "$ROUTER_PID"
    wait "$switcher"
}

# unloaded NAME URL: p50 and p99 (ms) of one connection sending requests one
# after the other: the latency a proxy adds without queueing.
unloaded() {
    local out
    out=$(wrk -t1 -c1 -d"$DURATION" --latency "$2")
    printf -v "U50_$1" '%s' "$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")"
    printf -v "U99_$1" '%s' "$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
}

# median NAME COLUMN: the median over the rounds of one column (1 req/s, 2 p50, 3 p99, 4 CPU µs/request).
median() {
    awk -v c="$2" '{print $c}' "$TMP/$1.results" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'
}

echo "bench: $ROUNDS rounds of wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency GET /api/info on direct, router, nginx (after a 2s warm-up each)" >&2
for url in "http://127.0.0.1:$BLUE_PORT/api/info" "http://127.0.0.1:$ROUTER_PORT/api/info" "http://127.0.0.1:$NGINX_PORT/api/info"; do
    wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$url" >/dev/null
done
# Rounds alternate the paths, so a burst of noise from elsewhere on the
# machine hits each of them alike; medians are reported. The steady and
# the switching router runs swap places every other round, so that a
# drift of the machine's speed favours neither.
for round in $(seq 1 "$ROUNDS"); do
    measure direct "http://127.0.0.1:$BLUE_PORT/api/info" "$BLUE_PID"
    if ((round % 2)); then
        measure router "http://127.0.0.1:$ROUTER_PORT/api/info" "$ROUTER_PID"
        switching
    else
        switching
        measure router "http://127.0.0.1:$ROUTER_PORT/api/info" "$ROUTER_PID"
    fi
    # shellcheck disable=SC2086 # one word per pid
    measure nginx "http://127.0.0.1:$NGINX_PORT/api/info" $NGINX_PIDS
done
for name in direct router nginx switching; do
    printf -v "R_$name" '%s' "$(median "$name" 1)"
    printf -v "P50_$name" '%s' "$(median "$name" 2)"
    printf -v "P99_$name" '%s' "$(median "$name" 3)"
    printf -v "CPU_$name" '%s' "$(median "$name" 4)"
    printf -v "ERR_$name" '%s' "$(sort -u "$TMP/$name.errors" | tr '\n' ' ')"
done

echo "bench: wrk -t1 -c1 -d$DURATION --latency (one connection, no queueing) on each path" >&2
unloaded direct "http://127.0.0.1:$BLUE_PORT/api/info"
unloaded router "http://127.0.0.1:$ROUTER_PORT/api/info"
unloaded nginx "http://127.0.0.1:$NGINX_PORT/api/info"


# ratio A B [DECIMALS]: A / B (2 decimals), or n/a when either is not a
# figure (e.g. a count skipped).
ratio() { awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%." d "f", a / b; else printf "n/a" }'; }
added() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.3f", a - b }'; }

echo
echo "Saturated: wrk -t$THREADS -c$CONNECTIONS -d$DURATION, medians of $ROUNDS rounds (each round: direct, router and router switching in turn, nginx)."
echo "CPU is the measured server's (backend for direct, proxy otherwise), in microseconds per request."
echo
echo "| path | req/s | p50 ms | p99 ms | CPU µs/req | req/s vs nginx | CPU/req vs nginx |"
echo "|---|---:|---:|---:|---:|---:|---:|"
echo "| direct | $R_direct | $P50_direct | $P99_direct | $CPU_direct | $(ratio "$R_direct" "$R_nginx") | |"
echo "| vigie router | $R_router | $P50_router | $P99_router | $CPU_router | $(ratio "$R_router" "$R_nginx") | $(ratio "$CPU_router" "$CPU_nginx") |"
echo "| nginx | $R_nginx | $P50_nginx | $P99_nginx | $CPU_nginx | 1.00 | 1.00 |"
echo "| vigie router, switching every 0.5 s | $R_switching | $P50_switching | $P99_switching | $CPU_switching | $(ratio "$R_switching" "$R_nginx") | $(ratio "$CPU_switching" "$CPU_nginx") |"
echo
echo "Unloaded: wrk -t1 -c1 -d$DURATION (one request at a time)."
echo
echo "| path | p50 ms | p99 ms | p99 added vs direct (ms) |"
echo "|---|---:|---:|---:|"
echo "| direct | $U50_direct | $U99_direct | |"
echo "| vigie router | $U50_router | $U99_router | $(added "$U99_router" "$U99_direct") |"
echo "| nginx | $U50_nginx | $U99_nginx | $(added "$U99_nginx" "$U99_direct") |"
echo
# Instructions per request (valgrind), after the timed runs so that
# valgrind's own load does not skew them: a second router and a one-process
# nginx, on ports of their own, in front of the blue backend.
I_router=n/a I_nginx=n/a I_switching=n/a
if [ "${BENCH_INSTRUCTIONS:-1}" != 0 ] && command -v valgrind >/dev/null && command -v callgrind_control >/dev/null; then
    echo "bench: counting instructions per request with callgrind (about a minute)..." >&2
    # shellcheck source=bench/callgrind.sh
    source bench/callgrind.sh
    count_proxies "$TMP" "$((BASE + 6))" "$((BASE + 8))" "127.0.0.1:$BLUE_PORT" "127.0.0.1:$GREEN_PORT" ${BENCH_ROUTER_ARGS:-}
    # The same router while it switches every 0.5 s: the switches' own work
    # (readiness checks, files, logs, connections to the other color) per
    # request served, without the machine's noise.
    I_switching=$(COUNT_DURING="switch_loop 8 http://127.0.0.1:$((BASE + 7)) $TMP/counted-switches" \
        count_router "$TMP" "$((BASE + 6))" "127.0.0.1:$BLUE_PORT" "127.0.0.1:$GREEN_PORT" ${BENCH_ROUTER_ARGS:-})
    read -r COUNTED_OK COUNTED_FAILED COUNTED_SPAN <"$TMP/counted-switches"
    echo
    echo "User-space instructions per request (callgrind, wrk -t1 -c4, the proxy alone):"
    echo
    echo "| proxy | instructions per request | vs nginx |"
    echo "|---|---:|---:|"
    echo "| vigie router | $I_router | $(ratio "$I_router" "$I_nginx") |"
    echo "| nginx | $I_nginx | 1.00 |"
    echo "| vigie router, switching every 0.5 s ($COUNTED_OK switches, $COUNTED_FAILED refused, the last started at $COUNTED_SPAN s of 8) | $I_switching | $(ratio "$I_switching" "$I_nginx") |"
    [ "$COUNTED_FAILED" = 0 ] || { echo "bench: switches refused while counting instructions" >&2; exit 1; }
fi

echo
echo "Goals (one run): router/nginx throughput $(ratio "$R_router" "$R_nginx") (goal >= 0.95); router/nginx CPU per request $(ratio "$CPU_router" "$CPU_nginx") (goal <= 1.10); switching/steady throughput $(ratio "$R_switching" "$R_router") (goal >= 0.95)"
echo "switching/steady: CPU per request $(ratio "$CPU_switching" "$CPU_router"), instructions per request $(ratio "$I_switching" "$I_router" 3)"
echo "router/nginx throughput: $(ratio "$R_router" "$R_nginx"); router/direct: $(ratio "$R_router" "$R_direct"); nginx/direct: $(ratio "$R_nginx" "$R_direct")"
echo "saturated p99 added vs direct: router $(added "$P99_router" "$P99_direct") ms, nginx $(added "$P99_nginx" "$P99_direct") ms"
echo "errors (direct/router/nginx): [${ERR_direct:-none}] [${ERR_router:-none}] [${ERR_nginx:-none}]"
# The mean time from one switch's start to the next's.
read -r SWITCHES_OK SWITCHES_FAILED SWITCH_EVERY < <(awk '{ok += $1; failed += $2; span += $3; gaps += $1 + $2 - 1}
    END {printf "%d %d %.2f\n", ok, failed, (gaps > 0 ? span / gaps : 0)}' "$TMP/switches")
echo "during switching ($ROUNDS runs of $DURATION): $SWITCHES_OK switches ok, $SWITCHES_FAILED refused, one started every $SWITCH_EVERY s; errors: [${ERR_switching:-none}]"
if [ -n "$ERR_switching" ] || [ "$SWITCHES_FAILED" != 0 ]; then
    echo "bench: requests or switches failed during switching" >&2
    exit 1
fi
