"""One frozen statistics-settings dataclass, built from the profile once (issue 24).

The profile (``params/*.yaml``, defaults in :class:`gguf_fragility.profile.Profile`) is the
only place a statistics setting is spelled with its default; :class:`Settings` is its typed,
frozen view, and ``stats_config.json`` records it. ``correction`` is no longer a key: the
lens design fixes the multiplicity procedure.
"""

import dataclasses
import json

import pytest

from gguf_fragility.profile import Profile, ProfileError, load_profile
from gguf_fragility.stats import results
from gguf_fragility.stats.settings import CORRECTION, DEFAULT_SETTINGS, MDE_POWER, Settings


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_SETTINGS.alpha = 0.1  # type: ignore[misc]


def test_settings_carry_every_value_of_the_profile():
    p = dataclasses.replace(load_profile("smoke"), alpha=0.01, n_boot=123, seed=7,
                            mcnemar="midp", equivalence_margin=0.05, fidelity_margin=0.04,
                            gold_prob_margin_pp=5.0, reply_prob_margin_pp=6.0,
                            design_discordance=0.3,
                            target_mde=0.1, noise_floor=False, budgets_gib=(2.0, 16.0))
    s = Settings.of(p)
    assert (s.alpha, s.n_boot, s.seed, s.mcnemar) == (0.01, 123, 7, "midp")
    assert (s.equivalence_margin, s.fidelity_margin, s.gold_prob_margin_pp,
            s.reply_prob_margin_pp) == (0.05, 0.04, 5.0, 6.0)
    assert (s.design_discordance, s.target_mde, s.noise_floor, s.budgets_gib) == (
        0.3, 0.1, False, (2.0, 16.0))
    assert (s.correction, s.mde_power) == (CORRECTION, MDE_POWER) == ("holm", 0.8)


def test_the_defaults_are_the_profiles():
    """One place for a default: a profile that sets nothing gives the dataclass's defaults."""
    assert Settings.of(Profile(name="x", models={})) == Settings() == DEFAULT_SETTINGS
    assert Settings().alpha == Profile(name="x", models={}).alpha == 0.05


def test_stats_config_records_the_settings_as_used(tmp_path):
    p = dataclasses.replace(load_profile("smoke"), name="cfg", outputs=str(tmp_path),
                            n_boot=321, budgets_gib=(1.0, 3.0))
    cfg = results.stats_config(p)
    assert json.loads(json.dumps(cfg)) == cfg  # JSON as it stands
    assert cfg["profile"] == "cfg" and cfg["n_boot"] == 321 and cfg["budgets_gib"] == [1.0, 3.0]
    assert cfg["correction"] == "holm" and cfg["mde_power"] == 0.8
    assert set(cfg) == {"profile"} | {f.name for f in dataclasses.fields(Settings)}


def test_correction_is_no_longer_a_profile_key(tmp_path):
    prof = tmp_path / "mine.yaml"
    prof.write_text("models:\n  smollm2-135m: {rungs: [F16, Q2_K]}\ncorrection: fdr_bh\n")
    with pytest.raises(ProfileError) as e:
        load_profile(prof)
    msg = str(e.value)
    assert "mine.yaml: correction: removed" in msg and "remove the key" in msg
    assert "Holm across families" in msg and len(msg.splitlines()) == 1
