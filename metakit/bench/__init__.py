"""Benchmark suites: metakit's speed and memory against peer MAML implementations."""
