"""Run profiles (``params/<name>.yaml``): which models, rungs, probe families and sizes.

A profile overrides only what differs from the defaults below. Unknown keys, wrong types,
unknown model keys, families and rungs, and counts out of range fail loudly at load time
(nanoGPT's ``configurator.py`` habit), all of them at once, one line each naming the file,
key and value.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gguf_fragility import paths
from gguf_fragility.engine.rungs import (
    NOISE_FLOOR,  # noqa: F401  (read as profile.NOISE_FLOOR too)
    REFERENCE,
    parse_rung,
    rung_spec,
)
from gguf_fragility.errors import ProblemsError
from gguf_fragility.layout import RunLayout, outputs_root
from gguf_fragility.registry import read_registry

DEFAULT_RUNGS = (REFERENCE, "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")


class ProfileError(ProblemsError):
    """A params profile that is missing, malformed or mistyped; one line per problem."""


@dataclass(frozen=True)
class EngineParams:
    """How every model is loaded (same for every rung, so rungs stay comparable)."""

    n_ctx: int = 2048  # tokens
    n_threads: int | None = None  # None = all cores
    n_gpu_layers: int = 0  # -1 = offload everything (CUDA build)
    n_batch: int = 512  # tokens per llama_decode
    seed: int = 0
    group_cells: int = 512  # KV cells that replies decoded together may reserve (engine.greedy)

    def settings(self, rung: str = REFERENCE) -> dict:
        """How a rung is loaded (``Engine`` keyword arguments): these settings, the same for
        every rung and every chapter, except the noise floor, which re-runs the reference with
        other batch shapes, and the KV-cache rungs, which set the cache type and flash attention.

        The floor decodes in chunks of an eighth of ``n_batch`` (at least 16 tokens) and scores
        each log-likelihood choice and each reply in its own batch (``n_seq_max`` 1): llama.cpp
        then runs other matrix shapes, so floating-point rounding differs while the weights do
        not. A KV-cache rung (``X+kv_<type>``, controls included) adds ``kv_cache`` and
        ``flash_attn=True``; plain rungs leave both at the engine's defaults (f16, off) and out
        of the settings, so the params hashes of cells stored before the KV axis still hold.
        """
        out = {"n_ctx": self.n_ctx, "n_threads": self.n_threads, "seed": self.seed,
               "n_gpu_layers": self.n_gpu_layers, "n_batch": self.n_batch, "n_seq_max": 8,
               "group_cells": self.group_cells}
        spec = rung_spec(rung)
        if spec.is_floor:
            out.update(n_batch=max(16, self.n_batch // 8), n_seq_max=1)
        elif spec.kv_cache is not None:
            out.update(kv_cache=spec.kv_cache, flash_attn=spec.flash_attn)
        return out


@dataclass(frozen=True)
class Budget:
    """A budgeted sweep (issue 27): looks that grow the undecided cells until it is spent.

    Without ``budget`` a profile's sweep is the fixed design (``n_items`` per family). With it
    every cell first gets ``first_items`` (at most the fixed design's count for its model and
    family, which calibration uses), then each look grows the cells whose undecided verdicts
    the sequential statistics (:mod:`gguf_fragility.stats.sequential`) project cheapest per
    verdict to the items projected (by at least ``look_items``), each look within half the
    minutes left, until ``minutes`` of sweeping
    or ``max_items`` per cell are spent (:func:`gguf_fragility.run.looks.allocate`).
    """

    minutes: float | None = None  # wall minutes of the sweep's looks; None = no clock limit
    look_items: int = 4  # items a growing cell gains at least (every undecided cell gains this
    # many when no verdict is projected within its family's items)
    max_items: int | None = None  # items per cell at most; None = every item of the family
    first_items: int | None = None  # items before the first look; None = the fixed design's


@dataclass(frozen=True)
class ModelRun:
    """One model in a profile."""

    rungs: tuple[str, ...] = DEFAULT_RUNGS
    n_items: int | None = None  # per family; None = the profile's n_items
    families: tuple[str, ...] = ()  # empty = the profile's families
    noise_floor: bool | None = None  # None = the profile's noise_floor

    @property
    def ladder_rungs(self) -> tuple[str, ...]:
        """The rungs that are files of the ladder: every rung but the KV-cache rungs
        (``<rung>+kv_<type>``, which load their weights' rung; see
        :mod:`gguf_fragility.engine.kvcache`)."""
        return tuple(r for r in self.rungs if rung_spec(r).kv_cache is None)


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
    shift_passages: int = 8  # Wikipedia passages joined into the KL-divergence text sample
    shift_tokens: int = 256  # tokens per chunk (llama-perplexity's -c); its second half is scored
    n_boot: int = 10_000  # bootstrap resamples (paired differences, ranks, transfer)
    mcnemar: str = "exact"  # "exact" | "midp"
    alpha: float = 0.05  # test level; intervals are (1 - alpha)
    equivalence_margin: float = 0.03  # correctness: relevance margin, share of items (3 points)
    fidelity_margin: float = 0.03  # fidelity: excess flips over the floor that matter, share
    gold_prob_margin_pp: float = 3.0  # margin lens, log-likelihood: gold-answer probability, pp
    reply_prob_margin_pp: float = 3.0  # margin lens, generative: reply per-token probability, pp
    design_discordance: float = 0.2  # share of items expected to change answer (planned MDE)
    target_mde: float | None = None  # planner: items each family needs to detect this loss
    noise_floor: bool = True  # sweep the reference again under other batch shapes (NOISE_FLOOR)
    budgets_gib: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)  # memory budgets of the recommendations
    transfer_min_usable: int = 1  # items a family needs on both models to be compared (all items count)
    scheduler: str | None = None  # None = cells in-process; "local:N" = LocalCluster; else an address
    allow_unisolated_code: bool = False  # True = run model code unsandboxed where no bwrap/unshare
    outputs: str | None = None  # folder of outputs/<profile>; None: $GGUF_FRAGILITY_OUTPUTS or ./outputs
    budget: Budget | None = None  # None = the fixed design; else a budgeted, sequential sweep

    @property
    def layout(self) -> RunLayout:
        """Where this run's files live (fixed when the profile was loaded)."""
        return RunLayout.of(self.name, self.outputs)

    def items_for(self, model: str, family: str | None = None) -> int:
        """Items of one family (or the base count) for one model; caps apply per family."""
        base = self.models[model].n_items or self.n_items
        return min(base, self.family_items_cap.get(family, base))

    def first_items_for(self, model: str, family: str) -> int:
        """Items a budgeted sweep gives a cell of one family before its first look: the
        budget's ``first_items``, at most the fixed design's :meth:`items_for` (without a
        budget or ``first_items``: that count)."""
        fixed = self.items_for(model, family)
        return min(self.budget.first_items or fixed, fixed) if self.budget else fixed

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


