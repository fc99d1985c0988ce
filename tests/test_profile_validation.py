"""Issue 17: a profile is checked completely when it loads, before any notebook runs.

Every problem is reported at once, one line each naming the file, key and value; the CLI
prints them and exits 2. Registries here are test files (``GGUF_FRAGILITY_REGISTRY``);
``params/`` is never edited.
"""

import ast
import re

import pytest
import yaml

from gguf_fragility import cli, paths, registry
from gguf_fragility.profile import ProfileError, known_families, load_profile
from gguf_fragility.registry import RegistryError, load_registry
from gguf_fragility.run.pipeline import Job, chapter_message, plan

ZEROS = "0" * 64


@pytest.fixture
def user_registry(tmp_path, monkeypatch):
    """A registry with one local model ``mine`` (a file under a folder with spaces)."""
    folder = tmp_path / "my models"
    folder.mkdir()
    gguf = folder / "my model.gguf"
    gguf.write_bytes(b"GGUF placeholder")  # existence is what load_profile checks

    def write(sha256_line: str = "", path: str | None = None) -> str:
        text = ("models:\n  mine:\n    family: X\n    display: mine\n    licence: MIT\n"
                f"    source:\n      kind: local\n      path: \"{path or gguf}\"\n{sha256_line}")
        reg = tmp_path / "models.yaml"
        reg.write_text(text)
        monkeypatch.setenv("GGUF_FRAGILITY_REGISTRY", str(reg))
        return str(reg)

    write()
    return write


def _profile(tmp_path, text: str):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return path


def _problems(path) -> list[str]:
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    return str(info.value).splitlines()


def test_registry_path_is_read_from_the_environment_at_call_time(user_registry, tmp_path):
    assert paths.registry() == tmp_path / "models.yaml"
    assert list(load_registry()) == ["mine"]


def test_user_model_only_profile_loads(user_registry, tmp_path):
    prof = load_profile(_profile(tmp_path, "models:\n  mine:\n    rungs: [F16, Q2_K]\n"))
    assert list(prof.models) == ["mine"]


def test_user_model_only_profile_runs_02_for_its_model(user_registry, tmp_path):
    prof = load_profile(_profile(tmp_path, "models:\n  mine:\n    rungs: [F16, Q2_K]\n"))
    probes = [j for j in plan(prof) if j.stage == "probes"]
    assert [(j.output.name, j.parameters) for j in probes] == [
        ("02_probes.ipynb", {"profile": "mine", "model": "mine"})]


def test_unknown_model_key(user_registry, tmp_path):
    (line,) = _problems(_profile(tmp_path, "models:\n  smollm2-135m: {}\n"))
    assert re.search(r"mine.yaml: models.smollm2-135m: model key 'smollm2-135m' is not in "
                     r".*models.yaml; known keys: mine", line)


def test_unknown_family_names(user_registry, tmp_path):
    lines = _problems(_profile(tmp_path, "models:\n  mine:\n    families: [arithmetc]\n"
                                         "families: [reading, mathz]\n"
                                         "family_items_cap: {cod: 5}\n"))
    assert len(lines) == 3
    assert any("families: unknown family 'mathz'; families are: arithmetic" in x for x in lines)
    assert any("models.mine.families: unknown family 'arithmetc'" in x for x in lines)
    assert any("family_items_cap: unknown family 'cod'" in x for x in lines)


def test_known_families_match_the_probe_registry():
    from gguf_fragility.probes.families import FAMILIES

    assert sorted(known_families()) == sorted(FAMILIES)


