"""Run model-written Python against a probe's tests in a sandboxed subprocess.

The program runs in ``python -I`` (isolated: no user site, no PYTHON* variables, no cwd on
``sys.path``) in a fresh temporary folder, in its own process group, with a wall-clock
timeout, CPU/memory/file-size limits and a preamble that disables sockets. This stops
accidents (infinite loops, runaway memory, network calls), not a determined attacker: do
not run untrusted models' code on a machine you care about without a container.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from typing import NamedTuple

PREAMBLE = '''\
import resource as _r, socket as _s
_r.setrlimit(_r.RLIMIT_AS, (2 << 30, 2 << 30))
_r.setrlimit(_r.RLIMIT_FSIZE, (1 << 24, 1 << 24))
def _no_net(*a, **k):
    raise OSError("network disabled in the probe sandbox")
_s.socket = _no_net; _s.create_connection = _no_net; _s.getaddrinfo = _no_net
del _r, _s, _no_net
'''


class ExecResult(NamedTuple):
    """Result of :func:`run_python`."""

    passed: bool
    status: str  # "passed", "failed", "timeout"
    returncode: int | None
    stdout: str
    stderr: str


def extract_code(text: str) -> str:
    """Python code in a reply: the first fenced block (```python or ```), else the whole text."""
    blocks = re.findall(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|$)", text, re.S)
    blocks = [b for b in blocks if b.strip()]
    if blocks:
        with_def = [b for b in blocks if "def " in b]
        return (with_def or blocks)[0]
    return text


def build_program(code: str, params: dict) -> str:
    """
    Assemble the test program for a code item.

    Parameters
    ----------
    code : str
        Extracted model code.
    params : dict
        Item params: ``harness`` {"humaneval", "mbpp"}, ``test``, ``entry_point``
        (HumanEval), ``prompt`` (HumanEval function header), ``setup`` (MBPP).

    Notes
    -----
    HumanEval: when the model's code defines ``entry_point`` it is run after the prompt's
    header (so the prompt's imports exist; the model's definition wins); otherwise the
    code is taken as the function body and appended to the prompt.
    """
    if params["harness"] == "humaneval":
        entry = params["entry_point"]
        if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.M):
            body = params["prompt"] + "    pass\n\n" + code
        else:
            body = params["prompt"] + code
        return f"{body}\n\n{params['test']}\n\ncheck({entry})\n"
    if params["harness"] == "mbpp":
        return f"{params.get('setup', '')}\n{code}\n\n{params['test']}\n"
    raise ValueError(f"unknown code harness {params['harness']!r}; use 'humaneval' or 'mbpp'")


def run_python(program: str, *, timeout_s: float = 10.0) -> ExecResult:
    """
    Run ``program`` in a sandboxed ``python -I`` subprocess.

    Parameters
    ----------
    program : str
        Source code; passes when it exits with status 0.
    timeout_s : float, default 10.0
        Wall-clock limit in seconds; on expiry the whole process group is killed.

    Returns
    -------
    ExecResult
        Pass flag, status, return code and captured output (truncated to 10 kB each).
    """
    with tempfile.TemporaryDirectory(prefix="gf-code-") as tmp:
        path = os.path.join(tmp, "prog.py")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(PREAMBLE + program)
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "LANG": "C.UTF-8"}
        proc = subprocess.Popen([sys.executable, "-I", path], cwd=tmp, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, text=True,
                                errors="replace")
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            return ExecResult(False, "timeout", None, out[-10000:], err[-10000:])
        ok = proc.returncode == 0
        return ExecResult(ok, "passed" if ok else "failed", proc.returncode, out[-10000:],
                          err[-10000:])


__all__ = ["ExecResult", "PREAMBLE", "build_program", "extract_code", "run_python"]
