# Sourced by bench/instructions.sh and bench/router.sh: user-space
# instructions per request of a server, counted by valgrind (callgrind).
# Unlike req/s or CPU time on a shared machine, these counts repeat within
# about 1% from run to run; they leave out the kernel.

# count_instructions OUTDIR URL COMMAND... -> prints instructions per request
# of COMMAND (started under callgrind, stopped at the end) for GET URL with
# wrk -t1 -c4: 3 s of warm-up, counters zeroed, 8 s counted.
count_instructions() {
    local dir="$1" url="$2" pid out n total
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.%p" "$@" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 150); do curl -sf -o /dev/null "$url" && break; sleep 0.2; done
    wrk -t1 -c4 -d3s "$url" >/dev/null
    timeout 30 callgrind_control -z "$pid" >/dev/null 2>&1
    out="$(wrk -t1 -c4 -d8s "$url")"
    n="$(awk '/requests in/ {print $1}' <<<"$out")"
    timeout 30 callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 1
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    total="$(awk '/^summary:/ {print $2}' "$dir/callgrind.$pid.1")"
    awk -v t="$total" -v n="$n" 'BEGIN {printf "%.0f", t / n}'
}
