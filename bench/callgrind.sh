# Sourced by bench/instructions.sh and bench/router.sh: user-space
# instructions per request of a server, counted by valgrind (callgrind).
# Unlike req/s or CPU time on a shared machine, these counts repeat within
# about 1% from run to run; they leave out the kernel.

# count_instructions OUTDIR URL COMMAND... -> prints instructions per request
# of COMMAND (started under callgrind, stopped at the end) for GET URL with
# wrk -t1 -c4: 3 s of warm-up, counters zeroed, 8 s counted. With
# COUNT_DURING set, that command line runs beside the 8 counted seconds
# (its output discarded), and its work counts in the total.
count_instructions() {
    local dir="$1" url="$2" pid out n total during=""
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.%p" "$@" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 150); do curl -sf -o /dev/null "$url" && break; sleep 0.2; done
    wrk -t1 -c4 -d3s "$url" >/dev/null
    timeout 30 callgrind_control -z "$pid" >/dev/null 2>&1
    if [ -n "${COUNT_DURING:-}" ]; then
        $COUNT_DURING >/dev/null &
        during=$!
    fi
    out="$(wrk -t1 -c4 -d8s "$url")"
    [ -z "$during" ] || wait "$during"
    n="$(awk '/requests in/ {print $1}' <<<"$out")"
    timeout 30 callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 1
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    total="$(awk '/^summary:/ {print $2}' "$dir/callgrind.$pid.1")"
    awk -v t="$total" -v n="$n" 'BEGIN {printf "%.0f", t / n}'
}

# count_proxies DIR ROUTER_PORT NGINX_PORT BLUE GREEN [ROUTER FLAG...]: sets
# I_router and I_nginx, the instructions per request of `vigie router`
# (target/release, its admin port ROUTER_PORT + 1) and of a one-process
# nginx as the same proxy (bench/nginx-router.conf; n/a without nginx),
# both in front of the backend BLUE (host:port).
count_proxies() {
    local dir="$1" router_port="$2" nginx_port="$3" blue="$4" green="$5"
    shift 5
    I_router=$(count_router "$dir" "$router_port" "$blue" "$green" "$@")
    I_nginx=n/a
    command -v nginx >/dev/null || return 0
    mkdir -p "$dir/counted-nginx"
    { echo "master_process off;"
      sed -e "s|@TMP@|$dir/counted-nginx|g" -e "s|@PORT@|$nginx_port|g" -e "s|@UPSTREAM@|$blue|g" \
          -e "s|^worker_processes .*|worker_processes 1;|" bench/nginx-router.conf
    } >"$dir/counted-nginx/nginx.conf"
    I_nginx=$(count_instructions "$dir" "http://127.0.0.1:$nginx_port/api/info" \
        nginx -p "$dir/counted-nginx" -c "$dir/counted-nginx/nginx.conf" -e "$dir/counted-nginx/error.log" -g 'daemon off;')
}

# count_router DIR PORT BLUE GREEN [ROUTER FLAG...] -> prints the
# instructions per request of `vigie router` (target/release; admin API on
# PORT + 1, token "bench") in front of BLUE, with GREEN as the other color.
count_router() {
    local dir="$1" port="$2" blue="$3" green="$4"
    shift 4
    VIGIE_ADMIN_TOKEN=bench count_instructions "$dir" "http://127.0.0.1:$port/api/info" \
        ./target/release/vigie router --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$((port + 1))" \
        --blue "http://$blue" --green "http://$green" \
        --state-file "$dir/counted-router/state.json" --targets-file "$dir/counted-router/targets.json" "$@"
}
