"""alkhub routing plugin "{{name}}": the component's entry point. The policy
is in policy.py, apart from the hub's imports, so that it can be tried under
plain CPython: python3 -m unittest (test_policy.py).

`choose` is called once per call that has more than one candidate and
returns which candidate serves it. `docs/plugins/authoring.md` in the hub
describes every field. The call's strings (operation id, caller, metadata,
the candidates' ids and labels) are not in the arguments: ask
`wit_world.imports.call_details` for the ones the policy needs here, e.g.
`call_details.metadata("user")`, and hand them to the policy.
"""

import wit_world
from wit_world.exports import routing
from wit_world.imports import host

import policy


class Routing(wit_world.exports.Routing):
    def choose(self, call: routing.Call, candidates) -> routing.Decision:
        try:
            chosen = policy.choose(call.sequence, len(candidates))
        except Exception as e:
            # The exception ends the decision; its text goes to the hub's
            # log, `GET /v1/plugins` (`lastMessage`) and the refused caller.
            host.log(host.Level.ERROR, f"{type(e).__name__}: {e}")
            raise
        if chosen is None:
            return routing.Decision_Refuse("{{name}}: no candidates")
        return routing.Decision_Choose(chosen)
