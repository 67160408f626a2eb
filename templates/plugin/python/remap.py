"""alkhub remap plugin "{{name}}": the component's entry point. The policy
is in policy.py, apart from the hub's imports, so that it can be tried under
plain CPython: python3 -m unittest (test_policy.py).

`remap` is called once per operation a provider declares and returns the id
(namespace and name) callers will see. `docs/plugins/authoring.md` in the
hub describes every field.
"""

import componentize_py_types
import wit_world
from wit_world.exports import remap
from wit_world.imports import host

import policy


class Remap(wit_world.exports.Remap):
    def remap(self, provider: remap.Provider, op: remap.Declared) -> remap.Mapped:
        try:
            namespace, name = policy.remap(provider.id, op.namespace, op.name)
        except policy.Refused as refused:
            # The provider sees the reason in the `rejected` list of its answer.
            raise componentize_py_types.Err(str(refused))
        except Exception as e:
            # The exception ends the decision; its text goes to the hub's
            # log, `GET /v1/plugins` (`lastMessage`) and the refusal.
            host.log(host.Level.ERROR, f"{type(e).__name__}: {e}")
            raise
        return remap.Mapped(namespace=namespace, name=name)
