"""Benchmarks: each prints figures and ratios, its last line one JSON object. Never timed assertions in tests."""
