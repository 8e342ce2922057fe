#!/usr/bin/env bash
# Fuzz smoke run: installs cargo-fuzz if missing, builds every target once,
# then runs each for a short bounded time from the committed seeds.
# Prints one line per target; exits non-zero if any target crashes, hangs,
# runs out of memory or fails to build. Reproducers land in
# fuzz/artifacts/<target>/ (git-ignored).
#
# Knobs (environment):
#   FUZZ_TIME=10          seconds per target (libFuzzer -max_total_time)
#   FUZZ_MAX_LEN=4096     longest input (libFuzzer -max_len)
#   FUZZ_TARGETS="..."    which targets (default: all of them)
#   FUZZ_SANITIZER=none   or "address": Gatehouse is forbid(unsafe_code), so
#                         ASan mostly re-checks safe Rust; it costs ~1 min more
#                         build and runs ~5x slower. Needs RUSTC_BOOTSTRAP=1 on
#                         stable, which this script sets.
#
# Works on the stable toolchain: cargo-fuzz only needs nightly for sanitizers
# (-Zsanitizer), and RUSTC_BOOTSTRAP=1 covers that case.
set -euo pipefail
cd "$(dirname "$0")"

FUZZ_TIME=${FUZZ_TIME:-10}
FUZZ_MAX_LEN=${FUZZ_MAX_LEN:-4096}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-none}
FUZZ_TARGETS=${FUZZ_TARGETS:-request_head chunked_body tyk_conf api_definition path}
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

now() { date +%s; }
t0=$(now)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (30-60 s on 2 cores)"
    t=$(now)
    cargo install cargo-fuzz --locked --quiet
    echo "fuzz: cargo-fuzz installed in $(($(now) - t)) s"
fi

build_flags=(--sanitizer "$FUZZ_SANITIZER")
mkdir -p target
t=$(now)
if ! cargo fuzz build "${build_flags[@]}" >target/build.log 2>&1; then
    tail -n 40 target/build.log
    echo "fuzz: BUILD FAILED"
    exit 1
fi
echo "fuzz: built $(wc -w <<<"$FUZZ_TARGETS") targets in $(($(now) - t)) s (sanitizer: $FUZZ_SANITIZER)"

failed=0
for target in $FUZZ_TARGETS; do
    # New inputs go to a scratch corpus under target/ (ignored, reused by
    # later local runs); the committed seeds are only read.
    work=target/smoke-corpus/$target
    log=target/smoke-$target.log
    mkdir -p "$work" "artifacts/$target"
    t=$(now)
    set +e
    cargo fuzz run "${build_flags[@]}" "$target" "$work" "corpus/$target" -- \
        -max_total_time="$FUZZ_TIME" -max_len="$FUZZ_MAX_LEN" \
        -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    secs=$(($(now) - t))
    runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
    cov=$(sed -n 's/.*DONE .*cov: \([0-9]*\).*/\1/p' "$log" | tail -n 1)
    if [ "$rc" -eq 0 ] && [ -n "$runs" ]; then
        echo "fuzz: $target ok: ${runs} runs in ${secs} s, cov ${cov:-?}, corpus $(ls "$work" | wc -l) (+$(ls "corpus/$target" | wc -l) seeds)"
    else
        failed=1
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        # The cause: a Rust panic (its message is the next line), an abort on
        # a failed allocation, or libFuzzer's own verdict (timeout, OOM, ...).
        why=$(grep -m1 -A1 "panicked at" "$log" | tr '\n' ' ' || true)
        [ -n "$why" ] || why=$(grep -m1 -E "memory allocation of|ERROR: AddressSanitizer|ERROR: libFuzzer: [a-z -]+" "$log" || true)
        echo "fuzz: $target FAILED (exit $rc) after ${secs} s: ${why:-no cause found, see fuzz/$log}"
        # The input, escaped, as libFuzzer prints it just before the
        # artifact_prefix line (only for short inputs; else see base64).
        awk '/^artifact_prefix=/ { if (prev !~ /^(MS: |0x)/) print "    input: " prev; exit } { prev = $0 }' "$log"
        sed -n 's/^Base64: /    base64: /p' "$log"
        if [ -n "$artifact" ]; then
            echo "    reproducer: $artifact (replay: cd fuzz && cargo fuzz run --sanitizer $FUZZ_SANITIZER $target $artifact)"
        fi
    fi
done

echo "fuzz: total $(($(now) - t0)) s"
exit "$failed"
