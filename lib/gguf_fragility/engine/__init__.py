"""llama.cpp behind a small typed interface, and GGUF file reading."""
