#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for $VMSPAWN_FUZZ_SECONDS (default 60) on a copy of its
# committed corpus (fuzz/corpus/<target>/) and fails when one crashes (a panic, a sanitizer
# report, a hang of more than 10 s on one input, or more than 2 GiB of memory). The
# targets run at the same time. Needs a nightly toolchain (cargo-fuzz builds with
# -Zsanitizer=address); without one it says that the fuzz run is skipped and succeeds: the
# corpus replay tests (`cargo test`, stable) still check every committed input.
#
# cargo-fuzz is installed once per version under /var/cache/vmspawn-test/tools/, and the fuzz
# build is cached in /var/cache/vmspawn-test/fuzz-target, both outside the clone; the clone
# is left as it was (artifacts of a crash go to fuzz/artifacts/<target>/, which git ignores).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
seconds=${VMSPAWN_FUZZ_SECONDS:-60}
cache=/var/cache/vmspawn-test

toolchains=$(rustup toolchain list 2>/dev/null || true)
if ! grep -q nightly <<<"$toolchains"; then
    echo "fuzz: no nightly toolchain (rustup toolchain list), so the fuzz run is skipped;"
    echo "fuzz: the stable replay of the committed corpus ran with the unit tests"
    exit 0
fi

tools="$cache/tools/cargo-fuzz-$CARGO_FUZZ_VERSION"
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools"
    cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$tools"
fi
export PATH="$tools/bin:$PATH"
export RUST_BACKTRACE=1

work=$(mktemp -d "${TMPDIR:-/tmp}/vmspawn-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

cd fuzz
# Each clone's own crates add about 120 MiB to the shared build cache; start over past 2 GiB.
target_dir="$cache/fuzz-target"
if [ -d "$target_dir" ] && [ "$(du -sm "$target_dir" | cut -f1)" -gt 2048 ]; then
    rm -rf "$target_dir"
fi
start=$SECONDS
cargo +nightly fuzz build --target-dir "$target_dir"
echo "fuzz: built in $((SECONDS - start)) s"

targets=$(cargo +nightly fuzz list)
declare -A pids
for target in $targets; do
    mkdir -p "$work/corpus/$target" "artifacts/$target"
    if [ -d "corpus/$target" ]; then
        cp -r "corpus/$target/." "$work/corpus/$target/"
    fi
    cargo +nightly fuzz run --target-dir "$target_dir" "$target" "$work/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$work/$target.log" 2>&1 &
    pids[$target]=$!
done

failed=()
for target in $targets; do
    if wait "${pids[$target]}"; then
        done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$work/$target.log" | tail -n 1 || true)
        echo "fuzz: $target: ${seconds} s, no crash: ${done_line:-?}"
    else
        failed+=("$target")
        echo "fuzz: $target CRASHED; its log from the failure on:"
        # The panic message (or sanitizer report, timeout, out-of-memory) and what follows:
        # the backtrace, the input's bytes and cargo-fuzz's summary.
        if grep -qE 'panicked at|==[0-9]+==ERROR|ALARM|out-of-memory' "$work/$target.log"; then
            sed -n -E '/panicked at|==[0-9]+==ERROR|ALARM|out-of-memory/,$p' "$work/$target.log" |
                head -n 200 || true
        else
            tail -n 80 "$work/$target.log"
        fi
        echo "fuzz: the crashing input is in fuzz/artifacts/$target/; reproduce it from fuzz/ with"
        echo "      cargo +nightly fuzz run $target artifacts/$target/<file>"
    fi
done
echo "fuzz: fuzz step took $((SECONDS - start)) s"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: crashed: ${failed[*]}" >&2
    exit 1
fi
