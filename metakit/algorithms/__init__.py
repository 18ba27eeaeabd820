"""Algorithms: the Algorithm interface and the built-in meta-learners."""
