"""Command line: ``gguf-fragility run --profile default`` and friends.

    gguf-fragility run --profile smoke            # every chapter, then the site
    gguf-fragility run --profile default --stages ladder
    gguf-fragility ladder smollm2-135m --rungs F16 Q8_0 Q2_K
    gguf-fragility regrade --profile default     # re-score stored raw outputs, no model
    gguf-fragility fetch qwen2.5-coder-1.5b
"""

from __future__ import annotations

import argparse
import sys

from gguf_fragility.engine.gguf import GGUFError
from gguf_fragility.ladder import models, quantize
from gguf_fragility.profile import DEFAULT_RUNGS, ProfileError, load_profile
from gguf_fragility.registry import RegistryError
from gguf_fragility.report import site
from gguf_fragility.run import pipeline
from gguf_fragility.run.pipeline import ChapterError
from gguf_fragility.run.sweep import regrade
from gguf_fragility.store import LockHeld


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gguf-fragility", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a params profile's notebooks with papermill")
    r.add_argument("--profile", default="default", help="params/<profile>.yaml (default: default)")
    r.add_argument("--stages", nargs="*", help="only these stages (ladder probes calibrate sweep "
                                               "stats transfer axes)")
    r.add_argument("--no-site", action="store_true", help="do not render the report site")
    lad = sub.add_parser("ladder", help="build one model's ladder outside the notebooks")
    lad.add_argument("model")
    lad.add_argument("--rungs", nargs="+", default=list(DEFAULT_RUNGS))
    lad.add_argument("--profile", default="default")
    g = sub.add_parser("regrade", help="re-score stored raw outputs with the current scorers")
    g.add_argument("--profile", default="default")
    f = sub.add_parser("fetch", help="fetch and verify models' source GGUFs")
    f.add_argument("models", nargs="+")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one clear line per problem and exit 2."""
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "run":
            layout = load_profile(args.profile).layout
            with pipeline.run_lock(layout):  # the site too: it reads what the run wrote
                pipeline.run(args.profile, args.stages)
                if not args.no_site:
                    site.render(layout)
        elif args.cmd == "ladder":
            print(quantize.build_ladder(args.model, args.rungs,
                                        run=load_profile(args.profile).layout).to_string())
        elif args.cmd == "regrade":
            layout = load_profile(args.profile).layout
            with pipeline.run_lock(layout):  # rewrites every cell
                summary = regrade(layout)
            print(summary.to_string(index=False))
            print(f"{int(summary.changed.sum())} of {int(summary.n.sum())} verdicts changed")
        elif args.cmd == "fetch":
            for key in args.models:
                print(models.obtain(key))
    except (ProfileError, RegistryError, GGUFError, ChapterError, ValueError, LockHeld) as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"gguf-fragility: error: {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
