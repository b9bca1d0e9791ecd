"""Compute kernels and their pure-torch references. Imports nothing of pagoda."""
