// alkhub remap plugin "{{name}}": the component's entry point. The policy is
// in policy.js, apart from the hub's imports, so that `npm test` can try it
// under plain Node.js (policy.test.js).
//
// `remap` is called once per operation a provider declares and returns the
// id (namespace and name) callers will see. `docs/plugins/authoring.md` in
// the hub describes every field.
//
// To refuse a declaration, throw a string (`throw 'why'`): the provider sees
// the reason in the `rejected` list of its answer.
import { remap as decide } from './policy.js';

export const remap = {
  remap(provider, op) {
    return decide(provider, op);
  },
};
