"""A run is planned once: the profile's engine settings reach every model load (chapter 1's
sanity check included), a rung is planned from one read of its ladder manifest, Dask tasks
are plans, and every stored result a sweep or the statistics read is checked on reading.
"""

import pickle

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gguf_fragility import artifacts
from gguf_fragility.engine import llama
from gguf_fragility.profile import NOISE_FLOOR, load_profile
from gguf_fragility.store import write_result_json, write_table_atomic

SMOL = "smollm2-135m"
GPU = {"n_gpu_layers": -1, "n_batch": 256, "n_ctx": 512}  # none of them the defaults


class Loaded(Exception):
    """Raised by the recording Engine instead of loading a model."""


def _profile(tmp_path, smol_ladder):
    """A profile with GPU offload and its own batch size, and the SmolLM2 ladder's manifest."""
    path = tmp_path / "gpu.yaml"
    path.write_text(f"""
models:
  {SMOL}: {{rungs: [F16, Q2_K, Q2_K+kv_q8_0]}}
families: [arithmetic, science_mc]
n_items: 2
engine: {{n_ctx: {GPU['n_ctx']}, n_threads: 2, n_gpu_layers: {GPU['n_gpu_layers']},
          n_batch: {GPU['n_batch']}}}
outputs: {str(tmp_path / 'outputs')!r}
""")
    profile = load_profile(path)
    write_table_atomic(smol_ladder[smol_ladder.rung.isin(["F16", "Q2_K"])],
                       profile.layout.ladder_csv(SMOL))
    return profile


@pytest.fixture
def loads(monkeypatch):
    """Every Engine construction's file and keyword arguments; none loads a model."""
    seen = []

    def record(self, path, **kwargs):
        seen.append((str(path), kwargs))
        raise Loaded

    monkeypatch.setattr(llama.Engine, "__init__", record)
    return seen


def test_profile_engine_settings_reach_every_engine(tmp_path, smol_ladder, loads, monkeypatch):
    """Chapter 1's sanity check loaded every ladder file with n_ctx, n_threads and seed only
    (old code: CPU, n_batch 512 on a profile with n_gpu_layers -1 and n_batch 2048)."""
    from gguf_fragility.ladder.quantize import sanity_generations
    from gguf_fragility.run import sweep
    from gguf_fragility.run.calibrate import calibrate
    from gguf_fragility.run.cluster import run_cells
    from gguf_fragility.run.plan import plan_rung

    profile = _profile(tmp_path, smol_ladder)
    ladder = artifacts.read_ladder(profile.layout, [SMOL])
    files = ladder.set_index("rung").file
    ref = profile.layout.reference_logprobs(SMOL)
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_bytes(b"stand-in")  # measure_shift's rung load comes after the reference's
    monkeypatch.setattr(sweep, "ensure_reference", lambda profile, model: ref)
    monkeypatch.setattr(sweep, "read_reference", lambda path, verify=True: None)
    calls = {
        "01 sanity": lambda: sanity_generations(ladder, "2+2=", profile.engine),
        "03 calibrate": lambda: calibrate(profile, SMOL),
        "04 sweep": lambda: run_cells(plan_rung(profile, SMOL, "Q2_K")),
        "04 noise floor": lambda: run_cells(plan_rung(profile, SMOL, NOISE_FLOOR)),
        "04 KV rung": lambda: run_cells(plan_rung(profile, SMOL, "Q2_K+kv_q8_0")),
        "04 memory": lambda: sweep.planned_memory(plan_rung(profile, SMOL, "Q2_K", families=())),
        "04 shift": lambda: sweep.measure_shift(profile, SMOL, "Q2_K"),
        "02 demo": plan_rung(profile, SMOL, "F16", families=()).open,
    }
    for call in calls.values():
        with pytest.raises(Loaded):
            call()
    assert len(loads) == len(calls)
    for what, (path, kw) in zip(calls, loads, strict=True):
        batch = GPU["n_batch"] // 8 if what == "04 noise floor" else GPU["n_batch"]
        assert (kw["n_gpu_layers"], kw["n_ctx"], kw["n_batch"], kw["n_threads"]) == (
            GPU["n_gpu_layers"], GPU["n_ctx"], batch, 2), what
        assert path == files["Q2_K" if "sweep" in what or "memory" in what or "shift" in what
                             or "KV" in what else "F16"], what
    assert loads[4][1]["kv_cache"] == "q8_0" and loads[4][1]["flash_attn"] is True
    assert "kv_cache" not in loads[2][1] and loads[3][1]["n_seq_max"] == 1


@pytest.mark.llama
def test_sanity_check_loads_with_the_profiles_offload_and_batch(tmp_path, smol_ladder, monkeypatch):
    """The real path: chapter 1's call loads the F16 file in llama.cpp with the profile's
    settings (a CPU build takes n_gpu_layers -1 and offloads nothing) and answers."""
    from gguf_fragility.ladder.quantize import sanity_generations

    profile = _profile(tmp_path, smol_ladder)
    real, seen = llama.Engine.__init__, []

    def record(self, path, **kwargs):
        seen.append(kwargs)
        real(self, path, **kwargs)
        seen.append(self.n_batch)

    monkeypatch.setattr(llama.Engine, "__init__", record)
    ladder = artifacts.read_ladder(profile.layout, [SMOL]).query("rung == 'F16'")
    out = sanity_generations(ladder, "Two plus two equals", profile.engine, max_tokens=4)
    assert seen[0]["n_gpu_layers"] == -1 and seen[0]["n_ctx"] == GPU["n_ctx"]
    assert seen[1] == GPU["n_batch"]
    assert out.answer.str.strip().str.len().gt(0).all()


