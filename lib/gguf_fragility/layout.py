"""Where one run's artifacts live: the single owner of every file name under ``outputs/``.

A :class:`RunLayout` is a value (the run's root folder), passed to whatever reads or
writes a run's files; nothing mutates a global. :func:`RunLayout.of` resolves the root
once: ``$GGUF_FRAGILITY_OUTPUTS/<profile>`` when that variable is set, else
``outputs/<profile>`` in the checkout. Model files live elsewhere (:mod:`.paths`).
The tables under ``tables/`` are named by :class:`Table` and found with
:meth:`RunLayout.table`; no other module spells a table's file name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from gguf_fragility import paths


def outputs_root() -> Path:
    """The folder that holds one sub-folder per profile (read from the environment now)."""
    return Path(os.environ.get("GGUF_FRAGILITY_OUTPUTS", paths.REPO / "outputs"))


class Table(StrEnum):
    """Every table of ``outputs/<profile>/tables/``: the value is the CSV's name without
    ``.csv``, and a field of the chapter's NamedTuple of tables
    (:func:`gguf_fragility.store.write_tables`)."""

    # chapter 5 (gguf_fragility.stats.results.StatsTables)
    ACCURACY = "accuracy"
    COMPARISONS = "comparisons"
    DEATH_ORDER = "death_order"
    DECISION = "decision"
    RECOMMENDATIONS = "recommendations"
    PLANNER = "planner"
    LENS_SUMMARY = "lens_summary"
    # chapter 6 (stats.transfer.TransferTables)
    TRANSFER_FAMILIES = "transfer_families"
    TRANSFER_RANK = "transfer_rank"
    TRANSFER_DECISIONS = "transfer_decisions"
    # chapter 7 (stats.axes.AxesTables)
    AXIS_COMPARISONS = "axis_comparisons"
    KV_COSTS = "kv_costs"
    # chapter 8 (stats.recipes.LesionTables)
    LESION_MAP = "lesion_map"
    LESION_SHARES = "lesion_shares"
    LESION_RECIPE = "lesion_recipe"
    RECIPE_COMPARISON = "recipe_comparison"
    # lm-eval import (interop.importer.ImportedTables: imported_<field>)
    IMPORTED_RUNGS = "imported_rungs"
    IMPORTED_TASKS = "imported_tasks"
    # the site's derived numbers (report.pages, report.landing)
    SETTINGS = "settings"
    SITE_HEADLINE = "site_headline"
    SITE_ADVICE = "site_advice"
    SITE_ADVICE_COSTS = "site_advice_costs"
    SITE_BUDGET_CELLS = "site_budget_cells"  # stats.sequential.budget_summary of a budgeted run
    SITE_BUDGET_FURTHER = "site_budget_further"
    # a budgeted sweep's looks (run.looks: stats.sequential.decide_cells per look)
    SEQUENTIAL = "sequential"

    @classmethod
    def of(cls, name: Table | str) -> Table:
        """The table named ``name``.

        Raises
        ------
        ValueError
            For a name that is no table, listing the known ones.
        """
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"unknown table {name!r}; tables are: "
                             f"{', '.join(t.value for t in cls)} (add new ones to "
                             "gguf_fragility.layout.Table)") from None

    @property
    def file_name(self) -> str:
        """The CSV's file name."""
        return f"{self.value}.csv"


