"""Run profiles (``params/<name>.yaml``): which models, rungs, probe families and sizes.

A profile overrides only what differs from the defaults below. Unknown keys and
wrong types fail loudly (nanoGPT's ``configurator.py`` habit), naming the file and field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import paths


class ProfileError(ValueError):
    """A params profile that is missing, malformed or mistyped."""


@dataclass(frozen=True)
class EngineParams:
    """How every model is loaded (same for every rung, so rungs stay comparable)."""

    n_ctx: int = 2048  # tokens
    n_threads: int | None = None  # None = all cores
    n_gpu_layers: int = 0  # -1 = offload everything (CUDA build)
    n_batch: int = 512  # tokens per llama_decode
    seed: int = 0


@dataclass(frozen=True)
class ModelRun:
    """One model in a profile."""

    rungs: tuple[str, ...] = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")
    n_items: int | None = None  # per family; None = the profile's n_items
    families: tuple[str, ...] = ()  # empty = the profile's families


@dataclass(frozen=True)
class Profile:
    """A whole run."""

    name: str
    models: dict[str, ModelRun]
    families: tuple[str, ...] = ()  # empty = every family in data/probes/manifest.json
    n_items: int = 20  # items per family
    family_items_cap: dict[str, int] = field(default_factory=dict)  # fewer items for costly families
    seed: int = 0  # item sampling and bootstrap
    engine: EngineParams = field(default_factory=EngineParams)
    min_usable: int = 5  # usable items a family needs to be measured (per model)
    min_families: int = 5  # measurable families a model needs before its sweep runs
    margin_threshold: float = 0.5  # nats: gold margin for a log-likelihood item to be usable
    shift_passages: int = 8  # Wikipedia passages for the KL-divergence text sample
    shift_tokens: int = 256  # tokens per passage
    shift_top_k: int = 32  # reference log-probs stored per position
    n_boot: int = 10_000  # paired bootstrap resamples
    correction: str = "holm"  # "holm" | "fdr_bh"
    scheduler: str | None = None  # None = cells in-process; "local:N" = LocalCluster; else an address

    def items_for(self, model: str, family: str | None = None) -> int:
        """Items of one family (or the base count) for one model; caps apply per family."""
        base = self.models[model].n_items or self.n_items
        return min(base, self.family_items_cap.get(family, base))

    def families_for(self, model: str) -> tuple[str, ...]:
        """Probe families for one model (empty = every family of the frozen battery)."""
        return self.models[model].families or self.families


def _check(value, typ, where: str):
    """Coerce/check ``value`` against a dataclass field type; errors name ``where``."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(typ)
        if value is None and type(None) in options:
            return None
        return _check(value, next(t for t in options if t is not type(None)), where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ProfileError(f"{where}: expected a list, got {value!r}")
        return tuple(_check(v, typing.get_args(typ)[0], f"{where}[{i}]")
                     for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ProfileError(f"{where}: expected a mapping, got {value!r}")
        _, vt = typing.get_args(typ)
        return {k: _check(v, vt, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(typ):
        return _build(typ, value or {}, where)
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ProfileError(f"{where}: expected {typ.__name__}, got {value!r} "
                           f"({type(value).__name__})")
    return value


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    kwargs = {k: _check(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ProfileError(f"{where}: {exc}") from exc


def load_profile(name_or_path: str | Path) -> Profile:
    """Load ``params/<name>.yaml`` (or a path) into a checked :class:`Profile`.

    Raises
    ------
    ProfileError
        Missing file, YAML syntax error, unknown key, wrong type, unknown rung name.
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = paths.PROFILES / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in paths.PROFILES.glob("*.yaml") if p.stem != "models")
        raise ProfileError(f"params profile {path} not found; known profiles: {', '.join(known)}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or "models" not in data:
        raise ProfileError(f"{path}: expected a mapping with at least 'models:'")
    data.setdefault("name", path.stem)
    profile = _build(Profile, data, str(path))
    from .ladder import ftype  # late import: ladder imports llama_cpp

    for key, run in profile.models.items():
        for rung in run.rungs:
            try:
                ftype(rung)
            except ValueError as exc:
                raise ProfileError(f"{path}: models.{key}.rungs: {exc}") from exc
        if "F16" not in run.rungs:
            raise ProfileError(f"{path}: models.{key}.rungs must include the reference 'F16'")
    if profile.correction not in ("holm", "fdr_bh"):
        raise ProfileError(f"{path}: correction must be 'holm' or 'fdr_bh', got "
                           f"{profile.correction!r}")
    if profile.scheduler is not None:
        from .cluster import local_workers

        try:
            local_workers(profile.scheduler)
        except ValueError as exc:
            raise ProfileError(f"{path}: {exc}") from exc
    return profile


def as_dict(profile: Profile) -> dict:
    """The resolved profile as plain data (stored next to results)."""
    return dataclasses.asdict(profile)
