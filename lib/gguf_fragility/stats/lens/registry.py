"""The lenses of the grid, in table order: one line per lens.

Adding a lens: a module beside this one with a :class:`~gguf_fragility.stats.lens.base.Lens`
subclass and ``LENS = MyLens()``, one line below, and its cell in notebook 05. Every
table (grid, decisions, death order, lesions, axes, recipes, transfer, site) iterates
:data:`LENSES` or asks :func:`with_role`; none compares lens names.
"""

from __future__ import annotations

from gguf_fragility.stats.lens import correctness, fidelity, margin
from gguf_fragility.stats.lens.base import Lens

LENSES: dict[str, Lens] = {lens.name: lens for lens in (
    correctness.LENS,
    fidelity.LENS,
    margin.LENS,
)}


def with_role(role: str) -> str:
    """
    Name of the one registered lens with ``role``
    (:data:`~gguf_fragility.stats.lens.base.ACCURACY` or
    :data:`~gguf_fragility.stats.lens.base.CHANGE`).

    Raises
    ------
    ValueError
        When no lens, or more than one, has that role.
    """
    found = [k for k, lens in LENSES.items() if role in lens.roles]
    if len(found) != 1:
        raise ValueError(f"lens role {role!r} needs exactly one registered lens; found "
                         f"{found or 'none'} in {list(LENSES)}")
    return found[0]


def undirected() -> list[str]:
    """Names of the lenses whose change has no good side (a gain cannot be shown)."""
    return [k for k, lens in LENSES.items() if not lens.directional]
