#!/usr/bin/env bash
# Sets up and runs the crosstown demo: installs missing packages, builds the release preset,
# runs crosstown-demo in client mode - the Boost.Beast phone-calls server on 127.0.0.1 and a
# client that prints the timeline (tasks start after the last byte, are skipped for a 404),
# measures the last-byte-to-first-task gap, then shuts down gracefully and prints the counters.
# Extra arguments go to crosstown-demo (e.g. `--coroutine`, `--requests 5000`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target crosstown-demo
exec build/release/examples/demo/crosstown-demo client "$@"
