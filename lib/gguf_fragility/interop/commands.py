"""``gguf-fragility import-lm-eval`` and ``export-lm-eval``: argument parsing for :mod:`.cli`."""

from __future__ import annotations

import argparse

from gguf_fragility import paths
from gguf_fragility.interop.export import export_lm_eval
from gguf_fragility.interop.importer import import_lm_eval
from gguf_fragility.interop.lmeval import ImportRefused
from gguf_fragility.profile import load_profile
from gguf_fragility.run.pipeline import Job, execute, run_lock

CHAPTER = "09_imported"  # the site's page on an imported run (executed by the import)


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    """``KEY=VALUE`` arguments as a dict (one-line refusal naming a malformed one)."""
    out = {}
    for v in values or []:
        key, sep, value = v.partition("=")
        if not sep or not key or not value:
            raise ImportRefused(f"{flag} {v!r}: expected {flag} NAME=VALUE (e.g. {flag} "
                                "Q2_K=runs/q2k)")
        out[key] = value
    return out


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``import-lm-eval`` and ``export-lm-eval`` to the CLI's subcommands."""
    i = sub.add_parser("import-lm-eval", help="import lm-eval 0.4.x --log_samples runs as cells")
    i.add_argument("--profile", default="default", help="params/<profile>.yaml whose outputs "
                                                         "folder receives the cells")
    i.add_argument("--model", required=True, help="model key the chapters show")
    i.add_argument("--reference", required=True, help="lm-eval output folder of the reference")
    i.add_argument("--rung", action="append", required=True, metavar="QUANT=DIR",
                   help="lm-eval output folder of one rung (repeat per rung)")
    i.add_argument("--task", action="append", metavar="TASK=FAMILY",
                   help="import only these tasks, under these family names")
    i.add_argument("--filter", action="append", metavar="TASK=FILTER",
                   help="filter whose answers are compared (default: the reference's first)")
    i.add_argument("--gguf", action="append", metavar="RUNG=FILE",
                   help="a rung's GGUF, for its real bits per weight (default: nominal)")
    e = sub.add_parser("export-lm-eval", help="write a run's cells as lm-eval sample files")
    e.add_argument("--profile", default="default")
    e.add_argument("--to", required=True, help="output folder (<model>/<rung>/samples_*.jsonl)")
    e.add_argument("--model", action="append", help="only these models")


def run_import(args: argparse.Namespace) -> str:
    """``import-lm-eval``: the per rung × family counts it wrote."""
    layout = load_profile(args.profile).layout
    with run_lock(layout):
        done = import_lm_eval(layout, args.model, args.reference, _pairs(args.rung, "--rung"),
                              tasks=_pairs(args.task, "--task") or None,
                              filters=_pairs(args.filter, "--filter"),
                              ggufs=_pairs(args.gguf, "--gguf"))
        execute(Job("imported", paths.NOTEBOOKS / f"{CHAPTER}.ipynb",
                    layout.executed_dir / f"{CHAPTER}.ipynb", {"profile": args.profile}))
    return (done.cells.drop(columns="path").to_string(index=False)
            + f"\nprovenance: {done.manifest}\nnext: gguf-fragility run --profile {args.profile} "
            f"--stages stats transfer, then python -m gguf_fragility.report.site {args.profile}")


def run_export(args: argparse.Namespace) -> str:
    """``export-lm-eval``: the sample files it wrote."""
    layout = load_profile(args.profile).layout
    written = export_lm_eval(layout, args.to, args.model)
    return written.to_string(index=False)


COMMANDS = {"import-lm-eval": run_import, "export-lm-eval": run_export}
