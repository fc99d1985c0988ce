"""The model registry (``params/models.yaml``) as data: every model a profile may name.

Reading and checking it needs only YAML, so a profile is validated against it before any
notebook runs (and where llama.cpp is not installed). Each entry's ``source:`` block is
parsed by its kind's class in :data:`gguf_fragility.sources.SOURCES`; obtaining the files is
:mod:`gguf_fragility.ladder.models`. Tests point ``GGUF_FRAGILITY_REGISTRY`` at their own file
(:func:`gguf_fragility.paths.registry`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import yaml

from gguf_fragility import paths
from gguf_fragility.errors import ProblemsError
from gguf_fragility.sources import SOURCES, ModelSource

SHA256 = re.compile(r"[0-9a-f]{64}")


class RegistryError(ProblemsError):
    """A model key or registry entry that cannot be used; one line per problem."""


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry."""

    key: str
    family: str
    display: str
    licence: str
    source: ModelSource  # where the file comes from (a class of SOURCES)
    sha256: str | None = None

    @property
    def kind(self) -> str:
        """The source kind (a key of :data:`gguf_fragility.sources.SOURCES`)."""
        return self.source.kind


_REQUIRED = {"family": str, "display": str, "licence": str, "source": dict}


def check_sha256(value, where: str) -> list[str]:
    """Problems with a pinned hash: it must be null or a 64-digit lowercase hex *string*.

    YAML reads an unquoted all-digit hash such as ``000…0`` as an integer (and some as
    floats), which would silently never match; such values are refused with advice to quote.
    """
    if value is None:
        return []
    if not isinstance(value, str):
        return [f"{where}: {value!r} is a YAML {type(value).__name__}, not a hash string; "
                "write the 64 hex digits in double quotes (sha256: \"...\") or null"]
    if not SHA256.fullmatch(value):
        return [f"{where}: {value!r} is not a sha256 (64 lowercase hex digits); "
                "write the hash in double quotes, or null to record it on first use"]
    return []


def _entry(key, entry, where: str) -> tuple[ModelSpec | None, list[str]]:
    """One entry's spec (None if unusable) and its problems."""
    if not isinstance(entry, dict):
        return None, [f"{where}: expected a mapping, got {type(entry).__name__}"]
    problems = [f"{where}.{field}: missing or not a {typ.__name__} (got {entry.get(field)!r})"
                for field, typ in _REQUIRED.items() if not isinstance(entry.get(field), typ)]
    if problems:
        return None, problems
    src = entry["source"]
    kind = src.get("kind")
    problems = check_sha256(src.get("sha256"), f"{where}.source.sha256")
    if not isinstance(kind, str) or kind not in SOURCES:
        known = ", ".join(repr(k) for k in SOURCES)
        return None, problems + [f"{where}.source.kind: {kind!r} is not one of {known}"]
    source, bad = SOURCES[kind].parse(src, where)
    problems += bad
    if source is None or problems:
        return None, problems
    return ModelSpec(str(key), entry["family"], entry["display"], entry["licence"], source,
                     src.get("sha256")), problems


class RegistryRead(NamedTuple):
    """Result of :func:`read_registry`."""

    specs: dict[str, ModelSpec]  # the usable entries
    keys: tuple[str, ...]  # every key, usable or not
    problems: list[str]  # one line each, naming file, key and value (the file's, then entries')
    entry_problems: dict[str, list[str]]  # the problems of each bad entry, by key

    def problems_of(self, keys) -> list[str]:
        """The problems that matter to a user of ``keys``: the file's own (unreadable, no
        ``models:``) and those of these entries; other bad entries do not block them."""
        if not self.keys:  # the file is unreadable, or has no entries: its problems are all
            return self.problems
        return [p for k in keys for p in self.entry_problems.get(str(k), [])]


def read_registry(path: Path | None = None) -> RegistryRead:
    """Every entry of the registry and every problem in it, without raising on bad entries."""
    path = paths.registry() if path is None else Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        return RegistryRead({}, (), [f"cannot read model registry {path}: "
                                     f"{' '.join(str(exc).split())}"], {})
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        return RegistryRead({}, (), [f"{path}: expected a top-level 'models:' mapping"], {})
    specs, problems, by_key = {}, [], {}
    for key, entry in doc["models"].items():
        spec, bad = _entry(key, entry, f"{path}: models.{key}")
        problems += bad
        if bad:
            by_key[str(key)] = bad
        if spec is not None:
            specs[str(key)] = spec
    return RegistryRead(specs, tuple(str(k) for k in doc["models"]), problems, by_key)


def load_registry(path: Path | None = None) -> dict[str, ModelSpec]:
    """
    Read and validate the registry.

    Parameters
    ----------
    path : Path, optional
        Default :func:`gguf_fragility.paths.registry` (``params/models.yaml``).

    Returns
    -------
    dict of str to ModelSpec

    Raises
    ------
    RegistryError
        Listing every problem of every entry, one line each, naming file, key and value.
    """
    read = read_registry(path)
    if read.problems:
        raise RegistryError(read.problems)
    return read.specs


def get_spec(key: str, registry: dict[str, ModelSpec] | None = None) -> ModelSpec:
    """The registry entry for ``key``, or an error listing the known keys.

    Without ``registry``, ``params/models.yaml`` is read and only ``key``'s entry (and the
    file as a whole) must be valid: a bad entry of another model does not block this one.
    """
    if registry is None:
        read = read_registry()
        if read.problems_of([key]):
            raise RegistryError(read.problems_of([key]))
        registry = read.specs
    if key not in registry:
        raise RegistryError(f"model key {key!r} is not in {paths.registry()}; known keys: "
                            f"{', '.join(sorted(registry))}. Add an entry (see the comments there).")
    return registry[key]
