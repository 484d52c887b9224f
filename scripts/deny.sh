#!/usr/bin/env bash
# The dependency gates: no unused dependencies (cargo-machete), and cargo-deny's licences,
# duplicate versions, sources and advisories (deny.toml), offline against the project's own
# advisory database in deny/advisories/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-rust-tools.sh
tools=target/tools/bin

echo "== cargo machete (unused dependencies)"
"$tools/cargo-machete"

echo "== cargo deny (licences, duplicates, sources, advisories)"
# cargo-deny opens an advisory database as a git checkout named after its URL (deny.toml's
# db-urls) under db-path, fresh by the time of its FETCH_HEAD; this one is rebuilt from
# deny/advisories each run, so it is as fresh as the checkout.
# The directory is <last URL segment>-<xxhash64 of the URL>: cargo-deny's name for
# https://intentmap.invalid/advisories.
db=target/advisory-dbs/advisories-7b4355d5fe233f80
rm -rf target/advisory-dbs
mkdir -p "$db"
cp -r deny/advisories/crates "$db/"
git -C "$db" init --quiet
git -C "$db" -c user.name=intentmap -c user.email=intentmap@localhost add -A
git -C "$db" -c user.name=intentmap -c user.email=intentmap@localhost commit --quiet -m advisories
touch "$db/.git/FETCH_HEAD"
# --offline keeps cargo-deny off the network (it implies not fetching advisories); cargo
# metadata then needs every locked crate's manifest present, which `cargo fetch` ensures.
cargo fetch --locked --quiet
"$tools/cargo-deny" --offline check --hide-inclusion-graph
