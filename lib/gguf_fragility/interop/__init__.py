"""Interoperability with other evaluation tools: lm-evaluation-harness samples in and out."""
