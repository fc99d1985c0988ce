"""Model sources, F16 references and quantized rungs."""
