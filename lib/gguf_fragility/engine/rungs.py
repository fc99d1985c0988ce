"""Rung names: what file a rung is and how it is run.

A rung name is llama.cpp's ftype name, optionally followed by ``+`` modifiers in this order::

    <FTYPE>[+imatrix_<text>][+<group>=<TYPE>]...[+kv_<cache>]

- ``+imatrix_<text>``: the weights are quantized with an importance matrix computed on the
  reference over the frozen calibration text ``data/calibration/<text>.txt`` (``wiki`` or
  ``code``; :mod:`gguf_fragility.ladder.imatrix`). IQ types need one.
- ``+<group>=<TYPE>``: the tensors of ``group`` get ggml type ``TYPE`` instead of what the
  ftype's mix would give them (llama-quantize's ``--tensor-type``). A group is a tensor kind
  (:data:`KINDS`), a third of the blocks (:data:`DEPTHS`), or a kind within a third
  (``ffn_down.last_third``). ``Q8_0+ffn_down=Q2_K`` is a *lesion* rung (everything intact but
  one group); ``Q2_K+ffn_down=Q4_K`` a *recipe* (everything low but one group).
- ``+kv_<cache>``: a KV-cache rung (:mod:`gguf_fragility.engine.kvcache`): the weights of
  the name before it, run with llama.cpp's K and V cache in ``<cache>``. No new file.

Everything but the KV suffix names a file of the ladder (:attr:`RungSpec.weights`).
No llama.cpp import here: profiles are checked where it is absent. Usage::

    parse_rung("Q2_K+imatrix_code+kv_q4_0")
    # RungSpec(weights='Q2_K+imatrix_code', kv_cache='q4_0')
    parse_weights("Q8_0+ffn_down.last_third=Q2_K")
    # WeightsSpec(ftype='Q8_0', imatrix=None, overrides=(('ffn_down.last_third', 'Q2_K'),))
"""

from __future__ import annotations

import re
from typing import NamedTuple

from gguf_fragility.engine.ftypes import ftype

REFERENCE = "F16"  # the rung every other rung is compared with (the reference's own file)
# The reference re-run with other batch shapes (a pseudo-rung of every model when a profile's
# ``noise_floor`` is on): same weights, different floating-point paths. Its flips and margin
# changes are the noise floor the other rungs are tested against.
NOISE_FLOOR = f"{REFERENCE}-floor"
# cache types a KV rung may name -> ggml type id (``enum ggml_type`` in ggml.h), spelled as
# llama.cpp's ``--cache-type-k`` spells them
KV_TYPES: dict[str, int] = {"f16": 1, "q8_0": 8, "q4_0": 2}
KV_DEFAULT = "f16"  # llama.cpp's default cache type (plain rungs)
KV_PREFIX = "kv_"
IMATRIX_PREFIX = "imatrix_"
# the calibration texts shipped in data/calibration/ (ladder.imatrix builds and checks them)
IMATRIX_TEXTS = ("wiki", "code")
# tensor kinds, named as in llama.cpp's GGUF tensor names (``blk.N.<kind>.weight``; the
# embedding and output matrices have no block)
KINDS = ("token_embd", "output", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate",
         "ffn_up", "ffn_down")
DEPTHS = ("first_third", "middle_third", "last_third")
# ggml types a group may be set to (llama-quantize's --tensor-type accepts these)
OVERRIDE_TYPES = ("F16", "BF16", "Q8_0", "Q6_K", "Q5_K", "Q5_0", "Q5_1", "Q4_K", "Q4_0",
                  "Q4_1", "IQ4_XS", "IQ4_NL", "Q3_K", "IQ3_S", "IQ3_XXS", "Q2_K", "IQ2_S",
                  "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S")
# llama-quantize refuses these without an importance matrix; the project asks one for every
# IQ type (they are made for one)
_NEEDS_IMATRIX = re.compile(r"IQ.*|Q2_K_S")
_FLOAT_FTYPES = ("F32", "F16", "BF16")
# the "intact" base of a lesion rung: llama-quantize applies overrides to quantized mixes only,
# so a lesion is Q8_0 everywhere but one group (chapter 8 shows Q8_0 against F16)
INTACT_BASE = "Q8_0"
_EXAMPLES = "e.g. 'Q4_K_M+kv_q8_0', 'IQ3_XXS+imatrix_wiki', 'Q8_0+ffn_down=Q2_K'"


