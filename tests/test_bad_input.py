"""Every bad input of issue 2 gives a clear error naming the file/value and what to do."""

import shutil

import pytest
import yaml

from gguf_fragility import paths
from gguf_fragility.engine.gguf import GGUFError, open_gguf
from gguf_fragility.ladder import models, quantize
from gguf_fragility.profile import ProfileError, load_profile
from gguf_fragility.registry import RegistryError, get_spec, load_registry


def _registry(tmp_path, source: dict):
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": {"mine": {
        "family": "X", "display": "X", "licence": "MIT", "source": source}}}))
    return load_registry(path)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GGUF_FRAGILITY_CACHE", str(tmp_path / "cache"))


def test_unknown_model_key_lists_known_keys():
    with pytest.raises(RegistryError, match=r"'nope'.*smollm2-135m"):
        get_spec("nope")


def test_missing_local_gguf(tmp_path, isolated_cache):
    reg = _registry(tmp_path, {"kind": "local", "path": str(tmp_path / "absent.gguf")})
    with pytest.raises(GGUFError, match="absent.gguf does not exist.*source.path"):
        models.obtain("mine", reg)


def test_not_a_gguf(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00\x01not a gguf at all" * 10)
    with pytest.raises(GGUFError, match="model.safetensors is not a GGUF file.*convert_hf_to_gguf"):
        open_gguf(bad)


@pytest.mark.llama
def test_truncated_gguf(tmp_path, smol_source):
    cut = tmp_path / "cut.gguf"
    with open(smol_source, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(smol_source.stat().st_size // 2))
    with pytest.raises(GGUFError, match="cut.gguf is .*truncated.*not a file this project made"):
        open_gguf(cut)
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(smol_source.read_bytes()[:1000])
    with pytest.raises(GGUFError, match="header.gguf"):
        open_gguf(header_only)


@pytest.mark.llama
def test_truncated_gguf_message_is_one_clean_line(tmp_path, smol_source):
    """Issue 29: a file cut inside its tensor data gave numpy's "When changing to a larger
    dtype, its size must be a divisor…" inside the message. Now: the file, the bytes its
    tensors need (the complete file's tensors' end, read here with gguf's own reader) and the
    bytes it has, and what to do; a file cut inside its header says so without numpy's text."""
    from gguf import GGUFReader

    full = GGUFReader(smol_source)
    need = max(t.data_offset + t.n_bytes for t in full.tensors)
    del full
    cut = tmp_path / "cut.gguf"
    with open(smol_source, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(smol_source.stat().st_size // 2))
    with pytest.raises(GGUFError) as info:
        open_gguf(cut)
    msg = str(info.value)
    assert msg == (f"{cut} is truncated: its tensors need {need} bytes, the file has "
                   f"{cut.stat().st_size}. It is not a file this project made: copy or convert it "
                   f"again, or point source.path in {paths.registry()} at a complete GGUF."), msg
    header_only = tmp_path / "header.gguf"
    with open(smol_source, "rb") as src:
        header_only.write_bytes(src.read(1000))
    with pytest.raises(GGUFError) as info:
        open_gguf(header_only)
    msg = str(info.value)
    assert msg.startswith(f"{header_only} is damaged or truncated: its header (metadata and "
                          "tensor list) cannot be read from its 1000 bytes. It is not a file"), msg
    assert "\n" not in msg and "dtype" not in msg


def test_unknown_rung_in_profile(tmp_path):
    prof = tmp_path / "p.yaml"
    prof.write_text("models:\n  smollm2-135m:\n    rungs: [F16, Q4_K_Z]\n")
    with pytest.raises(ProfileError, match=r"models.smollm2-135m.rungs.*'Q4_K_Z'"):
        load_profile(prof)


@pytest.mark.parametrize("rung, message", [
    ("Q2_K+kv_q5_9", r"rung 'Q2_K\+kv_q5_9': unknown KV-cache type 'q5_9'; use one of "
                     r"f16, q8_0, q4_0"),
    ("Q2_K+kv_Q8_0", r"rung 'Q2_K\+kv_Q8_0': unknown KV-cache type 'Q8_0'; use one of f16, "
                     r"q8_0, q4_0, spelled as llama.cpp's --cache-type-k"),
    ("Q2_K+q8_0", r"rung 'Q2_K\+q8_0': unknown modifier '\+q8_0'; modifiers are "
                  r"\+imatrix_<text>, \+<group>=<TYPE> and a final \+kv_<cache>"),
    ("Q2_K+kv_q8_0+kv_q4_0", r"rung 'Q2_K\+kv_q8_0\+kv_q4_0': malformed KV-cache suffix; "
                             r"write one \+kv_<type> at the end.*e.g. 'Q4_K_M\+kv_q8_0'"),
    ("Q4_K_Z+kv_q8_0", r"rung 'Q4_K_Z\+kv_q8_0': its weights: unknown rung/quant type 'Q4_K_Z'"),
    ("Q8_0+kv_q8_0", r"KV-cache rung 'Q8_0\+kv_q8_0' loads the file of rung 'Q8_0', which is not "
                     r"in this model's rungs \['F16', 'Q2_K', 'Q8_0\+kv_q8_0'\]; add 'Q8_0' to "
                     r"the list"),
])
def test_bad_kv_cache_rung_in_profile(tmp_path, rung, message):
    """An unknown cache type, a malformed suffix, or a KV rung whose weights' rung is not in
    the model's ladder: each refused at load, naming the value and the fix."""
    prof = tmp_path / "p.yaml"
    prof.write_text(f"models:\n  smollm2-135m:\n    rungs: [F16, Q2_K, {rung}]\n")
    with pytest.raises(ProfileError, match=r"p.yaml: models.smollm2-135m.rungs: " + message):
        load_profile(prof)


@pytest.mark.parametrize("rung, message", [
    ("IQ2_XS", r"rung 'IQ2_XS': IQ2_XS needs an importance matrix; add its calibration text: "
               r"'IQ2_XS\+imatrix_wiki' or 'IQ2_XS\+imatrix_code'"),
    ("IQ4_XS+kv_q8_0", r"rung 'IQ4_XS\+kv_q8_0': its weights: rung 'IQ4_XS': IQ4_XS needs an "
                       r"importance matrix"),
    ("Q8_0+ffn_down=IQ2_XXS", r"IQ2_XXS needs an importance matrix; add its calibration text: "
                              r"'Q8_0\+imatrix_wiki'"),
    ("Q2_K+imatrix_web", r"unknown imatrix text 'web'; use one of wiki, code "
                         r"\(data/calibration/<text>.txt\)"),
    ("Q2_K+ffn_down=Q4_K+imatrix_wiki", r"write \+imatrix_<text> right after the ftype"),
    ("Q8_0+ffn_dwn=Q2_K", r"unknown tensor group 'ffn_dwn'; use a kind \(token_embd, output, "
                          r"attn_q.*\), a third of the blocks \(first_third, middle_third, "
                          r"last_third\) or <kind>.<third>"),
    ("Q8_0+ffn_down=Q9_K", r"unknown tensor type 'Q9_K' for group 'ffn_down'; use a ggml type "
                           r"name: F16, BF16, Q8_0"),
    ("Q8_0+ffn_down=Q2_K+ffn_down=Q3_K", r"group 'ffn_down' is set twice; keep one"),
    ("Q8_0+output.last_third=Q2_K", r"output is not in a block, so it has no third; write "
                                    r"'output'"),
    ("F16+ffn_down=Q2_K", r"F16 is not quantized, so it takes no imatrix and llama-quantize "
                          r"applies no tensor overrides to it; use Q8_0 as the intact base "
                          r"\(e.g. 'Q8_0\+ffn_down=Q2_K'\)"),
])
def test_bad_imatrix_or_lesion_rung_in_profile(tmp_path, rung, message):
    """An IQ type without an imatrix text, an unknown text, group or tensor type, modifiers
    out of order or repeated, overrides on a float base: each refused at load, naming the
    value and the fix."""
    prof = tmp_path / "p.yaml"
    prof.write_text(f"models:\n  smollm2-135m:\n    rungs: [F16, {rung}]\n")
    with pytest.raises(ProfileError, match=r"p.yaml: models.smollm2-135m.rungs: .*" + message):
        load_profile(prof)


def test_kv_cache_rungs_load_and_reuse_their_weights_rung(tmp_path):
    prof = tmp_path / "p.yaml"
    prof.write_text("models:\n  smollm2-135m:\n"
                    "    rungs: [F16, Q2_K, Q2_K+kv_f16, Q2_K+kv_q4_0, F16+kv_q8_0]\n")
    run = load_profile(prof).models["smollm2-135m"]
    assert run.ladder_rungs == ("F16", "Q2_K")  # the files 01_ladder builds


@pytest.mark.llama
def test_sha256_mismatch_on_later_run(tmp_path, isolated_cache, smol_source):
    mine = tmp_path / "mine.gguf"
    shutil.copy(smol_source, mine)
    reg = _registry(tmp_path, {"kind": "local", "path": str(mine)})
    assert models.obtain("mine", reg) == mine  # first run records the hash
    with open(mine, "ab") as f:  # the file changes behind our back
        f.write(b"\x00" * 32)
    with pytest.raises(GGUFError, match="sha256 of .*mine.gguf is .* expected"):
        models.obtain("mine", reg)


@pytest.mark.llama
def test_pinned_sha256_mismatch(tmp_path, isolated_cache, smol_source):
    reg = _registry(tmp_path, {"kind": "local", "path": str(smol_source), "sha256": "0" * 64})
    with pytest.raises(GGUFError, match="expected 0000"):
        models.obtain("mine", reg)


@pytest.mark.parametrize("text, match", [
    ("models:\n  smollm2-135m: {}\nn_itemz: 5\n", r"unknown key\(s\) \['n_itemz'\]"),
    ("models:\n  smollm2-135m: {}\nn_items: many\n", r"bad.yaml: n_items: expected int, got 'many'"),
    ("models:\n  smollm2-135m:\n    rungs: Q8_0\n", r"rungs: expected a list"),
    ("n_items: 5\n", r"at least 'models:'"),
    ("models: [unclosed\n", "not valid YAML"),
    ("models:\n  smollm2-135m:\n    rungs: [Q8_0]\n", "must include the reference 'F16'"),
    ("models:\n  smollm2-135m: {}\nengine:\n  n_ctx: 2k\n", r"bad.yaml: engine.n_ctx: expected int"),
])
def test_malformed_profile(tmp_path, text, match):
    prof = tmp_path / "bad.yaml"
    prof.write_text(text)
    with pytest.raises(ProfileError, match=match):
        load_profile(prof)


def test_missing_profile_lists_known():
    with pytest.raises(ProfileError, match="not found; known profiles: .*smoke"):
        load_profile("no-such-profile")


def test_registry_entry_missing_field(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  m:\n    family: X\n    source: {kind: local, path: a.gguf}\n")
    with pytest.raises(RegistryError, match=r"models.m.display: missing"):
        load_registry(path)


def test_quantize_failure_is_reported(tmp_path, smol_ladder):
    ref = quantize.build_reference("smollm2-135m")
    # (profiles refuse IQ2_XXS without +imatrix_<text>; the in-process quantizer fails on it)
    with pytest.raises(RuntimeError, match=r"llama_model_quantize failed for IQ2_XXS \(.*code"):
        quantize.quantize(ref.path, tmp_path / "x.gguf", "IQ2_XXS", n_threads=2)
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "x.gguf.tmp").exists()
