#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs PostgreSQL if missing, checks formatting,
# lints and dependencies (unused ones, licences, duplicates, advisories), then runs every test.
# Each test binary starts its own throwaway PostgreSQL unless DATABASE_URL names one (a
# superuser URL: tests create databases and a role).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# One build, no edit-compile loop: incremental caches would only take disk (gigabytes per run).
export CARGO_INCREMENTAL=0
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
bash scripts/deny.sh
echo "== cargo build (the end-to-end tests run the real binaries)"
cargo build --workspace --bins --quiet
echo "== cargo test"
# Nothing skips silently: a missing prerequisite fails the test that needs it, naming it. Tests
# that cannot run here (root-only ones when not root, a real cluster without KUBECONFIG) are
# ignored with a reason, listed at the end.
log=target/test-output.log
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
ignored=$(grep -E '^test .* \.\.\. ignored' "$log" | sed -E 's/^test (.*) \.\.\. ignored,? ?/  \1: /' || true)
echo "== ignored tests: $(printf '%s' "$ignored" | grep -c . || true)"
[ -z "$ignored" ] || printf '%s\n' "$ignored"
if [ "$(id -u)" -ne 0 ]; then
    echo "(not root: the tests that need network namespaces, eBPF or mounts were ignored; CI runs them as root)"
fi
exit "$status"
