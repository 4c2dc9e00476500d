#!/usr/bin/env bash
# Builds a JavaScript handler into a jobbox component:
#   guest-sdk/js/build.sh <app.js> <out.wasm>
# <app.js> is an ES module that exports `handler` (see jobbox_guest.js); it may import
# other modules by relative path, this directory's jobbox_guest.js among them.
# Needs componentize-js: scripts/setup installs it under $JOBBOX_NPM_PREFIX
# (default ~/.cache/jobbox-npm); one on PATH works too.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 <app.js> <out.wasm>" >&2
  exit 2
fi
sdk_dir="$(cd "$(dirname "$0")" && pwd)"
repo_root="$(cd "$sdk_dir/../.." && pwd)"
app="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
out="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
prefix="${JOBBOX_NPM_PREFIX:-$HOME/.cache/jobbox-npm}"
componentize_js="$prefix/node_modules/.bin/componentize-js"
if [ ! -x "$componentize_js" ]; then
  componentize_js="$(command -v componentize-js || true)"
fi
if [ -z "$componentize_js" ]; then
  echo "componentize-js is not installed: run scripts/setup (it installs it under $prefix)" >&2
  exit 127
fi
# From the repository root, so that an app inside it can import ../../guest-sdk/js/…:
# componentize-js lets the module see the directory it runs from when the app is in it.
cd "$repo_root"
# The WIT file itself, not wit/ (a symlink there, which componentize-js cannot
# follow). No HTTP: the worker's linker offers no wasi:http, and a handler that
# imported it would be refused at deploy.
exec "$componentize_js" --wit "$sdk_dir/../wit" --world-name handler-world \
  --disable http fetch-event -o "$out" "$app"
