"""alkhub remap plugin "{{name}}".

`remap` is called once per operation a provider declares and returns the id
(namespace and name) callers will see. This skeleton keeps every declared id
unchanged. Replace the body with your rules; `docs/plugins/authoring.md` in
the hub describes every field.

To refuse a declaration, raise `componentize_py_types.Err("why")`: the provider
sees the reason in the `rejected` list of its answer.
"""

import wit_world
from wit_world.exports import remap


class Remap(wit_world.exports.Remap):
    def remap(self, provider: remap.Provider, op: remap.Declared) -> remap.Mapped:
        return remap.Mapped(namespace=op.namespace, name=op.name)
