#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, then run the local demo
# (throwaway PostgreSQL, the cloud API, two demo clusters' reports). Ctrl-C stops it.
# Extra arguments go to intentmap-demo (e.g. --exit, --listen 127.0.0.1:9000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "Building (the first build takes a few minutes)..."
cargo build --quiet -p demo --bin intentmap-demo
exec ./target/debug/intentmap-demo "$@"
