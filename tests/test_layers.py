"""The package follows the data flow: imports go one way, and the statistics and the report
never need llama.cpp.

Every import counts, including those inside functions (a late import is still a dependency).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from gguf_fragility import paths

PACKAGE = paths.REPO / "lib" / "gguf_fragility"
# lower rank = nearer the data; a module may import only modules of its own rank or lower
# the chapters' order: 01 ladder (whose imatrix texts come from the probes' sources), 02
# probes, 03-04 run, 05-08 stats; run and stats read what earlier chapters stored through
# ``artifacts`` and never import each other (test below)
RANKS = {"errors": 0, "paths": 0, "events": 0, "store": 0, "layout": 0, "downloads": 0, "registry": 0,
         "sources": 0, "artifacts": 0, "engine": 1, "profile": 2, "probes": 3, "ladder": 4, "run": 5,
         "stats": 6, "report": 7, "interop": 7, "cli": 8, "testing": 8}
NO_LLAMA = ("stats", "report", "profile", "layout", "artifacts")  # rooms that must import without llama.cpp


def _is_module(root: Path, dotted: str) -> bool:
    """Whether ``dotted`` names a module or package file under ``root``'s parent."""
    path = root.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def module_graph(root: Path, name: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Internal and external imports of every module under package folder ``root``."""
    internal: dict[str, set[str]] = {}
    external: dict[str, set[str]] = {}
    for f in sorted(root.rglob("*.py")):
        parts = f.relative_to(root.parent).with_suffix("").parts
        mod = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        is_pkg = f.name == "__init__.py"
        internal[mod], external[mod] = set(), set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                # ``from pkg import sub`` depends on pkg.sub; ``from pkg import name`` on pkg
                targets = [f"{prefix}.{a.name}" if _is_module(root, f"{prefix}.{a.name}")
                           else prefix for a in node.names]
            for t in targets:
                if t == name or t.startswith(name + "."):
                    internal[mod].add(t)
                else:
                    external[mod].add(t.split(".")[0])
    for mod, deps in internal.items():  # keep only names that are modules
        internal[mod] = {d for d in deps if d in internal and d != mod}
    return internal, external


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle (as a list of modules, first repeated last), or [] if none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        stack.pop()
        state[m] = 2
        return []

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return []


def rank(mod: str) -> int:
    """Layer of a module of this package (by its first component after the package)."""
    parts = mod.split(".")
    return RANKS[parts[1]] if len(parts) > 1 else -1


def closure(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for d in graph.get(todo.pop(), ()):
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def test_package_has_no_import_cycle():
    internal, _ = module_graph(PACKAGE, "gguf_fragility")
    assert len(internal) > 30
    assert find_cycle(internal) == []


def test_imports_only_go_toward_the_data():
    internal, _ = module_graph(PACKAGE, "gguf_fragility")
    unknown = {m.split(".")[1] for m in internal if "." in m} - set(RANKS)
    assert not unknown, f"modules outside the known rooms: {unknown}; add them to RANKS"
    upward = sorted(f"{m} -> {d}" for m, deps in internal.items() for d in deps
                    if rank(d) > rank(m))
    assert upward == []


def test_run_and_stats_do_not_import_each_other():
    internal, _ = module_graph(PACKAGE, "gguf_fragility")
    room = {m: m.split(".")[1] for m in internal if "." in m}
    across = sorted(f"{m} -> {d}" for m, deps in internal.items() for d in deps
                    if {room.get(m), room.get(d)} == {"run", "stats"})
    assert across == []
    assert rank("gguf_fragility.artifacts") < rank("gguf_fragility.run.sweep")
    assert "gguf_fragility.artifacts" in internal["gguf_fragility.run.plan"]
    assert "gguf_fragility.artifacts" in internal["gguf_fragility.stats.results"]


def test_statistics_and_report_never_reach_llama_cpp():
    internal, external = module_graph(PACKAGE, "gguf_fragility")
    offenders = []
    for mod in internal:
        if mod.split(".")[1:2] and mod.split(".")[1] in NO_LLAMA:
            reach = {mod} | closure(internal, mod)
            via = sorted(m for m in reach if "llama_cpp" in external[m])
            if via:
                offenders.append(f"{mod} reaches llama_cpp via {via}")
    assert offenders == []


def _write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        f = root / "pkg" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return root / "pkg"


def test_checker_finds_a_cycle_built_on_purpose(tmp_path):
    pkg = _write_tree(tmp_path, {
        "__init__.py": "", "a.py": "from pkg import b\n",
        "sub/__init__.py": "", "sub/c.py": "from .. import a\n",
        "b.py": "def f():\n    from pkg.sub import c  # a late import is still an import\n"})
    internal, _ = module_graph(pkg, "pkg")
    cycle = find_cycle(internal)
    assert cycle[0] == cycle[-1] and {"pkg.a", "pkg.b", "pkg.sub.c"} <= set(cycle)
    (pkg / "b.py").write_text("X = 1\n")
    assert find_cycle(module_graph(pkg, "pkg")[0]) == []


def test_checker_sees_llama_through_another_module(tmp_path):
    pkg = _write_tree(tmp_path, {"__init__.py": "", "stats/__init__.py": "",
                                 "stats/s.py": "from pkg.engine import e\n",
                                 "engine/__init__.py": "", "engine/e.py": "import llama_cpp\n"})
    internal, external = module_graph(pkg, "pkg")
    reach = closure(internal, "pkg.stats.s")
    assert "pkg.engine.e" in reach and "llama_cpp" in external["pkg.engine.e"]


def test_statistics_import_without_llama_cpp(no_llama_env):
    code = ("import gguf_fragility.stats.results, gguf_fragility.stats.transfer, "
            "gguf_fragility.report.site, gguf_fragility.profile, gguf_fragility.testing\n"
            "try:\n    import llama_cpp\nexcept ImportError:\n    print('blocked')\n")
    out = subprocess.run([sys.executable, "-c", code], env=no_llama_env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "blocked"
    # the blocker really blocks: a module that needs llama.cpp fails to import
    bad = subprocess.run([sys.executable, "-c", "import gguf_fragility.engine.llama"],
                         env=no_llama_env, capture_output=True, text=True)
    assert bad.returncode != 0 and "llama_cpp is blocked" in bad.stderr
