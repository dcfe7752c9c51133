#!/usr/bin/env bash
# Builds every fuzz target (release, with debug assertions and overflow checks), then runs
# each target on a scratch copy of its committed corpus: libFuzzer first executes every
# committed input (a crash there fails the run like any other), then fuzzes for N seconds
# (default 30). FUZZ_PARALLEL targets run at a time (each libFuzzer process uses one core). Then, as a
# separate bounded step, the target that reaches the GMP-backed big-integer decoding
# (wire_message) is built with AddressSanitizer and fuzzed for FUZZ_ASAN_SECONDS. Exit status is non-zero on
# any crash, panic, failed assertion, sanitizer report or timeout.
#
#   fuzz/run.sh [seconds]
#
# Environment:
#   FUZZ_TARGETS        space-separated subset of targets (unset: all; "": none, only
#                       the ASan step)
#   FUZZ_SANITIZER      sanitizer of the main step (default "none": every crate here
#                       forbids `unsafe`; the ASan step below covers the decoders)
#   FUZZ_ASAN_TARGETS   targets of the ASan step (default "wire_message"; "" skips the
#                       step; e.g. "wire_message wire_frame" for more)
#   FUZZ_ASAN_SECONDS   fuzzing time per target in the ASan step (default 20)
#   FUZZ_MERGE          1: merge the inputs found that add coverage into corpus/<target>
#                       (libFuzzer -merge=1; review and commit them), instead of
#                       throwing the scratch corpus away
#   FUZZ_JOBS           cargo build jobs (default: cargo's choice)
#   FUZZ_PARALLEL       targets fuzzed at the same time (default 2, one per core here)
#   FUZZ_STEP           "build": only build the main step's targets (CI starts this early,
#                       at low priority, beside the tests); "run": only run them (already
#                       built); unset: both
set -euo pipefail

SECS="${1:-30}"
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE"
ALL=(wire_frame wire_message stream_reader keystore_record node_config protocol_party party_signing party_keygen)
TARGETS=(${FUZZ_TARGETS-${ALL[*]}})
SAN="${FUZZ_SANITIZER:-none}"
ASAN_TARGETS=(${FUZZ_ASAN_TARGETS-wire_message})
ASAN_SECS="${FUZZ_ASAN_SECONDS:-20}"
# --debug-assertions: overflow checks and debug_assert! stay on in the optimized build.
COMMON=(--release --debug-assertions)
if [[ -n "${FUZZ_JOBS:-}" ]]; then COMMON+=(--jobs "$FUZZ_JOBS"); fi

# libFuzzer options per target. Real messages are up to a few hundred KiB (aux-info
# proofs), so wire_frame takes inputs up to 1 MiB; the structure-aware targets' inputs
# are edits of real messages and stay small. party_keygen runs aux-info with all its
# proofs: about 10 s per run in this build, so a longer per-input timeout.
opts() {
    case "$1" in
        wire_frame) echo "-max_len=1048576 -timeout=30" ;;
        wire_message | stream_reader) echo "-max_len=65536 -len_control=0 -timeout=30" ;;
        party_signing) echo "-max_len=4096 -len_control=0 -timeout=60" ;;
        party_keygen) echo "-max_len=4096 -len_control=0 -timeout=120" ;;
        *) echo "-timeout=20" ;;
    esac
}

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

build() { # sanitizer target-dir targets...
    local san="$1" dir="$2"
    shift 2
    local flags=("${COMMON[@]}" -s "$san" --target-dir "$dir")
    if [[ "$*" == "${ALL[*]}" ]]; then
        cargo +nightly fuzz build "${flags[@]}"
    else
        for t in "$@"; do cargo +nightly fuzz build "${flags[@]}" "$t"; done
    fi
}

fuzz() { # sanitizer target-dir seconds target
    local san="$1" dir="$2" secs="$3" t="$4"
    local flags=("${COMMON[@]}" -s "$san" --target-dir "$dir")
    local t0
    t0=$(date +%s)
    mkdir -p "corpus/$t"
    echo "== $t ($san): the committed corpus ($(ls "corpus/$t" | wc -l) inputs), then ${secs}s of fuzzing"
    # Fuzz on a scratch copy so the committed corpus only changes deliberately. libFuzzer
    # runs every input of it before fuzzing (whatever -max_total_time says), so this also
    # replays the committed corpus.
    local scratch
    scratch="$(mktemp -d)"
    cp -r "corpus/$t"/. "$scratch"/
    cargo +nightly fuzz run "${flags[@]}" "$t" "$scratch" -- \
        -max_total_time="$secs" -rss_limit_mb=4096 -print_final_stats=1 $(opts "$t")
    if [[ "${FUZZ_MERGE:-0}" == 1 ]]; then
        echo "== $t: merging new coverage into corpus/$t"
        cargo +nightly fuzz run "${flags[@]}" "$t" "corpus/$t" "$scratch" -- -merge=1 $(opts "$t")
    fi
    rm -rf "$scratch"
    echo "   $t ($san) took $(( $(date +%s) - t0 )) s"
}

# Runs `fuzz` for each target, FUZZ_PARALLEL at a time; each target's output is printed
# whole when it ends. Fails (after the running ones end) if any target failed.
fuzz_all() { # sanitizer target-dir seconds targets...
    local san="$1" dir="$2" secs="$3"
    shift 3
    local logs failed=0 t pid
    logs="$(mktemp -d)"
    local -a pids=() names=()
    finish_one() { # waits for the oldest running target
        local p="${pids[0]}" n="${names[0]}"
        pids=("${pids[@]:1}")
        names=("${names[@]:1}")
        if ! wait "$p"; then
            failed=1
            echo "== FAILED: $n"
        fi
        cat "$logs/$n.log"
    }
    for t in "$@"; do
        while [[ ${#pids[@]} -ge ${FUZZ_PARALLEL:-2} ]]; do finish_one; done
        fuzz "$san" "$dir" "$secs" "$t" >"$logs/$t.log" 2>&1 &
        pids+=("$!")
        names+=("$t")
    done
    while [[ ${#pids[@]} -gt 0 ]]; do finish_one; done
    rm -rf "$logs"
    return "$failed"
}

start=$(date +%s)
STEP="${FUZZ_STEP:-all}"
if [[ ${#TARGETS[@]} -gt 0 ]]; then
    if [[ "$STEP" != run ]]; then
        echo "== build (${TARGETS[*]}; sanitizer $SAN, debug assertions on)"
        build "$SAN" target "${TARGETS[@]}"
        echo "   build took $(( $(date +%s) - start )) s"
    fi
    if [[ "$STEP" != build ]]; then
        # Checks the build is current (a no-op after FUZZ_STEP=build).
        build "$SAN" target "${TARGETS[@]}"
        fuzz_all "$SAN" target "$SECS" "${TARGETS[@]}"
    fi
fi
if [[ "$STEP" == build ]]; then
    echo "== fuzz targets built in $(( $(date +%s) - start )) s"
    exit 0
fi

if [[ "$SAN" == none && ${#ASAN_TARGETS[@]} -gt 0 ]]; then
    t0=$(date +%s)
    echo "== build with AddressSanitizer (${ASAN_TARGETS[*]})"
    # Its own target directory: switching sanitizers in one would rebuild everything.
    build address target/asan "${ASAN_TARGETS[@]}"
    echo "   ASan build took $(( $(date +%s) - t0 )) s"
    fuzz_all address target/asan "$ASAN_SECS" "${ASAN_TARGETS[@]}"
fi
echo "== all fuzz targets passed in $(( $(date +%s) - start )) s"
