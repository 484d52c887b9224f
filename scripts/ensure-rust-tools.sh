#!/usr/bin/env bash
# The Rust tools the test gates use, built from crates.io once into target/tools (cached: a
# second run costs nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
tools=target/tools
want=("cargo-machete@0.9.2" "cargo-deny@0.20.2")
for spec in "${want[@]}"; do
    name=${spec%@*} version=${spec#*@}
    if [ -x "$tools/bin/$name" ] && "$tools/bin/$name" --version 2>/dev/null | grep -q "$version"; then
        continue
    fi
    echo "building $name $version into $tools (once; a few minutes)..."
    cargo install --quiet --locked --root "$tools" "$name@$version"
done
