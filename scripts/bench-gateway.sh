#!/usr/bin/env bash
# Gateway benchmark against nginx: installs nginx and wrk if missing, builds the release binary,
# and prints the comparison (see crates/testkit/benches/gateway.rs). Pass --quick for a short run,
# --rounds N for more interleaved rounds (steadier medians).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk >/dev/null
fi
cargo build --release -p gatehouse-cli
GATEHOUSE_BIN="$PWD/target/release/gatehouse" cargo bench -p gatehouse-testkit --bench gateway -- "$@"