class RungSpec(NamedTuple):
    """Result of :func:`parse_rung` and :func:`rung_spec`: the ladder file a rung loads, its
    KV-cache type, and whether it is the noise floor."""

    weights: str  # the ladder rung whose file is loaded (the name without its +kv_ suffix)
    kv_cache: str | None  # cache type of a KV rung (key of KV_TYPES); None for a plain rung
    floor: bool = False  # the noise floor (NOISE_FLOOR): the reference's file, other batches

    @property
    def is_reference(self) -> bool:
        """The reference itself (not its noise floor, not a KV-cache rung of its file)."""
        return self.weights == REFERENCE and self.kv_cache is None and not self.floor

    @property
    def is_floor(self) -> bool:
        """The noise floor (:data:`NOISE_FLOOR`)."""
        return self.floor

    @property
    def cache(self) -> str:
        """The cache type the rung runs with (f16 for a plain rung)."""
        return self.kv_cache or KV_DEFAULT

    @property
    def flash_attn(self) -> bool:
        """Flash attention: on for every KV rung (controls included), off for a plain rung."""
        return self.kv_cache is not None


class WeightsSpec(NamedTuple):
    """Result of :func:`parse_weights`: how a ladder file is quantized from the reference."""

    ftype: str  # llama.cpp ftype name: the type mix of every tensor not overridden
    imatrix: str | None  # calibration text of the importance matrix (IMATRIX_TEXTS), or None
    overrides: tuple[tuple[str, str], ...]  # (group, ggml type), in the name's order

    @property
    def in_process(self) -> bool:
        """True for a plain ftype, quantized in-process; False where llama-quantize is needed."""
        return self.imatrix is None and not self.overrides


def split_group(group: str) -> tuple[str | None, str | None]:
    """A group's (kind, depth): ``"ffn_down.last_third"`` -> ``("ffn_down", "last_third")``,
    ``"attn_v"`` -> ``("attn_v", None)``, ``"first_third"`` -> ``(None, "first_third")``.

    Raises
    ------
    ValueError
        For a name that is none of a kind, a third, or ``<kind>.<third>``.
    """
    kind, _, depth = group.partition(".")
    if not depth and kind in DEPTHS:
        kind, depth = "", kind
    if (kind and kind not in KINDS) or (depth and depth not in DEPTHS) or not (kind or depth):
        raise ValueError(f"unknown tensor group {group!r}; use a kind ({', '.join(KINDS)}), a "
                         f"third of the blocks ({', '.join(DEPTHS)}) or <kind>.<third> "
                         "(e.g. 'ffn_down.last_third')")
    if kind in ("token_embd", "output") and depth:
        raise ValueError(f"tensor group {group!r}: {kind} is not in a block, so it has no third; "
                         f"write {kind!r}")
    return kind or None, depth or None


