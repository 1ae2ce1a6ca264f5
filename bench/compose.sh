#!/usr/bin/env bash
# Start-up and footprint of the compose stack, from fresh volumes, as a user
# meets it after `docker compose up -d --wait`:
#   - time to every service healthy (`up -d --wait` returns),
#   - time to the first sample of the backend job in Prometheus,
#   - each container's memory after a minute (`docker stats`), and the sum,
#   - the vigie image's size.
# The images and the services are those of the compose tests (built here,
# no registry: services without an image are left out and named):
#   cargo test -p vigie --test compose -- --prepare
# It needs the engine the compose tests need and no other stack of project
# "vigie" on it; it removes the stack, volumes included, after each round.
#
#   bash bench/compose.sh          # ROUNDS=3 SETTLE=60 to change
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-3}"
SETTLE="${SETTLE:-60}"
for tool in docker curl; do command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }; done

prepared="$(cargo test -q -p vigie --test compose -- --prepare)"
field() { printf '%s\n' "$prepared" | sed -n "s/^$1: //p"; }
export COMPOSE_FILE; COMPOSE_FILE="$(field compose-files)"
read -r -a services <<<"$(field services)"
read -r -a jobs <<<"$(field jobs)"
echo "services: ${services[*]} (jobs: ${jobs[*]:-none}; left out: $(field optional))"
compose() { docker compose -p vigie "$@"; }
sample_file="$(mktemp)"
watcher=""
trap '[ -n "$watcher" ] && kill "$watcher" 2>/dev/null; compose down -v --timeout 10 >/dev/null 2>&1 || true; rm -f "$sample_file"' EXIT

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
to_mib() { # "12.5MiB" / "1.2GiB" / "900KiB" -> MiB
  awk '{v=$1; if (v ~ /GiB$/) {sub(/GiB$/,"",v); v*=1024} else if (v ~ /MiB$/) {sub(/MiB$/,"",v)} else if (v ~ /KiB$/) {sub(/KiB$/,"",v); v/=1024} else if (v ~ /B$/) {sub(/B$/,"",v); v/=1048576}; printf "%.1f", v}'
}

for round in $(seq 1 "$ROUNDS"); do
  compose down -v --timeout 10 >/dev/null 2>&1 || true
  start="$(now)"
  # The first backend sample is watched for while `up --wait` runs.
  (
    for _ in $(seq 1 1200); do
      if curl -sf --max-time 2 'http://127.0.0.1:9090/api/v1/query?query=up%7Bjob%3D%22backend%22%7D%3D%3D1' 2>/dev/null | grep -q '"value"'; then
        since "$start" >"$sample_file"; exit 0
      fi
      sleep 0.1
    done
  ) &
  watcher=$!
  if ! out="$(compose up -d --wait --wait-timeout 180 "${services[@]}" 2>&1)"; then
    printf 'docker compose up failed:\n%s\n' "$out" >&2; exit 1
  fi
  healthy="$(since "$start")"
  for job in "${jobs[@]}"; do compose up -d "$job" >/dev/null 2>&1; done
  wait "$watcher" || true
  watcher=""
  sample="$(cat "$sample_file" 2>/dev/null || true)"
  rm -f "$sample_file"
  sleep "$(awk -v s="$SETTLE" -v e="$(since "$start")" 'BEGIN { d = s - e; print (d > 0 ? d : 0) }')"
  total=0
  memory=""
  containers="$(compose ps -q)"
  [ -n "$containers" ] || { echo "no container of the stack is running" >&2; exit 1; }
  while read -r name usage; do
    mib="$(printf '%s\n' "$usage" | to_mib)"
    memory="$memory ${name#vigie-}=${mib}"
    total="$(awk -v a="$total" -v b="$mib" 'BEGIN { printf "%.1f", a + b }')"
  # shellcheck disable=SC2086 # one argument per container id
  done < <(docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' $containers | awk '{print $1, $2}')
  echo "round $round: healthy ${healthy}s, first backend sample ${sample:-never}s, memory ${total} MiB after ${SETTLE}s:${memory}"
done
size="$(docker image inspect vigie:0.1.0 --format '{{.Size}}')"
echo "vigie image: $(awk -v b="$size" 'BEGIN { printf "%.1f MiB", b / 1048576 }')"
