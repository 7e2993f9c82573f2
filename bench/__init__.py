"""Benchmarks of opencode-sidecar against its alternatives, run with `scripts/bench`."""
