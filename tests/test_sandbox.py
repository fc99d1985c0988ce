"""Attacks on the sandbox that runs model-written code (``codeexec.run_python``).

Each attack runs on the real sandbox (bubblewrap, installed by ``scripts/ensure_sandbox.sh``)
and must fail to escape. Where an attack's success can be observed safely, the same
program is also run *unisolated* as a control, to show the check would see an escape.

    PYTHONPATH=lib python -m pytest -q tests/test_sandbox.py
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from gguf_fragility.probes import codeexec, memcap
from gguf_fragility.probes.codeexec import Isolation, SandboxUnavailable, run_python
from gguf_fragility.probes.scorers import SCORERS, ScoreSettings

NONE = Isolation("none", "", "simulated: no sandbox tool")
HE_PARAMS = {"harness": "humaneval", "entry_point": "add",
             "prompt": 'def add(a, b):\n    """Add two numbers."""\n',
             "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n"}


@pytest.fixture(scope="module", autouse=True)
def real_sandbox():
    iso = codeexec.find_isolation()
    assert iso.kind == "bwrap", f"bubblewrap must work here (bash scripts/ensure_sandbox.sh): {iso}"
    return iso


def unisolated(program: str, **kw) -> codeexec.ExecResult:
    """Control run of the same program with no isolation (to show the attack is real)."""
    return run_python(program, isolation=NONE, allow_unisolated=True, **kw)


def marked_pids(marker: str, wait_s: float = 3.0) -> list[int]:
    """Host processes whose command line holds ``marker`` (polled until none, up to wait_s)."""
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if marker.encode() in (d / "cmdline").read_bytes():
                        found.append(int(d.name))
                except OSError:  # the process ended while we looked
                    pass
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


# ---------------------------------------------------------------- identity
def test_runs_unprivileged_without_capabilities():
    res = run_python("import os\nprint(os.getuid(), os.getgid())\n"
                     "print([l for l in open('/proc/self/status') if l.startswith('CapEff')][0])\n"
                     "print(sorted(os.listdir('/')))\n")
    assert res.passed, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "65534 65534"
    assert lines[1].split()[1] == "0" * 16  # no effective capability
    for hidden in ("work", "home", "etc", "tmp"):  # only /usr, the interpreter, its own folder
        assert f"'{hidden}'" not in lines[2], lines[2]


# ---------------------------------------------------------------- filesystem
WRITE = """\
import subprocess, sys
for p in {paths!r}:
    try:
        open(p, "w").write("escaped")
        print("WROTE", p)
    except OSError as e:
        print("blocked", p, type(e).__name__)
    subprocess.run(["touch", p + ".touch"], capture_output=True)
open("inside.txt", "w").write("ok")  # its own folder is writable
print(open("inside.txt").read())
"""


def test_cannot_write_outside_its_folder(tmp_path):
    tag = uuid.uuid4().hex
    prefix = os.path.realpath(sys.base_prefix)
    targets = [str(tmp_path / "escape.txt"), f"/tmp/gf-escape-{tag}",
               f"{prefix}/gf-escape-{tag}",  # visible in the sandbox, read-only
               f"/usr/gf-escape-{tag}"]
    try:
        res = run_python(WRITE.format(paths=targets))
        assert res.passed, res.stderr
        assert "WROTE" not in res.stdout and res.stdout.rstrip().endswith("ok")
        for t in targets:
            assert not os.path.exists(t) and not os.path.exists(t + ".touch"), t
        control = unisolated(WRITE.format(paths=targets[:2]))
        assert (tmp_path / "escape.txt").read_text() == "escaped", control
        assert os.path.exists(f"/tmp/gf-escape-{tag}.touch")
    finally:
        for t in targets:
            for p in (t, t + ".touch"):
                if os.path.exists(p):
                    os.remove(p)


def test_cannot_read_files_outside(tmp_path):
    secret = f"secret-{uuid.uuid4().hex}"
    path = tmp_path / "secret.txt"
    path.write_text(secret)
    path.chmod(0o644)
    program = (f"import subprocess\np = {str(path)!r}\n"
               "try:\n    print(open(p).read())\nexcept OSError as e:\n    print('blocked', e)\n"
               "r = subprocess.run(['cat', p], capture_output=True, text=True)\n"
               "print(r.stdout, r.stderr)\n")
    res = run_python(program)
    assert secret not in res.stdout + res.stderr
    assert "blocked" in res.stdout
    assert secret in unisolated(program).stdout  # control: the program does read it


# ---------------------------------------------------------------- network
class Listener:
    """A TCP listener on 127.0.0.1 counting the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> int:
        time.sleep(0.3)  # let a late connection be counted
        self.stop = True
        self.thread.join()
        self.sock.close()
        return self.accepted


