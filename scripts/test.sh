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

echo "== fuzz (bounded)"
# FUZZ_SECONDS per target (default 30); FUZZ_SECONDS=0 skips it.
if [ "${FUZZ_SECONDS:-30}" != 0 ]; then bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"; fi

echo "== deno task ok"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
$deno task ok 2>&1 | tee "$log"
# One plain summary line for CI: "N passed, N failed" (Deno's own line has colours and steps).
summary=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^(ok|FAILED) \| [0-9]+ passed' | tail -n1)
passed=$(sed -E 's/^[^|]*\| ([0-9]+) passed.*/\1/' <<<"$summary")
failed=$(sed -E 's/.*\| ([0-9]+) failed.*/\1/' <<<"$summary")
echo "${passed:-0} passed, ${failed:-0} failed"
