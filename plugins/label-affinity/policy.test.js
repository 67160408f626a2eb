// Tests of the label-affinity policy under Node (no Wasm): `npm test`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSettings, decide } from './policy.js';

const L = (o) => Object.entries(o).sort().map(([key, value]) => ({ key, value }));
const cand = (providerId, labels, inFlight) => ({
  registrationId: `r-${providerId}`, providerId, labels: L(labels), inFlight, connectedAtMs: 0n,
});
const call = (metadata) => ({
  operationId: 'a.b', type: 'query', caller: undefined, metadata: L(metadata), sequence: 0n,
});
const candidates = [
  cand('a', { region: 'us' }, 0),
  cand('b', { region: 'eu', tier: 'gold' }, 5),
  cand('c', { region: 'eu' }, 2),
  cand('d', { region: 'eu', tier: 'gold' }, 3),
];
const choose = (metadata, settings = '{}', cs = candidates) => decide(call(metadata), cs, parseSettings(settings));

test('the best match wins, then the least busy of the best', () => {
  assert.deepEqual(choose({ region: 'eu' }), { tag: 'choose', val: 2 });
  assert.deepEqual(choose({ region: 'eu', tier: 'gold' }), { tag: 'choose', val: 3 });
});

test('no match: the least busy, lowest index on ties', () => {
  assert.deepEqual(choose({}), { tag: 'choose', val: 0 });
  const even = [cand('x', {}, 1), cand('y', {}, 1)];
  assert.deepEqual(choose({ region: 'eu' }, '{}', even), { tag: 'choose', val: 0 });
});

test('only the configured keys count', () => {
  // "tier" is ignored, so b, c and d tie on region and c is the least busy.
  assert.deepEqual(choose({ region: 'eu', tier: 'gold' }, '{"keys":["region"]}'), { tag: 'choose', val: 2 });
  assert.deepEqual(choose({ region: 'us', tier: 'gold' }, '{"keys":["tier"]}'), { tag: 'choose', val: 3 });
});

test('required refuses when nothing matches, and names the labels', () => {
  const d = choose({ region: 'mars' }, '{"required":true}');
  assert.equal(d.tag, 'refuse');
  assert.equal(d.val, "no provider matches the call's labels: region=mars");
  assert.equal(choose({}, '{"keys":["tier"],"required":true}').tag, 'refuse');
  assert.deepEqual(choose({ region: 'us' }, '{"required":true}'), { tag: 'choose', val: 0 });
});

test('bad settings warn and fall back to the defaults', () => {
  for (const text of ['not json', '[1]', '{"keys":"region"}', '{"keys":[1]}', '{"required":"yes"}', '{"x":1}']) {
    const s = parseSettings(text);
    assert.ok(s.warnings.length > 0, text);
    assert.equal(s.required, false, text);
  }
  assert.deepEqual(parseSettings('{}'), { keys: null, required: false, warnings: [] });
});