def parse_weights(weights: str) -> WeightsSpec:
    """
    Split the name of a ladder file into its ftype, imatrix text and tensor-type overrides.

    Parameters
    ----------
    weights : str
        ``<FTYPE>[+imatrix_<text>][+<group>=<TYPE>]...`` (no KV suffix).

    Returns
    -------
    WeightsSpec

    Raises
    ------
    ValueError
        Naming the value and the fix: an unknown ftype, imatrix text, group or type; a
        modifier out of order or repeated; an IQ type without an imatrix text; an imatrix
        or override on a float ftype (llama-quantize applies overrides to quantized mixes
        only: use Q8_0 as the intact base).
    """
    head, *mods = weights.split("+")
    ftype(head)
    imatrix, overrides = None, []
    for i, mod in enumerate(mods):
        if mod.startswith(IMATRIX_PREFIX):
            text = mod[len(IMATRIX_PREFIX):]
            if i != 0:
                raise ValueError(f"rung {weights!r}: write +imatrix_<text> right after the "
                                 f"ftype ({_EXAMPLES})")
            if text not in IMATRIX_TEXTS:
                raise ValueError(f"rung {weights!r}: unknown imatrix text {text!r}; use one of "
                                 f"{', '.join(IMATRIX_TEXTS)} (data/calibration/<text>.txt)")
            imatrix = text
        elif "=" in mod:
            group, _, typ = mod.partition("=")
            try:
                split_group(group)
            except ValueError as exc:
                raise ValueError(f"rung {weights!r}: {exc}") from None
            if typ not in OVERRIDE_TYPES:
                raise ValueError(f"rung {weights!r}: unknown tensor type {typ!r} for group "
                                 f"{group!r}; use a ggml type name: {', '.join(OVERRIDE_TYPES)}")
            if group in dict(overrides):
                raise ValueError(f"rung {weights!r}: group {group!r} is set twice; keep one")
            overrides.append((group, typ))
        else:
            raise ValueError(f"rung {weights!r}: unknown modifier {'+' + mod!r}; modifiers are "
                             f"+imatrix_<text>, +<group>=<TYPE> and a final +kv_<cache> "
                             f"({_EXAMPLES})")
    if head in _FLOAT_FTYPES and (imatrix or overrides):
        raise ValueError(f"rung {weights!r}: {head} is not quantized, so it takes no imatrix and "
                         "llama-quantize applies no tensor overrides to it; use Q8_0 as the "
                         f"intact base (e.g. 'Q8_0+{overrides[0][0] if overrides else 'ffn_down'}"
                         "=Q2_K')")
    needy = [t for t in (head, *(t for _, t in overrides)) if _NEEDS_IMATRIX.fullmatch(t)]
    if needy and imatrix is None:
        raise ValueError(f"rung {weights!r}: {needy[0]} needs an importance matrix; add its "
                         f"calibration text: '{head}+imatrix_wiki' or '{head}+imatrix_code'")
    return WeightsSpec(head, imatrix, tuple(overrides))


def parse_rung(rung: str) -> RungSpec:
    """
    Split a rung name into its ladder file's name and its KV-cache type.

    Parameters
    ----------
    rung : str
        ``<weights>[+kv_<cache>]``: ``<weights>`` as :func:`parse_weights` reads it, ``<cache>``
        one of {"f16", "q8_0", "q4_0"}.

    Returns
    -------
    RungSpec
        ``weights`` and ``kv_cache`` (None for a plain rung).

    Raises
    ------
    ValueError
        For an unknown ftype, cache type, modifier, or a KV suffix that is not last; the
        message names the value and the spelling to use.
    """
    weights, kv_cache = rung, None
    head, sep, last = rung.rpartition("+")
    if sep and last.startswith(KV_PREFIX):
        weights, kv_cache = head, last[len(KV_PREFIX):]
        if kv_cache not in KV_TYPES:
            raise ValueError(f"rung {rung!r}: unknown KV-cache type {kv_cache!r}; use one of "
                             f"{', '.join(KV_TYPES)}, spelled as llama.cpp's --cache-type-k "
                             "(e.g. 'Q4_K_M+kv_q8_0')")
    if f"+{KV_PREFIX}" in weights:
        raise ValueError(f"rung {rung!r}: malformed KV-cache suffix; write one "
                         f"+{KV_PREFIX}<type> at the end, <type> one of {', '.join(KV_TYPES)} "
                         "(e.g. 'Q4_K_M+kv_q8_0')")
    try:
        parse_weights(weights)
    except ValueError as exc:
        if kv_cache is None:
            raise
        raise ValueError(f"rung {rung!r}: its weights: {exc}") from None
    return RungSpec(weights, kv_cache)


def rung_spec(rung: str) -> RungSpec:
    """The file a profile's rung loads, its KV cache and its role: :func:`parse_rung`, with the
    noise floor (:data:`NOISE_FLOOR`, which no profile lists) loading the reference's file."""
    return RungSpec(REFERENCE, None, floor=True) if rung == NOISE_FLOOR else parse_rung(rung)


def is_kv_rung(rung: str) -> bool:
    """True for a KV-cache rung name (``<rung>+kv_<type>``), without validating it."""
    return f"+{KV_PREFIX}" in rung


def lesion_of(rung: str) -> tuple[str, str] | None:
    """
    The (group, type) of a lesion rung, or None for any other rung.

    A lesion rung is :data:`INTACT_BASE` with exactly one tensor-type override and nothing
    else (``Q8_0+ffn_down=Q2_K`` -> ``("ffn_down", "Q2_K")``): every tensor intact but one
    group. A recipe (``Q2_K+ffn_down=Q4_K``), a KV rung, an imatrix rung, the noise floor
    and names that do not parse are not lesions.
    """
    try:
        spec = parse_rung(rung)
        w = parse_weights(spec.weights)
    except ValueError:
        return None
    if spec.kv_cache is None and w.ftype == INTACT_BASE and w.imatrix is None \
            and len(w.overrides) == 1:
        return w.overrides[0]
    return None


