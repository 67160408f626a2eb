// The policy of alkhub routing plugin "{{name}}", without the hub's imports.
//
// This one does round robin: the hub numbers the calls of each operation
// (`call.sequence`, a BigInt), so call n goes to candidate n % len and the
// plugin keeps no state. Replace it with yours and keep policy.test.js true.

export function choose(call, candidates) {
  // The hub never passes an empty list; refusing keeps `%` safe anyway.
  if (candidates.length === 0) {
    return { tag: 'refuse', val: '{{name}}: no candidates' };
  }
  return { tag: 'choose', val: Number(call.sequence % BigInt(candidates.length)) };
}
