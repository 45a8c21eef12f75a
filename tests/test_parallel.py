"""actparse.parallel.map_jobs: ordered results, serial and in spawned processes."""

import os

import pytest

from actparse.parallel import map_jobs


def _pid_and_power(x: int, exponent: int) -> tuple[int, int]:
    return os.getpid(), x ** exponent


def test_serial_path_runs_here_in_order():
    out = list(map_jobs(_pid_and_power, [3, 1, 2], 1, 2))
    assert [v for _, v in out] == [9, 1, 4]
    assert {pid for pid, _ in out} == {os.getpid()}


def test_processes_keep_job_order_and_run_elsewhere():
    jobs = list(range(7, -1, -1))
    out = list(map_jobs(_pid_and_power, jobs, 2, 3))
    assert [v for _, v in out] == [j ** 3 for j in jobs]
    assert os.getpid() not in {pid for pid, _ in out}


def test_one_job_never_starts_a_pool():
    (pid, v), = map_jobs(_pid_and_power, [5], 4, 1)
    assert (pid, v) == (os.getpid(), 5)


def test_worker_errors_reach_the_caller():
    with pytest.raises(TypeError):
        list(map_jobs(_pid_and_power, [1, "x"], 2, 2))
