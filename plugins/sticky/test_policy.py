"""Tests of the sticky policy under plain CPython (no Wasm):
python3 -m unittest discover -s plugins/sticky -p 'test_*.py'"""

import collections
import unittest
from types import SimpleNamespace as N

import policy


def label(key, value):
    return N(key=key, value=value)


def cand(provider_id, in_flight=0, registration_id=None):
    return N(provider_id=provider_id, in_flight=in_flight,
             registration_id=registration_id or "r-" + provider_id, labels=[])


def pick(value, candidates, key="affinity"):
    return candidates[policy.choose([label(key, value)], candidates, key)].provider_id


class Hash(unittest.TestCase):
    def test_fnv1a64_known_answers(self):
        self.assertEqual(policy.fnv1a64(b""), 0xCBF29CE484222325)
        self.assertEqual(policy.fnv1a64(b"a"), 0xAF63DC4C8601EC8C)
        self.assertEqual(policy.fnv1a64(b"foobar"), 0x85944171F73967E8)

    def test_weight_is_fixed(self):
        # Pinned so that a change of the hash, which would move every key,
        # is a deliberate one.
        self.assertEqual(policy.weight("user-1", "devbox"), 0xBB23933CC18F06E2)
        self.assertNotEqual(policy.weight("ab", "c"), policy.weight("a", "bc"))


class Choose(unittest.TestCase):
    providers = ["p%d" % i for i in range(5)]
    values = ["user-%d" % i for i in range(2000)]

    def test_same_key_same_provider_whatever_the_order_and_load(self):
        a = [cand(p, i) for i, p in enumerate(self.providers)]
        b = [cand(p, 10 - i, "other-" + p) for i, p in reversed(list(enumerate(self.providers)))]
        for v in self.values:
            self.assertEqual(pick(v, a), pick(v, b))

    def test_only_the_departed_providers_keys_move(self):
        before = {v: pick(v, [cand(p) for p in self.providers]) for v in self.values}
        gone = "p2"
        after = {v: pick(v, [cand(p) for p in self.providers if p != gone]) for v in self.values}
        for v in self.values:
            if before[v] != gone:
                self.assertEqual(before[v], after[v], v)
        self.assertTrue(any(before[v] == gone for v in self.values))

    def test_a_new_provider_takes_keys_only_for_itself(self):
        before = {v: pick(v, [cand(p) for p in self.providers]) for v in self.values}
        after = {v: pick(v, [cand(p) for p in self.providers + ["new"]]) for v in self.values}
        moved = [v for v in self.values if before[v] != after[v]]
        self.assertTrue(moved)
        self.assertTrue(all(after[v] == "new" for v in moved))

    def test_spread_is_even(self):
        counts = collections.Counter(pick(v, [cand(p) for p in self.providers]) for v in self.values)
        share = len(self.values) / len(self.providers)
        for p in self.providers:
            self.assertLess(abs(counts[p] - share), share * 0.2, counts)

    def test_two_registrations_of_one_provider_the_less_busy_serves(self):
        cs = [cand("x", 3, "r1"), cand("x", 1, "r2"), cand("x", 1, "r3")]
        self.assertEqual(policy.choose([label("affinity", "k")], cs, "affinity"), 1)

    def test_without_the_key_least_in_flight_lowest_index(self):
        cs = [cand("a", 2), cand("b", 1), cand("c", 1)]
        self.assertEqual(policy.choose([label("other", "k")], cs, "affinity"), 1)
        self.assertEqual(policy.choose([], [cand("a", 0), cand("b", 0)], "affinity"), 0)

    def test_the_configured_key(self):
        cs = [cand(p) for p in self.providers]
        md = [label("affinity", "zzz"), label("tenant", "user-7")]
        self.assertEqual(cs[policy.choose(md, cs, "tenant")].provider_id, pick("user-7", cs))


class Settings(unittest.TestCase):
    def test_defaults_and_key(self):
        self.assertEqual(policy.parse_settings("{}"), ("affinity", []))
        self.assertEqual(policy.parse_settings(""), ("affinity", []))
        self.assertEqual(policy.parse_settings('{"key": "tenant"}'), ("tenant", []))

    def test_bad_settings_warn_and_default(self):
        for text in ['{"key": 5}', '{"key": ""}', "[1]", "not json", '{"kye": "x"}']:
            key, warnings = policy.parse_settings(text)
            self.assertEqual(key, "affinity", text)
            self.assertTrue(warnings, text)


if __name__ == "__main__":
    unittest.main()
