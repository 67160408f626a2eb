// alkhub routing plugin "{{name}}".
//
// `choose` is called once per call that has more than one candidate and
// returns which candidate serves it. This skeleton does round robin: the hub
// numbers the calls of each operation (`call.sequence`, a BigInt), so call n
// goes to candidate n % len and the plugin keeps no state. Replace the body
// with your policy; `docs/plugins/authoring.md` in the hub describes every
// field (in JavaScript they are camelCase: `inFlight`, `connectedAtMs`).
// The call's strings (operation id, caller, metadata, the candidates' ids
// and labels) are not in the arguments: import the ones the policy needs
// from 'alkdev:hub/call-details@0.2.0', e.g. `metadata('user')`.
import { log } from 'alkdev:hub/host@0.2.0';

export const routing = {
  choose(call, candidates) {
    // The hub never passes an empty list; refusing keeps `%` safe anyway.
    if (candidates.length === 0) {
      log('error', 'no candidates');
      return { tag: 'refuse', val: '{{name}}: no candidates' };
    }
    return { tag: 'choose', val: Number(call.sequence % BigInt(candidates.length)) };
  },
};
