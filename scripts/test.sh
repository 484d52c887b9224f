#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs PostgreSQL if missing, checks formatting and
# lints, then runs every test. Each test binary starts its own throwaway PostgreSQL unless
# DATABASE_URL names one (a superuser URL: tests create databases and a role).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build (the end-to-end tests run the real binaries)"
cargo build --workspace --bins --quiet
echo "== cargo test"
cargo test --workspace --no-fail-fast
