#!/usr/bin/env bash
# Builds {{name}}.wasm (a {{world}} plugin for alkhub) with Debian's Rust
# toolchain, which can build for wasm32 without rustup. Installs it when it
# is missing and this runs as root.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld ] || [ ! -x /usr/bin/cargo ]; then
    packages="rustc-web cargo-web rust-web-src rust-web-llvm lld-22"
    if [ "$(id -u)" != 0 ]; then
        echo "build.sh: Debian's Rust toolchain for wasm is missing; install it with:" >&2
        echo "  sudo apt-get install --no-install-recommends $packages" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >/dev/null
fi

# rustup's cargo usually comes first on PATH: name Debian's tools explicitly.
RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 /usr/bin/cargo build --release --quiet
cp "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/release/{{crate}}.wasm" {{name}}.wasm
echo "built {{name}}.wasm"
