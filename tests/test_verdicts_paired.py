"""Issue 25 acceptance for the paired binary lenses (correctness; fidelity is the same test on
rung-only and floor-only flips): equivalence size at the margin and "beyond" rate at and
below it, for discordances from rare to common changes and n up to 1,000.

Seeded and vectorized; Monte-Carlo tolerance is three binomial standard errors.

    PYTHONPATH=lib python -m pytest -q tests/test_verdicts_paired.py
"""

import math

import numpy as np
import pytest

from gguf_fragility.stats import relevance as rel
from gguf_fragility.stats.lenses import paired_diff_ci

ALPHA = 0.05
M = rel.MARGINS.correctness  # 3 points, also the fidelity default
REPS = 4000
TOL = 3 * math.sqrt(ALPHA * (1 - ALPHA) / REPS)


def labels(rng, n: int, loss: float, psi: float) -> np.ndarray:
    """Verdicts of ``REPS`` cells whose true loss (accuracy points lost, or excess flips) is ``loss``.

    Deaths (rung-only flips) and resurrections (floor-only flips) are trinomial with
    ``P = (psi ± loss) / 2``; the interval is Tango's, "beyond" is Tango's test of
    ``H0: loss <= m`` (:func:`~gguf_fragility.stats.relevance.tango_beyond_p`).
    """
    t = rng.multinomial(n, [(psi + loss) / 2, (psi - loss) / 2, 1 - psi], size=REPS)
    b, c, nn = t[:, 0], t[:, 1], np.full(REPS, n)
    ci = paired_diff_ci(b, c, nn, alpha=ALPHA)
    return rel.decide(ci.low, ci.high, M, beyond=rel.tango_beyond_p(b, c, nn, M) <= ALPHA)


@pytest.mark.parametrize("psi", [0.06, 0.2, 0.5])
def test_equivalence_size_at_the_margin(psi):
    """A true loss of exactly m (either sign) is called equivalent at most alpha of the time."""
    rng = np.random.default_rng(int(psi * 100))
    for n in (20, 100, 300, 1000):
        for loss in (M, -M):
            rate = (labels(rng, n, loss, psi) == rel.EQUIVALENT).mean()
            assert rate <= ALPHA + TOL, f"psi={psi} n={n} loss={loss}: {rate}"


@pytest.mark.parametrize("psi", [0.06, 0.2, 0.5])
def test_loss_at_or_below_the_margin_is_rarely_beyond(psi):
    rng = np.random.default_rng(int(psi * 1000))
    for n in (20, 100, 300, 1000):
        for share in (0.0, 0.5, 1.0):
            rate = (labels(rng, n, share * M, psi) == rel.BEYOND).mean()
            assert rate <= ALPHA + TOL, f"psi={psi} n={n} loss={share}m: {rate}"


def test_a_loss_three_times_the_margin_is_found_and_never_equivalent():
    """The labels have power: at n = 1000 a 9-point loss is beyond the margin almost always."""
    lab = labels(np.random.default_rng(5), 1000, 3 * M, 0.2)
    assert (lab == rel.BEYOND).mean() > 0.95 and not (lab == rel.EQUIVALENT).any()
