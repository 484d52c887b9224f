#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, then run the local demo
# (throwaway PostgreSQL, the cloud API, two simulated clusters with their mappers and node
# agents, real traffic between network-namespace pods as root). Ctrl-C, SIGTERM or SIGHUP
# stops it and everything it started (processes, network namespaces, the throwaway
# PostgreSQL); after a SIGKILL its processes die with it and the next start (or --clean)
# removes what is left. Extra arguments go to intentmap-demo (e.g. --exit, --replay,
# --listen 127.0.0.1:9000, --clean). `exec`, so signals reach the demo itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "Building (the first build takes a few minutes)..."
cargo build --quiet --workspace --bins
exec ./target/debug/intentmap-demo "$@"
