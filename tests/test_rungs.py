"""Rung names: the grammar of modifiers and the llama-quantize patterns of tensor groups."""

import re

import pytest

from gguf_fragility.engine.rungs import (
    RungSpec,
    WeightsSpec,
    group_of_tensor,
    parse_rung,
    parse_weights,
    tensor_type_patterns,
)


@pytest.mark.parametrize("rung, spec, weights", [
    ("Q4_K_M", RungSpec("Q4_K_M", None), WeightsSpec("Q4_K_M", None, ())),
    ("Q2_K+imatrix_code+kv_q4_0", RungSpec("Q2_K+imatrix_code", "q4_0"),
     WeightsSpec("Q2_K", "code", ())),
    ("IQ3_XXS+imatrix_wiki", RungSpec("IQ3_XXS+imatrix_wiki", None),
     WeightsSpec("IQ3_XXS", "wiki", ())),
    ("Q8_0+ffn_down.last_third=Q2_K", RungSpec("Q8_0+ffn_down.last_third=Q2_K", None),
     WeightsSpec("Q8_0", None, (("ffn_down.last_third", "Q2_K"),))),
    ("Q2_K+imatrix_wiki+attn_v=Q4_K+ffn_down=Q4_K+kv_f16",
     RungSpec("Q2_K+imatrix_wiki+attn_v=Q4_K+ffn_down=Q4_K", "f16"),
     WeightsSpec("Q2_K", "wiki", (("attn_v", "Q4_K"), ("ffn_down", "Q4_K")))),
])
def test_rung_names_split_into_file_and_cache(rung, spec, weights):
    assert parse_rung(rung) == spec
    assert parse_weights(spec.weights) == weights
    assert weights.in_process == (weights.imatrix is None and not weights.overrides)


def _matches(patterns: list[str], name: str) -> str | None:
    """The type llama-quantize gives ``name``: the first pattern ``regex_search`` finds."""
    for p in patterns:
        regex, _, typ = p.rpartition("=")
        if re.search(regex, name):
            return typ
    return None


def test_group_patterns_catch_exactly_their_tensors():
    # 28 blocks (Qwen2.5-1.5B): thirds of 10, 9 and 9 blocks
    pats = tensor_type_patterns((("attn_q", "Q2_K"), ("last_third", "Q3_K")), 28)
    assert _matches(pats, "blk.4.attn_q.weight") == "q2_k"
    assert _matches(pats, "blk.4.attn_qkv.weight") is None  # a kind is a whole name part
    assert _matches(pats, "blk.4.attn_output.weight") is None
    assert _matches(pats, "blk.18.ffn_up.weight") is None  # block 18 is in the middle third
    assert _matches(pats, "blk.19.ffn_up.weight") == "q3_k"
    assert _matches(pats, "blk.27.attn_q.weight") == "q2_k"  # the first pattern wins
    one = tensor_type_patterns((("ffn_down.first_third", "Q2_K"), ("output", "Q6_K")), 28)
    assert _matches(one, "blk.9.ffn_down.weight") == "q2_k"
    assert _matches(one, "blk.10.ffn_down.weight") is None
    assert _matches(one, "blk.1.ffn_down_exps.weight") is None
    assert _matches(one, "output.weight") == "q6_k"
    assert _matches(one, "output_norm.weight") is None


def test_tensor_groups_by_hand():
    assert group_of_tensor("blk.9.ffn_down.weight", 28) == ("ffn_down", "first_third")
    assert group_of_tensor("blk.10.attn_k.weight", 28) == ("attn_k", "middle_third")
    assert group_of_tensor("blk.19.attn_norm.weight", 28) == (None, "last_third")
    assert group_of_tensor("token_embd.weight", 28) == ("token_embd", None)
    assert group_of_tensor("output_norm.weight", 28) == (None, None)
    # 30 blocks (SmolLM2): 10 each
    assert group_of_tensor("blk.20.ffn_up.weight", 30) == ("ffn_up", "last_third")
    assert group_of_tensor("blk.19.ffn_up.weight", 30) == ("ffn_up", "middle_third")
