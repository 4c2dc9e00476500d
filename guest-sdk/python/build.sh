#!/usr/bin/env bash
# Builds a Python handler into a jobbox component:
#   guest-sdk/python/build.sh <app-dir> <out.wasm>
# <app-dir> holds app.py (which assigns `Handler = jobbox_guest.export_handler(fn)`)
# and any pure-Python modules it imports; this directory's jobbox_guest.py is put on
# the path beside it. Needs componentize-py (scripts/setup installs it).
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 <app-dir> <out.wasm>" >&2
  exit 2
fi
sdk_dir="$(cd "$(dirname "$0")" && pwd)"
app_dir="$(cd "$1" && pwd)"
out="$2"
if ! command -v componentize-py >/dev/null 2>&1; then
  echo "componentize-py is not installed: run scripts/setup (or pip install componentize-py)" >&2
  exit 127
fi
# The path is exactly these two directories, never the current one, so the build
# does not depend on where it runs from.
exec componentize-py --quiet -d "$sdk_dir/../wit" -w handler-world \
  componentize -p "$sdk_dir" -p "$app_dir" app -o "$out"
