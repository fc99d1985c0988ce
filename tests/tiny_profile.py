"""A tiny SmolLM2 profile (F16 and Q2_K, a few items) for the sweep and cluster tests."""


def tiny_profile_yaml(families: list[str], n_items: int, n_threads: int,
                      scheduler: str | None = None) -> str:
    """YAML of a profile that every family passes the gate of (``min_usable: 0``)."""
    sched = f'scheduler: "{scheduler}"\n' if scheduler else ""
    return f"""
models:
  smollm2-135m:
    rungs: [F16, Q2_K]
families: {families}
n_items: {n_items}
min_usable: 0
min_families: 1
shift_passages: 2
shift_tokens: 64
engine: {{n_ctx: 1024, n_threads: {n_threads}}}
{sched}"""
