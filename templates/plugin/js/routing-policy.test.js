// Tests of the policy under plain Node.js: npm test
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { choose } from './policy.js';

const idle = { inFlight: 0, connectedAtMs: 0n };

test('call n goes to candidate n % len', () => {
  assert.deepEqual(choose({ sequence: 5n }, [idle, idle]), { tag: 'choose', val: 1 });
  assert.deepEqual(choose({ sequence: 6n }, [idle, idle, idle]), { tag: 'choose', val: 0 });
});

test('no candidates is refused', () => {
  assert.equal(choose({ sequence: 0n }, []).tag, 'refuse');
});
