#!/usr/bin/env bash
# Runs the Python SDK's checks: creates or updates the virtual environment in
# .venv when requirements-dev.txt or pyproject.toml changed, type-checks the
# package (mypy --strict), then runs pytest, whose tests/test_packaging.py
# builds the wheel and checks that it holds the package and py.typed.
#
# The tests start a real hub: ALKHUB_BIN names the binary, else
# $CARGO_TARGET_DIR/debug/alkhub, else ../../target/debug/alkhub. Without
# one they fail, saying so. Arguments are passed to pytest; --setup-only
# prepares the environment and stops.
set -euo pipefail
cd "$(dirname "$0")"

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "run-tests.sh: Python 3.11 or newer is required ($python is $("$python" --version 2>&1))" >&2
    exit 1
fi

stamp=.venv/.requirements-stamp
wanted="$(cat requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
    echo "$wanted" > "$stamp"
fi

if [ "${1:-}" = --setup-only ]; then
    exit 0
fi
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest "$@"
