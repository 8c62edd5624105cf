#!/usr/bin/env bash
# The one test command (README, .ci/run): sets everything up, proves the committed wasm matches
# its sources and that they still build, then runs the Rust tests and `deno task ok` (fmt, lint,
# type check, unit and end-to-end tests).
#   SKIP_WASM_BUILD=1 skips the full wasm rebuild (for quick local runs).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
deno=node_modules/.bin/deno

echo "== check:wasm"
$deno task check:wasm
if [ "${SKIP_WASM_BUILD:-0}" != 1 ]; then
  echo "== build:wasm (full rebuild)"
  $deno task build:wasm
fi

echo "== cargo test (native)"
(cd wasm && PATH=/usr/bin:$PATH cargo test --locked --quiet)

echo "== deno task ok"
$deno task ok
