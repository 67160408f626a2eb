"""Tests of the policy under plain CPython: python3 -m unittest"""

import unittest

import policy


class RoundRobin(unittest.TestCase):
    def test_call_n_goes_to_candidate_n_mod_count(self):
        self.assertEqual(policy.choose(5, 2), 1)
        self.assertEqual(policy.choose(6, 3), 0)

    def test_no_candidates_is_refused(self):
        self.assertIsNone(policy.choose(0, 0))


if __name__ == "__main__":
    unittest.main()
