"""Self-supervised methods: one module per method, each registering itself with `bench.registry.register`."""
