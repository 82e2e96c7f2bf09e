"""Benchmarks: figures only, no pass/fail. Results go to bench/results/."""
