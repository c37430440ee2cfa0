#!/usr/bin/env bash
# Soak test of the demo server: runs `crosstown-demo serve` on 127.0.0.1 and wrk against it
# for N minutes, printing the server's RSS every 10 s, then wrk's requests/s and latency
# percentiles, and the server's final counters after a graceful SIGTERM (registered = the
# terminal states: "every task accounted for: yes").
#
# Usage: scripts/soak.sh [minutes=5] [--coroutine] [--preset release] [--connections 64]
#                        [--threads 2] [--target '/calls?n=10&us=100'] [--binary PATH]
# (--binary: run that crosstown-demo instead of building the preset's)
# Needs wrk (Debian package `wrk`; scripts/install-deps.sh installs it). Talks to 127.0.0.1
# only. The load mixes the target with /missing and /stream through a wrk Lua script.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=5
preset=release
connections=64
threads=2
target='/calls?n=10&us=100'
binary=''
demo_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --coroutine) demo_args+=(--coroutine) ;;
    --preset) preset="$2"; shift ;;
    --connections) connections="$2"; shift ;;
    --threads) threads="$2"; shift ;;
    --target) target="$2"; shift ;;
    --binary) binary="$2"; shift ;;
    [0-9]*) minutes="$1" ;;
    *) echo "soak.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
command -v wrk >/dev/null || { echo "soak.sh: wrk not found (apt-get install wrk)" >&2; exit 2; }

if [ -z "$binary" ]; then
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" --target crosstown-demo >/dev/null
  binary="build/$preset/examples/demo/crosstown-demo"
fi

work="$(mktemp -d)"
trap 'kill "$server_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
"$binary" serve --port 0 "${demo_args[@]}" >"$work/server.out" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  grep -q "listening on" "$work/server.out" && break
  sleep 0.1
done
port="$(sed -n 's/^listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$work/server.out")"
[ -n "$port" ] || { echo "soak.sh: the server did not start"; cat "$work/server.out"; exit 1; }

cat >"$work/mix.lua" <<LUA
-- 8 of 10 requests POST the target, 1 GET /missing (404: its task is skipped), 1 GET /stream.
local n = 0
request = function()
  n = n + 1
  if n % 10 == 0 then return wrk.format("GET", "/stream") end
  if n % 10 == 5 then return wrk.format("GET", "/missing") end
  return wrk.format("POST", "$target")
end
LUA

seconds=$((minutes * 60))
echo "soak: $binary on 127.0.0.1:$port ${demo_args[*]:-(callback sessions)}; wrk -t$threads -c$connections for ${seconds}s"
rss() { awk '/VmRSS/ {print $2}' "/proc/$server_pid/status"; }
echo "rss_kb at start: $(rss)"
wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency -s "$work/mix.lua" \
  "http://127.0.0.1:$port" >"$work/wrk.out" 2>&1 &
wrk_pid=$!
elapsed=0
while kill -0 "$wrk_pid" 2>/dev/null; do
  sleep 10
  elapsed=$((elapsed + 10))
  kill -0 "$wrk_pid" 2>/dev/null && echo "t=${elapsed}s rss_kb=$(rss)"
done
wait "$wrk_pid" || true
echo "rss_kb at end of load: $(rss)"
echo "--- wrk"
cat "$work/wrk.out"
echo "--- server /metrics (503s: crosstown_demo_* and the 'busy' answers are in wrk's non-2xx)"
curl -s "http://127.0.0.1:$port/metrics" | grep -v '^#' || true
echo "--- graceful shutdown"
kill -TERM "$server_pid"
wait "$server_pid" || true
sed -n '/^signal/,$p' "$work/server.out"
