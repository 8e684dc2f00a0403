"""Benchmarks against the local test bed; each module runs as ``python -m bench.NAME``."""
