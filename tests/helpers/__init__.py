"""Helpers of the tests and benchmarks (import as `tests.helpers.<module>` from the repository root)."""