@dataclass(frozen=True)
class RunLayout:
    """Every path of one profile's run, under ``root`` (= ``outputs/<profile>``)."""

    root: Path

    @classmethod
    def of(cls, profile: str, outputs: str | Path | None = None) -> RunLayout:
        """The layout of profile ``profile`` under ``outputs`` (default :func:`outputs_root`)."""
        return cls(Path(outputs if outputs is not None else outputs_root()) / profile)

    @property
    def profile(self) -> str:
        """The profile name (the root folder's name)."""
        return self.root.name

    @property
    def lock(self) -> Path:
        """Held (``flock``) by the one run writing this folder; holds its PID and start time."""
        return self.root / "run.lock"

    @property
    def events_log(self) -> Path:
        """One timed line per rebuild, lock takeover and skipped notebook of every run here
        (:mod:`gguf_fragility.events`)."""
        return self.root / "events.log"

    # chapter 1: the ladder
    def ladder_dir(self, model: str) -> Path:
        """Ladder manifest (``ladder.csv`` + ``ladder.json``) of one model."""
        return self.root / "ladder" / model

    def ladder_csv(self, model: str) -> Path:
        """The ladder manifest table of one model."""
        return self.ladder_dir(model) / "ladder.csv"

    def ladder_csvs(self) -> list[Path]:
        """Every model's ladder manifest table, sorted by model."""
        return sorted((self.root / "ladder").glob("*/ladder.csv"))

    # chapter 2: the probes
    def probe_tables_dir(self, model: str) -> Path:
        """Chapter 2's model tables (examples, prompt lengths, scored demo) of one model."""
        return self.root / "probes" / model

    # chapter 3: calibration
    @property
    def calibration_dir(self) -> Path:
        """Calibration tables and the prompt-variant cells."""
        return self.root / "calibration"

    def calibration_items(self, model: str) -> Path:
        """Per-item calibration verdicts (``usable``) of one model."""
        return self.calibration_dir / f"{model}_items.parquet"

    def calibration_report(self, model: str) -> Path:
        """Per-family calibration report (``measurable``) of one model."""
        return self.calibration_dir / f"{model}_report.csv"

    def calibration_gate(self, model: str) -> Path:
        """Calibration's verdict on whether the model may be swept."""
        return self.calibration_dir / f"{model}.json"

    # chapter 4: the sweep
    @property
    def sweep_dir(self) -> Path:
        """Item-level cells: ``<model>/<rung>/<family>.parquet``."""
        return self.root / "sweep"

    def cell(self, model: str, rung: str, family: str, variant: int = 0) -> Path:
        """One cell's parquet file (variant 1 is calibration's prompt variation)."""
        if variant:
            return self.calibration_dir / model / f"v{variant}" / f"{family}.parquet"
        return self.sweep_dir / model / rung / f"{family}.parquet"

    def cells(self) -> list[Path]:
        """Every stored sweep cell (variant 0), sorted."""
        return sorted(self.sweep_dir.glob("*/*/*.parquet"))

    def cost_json(self, model: str, rung: str) -> Path:
        """Memory and speed of one rung."""
        return self.sweep_dir / model / rung / "_cost.json"

    def shift_json(self, model: str, rung: str) -> Path:
        """KL divergence of one rung on the text sample."""
        return self.sweep_dir / model / rung / "_shift.json"

    def reference_logprobs(self, model: str) -> Path:
        """The reference's full log-prob rows on the text sample (llama-perplexity's uint16
        encoding, :func:`gguf_fragility.run.shift.write_reference`)."""
        return self.sweep_dir / model / "_reference_logprobs.npz"

    @property
    def looks_state(self) -> Path:
        """A budgeted sweep's look state (JSON, :mod:`gguf_fragility.run.looks`): the look in
        progress, each steered cell's target, the look that decided it and its measured cost,
        written before each look extends, so a killed run resumes that look exactly."""
        return self.sweep_dir / "_looks.json"

    def rung_jsons(self, name: str) -> list[Path]:
        """Every rung's ``name`` file (``_cost.json`` or ``_shift.json``), sorted."""
        return sorted(self.sweep_dir.glob(f"*/*/{name}"))

    # chapters 5-6 and the site
    @property
    def tables_dir(self) -> Path:
        """CSV tables: the single source of every number in the report."""
        return self.root / "tables"

    def table(self, name: Table | str) -> Path:
        """The CSV file of table ``name`` (a :class:`Table`, or its value: :meth:`Table.of`)."""
        return self.tables_dir / Table.of(name).file_name

    @property
    def stats_config(self) -> Path:
        """The statistics settings chapter 5 used (JSON, beside the tables)."""
        return self.tables_dir / "stats_config.json"

    @property
    def figures_dir(self) -> Path:
        """Chart files (SVG)."""
        return self.root / "figures"

    @property
    def executed_dir(self) -> Path:
        """Executed notebooks written by papermill."""
        return self.root / "notebooks"

    @property
    def site_dir(self) -> Path:
        """The rendered website."""
        return self.root / "site"

    @property
    def site_src(self) -> Path:
        """The staged website project the renderer reads."""
        return self.root / "site_src"

    @property
    def timings(self) -> Path:
        """Wall time of every executed notebook."""
        return self.root / "timings.csv"

    @property
    def claim_check(self) -> Path:
        """The claim check's per-number report."""
        return self.root / "claim_check.csv"
