"""An outputs folder that cannot be written (read-only, full) stops a run in one line that
says what to do, and a failed write leaves neither a half-written file nor a lost result
(issue 29's battery: read-only outputs folder, full disk during a cell write)."""

import errno
import os
import subprocess

import pandas as pd
import pytest

from gguf_fragility import cli, store
from gguf_fragility.run.pipeline import Job, chapter_message

TINY = "models:\n  smollm2-135m:\n    rungs: [F16]\nfamilies: [science_mc]\nn_items: 2\n"


def test_unwritable_outputs_folder_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    """Before: a traceback ending in ``OSError: [Errno 30] Read-only file system``. The
    outputs root here is a path under a regular file (the same OSError path as a read-only
    mount, for any user)."""
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "tiny.yaml").write_text(TINY)
    (tmp_path / "blocker").write_text("a file where the outputs folder should be")
    monkeypatch.setenv("GGUF_FRAGILITY_PROFILES", str(tmp_path / "profiles"))
    monkeypatch.setenv("GGUF_FRAGILITY_OUTPUTS", str(tmp_path / "blocker" / "outputs"))
    code = cli.main(["run", "--profile", "tiny", "--stages", "probes", "--no-site"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("gguf-fragility: error: cannot write ")
    assert str(tmp_path / "blocker" / "outputs") in err[0]
    assert "GGUF_FRAGILITY_OUTPUTS" in err[0] and "run the same command again" in err[0]


def test_chapter_stopped_by_a_full_disk_says_what_to_do():
    job = Job("sweep", tmp := __import__("pathlib").Path("04_sweep.ipynb"), tmp, {"profile": "p"})
    msg = chapter_message(job, "OSError",
                          "[Errno 28] No space left on device: '/o/p/sweep/m/F16/code.parquet.tmp'")
    assert "\n" not in msg
    assert "cannot write /o/p/sweep/m/F16/code.parquet.tmp: No space left on device" in msg
    assert "free space" in msg and "run the same command again" in msg
    other = chapter_message(job, "ValueError", "bad value")  # other errors are left as they are
    assert "free space" not in other and "ValueError: bad value" in other


def _written(path):
    store.write_table_atomic(pd.DataFrame({"x": [1, 2, 3]}), path)
    return store.read_table_checked(path).frame


def test_a_write_that_fails_leaves_no_tmp_file_and_keeps_the_old_result(tmp_path, monkeypatch):
    """Before: ``<name>.tmp`` stayed beside the result after the failed write."""
    cell = tmp_path / "cell.parquet"
    old = _written(cell)

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        store.write_table_atomic(pd.DataFrame({"x": [9]}), cell)
    with pytest.raises(OSError, match="No space left"):
        store.write_json_atomic(tmp_path / "r.json", {"a": 1})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell.parquet"]
    pd.testing.assert_frame_equal(store.read_table_checked(cell).frame, old)


def test_a_real_full_disk_leaves_no_tmp_file(tmp_path):
    """A 64 KiB tmpfs (root only, where mounts are allowed) filled by a table and a JSON write."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs",
                                            str(mnt)], capture_output=True).returncode:
        pytest.skip("needs root and mount to make a small file system")
    try:
        old = _written(mnt / "cell.parquet")
        big = pd.DataFrame({"x": [os.urandom(64).hex() for _ in range(4000)]})
        with pytest.raises(OSError) as exc:
            store.write_table_atomic(big, mnt / "cell.parquet")
        assert exc.value.errno == errno.ENOSPC or "No space" in str(exc.value)
        with pytest.raises(OSError, match="No space left"):
            store.write_json_atomic(mnt / "r.json", {"x": big.x.tolist()})
        assert sorted(p.name for p in mnt.iterdir()) == ["cell.parquet"]
        pd.testing.assert_frame_equal(store.read_table_checked(mnt / "cell.parquet").frame, old)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_reference_store_write_that_fails_leaves_no_tmp_file(tmp_path, monkeypatch):
    """The reference's log-prob store (tens of MB, written chunk by chunk) on a disk that
    fills: before, ``_reference_logprobs.npz.tmp.npz`` stayed behind."""
    from types import SimpleNamespace

    from gguf_fragility.run import shift

    def no_space(engine, chunks, i):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(shift, "chunk_rows", no_space)
    store_path = tmp_path / "_reference_logprobs.npz"
    with pytest.raises(OSError, match="No space left"):
        shift.write_reference(SimpleNamespace(n_vocab=8), SimpleNamespace(
            tokens=[[1, 2, 3]], rows_per_chunk=2), store_path, "0" * 16)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_error_without_a_file_name_names_the_outputs_folder(tmp_path, monkeypatch,
                                                                         capsys):
    """A write error raised without a file name (papermill writing an executed notebook on
    a full disk): before, the line said ``cannot write a file``."""
    from gguf_fragility.run import pipeline

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "tiny.yaml").write_text(TINY)
    monkeypatch.setenv("GGUF_FRAGILITY_PROFILES", str(tmp_path / "profiles"))
    monkeypatch.setenv("GGUF_FRAGILITY_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setattr(pipeline, "run", full)
    code = cli.main(["run", "--profile", "tiny", "--no-site"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"cannot write a file in {tmp_path / 'outputs' / 'tiny'}: No space left" in err[0]
