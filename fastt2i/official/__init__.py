"""Eager transcriptions of the official code of each family: the tests' specification and the benchmarks' baseline."""
