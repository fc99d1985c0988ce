"""Run sweep cells in-process or on a Dask distributed cluster, chosen by the params profile.

A cell (model × rung × family, :func:`gguf_fragility.run.evaluate_cell`) is independent
of every other cell of its rung and writes one parquet file atomically, so cells can run
anywhere that sees the same ``outputs/`` folder and model files. The profile's
``scheduler`` key picks where::

    scheduler: null                    # default: in this process, one cell after another
    scheduler: "local:2"               # a LocalCluster of 2 worker processes on this machine
    scheduler: "tcp://10.0.0.5:8786"   # an existing Dask scheduler (dask-scheduler / dask-worker)

Nothing here schedules: Dask does. Resuming is unchanged, because a cell whose stored
``params_hash`` matches is skipped before anything is submitted, and a worker that dies
leaves only whole cell files behind.
"""

from __future__ import annotations

import atexit
import itertools
import uuid
from collections.abc import Sequence
from typing import NamedTuple

from tqdm import tqdm

from gguf_fragility.profile import Profile, local_workers
from gguf_fragility.run.cells import (
    CellRun,
    LazyEngine,
    cell_owner,
    evaluate_cell,
    is_done,
    plan_cell,
    rung_row,
    scorer_tags,
)

_CLIENTS: dict[str, tuple] = {}  # scheduler spec -> (Client, LocalCluster or None), per process


class Cell(NamedTuple):
    """One unit of sweep work: see :func:`gguf_fragility.run.evaluate_cell`."""

    model: str
    rung: str
    family: str
    variant: int = 0
    keep: frozenset[str] | None = None  # item ids to evaluate; None = every item


def get_client(scheduler: str):
    """The Dask client of a scheduler spec, started once per process and reused.

    ``"local:N"`` starts ``LocalCluster(n_workers=N, threads_per_worker=1, processes=True)``
    (no dashboard); any other string is passed to ``Client(address)``. The client is not
    made Dask's default, so nothing else in the process is routed to it.
    """
    if scheduler in _CLIENTS:
        return _CLIENTS[scheduler][0]
    from distributed import Client, LocalCluster  # late: only needed when a profile asks

    n = local_workers(scheduler)
    if n is not None:
        # set before the worker imports tqdm (it reads TQDM_* once, at import): no per-item
        # bars from worker processes; the client shows one bar over cells
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=None,
                               env={"TQDM_DISABLE": "1"})
        client = Client(cluster, set_as_default=False)
    else:
        cluster, client = None, Client(scheduler, set_as_default=False)
    _CLIENTS[scheduler] = (client, cluster)
    return client


def close_clients() -> None:
    """Close every client (and LocalCluster) this process started."""
    while _CLIENTS:
        _, (client, cluster) = _CLIENTS.popitem()
        client.close()
        if cluster is not None:
            cluster.close()


atexit.register(close_clients)


def run_cells(profile: Profile, cells: Sequence[Cell]) -> list[CellRun]:
    """
    Run (or resume) sweep cells where ``profile.scheduler`` says, in the order given.

    Parameters
    ----------
    profile : Profile
        Its ``scheduler`` chooses: None runs the cells here one after another, sharing one
        loaded rung between consecutive cells of the same model × rung (today's sweep);
        ``"local:N"`` or an address submits each unfinished cell as one Dask task.
    cells : sequence of Cell

    Returns
    -------
    list of CellRun
        One per cell, in the order of ``cells``, with this process's path of each file.

    Raises
    ------
    Exception
        The first failing cell's error (re-raised from its worker); the remaining tasks
        are cancelled, and every cell already written stays for the next run.

    Notes
    -----
    Each task loads its rung once, evaluates its cell and frees the model, so a worker
    holds one model at a time. The profile (with its outputs root) is passed to every task, so a worker
    writes under the client's ``outputs/`` whatever its own environment says; remote
    workers need the same paths (shared filesystem) for outputs, ``data/`` and model
    files, and the same installed package. With ``local:N`` set ``engine.n_threads`` to
    about cores / N, or the workers oversubscribe the CPU. Cells of a non-reference rung
    read their family's F16 cell, so sweep F16 before the other rungs.
    """
    if profile.scheduler is None:
        return _run_serial(profile, cells)
    runs: list[CellRun | None] = [None] * len(cells)
    pending = []
    for i, c in enumerate(cells):
        pf, path, phash, _ = plan_cell(profile, c.model, c.rung, c.family, variant=c.variant,
                                       keep=c.keep)
        if is_done(path, phash, cell_owner(c.model, c.rung, c.family, c.variant), scorer_tags(pf)):
            runs[i] = CellRun(path, False, float("nan"), 0)
        else:
            pending.append((i, path))
    if pending:
        from distributed import as_completed

        client = get_client(profile.scheduler)
        token = uuid.uuid4().hex[:8]
        futures = {}
        for i, path in pending:
            c = cells[i]
            fut = client.submit(_cell_task, profile, c, pure=False,
                                key=f"cell-{c.model}-{c.rung}-{c.family}-v{c.variant}-{token}")
            futures[fut] = (i, path)
        done = as_completed(list(futures), loop=client.loop)  # client is not the default
        try:
            for fut in tqdm(done, total=len(futures), desc=f"cells on {profile.scheduler}",
                            unit="cell"):
                i, path = futures[fut]
                runs[i] = fut.result()._replace(path=path)
        except BaseException:
            client.cancel(list(futures))
            raise
    return runs


def _run_serial(profile: Profile, cells: Sequence[Cell]) -> list[CellRun]:
    """Cells in this process; consecutive cells of one model × rung share a loaded rung."""
    runs = []
    with tqdm(total=len(cells), desc="cells", unit="cell") as bar:
        for (model, rung), group in itertools.groupby(cells, key=lambda c: (c.model, c.rung)):
            with LazyEngine(profile, rung_row(profile, model, rung).file, rung) as engine:
                for c in group:
                    runs.append(evaluate_cell(profile, model, rung, c.family, variant=c.variant,
                                              keep=c.keep, engine=engine))
                    bar.update()
    return runs


def _cell_task(profile: Profile, cell: Cell) -> CellRun:
    """One Dask task: evaluate a cell under the client's outputs root (``profile.outputs``)."""
    return evaluate_cell(profile, cell.model, cell.rung, cell.family, variant=cell.variant,
                               keep=cell.keep)


__all__ = ["Cell", "close_clients", "get_client", "local_workers", "run_cells"]
