"""Several machines, as docs/prefect.md "Several GPU machines" starts them: a scheduler and workers
started by dask's own command line (separate processes, as another host would run them; here on
127.0.0.1), two of them declaring one GPU each. The flow runs the fake project on that cluster: the
per-item tasks of the GPU-marked mapped stage ``b`` run only on the GPU workers, the CPU stages on the
CPU worker too, and DVC finds everything up to date afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowkit import dvc_status, make_fake_project, shared_prefect_server

pytest.importorskip("prefect")
pytest.importorskip("prefect_dask")

BIN = Path(sys.executable).parent


def _start(cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(cwd)}
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait_for_workers(sched_file: Path, n: int, procs: list, timeout: float = 90.0) -> str:
    from distributed import Client

    deadline = time.time() + timeout
    while not sched_file.exists():
        if time.time() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError("dask scheduler did not start")
        time.sleep(0.2)
    address = json.loads(sched_file.read_text())["address"]
    with Client(address, timeout=30) as client:
        client.wait_for_workers(n, timeout=max(1.0, deadline - time.time()))
    return address


@pytest.fixture
def cli_cluster(tmp_path):
    """``dask scheduler`` + two ``dask worker --resources GPU=1`` + one CPU ``dask worker``, all
    started from the project root, as on other machines; stopped (SIGTERM, then SIGKILL) afterwards."""
    root = make_fake_project(tmp_path / "p")
    logs = tmp_path / "logs"
    logs.mkdir()
    sched_file = tmp_path / "scheduler.json"
    common = ["--nthreads", "1", "--no-dashboard", "--scheduler-file", str(sched_file), "--host", "127.0.0.1"]
    procs = [_start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(sched_file)], root, logs / "scheduler.log")]
    try:
        while not sched_file.exists() and procs[0].poll() is None:
            time.sleep(0.2)
        for name in ("gpu-a0", "gpu-b0"):
            procs.append(_start([str(BIN / "dask"), "worker", *common, "--resources", "GPU=1", "--name", name],
                                root, logs / f"{name}.log"))
        procs.append(_start([str(BIN / "dask"), "worker", *common, "--name", "cpu-c0"], root, logs / "cpu-c0.log"))
        address = _wait_for_workers(sched_file, 3, procs)
        yield root, address, logs
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_flow_on_a_cluster_started_by_the_dask_cli(cli_cluster):
    from flows.pipeline import run_pipeline

    root, address, logs = cli_cluster
    api = shared_prefect_server()[1]
    state = run_pipeline(root, api_url=api, scheduler=address, return_state=True)
    assert state.is_completed(), (state.message, [p.read_text()[-2000:] for p in logs.iterdir()])
    rows = {r["stage"]: r for r in state.result()}
    assert [s for s, r in rows.items() if str(r["status"]).startswith("ran")] == ["a", "b", "c"]
    # b is a GPU stage mapped per item: its five good items ran on the GPU workers only (v3 is bad)
    assert rows["b"]["items"] == 6 and rows["b"]["failed_items"] == 1
    assert set(rows["b"]["item_workers"]) <= {"gpu-a0", "gpu-b0"} and rows["b"]["item_workers"]
    b = json.loads((root / "out/b.json").read_text())
    assert b["values"] == {f"v{i}": 2 * i for i in (0, 1, 2, 4, 5)}
    assert (root / "out/c.txt").read_text() == str(2 * (0 + 1 + 2 + 4 + 5) + 1)
    assert dvc_status(root) == {}  # committed to DVC as `dvc repro` would (test_flow_graph.py compares the locks)
