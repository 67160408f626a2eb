#!/usr/bin/env bash
# Builds {{name}}.wasm (a {{world}} plugin for alkhub) with componentize-js,
# installed from npm into node_modules/ on the first run. Needs Node.js 20.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x node_modules/.bin/componentize-js ]; then
    npm install --no-audit --no-fund --loglevel=error >/dev/null
fi
npm run --silent build >/dev/null

# componentize-js writes slightly different bytes on every build of the same
# source, and the hub would compile each build again (~10 s). So the build
# records a digest of what it was built from (the sources, the WIT and the
# locked toolchain) in a custom section, `alkhub:source`: the hub treats
# components with the same record as one version.
node --input-type=module - {{name}}.wasm <<'STAMP'
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, readdirSync, readFileSync } from 'node:fs';
const inputs = [
  ...readdirSync('.').filter((f) => f.endsWith('.js') && !f.endsWith('.test.js')),
  ...readdirSync('wit').map((f) => `wit/${f}`),
  'package.json',
  'package-lock.json',
].filter((f) => existsSync(f)).sort();
const hash = createHash('sha256');
for (const f of inputs) {
  const data = readFileSync(f);
  hash.update(`${f}\0${data.length}\0`).update(data);
}
const leb = (n) => {
  const out = [];
  do {
    out.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n >>>= 7;
  } while (n);
  return Buffer.from(out);
};
const name = Buffer.from('alkhub:source');
const body = Buffer.concat([leb(name.length), name, Buffer.from(`sha256:${hash.digest('hex')}`)]);
appendFileSync(process.argv[2], Buffer.concat([Buffer.from([0]), leb(body.length), body]));
STAMP
echo "built {{name}}.wasm"
