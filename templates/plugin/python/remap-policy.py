"""The policy of alkhub remap plugin "{{name}}", without the hub's imports.

This one keeps every declared id unchanged. Replace it with your rules and
keep test_policy.py true.
"""


class Refused(Exception):
    """Raise it to refuse a declaration; its text is the reason the provider
    sees."""


def remap(provider_id: str, namespace: str, name: str):
    """The (namespace, name) callers will see for operation `namespace.name`
    declared by `provider_id`."""
    return namespace, name
