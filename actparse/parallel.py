"""Ordered map over spawned worker processes, with a plain serial path.

Stages that split CPU work into independent jobs (rendering synthetic videos, training the CSN
variants) use :func:`map_jobs`: results come back in job order whatever the number of processes,
so outputs do not depend on it. Workers are *spawned*, not forked: each starts a clean interpreter
(no inherited OpenMP / torch thread pools or held locks), whatever the parent imported.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_jobs(fn: Callable[..., R], jobs: Iterable[T], processes: int, *shared) -> Iterator[R]:
    """Yield ``fn(job, *shared)`` for each job, in order.

    ``processes`` <= 1 (or a single job) runs in this process; otherwise a spawn-context pool of
    ``min(processes, len(jobs))`` workers runs them. ``fn`` and its arguments must be picklable
    (a module-level function) when processes are used.
    """
    jobs = list(jobs)
    procs = min(int(processes), len(jobs))
    if procs <= 1:
        for job in jobs:
            yield fn(job, *shared)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(fn, jobs, *([s] * len(jobs) for s in shared))
