#!/usr/bin/env bash
# Sets up and runs crosstown's tests: installs missing packages, configures with a CMake
# preset, builds, runs CTest. Usage: scripts/test.sh [preset]   (default: dev; also release,
# asan, tsan). Extra CTest arguments go after the preset, e.g. scripts/test.sh dev -R Scope.
set -euo pipefail
cd "$(dirname "$0")/.."

preset="${1:-dev}"
shift || true

scripts/install-deps.sh
cmake --preset "$preset"
cmake --build --preset "$preset"
ctest --preset "$preset" "$@"