CONNECT = """\
import socket, _socket, subprocess, sys, shutil
port = {port}
def attempt(name, fn):
    try:
        fn()
        print("CONNECTED", name)
    except Exception as e:
        print("blocked", name, type(e).__name__, e)
attempt("socket", lambda: socket.create_connection(("127.0.0.1", port), timeout=2))
def raw():
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect(("127.0.0.1", port))
attempt("_socket", raw)
child = "import socket; socket.create_connection(('127.0.0.1', %d), timeout=2)" % port
r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
print("CONNECTED" if r.returncode == 0 else "blocked", "python -c", r.stderr[-200:])
if shutil.which("curl"):
    r = subprocess.run(["curl", "-s", "-m", "2", "http://127.0.0.1:%d/" % port],
                       capture_output=True, text=True)
    print("CONNECTED" if r.returncode in (0, 52, 56) else "blocked", "curl", r.returncode)
"""


def test_cannot_reach_a_listener_on_the_host():
    lst = Listener()
    res = run_python(CONNECT.format(port=lst.port), timeout_s=20)
    assert lst.close() == 0, res.stdout
    assert "CONNECTED" not in res.stdout, res.stdout
    assert res.stdout.count("blocked") >= 3, res.stdout  # socket, _socket, python -c (+curl)
    control = Listener()  # unisolated, `_socket` and `python -c` do connect
    out = unisolated(CONNECT.format(port=control.port), timeout_s=20).stdout
    assert control.close() >= 2 and "CONNECTED _socket" in out, out


# ---------------------------------------------------------------- resources
def test_process_count_is_bounded():
    marker = f"gf-bomb-{uuid.uuid4().hex}"
    program = f"""\
import os, sys
n = 0
for _ in range(200):
    try:
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)",
                                      {marker!r}])
        n += 1
    except OSError:
        pass
print(n, flush=True)
while True:
    try:
        os.fork()  # fork bomb: every child forks too
    except OSError:
        pass
"""
    t0 = time.monotonic()
    res = run_python(program, timeout_s=3)
    elapsed = time.monotonic() - t0
    assert not res.passed and res.status == "timeout", res
    assert elapsed < 3 + 5
    spawned = int(res.stdout.split()[0])
    assert 0 < spawned < codeexec.MAX_PROCS, res.stdout  # the limit stopped it, not the loop
    assert marked_pids(marker) == []  # nothing it started is left on the host


def test_memory_past_the_limit_fails():
    res = run_python(f"x = bytearray({2 * codeexec.MEMORY_BYTES})\nprint('allocated')\n")
    assert not res.passed and res.status == "failed"
    assert "MemoryError" in res.stderr and "allocated" not in res.stdout


FORKING_ALLOCATOR = """\
import subprocess, sys
hog = "import time; b = b'x' * ({mib} << 20); print('held', flush=True); time.sleep({hold})"
kids = [subprocess.Popen([sys.executable, "-c", hog, {marker!r}]) for _ in range({n})]
print([k.wait() for k in kids], flush=True)
def add(a, b):
    return a + b
assert add(2, 3) == 5  # a correct solution: only its memory use makes it fail
"""


def held_bytes(marker: str, stop: threading.Event, peaks: list[int]) -> None:
    """Sample the summed resident memory of the host processes holding ``marker``."""
    while not stop.is_set():
        total = 0
        for pid in marked_pids(marker, wait_s=0):
            try:
                rss = (Path("/proc") / str(pid) / "statm").read_text().split()[1]
            except (OSError, IndexError):
                continue
            total += int(rss) * os.sysconf("SC_PAGE_SIZE")
        peaks.append(total)
        time.sleep(0.05)


