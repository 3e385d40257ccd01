"""Helpers of the adversarial test suites (test_fuzz_chunks, test_hostile, test_races)."""
