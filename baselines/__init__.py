"""Supervised baselines: one module per network, each registering itself with `bench.registry.register`."""
