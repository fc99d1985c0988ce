"""gguf-fragility: a reproducible quantization autopsy for GGUF language models.

Modules, one per pipeline stage: ``paths`` (every path), ``params`` (run profiles),
``models`` (registry, fetching), ``gguf_io`` (GGUF checks, census, F16 reference),
``ladder`` (quantizing rungs), ``infer`` (llama.cpp engine), ``probes``/``scorers``/``evaluate``
(capability probes), ``stats`` (paired statistics), ``store`` (atomic writes, provenance),
``pipeline`` (papermill orchestration).
"""

__version__ = "0.1.0"
