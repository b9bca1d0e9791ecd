"""Benchmarks behind ``pagoda bench``: offline throughput and latency."""
