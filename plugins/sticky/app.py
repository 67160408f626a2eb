"""alkhub routing plugin "sticky": the component's entry point. The policy
is in policy.py; see README.md."""

import wit_world
from wit_world.exports import routing
from wit_world.imports import call_details, host

import policy

# Parsed once per distinct configuration string (the hub may hand a warm
# instance a new configuration); warnings are logged once, not every call.
_cached_json = None
_cached_key = policy.DEFAULT_KEY


def _key() -> str:
    global _cached_json, _cached_key
    text = host.config()
    if text != _cached_json:
        key, warnings = policy.parse_settings(text)
        for warning in warnings:
            host.log(host.Level.WARN, warning)
        _cached_json, _cached_key = text, key
    return _cached_key


class _Candidate:
    """A candidate with its provider id, which the hub hands over on request
    (alkdev:hub/call-details)."""

    def __init__(self, index: int, candidate):
        self.provider_id = call_details.provider_id(index)
        self.in_flight = candidate.in_flight


class Routing(wit_world.exports.Routing):
    def choose(self, call: routing.Call, candidates) -> routing.Decision:
        try:
            metadata = call_details.all_metadata()
            with_ids = [_Candidate(i, c) for i, c in enumerate(candidates)]
            return routing.Decision_Choose(policy.choose(metadata, with_ids, _key()))
        except Exception as e:  # never let a bug trap the hub's call
            host.log(host.Level.ERROR, f"sticky failed ({e!r}); choosing the least busy candidate")
            return routing.Decision_Choose(policy.least_in_flight(candidates))
