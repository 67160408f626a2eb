"""Sticky routing by rendezvous (highest-random-weight) hashing: the pure
policy, with no imports from the component, so it runs under plain CPython
too (see test_policy.py).

A call carrying the metadata key goes to the candidate whose provider id
gives the highest weight(value, provider id). Every provider's weight for a
value is independent of the others, so the same value keeps going to the same
provider while it is there, and when a provider leaves only the values it
held move (each to its own runner-up); when one joins, it takes only the
values for which it now weighs highest.
"""

import json

DEFAULT_KEY = "affinity"

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK = 0xFFFFFFFFFFFFFFFF


def fnv1a64(data: bytes) -> int:
    """FNV-1a, 64 bits."""
    h = FNV_OFFSET
    for byte in data:
        h ^= byte
        h = (h * FNV_PRIME) & MASK
    return h


def mix64(h: int) -> int:
    """The SplitMix64 finalizer. FNV-1a alone mixes the last bytes (here
    the provider id) poorly into the high bits, which skews which provider
    wins; this spreads them evenly. It is a bijection, so it adds no
    collisions."""
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & MASK
    return h ^ (h >> 31)


def weight(value: str, provider_id: str) -> int:
    """The weight of `provider_id` for the metadata value `value`:
    mix64(fnv1a64(utf8(value) + 0xFF + utf8(provider_id))). 0xFF never
    occurs in UTF-8, so distinct pairs never hash the same bytes."""
    return mix64(fnv1a64(value.encode("utf-8") + b"\xff" + provider_id.encode("utf-8")))


def parse_settings(text: str):
    """Returns (key, warnings). A malformed setting is reported and replaced
    by its default, never fatal."""
    warnings = []
    try:
        raw = json.loads(text) if text else {}
    except ValueError as e:
        warnings.append(f"settings are not valid JSON ({e}); using the defaults")
        raw = {}
    if not isinstance(raw, dict):
        warnings.append("settings are not a JSON object; using the defaults")
        raw = {}
    key = DEFAULT_KEY
    if raw.get("key") is not None:
        if isinstance(raw["key"], str) and raw["key"]:
            key = raw["key"]
        else:
            warnings.append(f'"key" must be a non-empty string; using "{DEFAULT_KEY}"')
    for name in raw:
        if name != "key":
            warnings.append(f'unknown setting "{name}" ignored')
    return key, warnings


def least_in_flight(candidates) -> int:
    """The index of the candidate with the fewest calls in flight; the
    lowest index on ties."""
    best = 0
    for i, c in enumerate(candidates):
        if c.in_flight < candidates[best].in_flight:
            best = i
    return best


def choose(metadata, candidates, key: str) -> int:
    """The index of the chosen candidate. `metadata` is a list of labels
    (`.key`, `.value`); candidates have `.provider_id` and `.in_flight`."""
    value = None
    for label in metadata:
        if label.key == key:
            value = label.value
            break
    if value is None:
        return least_in_flight(candidates)
    best = 0
    best_weight = -1
    weights = {}
    for i, c in enumerate(candidates):
        # Keyed by provider id: two registrations of one provider weigh the
        # same, and then the less busy one serves (the lower index on ties).
        w = weights.get(c.provider_id)
        if w is None:
            w = weights[c.provider_id] = weight(value, c.provider_id)
        if w > best_weight or (w == best_weight and c.in_flight < candidates[best].in_flight):
            best = i
            best_weight = w
    return best