_BAD = object()  # a value that failed its check (the problem is already recorded)


def _sub(where: str, key) -> str:
    """``file: key`` at the top level, ``file: key.sub`` below it."""
    return f"{where}{key}" if where.endswith(": ") else f"{where}.{key}"


def _check(value, typ, where: str, problems: list[str]):
    """Coerce/check ``value`` against a dataclass field type; problems (naming ``where``) are
    appended to ``problems`` and the value comes back as ``_BAD``."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(typ)
        if value is None and type(None) in options:
            return None
        return _check(value, next(t for t in options if t is not type(None)), where, problems)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            problems.append(f"{where}: expected a list, got {value!r}")
            return _BAD
        out = tuple(_check(v, typing.get_args(typ)[0], f"{where}[{i}]", problems)
                    for i, v in enumerate(value))
        return _BAD if _BAD in out else out
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {value!r}")
            return _BAD
        _, vt = typing.get_args(typ)
        out = {k: _check(v, vt, _sub(where, k), problems) for k, v in value.items()}
        return _BAD if _BAD in out.values() else out
    if dataclasses.is_dataclass(typ):
        return _build(typ, {} if value is None else value, where, problems)
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        problems.append(f"{where}: expected {typ.__name__}, got {value!r} "
                        f"({type(value).__name__})")
        return _BAD
    return value


def _build(cls, data, where: str, problems: list[str] | None = None):
    """An instance of dataclass ``cls`` from ``data``; bad fields keep their defaults.

    Problems are appended to ``problems``; without that list they are raised at once.
    """
    if problems is None:
        problems = []
        built = _build(cls, data, where, problems)
        if problems:
            raise ProfileError(problems)
        return built
    if not isinstance(data, dict):
        problems.append(f"{where.removesuffix(': ')}: expected a mapping, got {data!r}")
        return _BAD
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    problems += [f"{_sub(where, k)}: {_REMOVED[k]}" for k in sorted(set(data) & set(_REMOVED))]
    unknown = sorted(set(data) - known - set(_REMOVED))
    if unknown:
        problems.append(f"{where.removesuffix(': ')}: unknown key(s) {unknown}; allowed: "
                        f"{sorted(known)}")
    kwargs = {k: _check(v, hints[k], _sub(where, k), problems)
              for k, v in data.items() if k in known}
    try:
        return cls(**{k: v for k, v in kwargs.items() if v is not _BAD})
    except TypeError as exc:  # a required field is missing or bad
        problems.append(f"{where.removesuffix(': ')}: {exc}")
        return _BAD


# Keys a profile may no longer set: name -> what to write instead.
_REMOVED = {"margin_equivalence_nats": (
    "removed: lesions and recipes are judged against the margin lens's own margins in "
    "points; set gold_prob_margin_pp (gold-answer probability) and reply_prob_margin_pp "
    "(per-token reply probability) instead, one margin per unit"),
    "correction": (  # a key until issue 24
    "removed: the lens design fixes the multiplicity procedure (a fixed sequence down each "
    "family, Holm across families; see the Methods page); remove the key")}

# Allowed ranges of numeric settings: name -> (low, high, what), both ends inclusive; None = open.
_RANGES = {
    "n_items": (1, None, "items per family"), "seed": (0, None, "a seed"),
    "min_usable": (0, None, "a count"), "min_families": (0, None, "a count"),
    "margin_threshold": (0, None, "nats"), "sanity_max_tokens": (1, None, "tokens"),
    "demo_items": (0, None, "items per family"), "shift_passages": (1, None, "passages"),
    "shift_tokens": (4, None, "tokens"),
    "n_boot": (1, None, "resamples"), "alpha": (1e-9, 0.5, "a test level"),
    "equivalence_margin": (1e-9, 0.999, "a share of items: 0.03 is 3 accuracy points"),
    "fidelity_margin": (1e-9, 0.999, "a share of items: 0.03 is 3 points of excess flips"),
    "gold_prob_margin_pp": (1e-9, 99.9, "percentage points of gold-answer probability"),
    "reply_prob_margin_pp": (1e-9, 99.9, "percentage points of per-token reply probability"),
    "design_discordance": (1e-9, 1, "a share"),
    "target_mde": (1e-9, 1, "a share"), "transfer_min_usable": (0, None, "a count"),
}
_ENGINE_RANGES = {"n_ctx": (16, None, "tokens"), "n_threads": (1, None, "threads"),
                  "n_gpu_layers": (-1, None, "layers (-1 = all)"), "n_batch": (1, None, "tokens"),
                  "seed": (0, None, "a seed"), "group_cells": (1, None, "KV-cache cells")}


def _range(value, low, high, what: str, where: str) -> list[str]:
    """A one-line problem when a number is outside [low, high]."""
    if value is None or ((low is None or value >= low) and (high is None or value <= high)):
        return []
    bound = f">= {low}" if high is None else f"between {low:g} and {high:g}"
    return [f"{where}: {value!r} is out of range; use {bound} ({what})"]


def known_families(manifest: Path | None = None) -> tuple[str, ...]:
    """Family names of the frozen battery, read from ``data/probes/manifest.json`` (no imports)."""
    manifest = paths.PROBES / "manifest.json" if manifest is None else manifest
    return tuple(json.loads(manifest.read_text())["families"])


def _twice(names: tuple[str, ...], where: str) -> list[str]:
    """A one-line problem for each name a list holds more than once."""
    return [f"{where}: {n!r} is listed {names.count(n)} times in {list(names)}; keep one"
            for n in dict.fromkeys(names) if names.count(n) > 1]


def _empty_lists(data: dict, path: Path) -> list[str]:
    """``families: []`` (top level or per model) selects nothing; leaving the key out means
    every family, so an empty list is a mistake, not a choice."""
    where = [("families", data.get("families"))]
    if isinstance(data.get("models"), dict):
        where += [(f"models.{k}.families", v.get("families"))
                  for k, v in data["models"].items() if isinstance(v, dict)]
    return [f"{path}: {key}: an empty list selects no family; list family names, or leave "
            f"{key.rsplit('.', 1)[-1]!r} out to run every family of the battery"
            for key, value in where if isinstance(value, list) and not value]


def registry_warnings(profile: Profile) -> list[str]:
    """The problems of registry entries ``profile`` does not use: they do not block it, and
    are worth a warning (an entry being written for a later run)."""
    reg = read_registry()
    return [p for key, bad in reg.entry_problems.items() if key not in profile.models for p in bad]


def _semantic(profile: Profile, path: Path) -> list[str]:
    """Every problem of a well-typed profile: names that do not exist, counts out of range."""
    problems = []
    families = set(known_families())
    fam_list = ", ".join(sorted(families))

    def fams(names, where):
        return [f"{path}: {where}: unknown family {f!r}; families are: {fam_list}"
                for f in names if f not in families]

    for name, (low, high, what) in _RANGES.items():
        problems += _range(getattr(profile, name), low, high, what, f"{path}: {name}")
    for name, (low, high, what) in _ENGINE_RANGES.items():
        problems += _range(getattr(profile.engine, name), low, high, what, f"{path}: engine.{name}")
    for fam, cap in profile.family_items_cap.items():
        problems += fams([fam], "family_items_cap")
        problems += _range(cap, 1, None, "items", f"{path}: family_items_cap.{fam}")
    problems += [f"{path}: budgets_gib: {b!r} is out of range; use > 0 (GiB)"
                 for b in profile.budgets_gib if b <= 0]
    problems += fams(profile.families, "families")
    problems += _twice(profile.families, f"{path}: families")
    if not profile.models:
        problems.append(f"{path}: models: empty; list at least one model key of "
                        f"{paths.registry()}")
    reg = read_registry()
    problems += reg.problems_of(profile.models)  # a bad entry this profile does not use: a warning
    for key, run in profile.models.items():
        where = f"{path}: models.{key}"
        if reg.keys and key not in reg.keys:
            problems.append(f"{where}: model key {key!r} is not in {paths.registry()}; known "
                            f"keys: {', '.join(sorted(reg.keys))}")
        elif (key in reg.specs and not (src := reg.specs[key].source).downloaded
              and not src.file(key).is_file()):  # a file the user provides is missing
            problems.append(f"{where}: its {src.kind} GGUF {src.file(key)} does not exist; "
                            f"fix source.path of {key!r} in {paths.registry()}")
        problems += _twice(run.rungs, f"{where}.rungs")
        for rung in run.rungs:
            try:
                spec = parse_rung(rung)
            except ValueError as exc:
                problems.append(f"{where}.rungs: {exc}")
                continue
            if spec.kv_cache is not None and spec.weights not in run.rungs:
                problems.append(f"{where}.rungs: KV-cache rung {rung!r} loads the file of rung "
                                f"{spec.weights!r}, which is not in this model's rungs "
                                f"{list(run.rungs)}; add {spec.weights!r} to the list")
        if REFERENCE not in run.rungs:
            problems.append(f"{where}.rungs: {list(run.rungs)} must include the reference "
                            f"{REFERENCE!r}")
        problems += _range(run.n_items, 1, None, "items per family", f"{where}.n_items")
        problems += fams(run.families, f"models.{key}.families")
        problems += _twice(run.families, f"{where}.families")
    problems += _budget_problems(profile, path)
    if profile.mcnemar not in ("exact", "midp"):
        problems.append(f"{path}: mcnemar: must be 'exact' or 'midp', got {profile.mcnemar!r}")
    if profile.scheduler is not None:
        try:
            local_workers(profile.scheduler)
        except ValueError as exc:
            problems.append(f"{path}: scheduler: {exc}")
    return problems


def _budget_problems(profile: Profile, path: Path) -> list[str]:
    """The problems of a profile's ``budget``: ranges, and a budget that never stops."""
    b = profile.budget
    if b is None:
        return []
    where = f"{path}: budget"
    problems = (_range(b.minutes, 0.01, None, "wall minutes", f"{where}.minutes")
                + _range(b.look_items, 1, None, "items per look", f"{where}.look_items")
                + _range(b.max_items, 1, None, "items per cell", f"{where}.max_items")
                + _range(b.first_items, 1, None, "items per cell", f"{where}.first_items"))
    if b.minutes is None and b.max_items is None:
        problems.append(f"{where}: neither minutes nor max_items is set, so the looks would only "
                        "stop when every cell is decided or has every item of its family; set "
                        "e.g. budget: {minutes: 30} or budget: {max_items: 200}")
    first = b.first_items or profile.n_items
    if b.max_items is not None and b.max_items < first:
        problems.append(f"{where}.max_items: {b.max_items} is below the {first} items every cell "
                        "gets before the first look (first_items, else n_items); raise max_items "
                        "or lower first_items")
    return problems


