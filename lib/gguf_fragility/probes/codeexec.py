"""Run model-written Python against a probe's tests in an isolated sandbox.

Each program runs under Debian's ``bubblewrap`` (``bwrap``): its own PID, network, IPC,
UTS and mount namespaces, no network at all (not even the host's loopback), a read-only
view of ``/usr`` and the base interpreter's prefix only (no ``/etc``, ``/home``, ``/root``,
``/work``, ``/tmp``), a private size-capped tmpfs as its working folder, uid/gid 65534 (for
real when the caller is root, via ``setpriv``; in a user namespace otherwise), no
capabilities, no new privileges, a fresh session (no terminal injection) and death with
its parent. Every process it starts dies when the program exits (the PID namespace's init
is ``bwrap``'s reaper). Resource limits (address space, file size, CPU seconds, processes)
are set before the program's first line and cannot be raised again without
``CAP_SYS_RESOURCE``, which the sandbox does not have. All of a program's processes
together are held to one memory cap by a cgroup where one is writable, else by per-process
limits whose product stays within a quarter of the RAM (:mod:`.memcap`).

A pass is proven, not inferred from the exit status. The program arrives on the
interpreter's stdin (``python -I -S -``), which is read to its end before the first line
runs: no file holds it and stdin is empty when the model's code runs. :func:`run_python`
appends an epilogue that, after the tests, prints a random token made for this run
(:mod:`secrets`, 128 bits) as the last line and ends the process. A run passes only when it
exits with status 0 *and* its stdout ends with that line. The token is not in the
environment, argv, a file or stdin, so model code that ends the process early
(``sys.exit(0)``, ``os._exit(0)``, a signal to its own process group whose handler exits 0,
``exec`` of ``/bin/true``) or prints a token-like line of its own cannot produce it; only
code that digs the constant out of the interpreter's own code objects could, which is a
deliberate forgery rather than an accident, and one the other walls still contain.

Without ``bwrap``, util-linux ``unshare`` is the fallback: new user, PID, network, IPC,
UTS and mount namespaces, but the host filesystem stays visible and, for the caller's own
files, writable; a weaker wall, used only when ``bwrap`` is missing. With neither,
:func:`run_python` refuses (:class:`SandboxUnavailable`) unless the caller opts in to
running code unisolated (``allow_unisolated=True``: a profile's ``allow_unisolated_code: true``,
passed down by the run plan in :class:`~gguf_fragility.probes.scorers.ScoreSettings`).
Install the sandbox with ``bash scripts/ensure_sandbox.sh``.

    from gguf_fragility.probes.codeexec import run_python
    run_python("print(1 + 1)").stdout    # '2\n'
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import NamedTuple

from gguf_fragility.probes import memcap

MEMORY_BYTES = 2 << 30  # address space per process (less without a cgroup: memcap)
FILE_BYTES = 1 << 24  # largest file a program may write
MAX_PROCS = 8  # tasks (processes and threads) of the sandbox's uid, bwrap's reaper included
TMPFS_BYTES = 64 << 20  # the private working folder (RAM-backed)

PREAMBLE = '''\
import resource as _r, socket as _s
_r.setrlimit(_r.RLIMIT_AS, ({mem}, {mem}))
_r.setrlimit(_r.RLIMIT_FSIZE, ({fsize}, {fsize}))
_r.setrlimit(_r.RLIMIT_CPU, ({cpu}, {cpu}))
_r.setrlimit(_r.RLIMIT_NPROC, ({nproc}, {nproc}))
def _no_net(*a, **k):
    raise OSError("network disabled in the probe sandbox")
_s.socket = _no_net; _s.create_connection = _no_net; _s.getaddrinfo = _no_net
del _r, _s, _no_net
'''
EPILOGUE = '''
import os as _gf_os, sys as _gf_sys
_gf_sys.stdout.flush(); _gf_sys.stderr.flush()
_gf_os.write(1, b"\\n{token}\\n")
_gf_os._exit(0)
'''
# The preamble's socket stubs are a courtesy (a clear error message), not the wall: the
# namespaces are. RLIMIT_NPROC counts every process of a real user, so the sandbox runs as
# the real, unprivileged uid 65534 (see _bwrap_argv).

ENABLE_HINT = ("install bubblewrap (`bash scripts/ensure_sandbox.sh`, or `apt-get install "
               "bubblewrap`), or accept running model-written code with your full rights by "
               "setting `allow_unisolated_code: true` in the profile")


class SandboxUnavailable(Exception):
    """No isolation for model-written code on this machine, and no opt-in to run without.

    Deliberately not a ``RuntimeError``/``ValueError``: per-item error handling in
    :func:`gguf_fragility.evaluate.evaluate_item` must not turn it into failed items.
    """


class Isolation(NamedTuple):
    """How programs are isolated on this machine (:func:`find_isolation`)."""

    kind: str  # "bwrap", "unshare" or "none"
    tool: str  # absolute path of the tool; "" for "none"
    reason: str  # why a better kind was not used ("" for bwrap)


def base_python() -> str:
    """The base interpreter (not a venv's): probe programs need only the standard library."""
    ver = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    exe = os.path.join(sys.base_prefix, "bin", ver)
    return exe if os.path.isfile(exe) else os.path.realpath(sys.executable)


def _bwrap_argv(bwrap: str, cwd: str) -> list[str]:
    """bwrap's command line up to (not including) the interpreter.

    As root, bwrap builds the namespaces with root's rights (no user namespace) and
    ``setpriv`` then becomes uid/gid 65534 for real: rlimits such as RLIMIT_NPROC count per
    real user, and root's own files are closed to it. (Mapped to 65534 inside a user
    namespace, the program would still be root outside, and RLIMIT_NPROC was seen not to
    apply.) Other users get a user namespace with uid 65534 inside.
    """
    argv = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--hostname", "sandbox",
            "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    as_root = os.geteuid() == 0
    if as_root:  # only to let setpriv switch user; it drops every capability itself
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user", "--disable-userns", "--uid", "65534", "--gid", "65534"]
    argv += ["--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", cwd,
             "--setenv", "LANG", "C.UTF-8", "--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64"):  # merged-/usr symlinks or real dirs
        path = "/" + top
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    prefix = os.path.realpath(sys.base_prefix)
    if not prefix.startswith("/usr/"):  # e.g. /root/.pyenv/versions/3.11.7
        parts = prefix.strip("/").split("/")[:-1]
        for i in range(len(parts)):  # bwrap would copy /root's 0700 onto the mount path
            argv += ["--perms", "0755", "--dir", "/" + "/".join(parts[:i + 1])]
        argv += ["--ro-bind", prefix, prefix]
    argv += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", str(TMPFS_BYTES), "--tmpfs", cwd, "--chdir", cwd]
    if as_root:
        argv += ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    return argv


def _unshare_argv(unshare: str) -> list[str]:
    """util-linux unshare's command line (fallback: no read-only filesystem)."""
    return [unshare, "--user", "--map-user=65534", "--map-group=65534", "--net", "--pid",
            "--ipc", "--uts", "--mount", "--fork", "--kill-child", "--mount-proc"]


def _probe(argv: list[str]) -> str:
    """Run a trivial program (on stdin) under ``argv``; "" when it works, else the error."""
    try:
        p = subprocess.run(argv, input="print('ok')\n", capture_output=True, text=True,
                           timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "" if p.returncode == 0 and p.stdout.strip() == "ok" else (
        f"exit {p.returncode}: {p.stderr.strip()[-300:]}")


@functools.lru_cache(maxsize=8)
def find_isolation(bwrap: str = "bwrap", unshare: str = "unshare") -> Isolation:
    """
    The best isolation that actually works here: ``bwrap``, else ``unshare``, else none.

    Parameters
    ----------
    bwrap, unshare : str
        Tool names or paths (tests point them at missing files to simulate a bare machine).

    Returns
    -------
    Isolation
        Kind, tool path and why better kinds were not used. Each tool is tried by running
        ``print('ok')`` through it once per process (a tool can exist and still fail, e.g.
        where user namespaces are disabled).
    """
    reasons = []
    tool = shutil.which(bwrap)
    if tool is None:
        reasons.append(f"{bwrap!r} not found")
    else:
        err = _probe([*_bwrap_argv(tool, "/sandbox"), base_python(), "-I", "-S", "-"])
        if not err:
            return Isolation("bwrap", tool, "")
        reasons.append(f"{tool} fails: {err}")
    tool = shutil.which(unshare)
    if tool is None:
        reasons.append(f"{unshare!r} not found")
    else:
        err = _probe([*_unshare_argv(tool), base_python(), "-I", "-S", "-"])
        if not err:
            return Isolation("unshare", tool, "; ".join(reasons))
        reasons.append(f"{tool} fails: {err}")
    return Isolation("none", "", "; ".join(reasons))


def require_isolation(isolation: Isolation | None = None,
                      allow_unisolated: bool = False) -> Isolation:
    """:func:`find_isolation`'s answer, or :class:`SandboxUnavailable` when none and no opt-in.

    Call it before loading a model for the ``code`` family, so a refusal comes first.
    """
    iso = isolation or find_isolation()
    if iso.kind == "none" and not allow_unisolated:
        raise SandboxUnavailable(f"refusing to run model-written code without isolation "
                                 f"({iso.reason}); to enable it, {ENABLE_HINT}")
    return iso


class ExecResult(NamedTuple):
    """Result of :func:`run_python`."""

    passed: bool  # exit status 0 and this run's token as the last line of stdout
    status: str  # "passed", "failed", "timeout"
    returncode: int | None
    stdout: str  # without the token line
    stderr: str
    reason: str  # why it did not pass, in one line ("" when it passed)
    peak_bytes: int | None  # most memory its processes held at once (None: no cgroup here)


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


def run_python(program: str, *, timeout_s: float = 10.0, allow_unisolated: bool = False,
               isolation: Isolation | None = None) -> ExecResult:
    """
    Run ``program`` with the base interpreter (``python -I -S -``) in the sandbox.

    Parameters
    ----------
    program : str
        Source code; passes when it runs to its end: exit status 0 and the run's token,
        printed by the appended :data:`EPILOGUE`, as the last line of stdout.
    timeout_s : float, default 10.0
        Wall-clock limit in seconds; on expiry the sandbox and everything in it is killed.
    allow_unisolated : bool, default False
        Run without isolation when no sandbox works here.
    isolation : Isolation, optional
        Which isolation to use; default :func:`find_isolation`'s answer.

    Returns
    -------
    ExecResult
        Pass flag, status, return code, captured output (truncated to 10 kB each; the
        token line removed), the reason for a failure and the peak memory.

    Raises
    ------
    SandboxUnavailable
        Neither ``bwrap`` nor ``unshare`` works here and unisolated runs are not allowed.

    Notes
    -----
    Limits: wall clock ``timeout_s``; CPU seconds ``timeout_s + 1``; files
    :data:`FILE_BYTES`; tasks :data:`MAX_PROCS` (per sandbox under ``bwrap``; the working
    tmpfs holds :data:`TMPFS_BYTES`); memory :data:`memcap.TOTAL_MEMORY_BYTES` for all its
    processes together (a cgroup) with :data:`MEMORY_BYTES` of address space each, or,
    where no cgroup is writable, :func:`memcap.process_memory_bytes` each. A run during
    which the kernel killed a process at the memory cap fails, whatever its output.
    Output is read as UTF-8 with replacement.
    """
    iso = require_isolation(isolation, allow_unisolated)
    cap = memcap.find_memory_cap()
    mem = memcap.process_memory_bytes(cap, MEMORY_BYTES, MAX_PROCS)
    preamble = PREAMBLE.format(mem=mem, fsize=FILE_BYTES, nproc=MAX_PROCS,
                               cpu=int(timeout_s) + 1)
    token = f"gguf-fragility tests done {secrets.token_hex(16)}"
    source = preamble + program + "\n" + EPILOGUE.format(token=token)
    py = [base_python(), "-I", "-S", "-"]
    with tempfile.TemporaryDirectory(prefix="gf-code-") as tmp, memcap.run_cgroup(cap) as cg:
        if iso.kind == "bwrap":
            cwd = "/sandbox"
            argv = [*_bwrap_argv(iso.tool, cwd), *py]
        else:  # unshare, or none (opted in): the host's temporary folder
            cwd = tmp
            argv = [*(_unshare_argv(iso.tool) if iso.kind == "unshare" else []), *py]
        env = {"PATH": "/usr/bin:/bin", "HOME": cwd, "LANG": "C.UTF-8"}
        proc = subprocess.Popen(memcap.launcher(cg, argv), cwd=tmp, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, text=True,
                                encoding="utf-8", errors="replace")
        try:
            out, err = proc.communicate(source, timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            # bwrap/unshare die with their parent's group; their PID namespace goes too
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            timed_out = True
        use = memcap.usage(cg)
    done = f"\n{token}\n"
    proven = not timed_out and proc.returncode == 0 and out.endswith(done)
    if proven:
        out = out[:-len(done)]
    reason = _why_not(proc.returncode, timed_out, proven, use, err, timeout_s)
    status = "timeout" if timed_out else "failed" if reason else "passed"
    return ExecResult(not reason, status, None if timed_out else proc.returncode,
                      out[-10000:], err[-10000:], reason, use.peak_bytes)


def _why_not(rc: int, timed_out: bool, proven: bool, use: memcap.Usage, err: str,
             timeout_s: float) -> str:
    """One line: why a run did not pass ("" when it did)."""
    if use.oom_kills:
        return (f"its processes together reached the {memcap.TOTAL_MEMORY_BYTES >> 20} MiB "
                f"memory cap; the kernel killed {use.oom_kills} of them")
    if timed_out:
        return f"no result within {timeout_s:g} s; the sandbox was killed"
    if proven:
        return ""
    if rc == 0:
        return ("exited with status 0 before its tests finished (no completion token as the "
                "last line of output)")
    if rc < 0:
        return f"killed by signal {-rc}"
    last = next((line.strip() for line in reversed(err.splitlines()) if line.strip()), "")
    if not last and 128 < rc <= 128 + 64:  # bwrap reports a killed child as 128 + signal
        return f"exit status {rc} (killed by signal {rc - 128})"
    return f"exit status {rc}" + (f": {last[:200]}" if last else "")


__all__ = ["ENABLE_HINT", "EPILOGUE", "ExecResult", "Isolation", "PREAMBLE", "SandboxUnavailable",
           "base_python", "build_program", "extract_code", "find_isolation",
           "require_isolation", "run_python"]
