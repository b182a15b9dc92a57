#!/usr/bin/env bash
# Runs the fuzz targets (policy XML parser, expression parser, deep nesting of both, HTTP/1 request and response
# parsers, what an import reads: archives, information, override and template files, API descriptions; the portal's
# tokens, cookies and administrators' pages; a continuous archive's indexes, segments and cron schedules) for a bounded time each, starting from the seeds in fuzz/seeds and the local corpus.
# Usage: bash scripts/fuzz.sh [SECONDS per target, default 30]
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets this machine's stable toolchain use them.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-30}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz 0.13.2"
  cargo install cargo-fuzz --version 0.13.2 --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
for target in policy_document expression nesting http1_request http1_response apiops specs portal_inputs archive_inputs; do
  mkdir -p "fuzz/corpus/$target"
  work="$(mktemp -d)"
  cp -r "fuzz/corpus/$target/." "$work/"
  if [ -d "fuzz/seeds/$target" ]; then cp -r "fuzz/seeds/$target/." "$work/"; fi
  echo "fuzz: $target for ${SECS} s"
  cargo fuzz run "$target" "$work" -- -max_total_time="$SECS" -max_len=4096 2>&1 | tail -n 3
  rm -rf "$work"
done
echo "fuzz: no crash"