def parse_minutes(text: str) -> float:
    """Minutes of a ``--budget`` value: ``45m``, ``45``, ``1.5h`` or ``90s``.

    Raises
    ------
    ValueError
        Naming the value and the forms allowed.
    """
    m = _DURATION.fullmatch(text.strip())
    if m is None or float(m["n"]) <= 0:
        raise ValueError(f"--budget {text!r}: expected a positive duration such as 45m, 1.5h or "
                         "90s (minutes when no unit is given)")
    return float(m["n"]) * {"s": 1 / 60, "m": 1.0, "min": 1.0, "h": 60.0, None: 1.0}[m["unit"]]


_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|m|min|h)?")


def with_budget_minutes(profile: Profile, minutes: float) -> Profile:
    """``profile`` with its budget's ``minutes`` set (a budget with defaults if it had none)."""
    return dataclasses.replace(profile, budget=dataclasses.replace(profile.budget or Budget(),
                                                                   minutes=minutes))


def load_profile(name_or_path: str | Path) -> Profile:
    """Load ``params/<name>.yaml`` (or a path) into a completely checked :class:`Profile`.

    Everything a run will rely on is checked here, before any notebook runs: keys and types,
    model keys (against the registry, whose entries for these models, hash strings included,
    are checked too; a bad entry of another model is left to :func:`registry_warnings`), local
    model files present, family names (against ``data/probes/manifest.json``), rung names,
    rungs and families listed twice, empty family lists, numeric ranges.

    Raises
    ------
    ProfileError
        Listing every problem found, one line each, naming the file, key and value.
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
        raise ProfileError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict) or "models" not in data:
        raise ProfileError(f"{path}: expected a mapping with at least 'models:'")
    data.setdefault("name", path.stem)
    if isinstance(data["models"], dict):  # `my-model:` with nothing under it = all defaults
        data["models"] = {k: {} if v is None else v for k, v in data["models"].items()}
    problems: list[str] = []
    profile = _build(Profile, data, f"{path}: ", problems)
    if profile is not _BAD:
        problems += _empty_lists(data, path) + _semantic(profile, path)
    if problems:
        raise ProfileError(problems)
    if profile.outputs is None:
        profile = dataclasses.replace(profile, outputs=str(outputs_root()))
    return profile


def as_dict(profile: Profile) -> dict:
    """The resolved profile as plain data (stored next to results)."""
    return dataclasses.asdict(profile)
