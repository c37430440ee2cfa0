#!/usr/bin/env bash
# Sets up and runs the crosstown demo: installs missing packages, builds the release preset,
# runs the walkthrough (tasks run after a response is sent, and are skipped for a 404).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target crosstown-walkthrough
exec build/release/examples/crosstown-walkthrough "$@"
