"""Command line: ``gguf-fragility run --profile default`` and friends.

    gguf-fragility run --profile smoke            # every chapter, then the site
    gguf-fragility run --profile default --stages ladder
    gguf-fragility run --profile default --budget 45m   # a budgeted, sequential sweep
    gguf-fragility ladder smollm2-135m --rungs F16 Q8_0 Q2_K
    gguf-fragility regrade --profile default     # re-score stored raw outputs, no model
    gguf-fragility fetch qwen2.5-coder-1.5b
    gguf-fragility import-lm-eval --profile P --model M --reference DIR --rung Q2_K=DIR
    gguf-fragility export-lm-eval --profile default --to DIR

Exit codes: 0 done and every check passed; 1 a check of the site failed (claim check,
external resources); 2 a user error, one line per problem (an outputs folder that is
read-only or full included); 130/143 stopped by Ctrl-C/SIGTERM
(finished work is kept and a rerun resumes).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from gguf_fragility.engine.gguf import GGUFError
from gguf_fragility.errors import write_failure
from gguf_fragility.interop import commands as lmeval
from gguf_fragility.profile import (
    DEFAULT_RUNGS,
    ProfileError,
    load_profile,
    parse_minutes,
    registry_warnings,
    with_budget_minutes,
)
from gguf_fragility.registry import RegistryError
from gguf_fragility.run import pipeline
from gguf_fragility.run.pipeline import ChapterError, Terminated
from gguf_fragility.store import LockHeld

# The site, the statistics, the ladder builder and regrade are imported by the subcommands
# that use them: together they add ~1 s to every start on a 2-core CPU, ~3 s without cached
# bytecode (``--help``, a run with --no-site or some stages; notebook kernels import their own).


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gguf-fragility", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a params profile's notebooks with papermill")
    r.add_argument("--profile", default="default", help="params/<profile>.yaml (default: default)")
    r.add_argument("--stages", nargs="*", help="only these stages (ladder probes calibrate sweep "
                                               "stats transfer axes lesions); the site is "
                                               "rendered only when every stage runs")
    r.add_argument("--no-site", action="store_true", help="do not render the report site")
    r.add_argument("--budget", metavar="DURATION", help="a budgeted, sequential sweep of this "
                   "wall time (45m, 1.5h, 90s): the profile's budget with these minutes")
    lad = sub.add_parser("ladder", help="build one model's ladder outside the notebooks")
    lad.add_argument("model")
    lad.add_argument("--rungs", nargs="+", default=list(DEFAULT_RUNGS))
    lad.add_argument("--profile", default="default")
    g = sub.add_parser("regrade", help="re-score stored raw outputs with the current scorers")
    g.add_argument("--profile", default="default")
    f = sub.add_parser("fetch", help="fetch and verify models' source GGUFs")
    f.add_argument("models", nargs="+")
    lmeval.add_commands(sub)
    return p


def _error(message: str) -> None:
    """Print one ``gguf-fragility: error:`` line per line of ``message`` on stderr."""
    for line in message.splitlines() or [""]:
        print(f"gguf-fragility: error: {line}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    """``gguf-fragility run``: the notebooks, then the site unless some stages were left out;
    1 when a check of the site fails."""
    minutes = None if args.budget is None else parse_minutes(args.budget)
    profile = load_profile(args.profile)
    if minutes is not None:
        profile = with_budget_minutes(profile, minutes)
    for line in registry_warnings(profile):
        print(f"gguf-fragility: warning: {line} (profile {profile.name!r} does not use it)",
              file=sys.stderr)
    from gguf_fragility.report import site
    from gguf_fragility.stats.sequential import judge_run
    from gguf_fragility.stats.settings import Settings

    layout = profile.layout
    with pipeline.run_lock(layout):  # the site too: it reads what the run wrote
        pipeline.run(args.profile, args.stages, budget_minutes=minutes,
                     judge=partial(judge_run, s=Settings.of(profile)))
        skipped = pipeline.left_out(args.stages)
        if args.no_site:
            return 0
        if skipped:
            print(f"site: not rendered: this run left out stage(s) {' '.join(skipped)}, whose "
                  f"numbers the site and its claim check need; `gguf-fragility run --profile "
                  f"{args.profile}` runs every stage (finished work is reused) and renders it")
            return 0
        problems = site.render(layout).problems()
    for line in problems:
        _error(line)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one clear line per problem and exit 2."""
    args = _parser().parse_args(argv)
    try:
        with pipeline.stop_on_sigterm():
            return _command(args)
    except (ProfileError, RegistryError, GGUFError, ChapterError, ValueError, LockHeld) as exc:
        _error(str(exc) or type(exc).__name__)
        return 2
    except OSError as exc:  # a read-only or full outputs folder; other OS errors stay loud
        folder = _outputs_folder(args)
        where = exc.filename or (f"a file in {folder}" if folder else None)
        line = write_failure(exc.errno, where, exc.strerror)
        if line is None:
            raise
        _error(line)
        return 2
    except (Terminated, KeyboardInterrupt) as exc:
        how, code = ("SIGTERM", 143) if isinstance(exc, Terminated) else ("Ctrl-C", 130)
        print(f"gguf-fragility: stopped by {how} {f'during {exc}' if str(exc) else 'between steps'}"
              f" of `{' '.join(['gguf-fragility', *(argv or sys.argv[1:])])}`; finished work is "
              "kept: run the same command again to resume", file=sys.stderr)
        return code


def _outputs_folder(args: argparse.Namespace) -> str | None:
    """The outputs folder of the command's profile, for messages; None when it has none."""
    try:
        return str(load_profile(args.profile).layout.root) if hasattr(args, "profile") else None
    except Exception:  # a message helper: the profile's own error was reported, or will be
        return None


def _command(args: argparse.Namespace) -> int:
    """Run one subcommand; its exit code."""
    if args.cmd == "run":
        return _run(args)
    if args.cmd == "ladder":
        from gguf_fragility.ladder import quantize

        print(quantize.build_ladder(args.model, args.rungs,
                                    run=load_profile(args.profile).layout).to_string())
    elif args.cmd == "regrade":
        from gguf_fragility.run.sweep import regrade

        layout = load_profile(args.profile).layout
        with pipeline.run_lock(layout):  # rewrites every cell
            summary = regrade(layout)
        print(summary.to_string(index=False))
        print(f"{int(summary.changed.sum())} of {int(summary.n.sum())} verdicts changed")
    elif args.cmd in lmeval.COMMANDS:
        print(lmeval.COMMANDS[args.cmd](args))
    elif args.cmd == "fetch":
        from gguf_fragility.ladder import models

        for key in args.models:
            print(models.obtain(key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
