#!/usr/bin/env bash
# The whole vmspawn test suite on a Debian 12 host, as root: installs what it needs (packages,
# the test user, guest images — cached under /var/cache/vmspawn-test), checks formatting and
# lints, then runs the unit and golden tests, the fuzz targets for a minute each (with a
# nightly toolchain) and the integration tests (which boot real guests under TCG, as the
# unprivileged user 'tester').
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run-all.sh must run as root (it installs packages and runs guests as the test user 'tester')." >&2
    echo "Run: sudo bash tests/run-all.sh" >&2
    exit 1
fi
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

echo "== host setup"
bash tests/setup-host.sh

echo "== guest images"
images=$(bash tests/images/build.sh | tail -n 1)
export VMSPAWN_TEST_IMAGES="$images"
echo "images: $images"

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== build"
cargo build --release --locked -p vmspawn -p vmspawn-privhelper
export VMSPAWN_BIN="$PWD/target/release/vmspawn"
export VMSPAWN_PRIVHELPER_BIN="$PWD/target/release/vmspawn-privhelper"

echo "== unit, golden and protocol tests"
cargo test --locked -p vmspawn -p vmspawn-proto -p vmspawn-policy -p vmspawn-privhelper -p vmspawn-seccomp -p vmspawn-docgen -p vmspawn-bus

echo "== fuzzing (each target of fuzz/ for 60 s on its committed corpus; needs nightly)"
bash tests/fuzz.sh

echo "== packaging"
bash tests/check-packaging.sh
echo "== Debian package (build, lintian, man pages, completions, install into a clean Debian 12 under systemd-nspawn)"
bash tests/package/install-test.sh

echo "== integration tests (real guests)"
# One guest at a time: the machines have two cores and TCG guests are CPU-bound.
status=0
cargo test --locked --no-fail-fast -p vmspawn-tests -- --test-threads=1 || status=$?
# The copies of vmspawn the tests run (every user must be able to execute them).
rm -rf /var/tmp/vmspawn-it-bin-*
exit "$status"
