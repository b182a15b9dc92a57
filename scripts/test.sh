#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, the crate layering, unused dependencies, lints (clippy.toml keeps
# environment reads in the CLI's configuration), a bounded fuzzing run of the parsers, then every
# test in the workspace.
# It ends with one line of totals: "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-off build gains nothing from incremental state, which doubles the target folder on disk.
export CARGO_INCREMENTAL=0
bash scripts/test-deps.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== crate layers (ARCHITECTURE.md) and module cycles"
python3 scripts/check-layers.py
python3 scripts/check-modules.py
echo "== unused dependencies (cargo-machete)"
if ! command -v cargo-machete >/dev/null 2>&1; then
  cargo install cargo-machete --version 0.9.2 --locked --quiet
fi
cargo machete
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== fuzz the policy and expression parsers (30 s each)"
bash scripts/fuzz.sh 30
echo "== cargo test --workspace"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
