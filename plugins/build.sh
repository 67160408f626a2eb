#!/usr/bin/env bash
# Builds every shipped plugin into plugins/dist/, installing the guest
# toolchains as needed: the two Rust defaults (reproducibly; their output is
# committed) and the JavaScript, Python and C examples.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/build-defaults.sh"
bash "$here/build-others.sh" "$@"