HOGS, HOG_MIB = 4, 700  # 2800 MiB asked for in four processes, each under the per-process limit


def hog_run(hold_s: float, timeout_s: float) -> tuple[codeexec.ExecResult, int, str]:
    """The forking allocator's result, the most it held at once (seen from the host), its marker."""
    marker = f"gf-hog-{uuid.uuid4().hex}"
    stop, peaks = threading.Event(), []
    sampler = threading.Thread(target=held_bytes, args=(marker, stop, peaks))
    sampler.start()
    try:
        res = run_python(FORKING_ALLOCATOR.format(mib=HOG_MIB, hold=hold_s, marker=marker,
                                                  n=HOGS), timeout_s=timeout_s)
    finally:
        stop.set()
        sampler.join()
    return res, max(peaks), marker


def test_forking_allocator_is_capped_in_total():
    cap = memcap.find_memory_cap()
    if cap.kind == "rlimit":  # the fallback bounds the product instead
        per = memcap.process_memory_bytes(cap, codeexec.MEMORY_BYTES, codeexec.MAX_PROCS)
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        assert per * codeexec.MAX_PROCS <= ram // 4, cap
        pytest.skip(f"no writable memory cgroup here: {cap.reason}")
    assert HOGS * HOG_MIB << 20 > memcap.TOTAL_MEMORY_BYTES > HOG_MIB << 20
    assert HOG_MIB << 20 < codeexec.MEMORY_BYTES
    slack = HOGS * (16 << 20)  # each interpreter's shared libraries count in every RSS
    res, held, marker = hog_run(hold_s=0.3, timeout_s=15)
    assert held <= memcap.TOTAL_MEMORY_BYTES + slack, (held >> 20, res)
    assert res.peak_bytes is not None and res.peak_bytes <= memcap.TOTAL_MEMORY_BYTES
    assert "-9" in res.stdout, res.stdout  # the program saw children killed, and went on
    assert not res.passed and res.status == "failed", res  # though its tests then passed
    assert "memory cap" in res.reason, res.reason
    assert marked_pids(marker) == []
    # children that hold their memory past the timeout: capped too, and none outlives it
    res, held, marker = hog_run(hold_s=60, timeout_s=2)
    assert held <= memcap.TOTAL_MEMORY_BYTES + slack, (held >> 20, res)
    assert res.status == "timeout" and "memory cap" in res.reason, res
    assert marked_pids(marker) == []
    mine = list(Path(cap.parent).glob(f"run-{os.getpid()}-*"))
    assert mine == [], mine  # its cgroups are removed


def test_memory_cap_falls_back_when_no_cgroup_is_writable(monkeypatch):
    monkeypatch.setattr(memcap, "_hierarchies", lambda: [("v1", "/proc/self")])
    memcap.find_memory_cap.cache_clear()
    try:
        cap = memcap.find_memory_cap()
    finally:
        memcap.find_memory_cap.cache_clear()
    assert cap.kind == "rlimit" and cap.reason.startswith("/proc/self: "), cap


def test_without_a_cgroup_the_product_is_bounded(monkeypatch):
    monkeypatch.setattr(memcap, "find_memory_cap",
                        lambda: memcap.MemoryCap("rlimit", "", "simulated: no cgroup"))
    per = memcap.process_memory_bytes(memcap.find_memory_cap(), codeexec.MEMORY_BYTES,
                                      codeexec.MAX_PROCS)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < per <= codeexec.MEMORY_BYTES and per * codeexec.MAX_PROCS <= ram // 4
    res = run_python(f"x = bytearray({per + (64 << 20)})\nprint('allocated')\n")
    assert not res.passed and "MemoryError" in res.reason and res.peak_bytes is None, res


def test_loop_past_the_time_limit_times_out():
    t0 = time.monotonic()
    res = run_python("while True: pass\n", timeout_s=1.5)
    assert res.status == "timeout" and not res.passed and res.returncode is None
    assert time.monotonic() - t0 < 1.5 + 5


