"""The dask.distributed cluster the flow runs on, and GPU routing by dask resources.

GPU work is annotated ``resources={"GPU": 1}``; the dask scheduler only places it on workers that
declared a ``GPU`` resource (``dask worker tcp://HOST:8786 --resources "GPU=1"``). Workers without
the resource take only CPU work. Which cluster:

1. ``--scheduler`` on the command line, else the ``ACTPARSE_DASK_SCHEDULER`` environment variable,
   else ``flow.scheduler`` in params.yaml: the address of an existing (multi-node) cluster;
2. otherwise a local cluster on 127.0.0.1: ``flow.n_workers`` CPU workers plus one GPU worker per
   visible CUDA device (``CUDA_VISIBLE_DEVICES`` pinned per worker), none on a CPU-only machine.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator, Sequence

GPU = "GPU"
SCHEDULER_ENV = "ACTPARSE_DASK_SCHEDULER"


def scheduler_address(params: dict | None = None, override: str | None = None) -> str | None:
    """An existing scheduler to use (CLI override > environment > ``flow.scheduler``), or None."""
    for cand in (override, os.environ.get(SCHEDULER_ENV), ((params or {}).get("flow") or {}).get("scheduler")):
        if cand:
            return str(cand)
    return None


def local_gpu_ids(params: dict | None = None) -> list[str]:
    """CUDA devices for local GPU workers: none when ``device: cpu`` or CUDA is absent."""
    if str((params or {}).get("device", "auto")) == "cpu":
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and not visible.strip():
        return []
    try:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA install means "no GPU", not a crash
        n = 0
    if visible:
        return [v.strip() for v in visible.split(",") if v.strip()][:n]
    return [str(i) for i in range(n)]


def worker_specs(n_cpu_workers: int = 1, gpu_ids: Sequence[str] = (), fake_gpus: int = 0,
                 processes: bool = True, threads_per_worker: int = 1) -> dict:
    """SpecCluster worker specs: ``gpu<i>`` workers declaring GPU=1, ``cpu<i>`` workers declaring nothing.

    ``gpu_ids`` are real CUDA devices (each worker sees only its own); ``fake_gpus`` adds workers that
    declare the resource without a device (tests, dry runs of the routing).
    """
    from distributed import Nanny, Worker

    cls = Nanny if processes else Worker
    base = {"nthreads": threads_per_worker}
    if processes:
        base["memory_limit"] = 0  # stage subprocesses are not the worker's memory
    specs = {}
    for i, dev in enumerate(list(gpu_ids) + [None] * fake_gpus):
        opts = dict(base, resources={GPU: 1})
        if dev is not None and processes:
            opts["env"] = {"CUDA_VISIBLE_DEVICES": str(dev)}
        specs[f"gpu{i}"] = {"cls": cls, "options": opts}
    for i in range(n_cpu_workers):
        specs[f"cpu{i}"] = {"cls": cls, "options": dict(base)}
    if not specs:
        raise ValueError("a local cluster needs at least one worker (flow.n_workers >= 1 or a GPU)")
    return specs


@contextmanager
def local_cluster(n_cpu_workers: int = 1, gpu_ids: Sequence[str] = (), fake_gpus: int = 0,
                  processes: bool = True, threads_per_worker: int = 1) -> Iterator[object]:
    """A dask SpecCluster on 127.0.0.1 (see :func:`worker_specs`), closed on exit."""
    from distributed import Scheduler, SpecCluster

    specs = worker_specs(n_cpu_workers, gpu_ids, fake_gpus, processes, threads_per_worker)
    logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster = SpecCluster(workers=specs,
                          scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard": False,
                                                                   "dashboard_address": "127.0.0.1:0"}},
                          silence_logs=logging.ERROR, name="actparse")
    try:
        cluster.wait_for_workers(len(specs), timeout=180)
        yield cluster
    finally:
        cluster.close()


def gpu_workers(address: str) -> list[str]:
    """Names of the workers of the cluster at ``address`` that declare a GPU resource."""
    from distributed import Client

    with Client(address, timeout="60s") as client:
        info = client.scheduler_info(n_workers=-1) if _accepts_n_workers(client) else client.scheduler_info()
    return sorted(str(w.get("name", addr)) for addr, w in info["workers"].items()
                  if (w.get("resources") or {}).get(GPU, 0) > 0)


def _accepts_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def worker_name() -> str:
    """The dask worker running this code, or "local" outside a worker."""
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return "local"