def recipe_rung(base: str, groups, typ: str) -> str:
    """
    The rung name of a recipe: ``base`` with each group set to ``typ``.

    ``recipe_rung("Q2_K", ["ffn_down", "attn_v"], "Q4_K")`` ->
    ``"Q2_K+ffn_down=Q4_K+attn_v=Q4_K"``; the name is checked by :func:`parse_weights`
    (unknown group or type: ValueError naming it).
    """
    name = "+".join([base, *(f"{g}={typ}" for g in groups)])
    parse_weights(name)
    return name


def absent_groups(overrides: tuple[tuple[str, str], ...], tensor_names,
                  n_blocks: int) -> list[str]:
    """The override groups that name no tensor of a model (e.g. ``output`` where the model
    ties its output matrix to ``token_embd`` and stores no ``output.weight``), judged by the
    very patterns llama-quantize gets (:func:`tensor_type_patterns`)."""
    names = [n.lower() for n in tensor_names]
    patterns = [p.rsplit("=", 1)[0] for p in tensor_type_patterns(overrides, n_blocks)]
    return [group for (group, _), pat in zip(overrides, patterns, strict=True)
            if not any(re.search(pat, n) for n in names)]


def tensor_type_patterns(overrides: tuple[tuple[str, str], ...], n_blocks: int) -> list[str]:
    """
    llama-quantize ``--tensor-type`` arguments (``<regex>=<type>``) for a rung's overrides.

    llama-quantize lowercases each pattern and applies the first that ``std::regex_search``
    finds in a tensor's name; the patterns here match whole name parts, so ``attn_q`` does
    not catch ``attn_qkv`` and a third names its blocks one by one.

    Parameters
    ----------
    overrides : tuple of (group, type)
        :attr:`WeightsSpec.overrides`.
    n_blocks : int
        The model's transformer blocks (``<arch>.block_count``); the thirds split them as
        ``numpy.array_split`` does (the first thirds take the remainder).

    Returns
    -------
    list of str
        One ``--tensor-type`` value per override, in order.
    """
    thirds = _thirds(n_blocks)
    out = []
    for group, typ in overrides:
        kind, depth = split_group(group)
        if kind in ("token_embd", "output"):
            pattern = rf"^{kind}\."
        else:
            blocks = r"\d+" if depth is None else "(" + "|".join(map(str, thirds[depth])) + ")"
            pattern = rf"^blk\.{blocks}\." + (rf"{kind}\." if kind else "")
        out.append(f"{pattern}={typ.lower()}")
    return out


def _thirds(n_blocks: int) -> dict[str, range]:
    """Blocks of each third: sizes differ by at most one, the earlier thirds larger."""
    size, extra = divmod(n_blocks, 3)
    out, start = {}, 0
    for i, name in enumerate(DEPTHS):
        stop = start + size + (i < extra)
        out[name] = range(start, stop)
        start = stop
    return out


def group_of_tensor(name: str, n_blocks: int) -> tuple[str | None, str | None]:
    """(kind, third) of a GGUF tensor name, e.g. ``blk.27.ffn_down.weight`` -> (``ffn_down``,
    ``last_third``); kinds outside :data:`KINDS` (norms, biases' own kinds) give None."""
    parts = name.split(".")
    if parts[0] in ("token_embd", "output"):
        return parts[0], None
    if parts[0] != "blk" or len(parts) < 3:
        return None, None
    depth = next(d for d, r in _thirds(n_blocks).items() if int(parts[1]) in r)
    return (parts[2] if parts[2] in KINDS else None), depth


def types_by_kind(tensors, n_blocks: int) -> dict[str, dict[str, int]]:
    """Tensors per ggml type of each kind (:data:`KINDS`), from ``(name, type name)`` pairs:
    ``{"ffn_down": {"Q3_K": 28}, ...}``; kinds a model lacks are left out."""
    out: dict[str, dict[str, int]] = {}
    for name, typ in tensors:
        kind, _ = group_of_tensor(name, n_blocks)
        if kind is not None:
            out.setdefault(kind, {}).setdefault(typ, 0)
            out[kind][typ] += 1
    return out
