#!/usr/bin/env bash
# Installs and starts what the test suite needs, idempotently. A fresh machine has only the
# Rust toolchain, Python, Node and Debian's package manager.
#
# The foundation (store, management API, CLI) needs nothing beyond the Rust toolchain: SQLite is
# compiled in (rusqlite, bundled). Later capabilities add their real components here (Azurite
# and an S3 server for backups, an authoritative DNS server for moves, nginx and wrk for the
# gateway benchmark), each installed only when missing and started on loopback.
set -euo pipefail

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "test-deps: '$1' is required but not installed" >&2; exit 1; }
}
need cargo
need rustc
echo "test-deps: cargo $(cargo --version | cut -d' ' -f2), no external components needed"
