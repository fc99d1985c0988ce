"""Charts, page prose, the site and the claim check (no llama.cpp)."""
