#!/usr/bin/env bash
# Builds {{name}}.wasm (a {{world}} plugin for alkhub) with clang for wasm32,
# wit-bindgen and wasm-tools. Installs what is missing when it can: Debian's
# clang, lld and wasi-libc (as root), and the two tools with cargo (the first
# install takes several minutes).
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$HOME/.cargo/bin:$PATH"

missing=()
for pkg in clang lld wasi-libc libclang-rt-dev-wasm32; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "build.sh: install ${missing[*]} first (sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v wit-bindgen >/dev/null || cargo install --locked wit-bindgen-cli@0.63.0
command -v wasm-tools >/dev/null || cargo install --locked wasm-tools@1.263.0

rm -rf gen
wit-bindgen c wit --world {{world}}-plugin --out-dir gen 2>/dev/null
clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Wl,--strip-all -Igen \
    -o gen/{{name}}.core.wasm {{name}}.c gen/{{world}}_plugin.c gen/{{world}}_plugin_component_type.o
wasm-tools component new gen/{{name}}.core.wasm -o {{name}}.wasm
echo "built {{name}}.wasm"
