#!/usr/bin/env bash
# Builds {{name}}.wasm (a {{world}} plugin for alkhub) with componentize-js,
# installed from npm into node_modules/ on the first run. Needs Node.js 20.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x node_modules/.bin/componentize-js ]; then
    npm install --no-audit --no-fund --loglevel=error >/dev/null
fi
npm run --silent build >/dev/null
echo "built {{name}}.wasm"
