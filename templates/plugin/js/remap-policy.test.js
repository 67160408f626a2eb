// Tests of the policy under plain Node.js: npm test
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { remap } from './policy.js';

test('a declared id is kept', () => {
  const provider = { kind: 'spoke', id: 'devbox', labels: [] };
  const op = { namespace: 'dev.fs', name: 'read', type: 'query' };
  assert.deepEqual(remap(provider, op), { namespace: 'dev.fs', name: 'read' });
});
