"""Executing a profile: cells, calibration, sweep, text shift, executors, pipeline."""
