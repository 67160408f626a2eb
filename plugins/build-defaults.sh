#!/usr/bin/env bash
# Builds the two default plugins (Rust, no WASI) reproducibly into
# plugins/dist/. Needs Debian's Rust toolchain for wasm (see
# docs/plugins/authoring.md); installs it when missing.
#
#   bash plugins/build-defaults.sh            # build
#   bash plugins/build-defaults.sh --check    # build elsewhere, fail if dist/ differs
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/dist"
check=false
[ "${1:-}" = "--check" ] && check=true

if [ ! -x /usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld ] || [ ! -x /usr/lib/llvm-22/bin/wasm-ld ] \
    || ! command -v /usr/bin/rustc >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        rustc-web cargo-web rust-web-src rust-web-llvm lld-22
fi

target="${ALKHUB_GUEST_TARGET_DIR:-$here/target}"
build_dir="$out"
if $check; then build_dir="$(mktemp -d)"; fi
mkdir -p "$build_dir"

for name in rule-remap least-in-flight; do
    (
        cd "$here/$name"
        # Paths must not leak into the output: remap the source and the
        # registry, so any checkout on any machine builds the same bytes.
        # The linker is named: wasm-component-ld otherwise takes whichever
        # `wasm-ld` is first on PATH, and Debian's `lld` (installed for the
        # C plugins) puts LLVM 14's there, which links other bytes.
        RUSTFLAGS="--remap-path-prefix=$here=/plugins --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo -C link-arg=--wasm-ld-path=/usr/lib/llvm-22/bin/wasm-ld" \
        RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$target" \
            /usr/bin/cargo build --release --locked --quiet
    )
    cp "$target/wasm32-unknown-unknown/release/${name//-/_}.wasm" "$build_dir/$name.wasm"
done

if $check; then
    status=0
    for name in rule-remap least-in-flight; do
        if ! cmp -s "$build_dir/$name.wasm" "$out/$name.wasm"; then
            echo "plugins/dist/$name.wasm differs from a build of plugins/$name: rebuild with plugins/build-defaults.sh and commit" >&2
            status=1
        fi
    done
    rm -rf "$build_dir"
    exit $status
fi
ls -l "$out"/rule-remap.wasm "$out"/least-in-flight.wasm
