"""The policy of alkhub routing plugin "{{name}}", without the hub's imports.

This one does round robin: the hub numbers the calls of each operation
(`sequence`), so call n goes to candidate n % count and the plugin keeps no
state. Replace it with yours and keep test_policy.py true.
"""


def choose(sequence: int, count: int):
    """The index of the candidate that serves call `sequence` among `count`,
    or None to refuse the call."""
    # The hub never passes an empty list; refusing keeps `%` safe anyway.
    if count == 0:
        return None
    return sequence % count
