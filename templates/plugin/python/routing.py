"""alkhub routing plugin "{{name}}".

`choose` is called once per call that has more than one candidate and
returns which candidate serves it. This skeleton does round robin: the hub
numbers the calls of each operation (`call.sequence`), so call n goes to
candidate n % len and the plugin keeps no state. Replace the body with your
policy; `docs/plugins/authoring.md` in the hub describes every field.
The call's strings (operation id, caller, metadata, the candidates' ids and
labels) are not in the arguments: ask `wit_world.imports.call_details` for
the ones the policy needs, e.g. `call_details.metadata("user")`.
"""

import wit_world
from wit_world.exports import routing
from wit_world.imports import host


class Routing(wit_world.exports.Routing):
    def choose(self, call: routing.Call, candidates) -> routing.Decision:
        # The hub never passes an empty list; refusing keeps `%` safe anyway.
        if not candidates:
            host.log(host.Level.ERROR, "no candidates")
            return routing.Decision_Refuse("{{name}}: no candidates")
        return routing.Decision_Choose(call.sequence % len(candidates))
