// alkhub remap plugin "{{name}}".
//
// `remap` is called once per operation a provider declares and returns the
// id (namespace and name) callers will see. This skeleton keeps every
// declared id unchanged. Replace the body with your rules;
// `docs/plugins/authoring.md` in the hub describes every field.
//
// To refuse a declaration, throw: `throw 'why'` (a string). The provider
// sees the reason in the `rejected` list of its answer.

export const remap = {
  remap(provider, op) {
    return { namespace: op.namespace, name: op.name };
  },
};
