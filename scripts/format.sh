#!/usr/bin/env bash
# Formats crosstown's C++ sources with clang-format (Debian's, style in .clang-format).
# Usage: scripts/format.sh           format every tracked .hpp/.cpp in place
#        scripts/format.sh --check   list the files that are not formatted; exit 1 if any
#        scripts/format.sh FILE...   format only these files
set -euo pipefail
cd "$(dirname "$0")/.."

clang_format="${CLANG_FORMAT:-clang-format}"
if ! command -v "$clang_format" >/dev/null 2>&1; then
  echo "format.sh: $clang_format not found (scripts/install-deps.sh installs clang-format)" >&2
  exit 2
fi

check=0
if [ "${1:-}" = "--check" ]; then
  check=1
  shift
fi
if [ $# -gt 0 ]; then
  files=("$@")
else
  mapfile -t files < <(git ls-files '*.hpp' '*.cpp')
fi

if [ "$check" -eq 0 ]; then
  "$clang_format" -i "${files[@]}"
  exit 0
fi

unformatted=0
for f in "${files[@]}"; do
  if ! "$clang_format" "$f" | cmp -s "$f" -; then
    echo "not formatted: $f (run scripts/format.sh $f)"
    unformatted=1
  fi
done
if [ "$unformatted" -eq 0 ]; then
  echo "format.sh: ${#files[@]} files formatted as .clang-format says"
fi
exit "$unformatted"
