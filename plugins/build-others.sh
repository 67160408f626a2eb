#!/usr/bin/env bash
# Builds the three example plugins written in other languages into
# plugins/dist/: label-affinity (JavaScript), sticky (Python) and round-robin
# (C). Installs what they need when it is missing: Debian's clang and
# wasi-libc, the npm packages of plugins/label-affinity/package-lock.json, a
# venv with componentize-py in plugins/sticky/.venv, and wit-bindgen-cli and
# wasm-tools from crates.io (the first install of those takes ~15 minutes on
# 2 cores). Then it checks that each component exports alkdev:hub/routing and
# imports nothing but alkdev:hub/host and alkdev:hub/types.
#
#   bash plugins/build-others.sh            # build what is out of date
#   bash plugins/build-others.sh --force    # rebuild all three
#
# A component is out of date when it is missing or older than its plugin's
# files, the WIT package or this script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="$here/dist"
wit="$root/wit/0.2.0"
force=false
[ "${1:-}" = "--force" ] && force=true

WASM_TOOLS_VERSION=1.263.0
WIT_BINDGEN_VERSION=0.63.0
COMPONENTIZE_PY_VERSION=0.25.1
export PATH="$HOME/.cargo/bin:$PATH"
export PYTHONDONTWRITEBYTECODE=1

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
note() { echo "build-others: $*" >&2; }

# --- what the toolchains need --------------------------------------------

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
apt_missing=()
for pkg in clang lld wasi-libc libclang-rt-dev-wasm32; do
    installed "$pkg" || apt_missing+=("$pkg")
done
command -v npm >/dev/null || apt_missing+=(nodejs npm)
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_missing+=(python3 python3-venv)
if [ ${#apt_missing[@]} -gt 0 ]; then
    t=$(now)
    note "installing ${apt_missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
    note "apt-get install: $(since "$t")"
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
    note "componentize-js needs Node.js 20 or later; found $(node --version)"
    exit 1
fi

crates=()
case "$(wasm-tools --version 2>/dev/null)" in
    "wasm-tools $WASM_TOOLS_VERSION"*) ;;
    *) crates+=("wasm-tools@$WASM_TOOLS_VERSION") ;;
esac
case "$(wit-bindgen --version 2>/dev/null)" in
    "wit-bindgen-cli $WIT_BINDGEN_VERSION"*) ;;
    *) crates+=("wit-bindgen-cli@$WIT_BINDGEN_VERSION") ;;
