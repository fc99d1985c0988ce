"""Sweep cells on a Dask LocalCluster (2 worker processes) give exactly the serial run's rows."""

import dataclasses

import pandas as pd
import pytest
from tiny_profile import tiny_profile_yaml

from gguf_fragility.profile import ProfileError, load_profile, local_workers

MODEL = "smollm2-135m"
FAMILIES = ["arithmetic", "science_mc"]  # a generative family (with variant-1 cells) and a log-likelihood one
N_ITEMS = 2
# one thread per worker: 2 workers on 2 cores
PROFILE_YAML = tiny_profile_yaml(FAMILIES, N_ITEMS, n_threads=1, scheduler="local:2")
KEY = ["rung", "variant", "family", "item_id"]
COMPARE = [*KEY, "raw_output", "correct", "score", "extracted", "params_hash", "model_sha256"]


def test_scheduler_spec_is_checked(tmp_path):
    assert local_workers("local:2") == 2
    assert local_workers("tcp://127.0.0.1:8786") is None
    for bad in ["local", "local:0", "local:two"]:
        with pytest.raises(ValueError, match="local:N|at least 1"):
            local_workers(bad)
    path = tmp_path / "bad.yaml"
    path.write_text(PROFILE_YAML.replace('"local:2"', '"local:x"'))
    with pytest.raises(ProfileError, match="bad.yaml"):
        load_profile(path)


def _sweep(profile, root) -> tuple[pd.DataFrame, list[str]]:
    """Ladder, calibration (F16, variants 0 and 1) and the Q2_K rung under ``root``.

    Returns every cell's rows and the cell files' paths relative to the profile folder.
    """
    from gguf_fragility.ladder.quantize import build_ladder
    from gguf_fragility.run.calibrate import calibrate
    from gguf_fragility.run.plan import plan_rung
    from gguf_fragility.run.sweep import evaluate_rung

    profile = dataclasses.replace(profile, outputs=str(root))  # the run's layout is a value
    build_ladder(MODEL, ["F16", "Q2_K"], run=profile.layout, n_threads=1)
    calibrate(profile, MODEL)
    evaluate_rung(profile, plan_rung(profile, MODEL, "Q2_K"))
    cells = sorted((root / profile.name).glob("**/*.parquet"))
    cells = [c for c in cells if c.parent.name != "calibration"]  # only the cell files
    names = [str(c.relative_to(root / profile.name)) for c in cells]
    return pd.concat([pd.read_parquet(c) for c in cells], ignore_index=True), names


@pytest.mark.llama
@pytest.mark.slow
def test_local_cluster_rows_equal_serial_rows(tmp_path, smol_source):
    from gguf_fragility.run.cluster import close_clients, run_cells
    from gguf_fragility.run.plan import plan_rung

    path = tmp_path / "cl.yaml"
    path.write_text(PROFILE_YAML)
    on_dask = load_profile(path)
    assert on_dask.scheduler == "local:2"
    serial = dataclasses.replace(on_dask, scheduler=None)
    try:
        (a, cells_a), (b, cells_b) = (_sweep(serial, tmp_path / "serial"),
                                      _sweep(on_dask, tmp_path / "dask"))
        # resuming on the cluster submits nothing: every cell is already stored
        on_dask = dataclasses.replace(on_dask, outputs=str(tmp_path / "dask"))
        again = run_cells(plan_rung(on_dask, MODEL, "Q2_K"), on_dask.scheduler)
        assert not any(r.ran for r in again)
    finally:
        close_clients()
    assert cells_a == cells_b  # the same files, calibration's variant-1 cells included
    assert len(cells_a) == 3 * len(FAMILIES)
    a, b = (df.sort_values(KEY).reset_index(drop=True) for df in (a, b))
    assert set(a.rung) == {"F16", "Q2_K"}
    assert len(a[(a.rung == "Q2_K")]) == len(FAMILIES) * N_ITEMS
    assert not a.duplicated(KEY).any() and not b.duplicated(KEY).any()
    pd.testing.assert_frame_equal(a[COMPARE], b[COMPARE])
    cost = pd.read_json(tmp_path / "dask/cl/sweep" / MODEL / "Q2_K/_cost.json", typ="series")
    assert cost["scheduler"] == "local:2" and cost["peak_rss_bytes"] > 0
