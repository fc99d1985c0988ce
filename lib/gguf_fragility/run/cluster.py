"""Run sweep cells in-process or on a Dask distributed cluster, chosen by the params profile.

A cell (model × rung × family of a rung's plan, :func:`gguf_fragility.run.cells.evaluate_cell`) is independent
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
import uuid

from tqdm import tqdm

from gguf_fragility.profile import local_workers
from gguf_fragility.run.cells import CellRun, LazyEngine, cell_done, evaluate_cell
from gguf_fragility.run.plan import RungPlan

_CLIENTS: dict[str, tuple] = {}  # scheduler spec -> (Client, LocalCluster or None), per process


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


def run_cells(plan: RungPlan, scheduler: str | None = None) -> list[CellRun]:
    """
    Run (or resume) the cells of a rung's plan where ``scheduler`` says, in the plan's order.

    Parameters
    ----------
    plan : RungPlan
        The rung and its cells (:func:`~gguf_fragility.run.plan.plan_rung`).
    scheduler : str, optional
        The profile's ``scheduler``: None runs the cells here one after another on one
        loaded rung; ``"local:N"`` or an address submits each unfinished cell as one Dask task.

    Returns
    -------
    list of CellRun
        One per cell, in the order of ``plan.cells``, with this process's path of each file.

    Raises
    ------
    Exception
        The first failing cell's error (re-raised from its worker); the remaining tasks
        are cancelled, and every cell already written stays for the next run.

    Notes
    -----
    A task is the plan of one cell (the rung's plan with that cell only): it loads the rung
    once, evaluates the cell and frees the model, so a worker holds one model at a time. The
    plan holds absolute paths under the client's ``outputs/``, so a worker writes there
    whatever its own environment says; remote workers need the same paths (shared
    filesystem) for outputs, ``data/`` and model files, and the same installed package. With
    ``local:N`` set ``engine.n_threads`` to about cores / N, or the workers oversubscribe the
    CPU. Cells of a non-reference rung read their family's F16 cell, so sweep F16 before the
    other rungs.
    """
    if scheduler is None:
        with LazyEngine(plan) as engine:
            return [evaluate_cell(plan, c, engine)
                    for c in tqdm(plan.cells, desc=f"{plan.rung} cells", unit="cell")]
    runs: list[CellRun | None] = [None] * len(plan.cells)
    pending = []
    for i, c in enumerate(plan.cells):
        if cell_done(plan, c):
            runs[i] = CellRun(c.path, False, float("nan"), 0)
        else:
            pending.append(i)
    if pending:
        from distributed import as_completed

        client = get_client(scheduler)
        token = uuid.uuid4().hex[:8]
        futures = {}
        for i in pending:
            c = plan.cells[i]
            fut = client.submit(_cell_task, plan._replace(cells=(c,)), pure=False,
                                key=f"cell-{plan.model}-{plan.rung}-{c.family}-v{c.variant}-{token}")
            futures[fut] = i
        done = as_completed(list(futures), loop=client.loop)  # client is not the default
        try:
            for fut in tqdm(done, total=len(futures), desc=f"cells on {scheduler}", unit="cell"):
                i = futures[fut]
                runs[i] = fut.result()._replace(path=plan.cells[i].path)
        except BaseException:
            client.cancel(list(futures))
            raise
    return runs


def _cell_task(plan: RungPlan) -> CellRun:
    """One Dask task: the plan of one cell."""
    return evaluate_cell(plan, plan.cells[0])


__all__ = ["close_clients", "get_client", "local_workers", "run_cells"]
