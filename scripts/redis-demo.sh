#!/usr/bin/env bash
# The durable demo end to end: a private redis-server (Unix socket in a temporary directory,
# AOF with appendfsync always), `crosstown-demo serve --redis` and two `crosstown-worker`s;
# sends load with curl, kill -9s one worker while it holds calls, and checks that every call
# was placed: each call's idempotency key is in the set crosstown:demo:placed (the workers'
# record) and nothing was dead-lettered. Exit 0 iff so.
#
# Usage: scripts/redis-demo.sh [--preset dev] [--requests 20] [--calls 100] [--call-ms 5]
#                              [--demo PATH] [--worker PATH]
# (--demo/--worker: run those binaries instead of building the preset's). Installs what it
# needs (scripts/install-deps.sh: redis-server, redis-cli, curl). Talks to 127.0.0.1 and the private socket only.
set -euo pipefail
cd "$(dirname "$0")/.."

preset=dev
requests=20
calls=100
call_ms=5
demo=''
worker=''
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) preset="$2"; shift ;;
    --requests) requests="$2"; shift ;;
    --calls) calls="$2"; shift ;;
    --call-ms) call_ms="$2"; shift ;;
    --demo) demo="$2"; shift ;;
    --worker) worker="$2"; shift ;;
    *) echo "redis-demo.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
scripts/install-deps.sh  # redis-server (with redis-cli), curl, the build's packages
for tool in redis-server redis-cli curl; do
  command -v "$tool" >/dev/null || { echo "redis-demo.sh: $tool not found" >&2; exit 2; }
done
if [ -z "$demo" ] || [ -z "$worker" ]; then
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" --target crosstown-demo crosstown-worker >/dev/null
  demo=${demo:-build/$preset/examples/demo/crosstown-demo}
  worker=${worker:-build/$preset/durable/crosstown-worker}
fi

dir=$(mktemp -d -t crosstown-redis-demo-XXXXXX)
sock="$dir/redis.sock"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# Retries the command "$1" every 0.1 s, at most $2 times, until it succeeds: the processes
# polled here are others, which cannot notify this script.
wait_for() {
  local tries=0
  until eval "$1" >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt "$2" ]; then return 1; fi
    sleep 0.1
  done
}
cli() { redis-cli -s "$sock" "$@"; }

redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 --dir "$dir" --save '' \
  --appendonly yes --appendfsync always --daemonize no --logfile "$dir/redis.log" &
pids+=($!)
wait_for "cli ping | grep -q PONG" 100 ||
  { echo "redis-demo.sh: redis-server did not start" >&2; exit 1; }

"$demo" serve --port 0 --redis "unix:$sock" --call-ms "$call_ms" >"$dir/server.log" 2>&1 &
server=$!
pids+=($server)
wait_for "grep -q 'listening on' '$dir/server.log'" 100 ||
  { echo "redis-demo.sh: the server did not start:" >&2; cat "$dir/server.log" >&2; exit 1; }
port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$dir/server.log" | head -n1)

start_worker() {
  "$worker" --redis "unix:$sock" --consumer "$1" --visibility-timeout 1000 --metrics \
    >"$dir/$1.log" 2>&1 &
  pids+=($!)
  eval "$2=$!"
}
start_worker worker-1 w1
start_worker worker-2 w2
echo "redis at unix:$sock, server on 127.0.0.1:$port, workers $w1 and $w2"

total=$((requests * calls))
for ((r = 0; r < requests; r++)); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/calls?n=$calls")
  if [ "$code" != 202 ]; then echo "redis-demo.sh: POST /calls answered $code" >&2; exit 1; fi
  if [ "$r" -eq $((requests / 4)) ]; then
    # Once worker-1 holds calls (pending for it in the group), kill it without warning.
    wait_for "[ \"\$(cli xpending crosstown:tasks crosstown - + 10 worker-1 | wc -l)\" -gt 0 ]" \
      100 || true
    kill -9 "$w1"
    echo "kill -9 worker-1 after $(((r + 1) * calls)) calls were sent;" \
      "$(cli scard crosstown:demo:placed) placed so far"
  fi
done
echo "sent $total calls in $requests requests"

# worker-2 takes over worker-1's calls after the visibility timeout (1 s).
deadline=$((SECONDS + 120))
placed=0
while [ "$SECONDS" -lt "$deadline" ]; do
  placed=$(cli scard crosstown:demo:placed)
  [ "$placed" -ge "$total" ] && break
  sleep 0.2
done
dead=$(cli xlen crosstown:tasks:dead)
kill -TERM "$server" "$w2"
wait "$server" || true
wait "$w2" || true
echo "server: $(grep -E 'drain' "$dir/server.log" | tr '\n' ' ')"
echo "worker-2: $(tail -n1 "$dir/worker-2.log")"
echo "placed $placed of $total calls; dead-lettered $dead"
if [ "$placed" -eq "$total" ] && [ "$dead" -eq 0 ]; then
  echo "every call was placed"
  exit 0
fi
echo "NOT every call was placed" >&2
exit 1
