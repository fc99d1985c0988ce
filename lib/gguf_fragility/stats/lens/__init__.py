"""The lenses: one module per lens, one line each in :mod:`~gguf_fragility.stats.lens.registry`."""
