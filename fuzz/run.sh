#!/usr/bin/env bash
# Builds every fuzz target, replays the committed seed corpus, then fuzzes each target
# for N seconds (default 30). Exit status is non-zero on any crash, panic or timeout.
#
#   fuzz/run.sh [seconds]
#
# Environment:
#   FUZZ_SANITIZER   sanitizer for cargo-fuzz (default "none": every crate here forbids
#                    `unsafe`, and building cggmp21/libp2p under ASan is much slower;
#                    use "address" for a deeper, slower run)
#   FUZZ_TARGETS     space-separated subset of targets (default: all)
#   FUZZ_JOBS        cargo build jobs (default: cargo's choice)
set -euo pipefail

SECS="${1:-30}"
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE"
SAN="${FUZZ_SANITIZER:-none}"
TARGETS=(${FUZZ_TARGETS:-wire_frame keystore_record node_config protocol_party})
FLAGS=(--release -s "$SAN")
if [[ -n "${FUZZ_JOBS:-}" ]]; then FLAGS+=(--jobs "$FUZZ_JOBS"); fi

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

start=$(date +%s)
echo "== build (${TARGETS[*]}; sanitizer $SAN)"
if [[ -z "${FUZZ_TARGETS:-}" ]]; then
    cargo +nightly fuzz build "${FLAGS[@]}"
else
    for t in "${TARGETS[@]}"; do cargo +nightly fuzz build "${FLAGS[@]}" "$t"; done
fi
echo "   build took $(( $(date +%s) - start )) s"

for t in "${TARGETS[@]}"; do
    echo "== $t: replay committed corpus"
    t0=$(date +%s)
    # -runs=0: execute every input of the corpus once, then stop.
    cargo +nightly fuzz run "${FLAGS[@]}" "$t" "corpus/$t" -- -runs=0
    echo "== $t: fuzz for ${SECS}s"
    # Fuzz on a scratch copy so the committed corpus only changes deliberately.
    scratch="$(mktemp -d)"
    cp "corpus/$t"/* "$scratch"/
    cargo +nightly fuzz run "${FLAGS[@]}" "$t" "$scratch" -- \
        -max_total_time="$SECS" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1
    rm -rf "$scratch"
    echo "   $t took $(( $(date +%s) - t0 )) s"
done
echo "== all fuzz targets passed in $(( $(date +%s) - start )) s"
