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

# componentize-py writes different bytes on every build of the same source,
# and the hub would compile each build again (~10 s). So the build records
# a digest of what it was built from (the sources, the WIT and the
# toolchain's version) in a custom section, `alkhub:source`: the hub treats
# components with the same record as one version.
python3 - {{name}}.wasm "$version" <<'STAMP'
import hashlib, pathlib, sys

inputs = sorted(
    [p for p in pathlib.Path(".").glob("*.py") if not p.name.startswith("test_")]
    + list(pathlib.Path("wit").glob("*.wit"))
)
digest = hashlib.sha256(f"componentize-py {sys.argv[2]}\0".encode())
for p in inputs:
    data = p.read_bytes()
    digest.update(f"{p}\0{len(data)}\0".encode() + data)


def leb(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


name = b"alkhub:source"
body = leb(len(name)) + name + f"sha256:{digest.hexdigest()}".encode()
with open(sys.argv[1], "ab") as out:
    out.write(b"\0" + leb(len(body)) + body)
STAMP
echo "built {{name}}.wasm"
