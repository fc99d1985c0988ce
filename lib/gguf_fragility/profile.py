"""Run profiles (``params/<name>.yaml``): which models, rungs, probe families and sizes.

A profile overrides only what differs from the defaults below. Unknown keys and
wrong types fail loudly (nanoGPT's ``configurator.py`` habit), naming the file and field.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gguf_fragility import paths
from gguf_fragility.engine.ftypes import ftype
from gguf_fragility.layout import RunLayout, outputs_root

DEFAULT_RUNGS = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")
# The reference re-run with other batch shapes (a pseudo-rung of every model when
# ``noise_floor`` is on): same weights, different floating-point paths. Its flips and margin
# changes are the noise floor the other rungs are tested against.
NOISE_FLOOR = "F16-floor"


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

    rungs: tuple[str, ...] = DEFAULT_RUNGS
    n_items: int | None = None  # per family; None = the profile's n_items
    families: tuple[str, ...] = ()  # empty = the profile's families
    noise_floor: bool | None = None  # None = the profile's noise_floor


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
    sanity_prompt: str = "Two plus two equals"  # 01_ladder: raw-text prompt every rung completes
    sanity_max_tokens: int = 8  # 01_ladder: tokens of that completion
    demo_items: int = 5  # 02_probes: items per family answered by the reference in the demo
    shift_passages: int = 8  # Wikipedia passages for the KL-divergence text sample
    shift_tokens: int = 256  # tokens per passage
    shift_top_k: int = 32  # reference log-probs stored per position
    n_boot: int = 10_000  # bootstrap resamples (paired differences, ranks, transfer)
    correction: str = "holm"  # "holm": fixed sequence per family, Holm across families (graph)
    mcnemar: str = "exact"  # "exact" | "midp"
    alpha: float = 0.05  # test level; intervals are (1 - alpha)
    equivalence_margin: float = 0.05  # correctness, fidelity: "equivalent" if the interval is in ±this
    margin_equivalence_nats: float = 0.1  # margin lens: same, mean change in nats
    design_discordance: float = 0.2  # share of items expected to change answer (planned MDE)
    target_mde: float | None = None  # planner: items each family needs to detect this loss
    noise_floor: bool = True  # sweep the reference again under other batch shapes (NOISE_FLOOR)
    budgets_gib: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)  # memory budgets of the recommendations
    transfer_min_usable: int = 1  # items a family needs on both models to be compared (all items count)
    scheduler: str | None = None  # None = cells in-process; "local:N" = LocalCluster; else an address
    allow_unisolated_code: bool = False  # True = run model code unsandboxed where no bwrap/unshare
    outputs: str | None = None  # folder of outputs/<profile>; None: $GGUF_FRAGILITY_OUTPUTS or ./outputs

    @property
    def layout(self) -> RunLayout:
        """Where this run's files live (fixed when the profile was loaded)."""
        return RunLayout.of(self.name, self.outputs)

    def items_for(self, model: str, family: str | None = None) -> int:
        """Items of one family (or the base count) for one model; caps apply per family."""
        base = self.models[model].n_items or self.n_items
        return min(base, self.family_items_cap.get(family, base))

    def noise_floor_for(self, model: str) -> bool:
        """Whether the model's reference is swept again as the noise floor (NOISE_FLOOR)."""
        own = self.models[model].noise_floor
        return self.noise_floor if own is None else own

    def families_for(self, model: str) -> tuple[str, ...]:
        """Probe families for one model (empty = every family of the frozen battery)."""
        return self.models[model].families or self.families


_LOCAL = re.compile(r"local:(\d+)")


def local_workers(scheduler: str) -> int | None:
    """N of a ``"local:N"`` scheduler spec, or None for a scheduler address.

    Raises
    ------
    ValueError
        If the spec starts with ``local`` but is not ``local:N`` with N >= 1.
    """
    m = _LOCAL.fullmatch(scheduler)
    if m is None:
        if scheduler.startswith("local"):
            raise ValueError(f"scheduler {scheduler!r}: write 'local:N' with N worker processes "
                             "(e.g. 'local:2'), or a scheduler address like 'tcp://host:8786'")
        return None
    n = int(m.group(1))
    if n < 1:
        raise ValueError(f"scheduler {scheduler!r}: a LocalCluster needs at least 1 worker")
    return n


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
        path = paths.profiles_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in paths.profiles_dir().glob("*.yaml") if p.stem != "models")
        raise ProfileError(f"params profile {path} not found; known profiles: {', '.join(known)}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or "models" not in data:
        raise ProfileError(f"{path}: expected a mapping with at least 'models:'")
    data.setdefault("name", path.stem)
    profile = _build(Profile, data, str(path))
    for key, run in profile.models.items():
        for rung in run.rungs:
            try:
                ftype(rung)
            except ValueError as exc:
                raise ProfileError(f"{path}: models.{key}.rungs: {exc}") from exc
        if "F16" not in run.rungs:
            raise ProfileError(f"{path}: models.{key}.rungs must include the reference 'F16'")
    if profile.mcnemar not in ("exact", "midp"):
        raise ProfileError(f"{path}: mcnemar must be 'exact' or 'midp', got {profile.mcnemar!r}")
    if profile.correction != "holm":
        raise ProfileError(f"{path}: correction must be 'holm' (fixed sequence down each "
                           f"family, Holm across families), got {profile.correction!r}")
    if profile.scheduler is not None:
        try:
            local_workers(profile.scheduler)
        except ValueError as exc:
            raise ProfileError(f"{path}: {exc}") from exc
    if profile.outputs is None:
        profile = dataclasses.replace(profile, outputs=str(outputs_root()))
    return profile


def as_dict(profile: Profile) -> dict:
    """The resolved profile as plain data (stored next to results)."""
    return dataclasses.asdict(profile)