@pytest.mark.parametrize("text, match", [
    ("n_items: -3\n", r"mine.yaml: n_items: -3 is out of range; use >= 1"),
    ("n_items: 0\n", r"n_items: 0 is out of range"),
    ("family_items_cap: {code: 0}\n", r"family_items_cap.code: 0 is out of range; use >= 1"),
    ("min_usable: -1\n", r"min_usable: -1 is out of range; use >= 0"),
    ("shift_passages: 0\n", r"shift_passages: 0 is out of range"),
    ("n_boot: 0\n", r"n_boot: 0 is out of range"),
    ("alpha: 1.5\n", r"alpha: 1.5 is out of range; use between"),
    ("engine: {n_threads: 0}\n", r"engine.n_threads: 0 is out of range; use >= 1"),
    ("budgets_gib: [4, -1]\n", r"budgets_gib: -1.0 is out of range"),
    ("equivalence_margin: 3\n",  # points where a share is meant
     r"equivalence_margin: 3.0 is out of range; use between .*0.03 is 3 accuracy points"),
    ("fidelity_margin: 0\n", r"fidelity_margin: 0.0 is out of range; use between"),
    ("gold_prob_margin_pp: 150\n", r"gold_prob_margin_pp: 150.0 is out of range; use between"),
    ("reply_prob_margin_pp: -1\n", r"reply_prob_margin_pp: -1.0 is out of range; use between"),
])
def test_counts_out_of_range(user_registry, tmp_path, text, match):
    (line,) = _problems(_profile(tmp_path, "models:\n  mine: {}\n" + text))
    assert re.search(match, line), line


def test_model_n_items_out_of_range(user_registry, tmp_path):
    (line,) = _problems(_profile(tmp_path, "models:\n  mine:\n    n_items: -3\n"))
    assert "models.mine.n_items: -3 is out of range" in line


def test_every_problem_is_reported_at_once(user_registry, tmp_path):
    lines = _problems(_profile(tmp_path, (
        "models:\n  nope: {}\n  mine:\n    rungs: [F16, Q4_K_Z]\n"
        "families: [arithmetic, mathz]\nn_items: -3\nn_itemz: 4\nmin_usable: many\n")))
    assert len(lines) == 6, lines
    assert all(x.startswith(str(tmp_path / "mine.yaml")) for x in lines)
    for part in ("unknown key(s) ['n_itemz']", "min_usable: expected int, got 'many'",
                 "n_items: -3", "'mathz'", "'nope'", "'Q4_K_Z'"):
        assert any(part in x for x in lines), part


def test_local_model_file_missing_at_load(user_registry, tmp_path):
    user_registry(path=str(tmp_path / "gone" / "model.gguf"))
    (line,) = _problems(_profile(tmp_path, "models:\n  mine: {}\n"))
    assert re.search(r"models.mine: its local GGUF .*gone/model.gguf does not exist; "
                     r"fix source.path of 'mine'", line)


@pytest.mark.parametrize("sha_line, match", [
    (f"      sha256: {ZEROS}\n", r"sha256: 0 is a YAML int, not a hash string; write the 64 hex "
                                r"digits in double quotes"),
    ("      sha256: 1e5\n", r"sha256: '1e5' is not a sha256"),  # YAML 1.1: a string, but no hash
    ("      sha256: 12345678\n", r"sha256: 12345678 is a YAML int"),
    (f"      sha256: \"{'A' * 64}\"\n", r"is not a sha256 \(64 lowercase hex digits\)"),
    ("      sha256: \"abc\"\n", r"sha256: 'abc' is not a sha256"),
])
def test_bad_hash_in_registry(user_registry, tmp_path, sha_line, match):
    reg = user_registry(sha_line)
    with pytest.raises(RegistryError, match=match):
        load_registry()
    (line,) = _problems(_profile(tmp_path, "models:\n  mine: {}\n"))  # caught at profile load
    assert line.startswith(f"{reg}: models.mine.source.sha256: ") and re.search(match, line)


def test_quoted_hash_and_null_are_accepted(user_registry):
    user_registry(f"      sha256: \"{ZEROS}\"\n")
    assert load_registry()["mine"].sha256 == ZEROS
    user_registry("      sha256: null\n")
    assert load_registry()["mine"].sha256 is None


