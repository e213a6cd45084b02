#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the real components the tests talk to
# (apache2, minisign, zstd, ...), checks formatting and lints, then runs unit and
# integration tests (which start their own servers on loopback ports and stop them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-env.sh
export CARGO_TERM_COLOR=never
echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test
echo "== scripts/check-static.sh (static release binary, --include-tool, verify in an empty chroot)"
bash scripts/check-static.sh
