#!/usr/bin/env bash
# Installs the Debian packages crosstown needs, if any are missing. Non-interactive; uses sudo
# when not run as root. Safe to run again: installs nothing when everything is present.
set -euo pipefail

packages=(
  g++
  cmake
  ninja-build
  libboost1.81-dev
  libgtest-dev
  libgmock-dev
  librapidcheck-dev
  libbenchmark-dev
  clang-format
  redis-server
  libhiredis-dev
  librestinio-dev
  libfmt-dev
  libhttp-parser-dev
  libcpp-httplib-dev
  wrk
  curl
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "crosstown: installing missing packages: ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "crosstown: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
