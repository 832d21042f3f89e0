#!/usr/bin/env bash
# Sets up a Debian 12 machine and runs every test: unit tests of each crate
# and the multi-process suite, which launches real jobs through weftrun and
# needs the workspace's binaries built first; then the suite again over RDMA
# verbs on a Soft-RoCE device in a VM (scripts/test-verbs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
cargo build --workspace --bins
cargo test --workspace
scripts/test-verbs.sh
