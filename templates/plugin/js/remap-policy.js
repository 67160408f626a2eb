// The policy of alkhub remap plugin "{{name}}", without the hub's imports.
//
// This one keeps every declared id unchanged. Replace it with your rules and
// keep policy.test.js true. Throw a string to refuse a declaration.

export function remap(provider, op) {
  return { namespace: op.namespace, name: op.name };
}
