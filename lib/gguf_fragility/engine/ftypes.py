"""llama.cpp's file types (``enum llama_ftype`` in ``llama.h``), without importing llama.cpp.

Profiles are checked against this table when they load, so a profile can be validated
(and the statistics run) where llama-cpp-python is not installed. A test checks it equals
the installed llama-cpp-python's (0.3.36) ``LLAMA_FTYPE_*`` constants.
"""

from __future__ import annotations

FTYPES: dict[str, int] = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9,
    "Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15,
    "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18, "IQ2_XXS": 19, "IQ2_XS": 20, "Q2_K_S": 21,
    "IQ3_XS": 22, "IQ3_XXS": 23, "IQ1_S": 24, "IQ4_NL": 25, "IQ3_S": 26, "IQ3_M": 27,
    "IQ2_S": 28, "IQ2_M": 29, "IQ4_XS": 30, "IQ1_M": 31, "BF16": 32, "TQ1_0": 36,
    "TQ2_0": 37, "MXFP4_MOE": 38, "NVFP4": 39, "Q1_0": 40, "Q2_0": 41,
}
FTYPE_NAMES: dict[int, str] = {v: k for k, v in FTYPES.items()}


def ftype(rung: str) -> int:
    """llama.cpp's ``LLAMA_FTYPE_*`` value for a rung name spelled as llama.cpp does.

    Raises
    ------
    ValueError
        For an unknown name, listing the accepted ones.
    """
    try:
        return FTYPES[rung]
    except KeyError:
        raise ValueError(f"unknown rung/quant type {rung!r}; use llama.cpp's spelling, one of: "
                         f"{', '.join(FTYPES)}") from None