def test_a_rung_is_planned_from_one_ladder_read(tmp_path, smol_ladder, monkeypatch):
    """The old code re-read ladder.csv per cell (n_families + 4 times per rung)."""
    from gguf_fragility.run import plan

    profile = _profile(tmp_path, smol_ladder)
    reads = []
    real = plan.read_ladder
    monkeypatch.setattr(plan, "read_ladder", lambda *a: reads.append(a) or real(*a))
    p = plan.plan_rung(profile, SMOL, NOISE_FLOOR)
    assert len(reads) == 1
    assert p.spec.weights == "F16" and p.row.name == "F16" and p.row.kv_cache == "f16"
    assert [c.family for c in p.cells] == ["arithmetic", "science_mc"]
    assert all(len(c.items.items) == 2 for c in p.cells)
    assert len({c.params_hash for c in p.cells}) == 2
    with pytest.raises(ValueError, match=r"rung 'Q4_K_M' is not in the smollm2-135m ladder .*"
                                         r"run notebook 01_ladder first"):
        plan.plan_rung(profile, SMOL, "Q4_K_M")


def test_dask_tasks_are_plans_of_one_cell(tmp_path, smol_ladder, monkeypatch):
    """Each submitted task carries the plan of its cell (picklable, no Profile)."""
    import distributed

    from gguf_fragility.profile import Profile
    from gguf_fragility.run import cluster
    from gguf_fragility.run.cells import CellRun
    from gguf_fragility.run.plan import RungPlan, plan_rung

    submitted = []

    class Done:
        def __init__(self, plan):
            self.plan = plan

        def result(self):
            return CellRun(tmp_path / "elsewhere", True, 1.0, 1)

    class Client:
        loop = None

        def submit(self, fn, *args, pure, key):
            submitted.append((fn, args, key))
            return Done(args[0])

    monkeypatch.setattr(cluster, "get_client", lambda scheduler: Client())
    monkeypatch.setattr(distributed, "as_completed", lambda futures, loop: futures)
    plan = plan_rung(_profile(tmp_path, smol_ladder), SMOL, "Q2_K")
    runs = cluster.run_cells(plan, "local:2")
    assert [r.path for r in runs] == [c.path for c in plan.cells]  # this process's paths
    assert len(submitted) == len(plan.cells)
    for (_, args, key), cell in zip(submitted, plan.cells, strict=True):
        (task,) = args
        assert isinstance(task, RungPlan) and task.cells == (cell,)
        assert not any(isinstance(v, Profile) for v in task)
        assert pickle.loads(pickle.dumps(task)).cells[0].params_hash == cell.params_hash
        assert cell.family in key


def _edit_keeping_metadata(path, column, values):
    table = pq.read_table(path)
    i = table.column_names.index(column)
    pq.write_table(table.set_column(i, column, pa.array(values, type=table.schema.field(i).type)),
                   path)


def test_statistics_refuse_an_edited_cell_or_calibration(tmp_path, capsys):
    """stats.inputs read cells and calibration with pd.read_parquet: an edited accuracy went
    into the tables (old code: no error)."""
    from gguf_fragility.layout import RunLayout

    run = RunLayout.of("edited", tmp_path)
    rows = pd.DataFrame({"model": [SMOL] * 2, "rung": ["Q2_K"] * 2, "family": ["arithmetic"] * 2,
                         "item_id": ["a", "b"], "correct": [False, True]})
    cell = run.cell(SMOL, "Q2_K", "arithmetic")
    write_table_atomic(rows, cell)
    cal = run.calibration_items(SMOL)
    write_table_atomic(rows[["model", "item_id"]].assign(usable=[True, False]), cal)
    assert artifacts.load_items(run).usable.tolist() == [True, False]
    _edit_keeping_metadata(cal, "usable", [True, True])
    capsys.readouterr()
    with pytest.raises(ValueError, match=f"{cal} cannot be used .*run 03_calibrate for {SMOL}"):
        artifacts.load_items(run)
    _edit_keeping_metadata(cell, "correct", [True, True])
    with pytest.raises(ValueError, match=f"{cell} cannot be used .*run 04_sweep for {SMOL} Q2_K"):
        artifacts.load_items(run)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "rebuilding" in ln]
    assert len(lines) == 2 and "edited or corrupted" in lines[0] and str(cell) in lines[1]


def test_cost_records_carry_a_digest_checked_on_reading(tmp_path, capsys):
    """_cost.json was written without a digest and read with json.loads: an edited tokens/s
    reached the decision table (old code: no error)."""
    from gguf_fragility.layout import RunLayout

    run = RunLayout.of("costs", tmp_path)
    path = run.cost_json(SMOL, "Q2_K")
    write_result_json(path, {"model": SMOL, "rung": "Q2_K", "gen_tps": 20.0})
    assert artifacts.load_costs(run).gen_tps.tolist() == [20.0]
    path.write_text(path.read_text().replace("20.0", "90.0"))
    capsys.readouterr()
    with pytest.raises(ValueError, match=f"{path} cannot be used .*run 04_sweep for {SMOL} Q2_K"):
        artifacts.load_costs(run)
    assert "edited or corrupted" in capsys.readouterr().err
