#!/usr/bin/env bash
# Builds {{name}}.wasm (a {{world}} plugin for alkhub) with componentize-py,
# installed from PyPI into .venv/ on the first run. Needs Python 3.10 or later.
set -euo pipefail
cd "$(dirname "$0")"
version=0.25.1
if [ "$(.venv/bin/componentize-py --version 2>/dev/null)" != "componentize-py $version" ]; then
    python3 -m venv --clear .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "componentize-py==$version"
fi
# --stub-wasi: the hub grants a plugin nothing, so WASI imports are stubbed
# out of the component instead of being left for the hub to satisfy.
PYTHONDONTWRITEBYTECODE=1 .venv/bin/componentize-py -q -d wit -w {{world}}-plugin \
    componentize --stub-wasi app -o {{name}}.wasm
echo "built {{name}}.wasm"
