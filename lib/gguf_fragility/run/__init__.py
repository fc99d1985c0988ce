"""Executing a profile: plans, cells, calibration, sweep, text shift, executors, pipeline."""
