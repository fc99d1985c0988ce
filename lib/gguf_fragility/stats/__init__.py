"""Paired statistics, death order, decisions and transfer (no llama.cpp)."""
