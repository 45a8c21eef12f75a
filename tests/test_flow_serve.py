"""`python -m flows.serve`: the flow as a Prefect deployment. The server's scheduler turns its schedule
into a run that the served process executes, and a manual run (the UI's Run button) completes too."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from flowkit import make_diamond_project, shared_prefect_server

pytest.importorskip("prefect")
pytest.importorskip("prefect_dask")
ROOT = Path(__file__).resolve().parents[1]


def test_serve_cli_errors(tmp_path):
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    out = subprocess.run([sys.executable, "-m", "flows.serve", "--root", str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 2 and "no Prefect API" in out.stderr
    out = subprocess.run([sys.executable, "-m", "flows.serve", "--root", str(tmp_path), "--api-url",
                          "http://127.0.0.1:9/api", "--cron", "0 3 * * *", "--interval", "60"], cwd=ROOT,
                         env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "--cron or --interval" in out.stderr


def test_scheduled_and_manual_deployment_runs_complete(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.server import quiet_env, stop_server

    _, api = shared_prefect_server()
    root = make_diamond_project(tmp_path / "p")
    name = f"t{uuid.uuid4().hex[:8]}"
    start = (datetime.now(timezone.utc) + timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    env = quiet_env()
    env.update(PREFECT_API_URL=api, PREFECT_RUNNER_POLL_FREQUENCY="2")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "flows.serve", "--root", str(root), "--api-url", api,
                             "--name", name, "--interval", "3600", "--start", start],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.group = proc.pid
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            dep = None
            for _ in range(240):
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    dep = client.read_deployment_by_name(f"actparse/{name}")
                    break
                except Exception:  # noqa: BLE001 - not registered yet
                    time.sleep(0.5)
            assert dep is not None, "the deployment never appeared"
            assert [s.schedule.interval for s in dep.schedules] == [timedelta(hours=1)]
            # The server's scheduler creates the run due at `start`; the served process runs it.
            done = None
            for _ in range(300):
                runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
                done = next((r for r in runs if r.state and r.state.is_final()), None)
                if done:
                    break
                time.sleep(1)
            assert done is not None, (tmp_path / "serve.log").read_text()[-3000:]
            assert done.state.is_completed(), done.state.message
            assert done.auto_scheduled  # made by the scheduler, not by this test
            assert "branch:main" in done.tags
            assert (root / "out/join.txt").read_text() == str(5 * 2 + 5 * 3)
            # A manual run of the deployment (the UI's Run button): nothing changed, every stage Cached.
            manual = run_deployment(f"actparse/{name}", timeout=240)
            assert manual.state.is_completed(), manual.state.message
            assert not manual.auto_scheduled
    finally:
        stop_server(proc)
        log.close()
