#!/usr/bin/env bash
# Fuzzes the wasm core natively (wasm/fuzz: cargo-fuzz + libFuzzer) for a bounded time per
# target: `datagram` (raw and damaged WireGuard datagrams into a server core) and `inner_packet`
# (arbitrary inner IP packets through an established tunnel, server and client role), optimized
# but with debug assertions and overflow checks (-a): a counter that runs below zero is a
# defect even where the release build would wrap silently. A panic, a sanitizer report or an
# input running longer than 10 s fails the run; the input is kept in wasm/fuzz/artifacts/<target>/
# and the command to replay it is printed.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 30 (CI); give more for a longer hunt
#   FUZZ_SEED=n         libFuzzer's random seed (default 1, so a run is repeatable)
#   FUZZ_SANITIZER=address  build with AddressSanitizer (needs rustup's nightly toolchain);
#                       the default is none: a panic is caught either way, and on this machine
#                       ASan cut the rate from ~1,100 to ~160 inputs a second.
# Installs cargo-fuzz (from crates.io) when it is missing. Without a sanitizer it builds with the
# machine's stable compiler (RUSTC_BOOTSTRAP lets cargo-fuzz pass its flags), so it needs no
# toolchain download.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-30}
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(datagram inner_packet)
seed=${FUZZ_SEED:-1}

export PATH="$HOME/.cargo/bin:$PATH"
start=$(date +%s)
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi

toolchain=()
sanitizer=(-s "${FUZZ_SANITIZER:-none}")
if [ "${FUZZ_SANITIZER:-none}" = none ]; then
  export RUSTC_BOOTSTRAP=1
else
  toolchain=(+nightly)
fi

cd wasm/fuzz
# The seeds must still reach what they are for (a session, an open connection...), and every
# committed seed and crash reproducer must replay without a panic.
test_log=$(mktemp)
cargo test --quiet --test seeds >"$test_log" 2>&1 || {
  tail -n 40 "$test_log"
  exit 1
}
rm -f "$test_log"
echo "fuzz: seeds checked in $(($(date +%s) - start)) s"
echo "fuzz: building (${toolchain[*]:-default toolchain} ${sanitizer[*]})"
build_log=$(mktemp)
cargo "${toolchain[@]}" fuzz build -O -a "${sanitizer[@]}" >"$build_log" 2>&1 || {
  tail -n 40 "$build_log"
  exit 1
}
rm -f "$build_log"
echo "fuzz: ready in $(($(date +%s) - start)) s"

status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log=$(mktemp)
  # The committed seeds (and crash reproducers) are read as more corpora; what the run learns
  # stays in corpus/ (not committed).
  extra=("seeds/$t")
  [ -d "regressions/$t" ] && extra+=("regressions/$t")
  if cargo "${toolchain[@]}" fuzz run -O -a "${sanitizer[@]}" "$t" "corpus/$t" "${extra[@]}" -- \
    -max_total_time="$secs" -seed="$seed" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n1)
    echo "fuzz: $t: ${runs:-?} runs in $secs s, ${cov:-cov: ?}, no crash"
  else
    status=1
    grep -E 'panicked|ERROR: (libFuzzer|AddressSanitizer)|SUMMARY' "$log" | head -n 10 || true
    tail -n 30 "$log"
    crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)
    echo "fuzz: $t FAILED; replay: (cd wasm/fuzz && ${RUSTC_BOOTSTRAP:+RUSTC_BOOTSTRAP=1 }cargo ${toolchain[*]} fuzz run -O -a ${sanitizer[*]} $t ${crash:-artifacts/$t/<file>})"
  fi
  rm -f "$log"
done
echo "fuzz: done in $(($(date +%s) - start)) s"
exit "$status"