def test_registry_reports_every_bad_entry(tmp_path):
    reg = tmp_path / "models.yaml"
    reg.write_text(yaml.safe_dump({"models": {
        "a": {"family": "X", "display": "a", "licence": "MIT",
              "source": {"kind": "local", "path": "a.gguf", "sha256": 0}},
        "b": {"family": "X", "licence": "MIT", "source": {"kind": "ftp"}}}}))
    with pytest.raises(RegistryError) as info:
        load_registry(reg)
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and "models.a.source.sha256: 0" in lines[0]
    assert "models.b.display: missing" in lines[1]


def test_shipped_registry_and_profiles_are_valid():
    load_registry(paths.REGISTRY)
    for p in sorted(paths.PARAMS.glob("*.yaml")):
        if p.stem != "models":
            load_profile(p)


def test_cli_prints_one_line_per_problem_and_exits_2(user_registry, tmp_path, capsys):
    prof = _profile(tmp_path, "models:\n  nope: {}\nn_items: -3\n")
    assert cli.main(["run", "--profile", str(prof)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(x.startswith("gguf-fragility: error: ") for x in err)


def test_chapter_error_is_one_line_with_the_executed_notebook(tmp_path):
    job = Job("ladder", paths.NOTEBOOKS / "01_ladder.ipynb", tmp_path / "01_ladder__mine.ipynb",
              {"profile": "mine", "model": "mine"})
    msg = chapter_message(job, "GGUFError", "/x/my model.gguf is not a GGUF file")
    assert msg == ("01_ladder (profile=mine, model=mine) stopped: GGUFError: /x/my model.gguf is "
                   f"not a GGUF file (details: {tmp_path / '01_ladder__mine.ipynb'})")


def test_no_message_tells_the_user_to_delete_a_file():
    offenders = []
    for f in sorted((paths.REPO / "lib" / "gguf_fragility").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Raise):
                text = " ".join(c.value for c in ast.walk(node)
                                if isinstance(c, ast.Constant) and isinstance(c.value, str))
                if re.search(r"\b(delete|remove|rm)\b", text, re.I):
                    offenders.append(f"{f.name}:{node.lineno}")
    assert offenders == []


def test_registry_module_needs_no_heavy_imports():
    src = ast.parse((paths.REPO / "lib" / "gguf_fragility" / "registry.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(src) if isinstance(n, ast.Import)
                for a in n.names} | {n.module.split(".")[0] for n in ast.walk(src)
                                     if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "re", "dataclasses", "pathlib", "typing", "yaml",
                        "gguf_fragility"}
    assert registry.SHA256.fullmatch(ZEROS)


def test_bad_registry_entry_and_unknown_key_are_both_reported(user_registry, tmp_path):
    user_registry(f"      sha256: {ZEROS}\n")
    lines = _problems(_profile(tmp_path, "models:\n  mine: {}\n  other: {}\n"))
    assert len(lines) == 2
    assert "models.mine.source.sha256: 0 is a YAML int" in lines[0]
    assert "model key 'other' is not in" in lines[1] and "known keys: mine" in lines[1]


def _two_entry_registry(tmp_path, monkeypatch) -> str:
    """``mine`` (good, a placeholder local file) and ``broken`` (an unquoted all-zero hash)."""
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF placeholder")
    entry = "    family: X\n    display: {0}\n    licence: MIT\n    source:\n      kind: local\n"
    reg = tmp_path / "models.yaml"
    reg.write_text("models:\n  mine:\n" + entry.format("mine") + f"      path: \"{gguf}\"\n"
                   "  broken:\n" + entry.format("broken") + f"      path: \"{gguf}\"\n"
                   f"      sha256: {ZEROS}\n")
    monkeypatch.setenv("GGUF_FRAGILITY_REGISTRY", str(reg))
    return str(reg)


def test_bad_registry_entry_blocks_only_the_profiles_that_use_it(tmp_path, monkeypatch):
    """Issue 29: one bad entry refused every profile (and every model lookup), including
    those that never name it. Now it blocks only its users, and the others get a warning."""
    from gguf_fragility import profile as profile_mod

    reg = _two_entry_registry(tmp_path, monkeypatch)
    prof = load_profile(_profile(tmp_path, "models:\n  mine: {}\n"))
    assert list(prof.models) == ["mine"]
    assert registry.get_spec("mine").display == "mine"  # what a chapter's kernel looks up
    (warning,) = profile_mod.registry_warnings(prof)
    assert warning.startswith(f"{reg}: models.broken.source.sha256: 0 is a YAML int")
    (line,) = _problems(_profile(tmp_path, "models:\n  broken: {}\n"))
    assert line.startswith(f"{reg}: models.broken.source.sha256: 0 is a YAML int"), line
    with pytest.raises(RegistryError, match=r"models.broken.source.sha256: 0 is a YAML int"):
        registry.get_spec("broken")
    with pytest.raises(RegistryError, match=r"models.broken"):  # the whole-file check still sees it
        load_registry()


def test_rung_or_family_listed_twice_is_refused(user_registry, tmp_path):
    """Issue 29: `[F16, Q2_K, Q2_K]` was accepted without a word (the rung swept twice)."""
    lines = _problems(_profile(tmp_path, "models:\n  mine:\n    rungs: [F16, Q2_K, Q2_K]\n"
                                         "    families: [arithmetic, arithmetic]\n"
                                         "families: [code, reading, code]\n"))
    assert len(lines) == 3, lines
    assert lines[0].endswith("mine.yaml: families: 'code' is listed 2 times in "
                             "['code', 'reading', 'code']; keep one"), lines
    assert lines[1].endswith("mine.yaml: models.mine.rungs: 'Q2_K' is listed 2 times in "
                             "['F16', 'Q2_K', 'Q2_K']; keep one"), lines
    assert lines[2].endswith("mine.yaml: models.mine.families: 'arithmetic' is listed 2 times "
                             "in ['arithmetic', 'arithmetic']; keep one"), lines


def test_empty_family_list_is_refused(user_registry, tmp_path):
    """Issue 29: `families: []` was accepted without a word and meant every family."""
    lines = _problems(_profile(tmp_path, "models:\n  mine:\n    families: []\nfamilies: []\n"))
    assert len(lines) == 2, lines
    assert lines[0] == (f"{tmp_path / 'mine.yaml'}: families: an empty list selects no family; "
                        "list family names, or leave 'families' out to run every family of "
                        "the battery")
    assert lines[1].startswith(f"{tmp_path / 'mine.yaml'}: models.mine.families: an empty list")


def test_a_new_source_kind_is_one_class_and_one_registry_line(tmp_path, monkeypatch):
    """The registry parses ``source:`` through :data:`sources.SOURCES`, with no list of kinds
    of its own: an unknown kind is refused naming the registered ones, and a registered
    class parses its kind's block."""
    from dataclasses import dataclass
    from typing import ClassVar

    from gguf_fragility import sources

    reg = tmp_path / "models.yaml"
    reg.write_text(yaml.safe_dump({"models": {"m": {
        "family": "X", "display": "m", "licence": "MIT",
        "source": {"kind": "ftp", "url": "ftp://example.org/m.gguf"}}}}))
    with pytest.raises(RegistryError, match=r"source.kind: 'ftp' is not one of 'pypi', 'local'"):
        load_registry(reg)

    @dataclass(frozen=True)
    class FtpSource:
        url: str
        kind: ClassVar[str] = "ftp"
        downloaded: ClassVar[bool] = True

        @classmethod
        def parse(cls, src, where):
            return cls(src["url"]), []

    monkeypatch.setitem(sources.SOURCES, "ftp", FtpSource)
    spec = load_registry(reg)["m"]
    assert spec.kind == "ftp" and spec.source == FtpSource("ftp://example.org/m.gguf")