SURVIVOR = """\
import subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", {marker!r}],
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL, start_new_session=True)
print("parent exits")
"""


def test_no_child_survives_the_program(monkeypatch):
    marker = f"gf-survivor-{uuid.uuid4().hex}"
    t0 = time.monotonic()
    res = run_python(SURVIVOR.format(marker=marker))
    assert res.passed and time.monotonic() - t0 < 10, res
    assert marked_pids(marker) == []
    # control: unisolated and without a cgroup (whose removal kills leftovers too), the
    # detached child does outlive its parent (so the check can see it)
    monkeypatch.setattr(memcap, "find_memory_cap",
                        lambda: memcap.MemoryCap("rlimit", "", "simulated: no cgroup"))
    control_marker = f"gf-survivor-{uuid.uuid4().hex}"
    assert unisolated(SURVIVOR.format(marker=control_marker)).passed
    left = marked_pids(control_marker, wait_s=0)
    for pid in left:
        os.kill(pid, 9)
    assert left, "control: the detached child should have been found on the host"


# ---------------------------------------------------------------- scoring still works
@pytest.mark.parametrize("raw, ok", [
    ("```python\ndef add(a, b):\n    return a + b\n```", True),
    ("```python\ndef add(a, b):\n    return a - b\n```", False),
    ("```python\nimport os\nos.system('true')\ndef add(a, b):\n    return b + a\n```", True),
])
def test_scorer_passes_correct_and_fails_wrong_code(raw, ok):
    item = {"params": HE_PARAMS, "scorer": "code_exec"}
    assert SCORERS["code_exec"].func(raw, item).correct is ok


# ---------------------------------------------------------------- refusal and opt-in
def test_refuses_without_isolation():
    iso = codeexec.find_isolation("/nonexistent/bwrap", "/nonexistent/unshare")
    assert iso.kind == "none" and "not found" in iso.reason
    with pytest.raises(SandboxUnavailable, match="bubblewrap.*allow_unisolated_code"):
        run_python("print(1)", isolation=iso)
    # per-item error handling (ValueError/RuntimeError) must not swallow the refusal
    assert not issubclass(SandboxUnavailable, ValueError | RuntimeError)


def test_opt_in_runs_unisolated(monkeypatch):
    monkeypatch.setattr(codeexec, "find_isolation", lambda: NONE)
    raw = "```python\ndef add(a, b):\n    return a + b\n```"
    item = {"params": HE_PARAMS, "scorer": "code_exec"}
    with pytest.raises(SandboxUnavailable):
        SCORERS["code_exec"].func(raw, item)  # the scorer path refuses by default
    # what the sweep passes for allow_unisolated_code: true (profile -> RungPlan.scoring)
    assert SCORERS["code_exec"].func(raw, item, ScoreSettings(allow_unisolated_code=True)).correct
    with pytest.raises(SandboxUnavailable):  # no state left behind by the call above
        SCORERS["code_exec"].func(raw, item)
    assert run_python("print(1)", allow_unisolated=True).stdout == "1\n"


def test_profile_opt_in_is_off_by_default():
    from gguf_fragility import profile as params

    assert params.Profile(name="x", models={}).allow_unisolated_code is False
    on = params._build(params.Profile, {"name": "x", "models": {},
                                        "allow_unisolated_code": True}, "t")
    assert on.allow_unisolated_code is True
    with pytest.raises(params.ProfileError, match="allow_unisolated_code"):
        params._build(params.Profile, {"name": "x", "models": {},
                                       "allow_unisolated_code": "yes"}, "t")


def test_unshare_fallback_blocks_network_and_survivors():
    iso = codeexec.find_isolation("/nonexistent/bwrap")
    if iso.kind != "unshare":
        pytest.skip(f"unshare does not work here: {iso.reason}")
    lst = Listener()
    res = run_python(CONNECT.format(port=lst.port), isolation=iso, timeout_s=20)
    assert lst.close() == 0 and "CONNECTED" not in res.stdout, res.stdout
    marker = f"gf-survivor-{uuid.uuid4().hex}"
    assert run_python(SURVIVOR.format(marker=marker), isolation=iso).passed
    assert marked_pids(marker) == []
