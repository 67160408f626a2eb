"""Tests of the policy under plain CPython: python3 -m unittest"""

import unittest

import policy


class KeepIds(unittest.TestCase):
    def test_a_declared_id_is_kept(self):
        self.assertEqual(policy.remap("devbox", "dev.fs", "read"), ("dev.fs", "read"))


if __name__ == "__main__":
    unittest.main()
