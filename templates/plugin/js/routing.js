// alkhub routing plugin "{{name}}": the component's entry point. The policy
// is in policy.js, apart from the hub's imports, so that `npm test` can try
// it under plain Node.js (policy.test.js).
//
// `choose` is called once per call that has more than one candidate and
// returns which candidate serves it. `docs/plugins/authoring.md` in the hub
// describes every field (in JavaScript they are camelCase: `inFlight`,
// `connectedAtMs`). The call's strings (operation id, caller, metadata, the
// candidates' ids and labels) are not in the arguments: import the ones the
// policy needs from 'alkdev:hub/call-details@0.3.0', e.g. `metadata('user')`,
// here, and hand them to the policy.
import { log } from 'alkdev:hub/host@0.3.0';
import { choose } from './policy.js';

export const routing = {
  choose(call, candidates) {
    try {
      return choose(call, candidates);
    } catch (e) {
      // The exception ends the decision; its text goes to the hub's log,
      // `GET /v1/plugins` (`lastMessage`) and the refused caller.
      log('error', String(e));
      throw e;
    }
  },
};