esac
if [ ${#crates[@]} -gt 0 ]; then
    t=$(now)
    note "cargo install ${crates[*]} (several minutes)"
    # A target folder outside the clone: an interrupted install resumes.
    cargo install --locked --quiet --target-dir "${ALKHUB_GUEST_TOOLS_TARGET_DIR:-/var/tmp/alkhub-guest-tools}" "${crates[@]}"
    note "cargo install: $(since "$t")"
fi

(
    cd "$here/label-affinity"
    # npm ci rewrites node_modules/.package-lock.json, so this runs again
    # only when the lock file changed.
    if [ ! -x node_modules/.bin/componentize-js ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
        t=$(now)
        note "npm ci in plugins/label-affinity"
        npm ci --no-audit --no-fund --loglevel=error >/dev/null
        note "npm ci: $(since "$t")"
    fi
)

(
    cd "$here/sticky"
    if [ "$(.venv/bin/componentize-py --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
        t=$(now)
        note "creating plugins/sticky/.venv with componentize-py $COMPONENTIZE_PY_VERSION"
        python3 -m venv --clear .venv
        .venv/bin/pip install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
        note "venv: $(since "$t")"
    fi
)

# --- the builds ----------------------------------------------------------

mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# stale NAME: true when dist/NAME.wasm is missing or older than an input.
stale() {
    local target="$out/$1.wasm"
    $force && return 0
    [ -e "$target" ] || return 0
    [ -n "$(find "$here/$1" "$wit" "$here/build-others.sh" \
        \( -name node_modules -o -name .venv -o -name gen -o -name __pycache__ \) -prune \
        -o -type f -newer "$target" -print -quit)" ]
}

# check FILE VERSION: the component exports alkdev:hub/routing@VERSION and
# imports nothing but the hub's own interfaces of that version.
check() {
    local file="$1" version="$2" wit_text bad
    wit_text="$(wasm-tools component wit "$file")"
    if ! grep -qx "  export alkdev:hub/routing@$version;" <<<"$wit_text"; then
        note "$name.wasm does not export alkdev:hub/routing@$version"
        return 1
    fi
    bad="$(grep -E '^  import ' <<<"$wit_text" \
        | grep -vxE "  import alkdev:hub/(host|types|call-details)@${version//./\\.};" || true)"
    if [ -n "$bad" ]; then
        note "$name.wasm imports more than the hub's interfaces: $bad"
        return 1
    fi
}

# build NAME VERSION COMMAND...: builds dist/NAME.wasm against alkdev:hub@VERSION.
build() {
    local name="$1" version="$2" t
    shift 2
    if ! stale "$name"; then
        note "$name.wasm is up to date"
        return
    fi
    t=$(now)
    (cd "$here/$name" && "$@")
    check "$tmp/$name.wasm" "$version"
    mv "$tmp/$name.wasm" "$out/$name.wasm"
    note "$name.wasm built in $(since "$t") ($(stat -c %s "$out/$name.wasm") bytes)"
}

# stamp FILE TOOLCHAIN INPUT...: records in FILE (custom section
# `alkhub:source`) a digest of TOOLCHAIN and of the INPUT files (paths
# relative to the repository), so that the hub treats every build of the
# same source as one version although componentize-js and componentize-py
# write different bytes each time (see docs/plugins/authoring.md).
stamp() {
    (cd "$root" && python3 - "$@" <<'STAMP'
import hashlib, sys

file, toolchain, inputs = sys.argv[1], sys.argv[2], sorted(sys.argv[3:])
digest = hashlib.sha256(f"{toolchain}\0".encode())
for path in inputs:
    data = open(path, "rb").read()
    digest.update(f"{path}\0{len(data)}\0".encode() + data)


def leb(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


name = b"alkhub:source"
body = leb(len(name)) + name + f"sha256:{digest.hexdigest()}".encode()
with open(file, "ab") as out:
    out.write(b"\0" + leb(len(body)) + body)
STAMP
    )
}

build_label_affinity() {
    node_modules/.bin/componentize-js label-affinity.js -w "$wit" -n routing-plugin \
        -d stdio -d random -d clocks -d http -d fetch-event -o "$tmp/label-affinity.wasm" >/dev/null
    stamp "$tmp/label-affinity.wasm" "" plugins/label-affinity/{label-affinity.js,policy.js,package-lock.json} \
        wit/0.2.0/hub.wit
}

build_sticky() {
    .venv/bin/componentize-py -q -d "$wit" -w routing-plugin componentize --stub-wasi app \
        -o "$tmp/sticky.wasm"
    stamp "$tmp/sticky.wasm" "componentize-py $COMPONENTIZE_PY_VERSION" plugins/sticky/{app.py,policy.py} \
        wit/0.2.0/hub.wit
}

build_round_robin() {
    rm -rf gen
    # wit-bindgen reports each file it writes on stderr; keep only the rest.
    wit-bindgen c "$wit" --world routing-plugin --out-dir gen 2>"$tmp/wit-bindgen.log" \
        || { cat "$tmp/wit-bindgen.log" >&2; return 1; }
    clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Wl,--strip-all -Igen \
        -o gen/round-robin.core.wasm round-robin.c gen/routing_plugin.c gen/routing_plugin_component_type.o
    wasm-tools component new gen/round-robin.core.wasm -o "$tmp/round-robin.wasm"
}

build label-affinity 0.2.0 build_label_affinity
build sticky 0.2.0 build_sticky
build round-robin 0.2.0 build_round_robin
ls -l "$out"/label-affinity.wasm "$out"/sticky.wasm "$out"/round-robin.wasm
