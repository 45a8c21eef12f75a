"""The DAG is DVC's own reading of dvc.yaml; the Prefect flow reruns exactly what DVC calls stale, maps
per-item work with failures as failed tasks, and routes GPU stages."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actparse.dag import DagError, load_dag
from actparse.params import ParamError
from flowkit import dvc, dvc_status, make_fake_project, run, shared_prefect_server, write_params

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ the DAG
def test_dag_of_fake_project(tmp_path):
    """actparse.dag is DVC's own reading of dvc.yaml (its index): ${...} resolved by DVC, DVC's edges."""
    root = make_fake_project(tmp_path / "p")
    dag = load_dag(root)
    assert dag.order == ["a", "b", "c"]
    assert dag.edges == {("a", "b"), ("b", "c")}
    assert dag["c"].deps == ("stages/c.py", "out/b.json")  # ${data.dir} resolved by DVC from params.yaml
    assert dag["c"].outs == ("out/c.txt", "metrics/c.json") and dag["c"].params == ("c.offset",)
    assert dag["c"].cmd == "python -m stages.c"
    assert [s.name for s in dag if s.gpu] == []
    assert [s.name for s in load_dag(root, gpu_stages=["b"]) if s.gpu] == ["b"]
    assert dag["b"].module == "stages.b"
    assert dag.plan(["b"]) == ["a", "b"] and dag.plan(["b"], single_item=True) == ["b"]
    assert dag.descendants("a") == {"b", "c"}
    # the flow marks its GPU stages from flow.gpu_stages (scheduling lives in flows/, not in the library)
    from flows.cluster import DEFAULT_GPU_STAGES, flow_dag

    params = {"flow": {"gpu_stages": ["b"]}, "_path": "params.yaml"}
    assert [s.name for s in flow_dag(root, params) if s.gpu] == ["b"]
    assert "train_pose" in DEFAULT_GPU_STAGES and "decode" not in DEFAULT_GPU_STAGES
    with pytest.raises(ParamError, match="params.yaml: parameter 'flow.gpu_stages'.*nope"):
        flow_dag(root, {"flow": {"gpu_stages": ["nope"]}, "_path": "params.yaml"})


def test_dag_errors_name_the_problem(tmp_path):
    root = make_fake_project(tmp_path / "p")
    with pytest.raises(DagError, match="nope"):
        load_dag(root, gpu_stages=["nope"])
    text = (root / "dvc.yaml").read_text()
    (root / "dvc.yaml").write_text(text.replace("deps: [stages/a.py]", "deps: [stages/a.py, out/c.txt]"))
    with pytest.raises(DagError, match="dvc.yaml: .*both a dependency and an output"):  # a cycle, in DVC's words
        load_dag(root)
    (root / "dvc.yaml").write_text(text.replace("${data.dir}", "${data.nowhere}"))
    with pytest.raises(DagError, match="data.nowhere"):
        load_dag(root)
    with pytest.raises(FileNotFoundError, match="dvc.yaml"):
        load_dag(tmp_path / "elsewhere")


# ------------------------------------------------------------------------------------------ the flow
def test_pipeline_cli_help_and_errors(tmp_path):
    pytest.importorskip("prefect")
    from flows.pipeline import main  # imported (and Prefect's logging set up) outside any redirection

    def run(*argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exc:
                code = exc.code
        return code, out.getvalue(), err.getvalue()

    code, out, _ = run("--help")
    assert code == 0 and "dvc repro --single-item" in out and "wait_for" in out
    root = make_fake_project(tmp_path / "p")
    code, _, err = run("nope", "--root", str(root))
    assert code == 2 and "unknown stage 'nope'" in err  # checked before any server or cluster starts
    code, _, err = run("--root", str(make_fake_project(tmp_path / "nodvc", init=False)))
    assert code == 2 and "not inside of a DVC repository" in err
    code, _, err = run("--root", str(tmp_path / "missing"))
    assert code == 2 and "params file not found" in err


@pytest.fixture(scope="module")
def api():
    """A local Prefect API (`python -m flows.server`, SQLite in a temp PREFECT_HOME), shared by the tests."""
    pytest.importorskip("prefect")
    pytest.importorskip("prefect_dask")
    return shared_prefect_server()[1]


def _rows(state) -> dict[str, dict]:
    assert state.is_completed(), state.message
    return {r["stage"]: r for r in state.result()}


def _ran(rows: dict) -> list[str]:
    return [s for s, r in rows.items() if str(r["status"]).startswith("ran")]


def _task_runs(api: str, flow_run_id, expect: int = 9) -> dict[str, object]:
    """Task runs of a flow run as recorded by the Prefect server (recorded asynchronously: poll)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}):
        with get_client(sync_client=True) as client:
            for _ in range(60):
                runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
                by_name = {r.name: r for r in runs}
                if len(by_name) >= expect and all(r.state and r.state.is_final() for r in runs):
                    return by_name
                time.sleep(0.5)
    return by_name


def _artifacts(api: str, flow_run_id) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}):
        with get_client(sync_client=True) as client:
            arts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in arts if a.key}


def test_flow_reruns_exactly_what_dvc_calls_stale(tmp_path, api):
    from flows.pipeline import run_pipeline

    root = make_fake_project(tmp_path / "p")
    out = root / "out"

    # 1. Fresh project: every stage runs; b is mapped per item on the (fake) GPU worker only.
    state = run_pipeline(root, api_url=api, fake_gpus=1, return_state=True)
    rows = _rows(state)
    assert _ran(rows) == ["a", "b", "c"]
    assert rows["b"]["items"] == 6 and rows["b"]["failed_items"] == 1
    assert rows["b"]["item_workers"] == ["gpu0"]
    b = json.loads((out / "b.json").read_text())
    assert b["values"] == {f"v{i}": 2 * i for i in (0, 1, 2, 4, 5)}
    assert b["skipped"] == {"v3": "item v3 is corrupt"}
    assert (out / "c.txt").read_text() == str(2 * (0 + 1 + 2 + 4 + 5) + 1)
    assert dvc_status(root) == {}  # dvc repro would do nothing
    assert not (root / "work" / "b").exists()  # per-item parts cleaned up
    # The failed item is a failed task carrying its error; the run itself completed.
    runs = _task_runs(api, state.state_details.flow_run_id)
    assert runs["b[v3]"].state.is_failed() and "item v3 is corrupt" in runs["b[v3]"].state.message
    assert runs["b[v0]"].state.is_completed() and runs["c"].state.is_completed()
    # edges of the run graph: each item of b waited for a, the merge (task "b") for every item, c for b
    parents = {n: {i.id for v in r.task_inputs.values() for i in v} for n, r in runs.items()}
    assert parents["b[v0]"] == {runs["a"].id} and parents["c"] == {runs["b"].id}
    assert parents["b"] == {runs[f"b[v{i}]"].id for i in range(6)}
    # the metrics of dvc.yaml as a markdown artifact; the DAG's final outputs as link artifacts
    arts = _artifacts(api, state.state_details.flow_run_id)
    total = 2 * (0 + 1 + 2 + 4 + 5) + 1
    assert arts["actparse-metrics"].type == "markdown"
    assert f"| `metrics/c.json` | total | {total} |" in arts["actparse-metrics"].data
    assert "| `metrics/c.json` | score.mean |" in arts["actparse-metrics"].data
    # (Prefect stores a link artifact as a markdown link)
    assert arts["output-out-c-txt"].data == f"[out/c.txt]({(root / 'out/c.txt').as_uri()})"
    assert arts["output-metrics-c-json"].data.startswith("[metrics/c.json](file://")
    assert arts["b-videos"].type == "progress" and float(arts["b-videos"].data) == 100.0

    # 2. Nothing changed: nothing runs.
    rows = _rows(run_pipeline(root, api_url=api, fake_gpus=1, return_state=True))
    assert _ran(rows) == [] and {r["status"] for r in rows.values()} == {"up to date"}

    # 3. A param of the middle stage: it and everything downstream rerun, upstream does not. The run is
    # compared with the committed first run (compare_to): an HTML report behind a link artifact, and the
    # changed params and metrics as markdown.
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "first run"], root)
    write_params(root, b__k=3)
    state = run_pipeline(root, api_url=api, fake_gpus=1, return_state=True, compare_to="main")
    rows = _rows(state)
    assert _ran(rows) == ["b", "c"]
    assert (out / "c.txt").read_text() == str(3 * 12 + 1)
    assert dvc_status(root) == {}
    arts = _artifacts(api, state.state_details.flow_run_id)
    report = root / "work" / "reports" / "compare-main.html"
    assert arts["compare-report"].type == "markdown"  # (a link artifact, stored as a markdown link)
    assert arts["compare-report"].data == f"[main vs this run]({report.as_uri()})"
    html = report.read_text()
    assert html.lower().startswith("<!doctype html>") and "b.k" in html and "metrics/c.json" in html
    md = arts["compare-summary"].data
    assert "| `params.yaml` | b.k | 2 | 3 |" in md
    assert "| `metrics/c.json` | total | 25 | 37 | 12 |" in md

    # 4. dvc repro and the flow agree the other way round too: after `dvc repro`, the flow has nothing to do.
    write_params(root, c__offset=5)
    dvc(root, "repro")
    rows = _rows(run_pipeline(root, api_url=api, fake_gpus=1, return_state=True))
    assert _ran(rows) == []

    # 5. A param of the last stage: only it reruns; a failing command fails its task and the run,
    # with the command's error, and the stage stays stale for DVC too.
    write_params(root, c__offset=-1)
    state = run_pipeline(root, api_url=api, fake_gpus=1, return_state=True)
    assert state.is_failed()
    assert "stage 'c' failed with exit code 3" in state.message and "offset must be >= 0" in state.message
    assert set(dvc_status(root)) == {"c"}


def test_stale_stages_is_dvc_status_with_stale_upstream_carried_down(tmp_path):
    """One DVC pass over the plan: a stage is settled (None) only when DVC reports it and every upstream
    stage of the plan up to date; a stale upstream makes its downstream stages stale too."""
    from flows.dvcstate import stage_status, stale_stages

    root = make_fake_project(tmp_path / "p")
    ups = {"a": [], "b": ["a"], "c": ["b"]}
    assert set(stale_stages(root, ["a", "b", "c"], ups).values()) != {None}  # never run
    dvc(root, "repro")
    assert stage_status(root, ["c", "a"]) == {"c": None, "a": None}
    assert stale_stages(root, ["a", "b", "c"], ups) == {"a": None, "b": None, "c": None}
    assert set(stale_stages(root, ["a", "b", "c"], ups, force=True).values()) == {"forced"}
    write_params(root, a__n=4)
    known = stale_stages(root, ["a", "b", "c"], ups)
    assert "params.yaml:a modified" in known["a"] and known["b"] == known["c"] == "upstream stale"
    assert stage_status(root, ["b", "c"]) == {"b": None, "c": None}  # DVC: b's inputs did not change (yet)
    assert set(dvc_status(root)) == {"a"}
    dvc(root, "repro")
    write_params(root, c__offset=2)
    known = stale_stages(root, ["a", "b", "c"], ups)
    assert known["a"] is None and known["b"] is None and "params.yaml:c.offset modified" in known["c"]
    with pytest.raises(ValueError, match="no stage 'nope'"):
        stage_status(root, ["nope"])


def test_noop_run_starts_no_cluster_and_records_every_stage_cached(tmp_path, api, monkeypatch):
    """With everything up to date (here after `dvc repro`), the flow starts no dask cluster: each stage is
    a task run in state Cached, with its edges, in a run named and tagged as usual, with the metrics
    artifact. A changed param then brings the cluster back for the stages that must run."""
    from flows import cluster as C
    from flows.pipeline import run_pipeline

    root = make_fake_project(tmp_path / "p")
    dvc(root, "repro")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "up to date"], root)
    started = []
    real_local_cluster = C.local_cluster

    def counting_cluster(*args, **kwargs):
        started.append(args)
        return real_local_cluster(*args, **kwargs)

    monkeypatch.setattr(C, "local_cluster", counting_cluster)

    state = run_pipeline(root, api_url=api, fake_gpus=1, return_state=True)
    rows = _rows(state)
    assert started == []  # no dask cluster
    assert {s: r["status"] for s, r in rows.items()} == {"a": "up to date", "b": "up to date", "c": "up to date"}
    runs = _task_runs(api, state.state_details.flow_run_id, expect=3)
    assert sorted(runs) == ["a", "b", "c"]
    assert {n: r.state.name for n, r in runs.items()} == {"a": "Cached", "b": "Cached", "c": "Cached"}
    parents = {n: {i.id for v in r.task_inputs.values() for i in v} for n, r in runs.items()}
    assert parents == {"a": set(), "b": {runs["a"].id}, "c": {runs["b"].id}}
    arts = _artifacts(api, state.state_details.flow_run_id)
    assert "| `metrics/c.json` | total |" in arts["actparse-metrics"].data
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}):
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(state.state_details.flow_run_id)
    sha = run(["git", "rev-parse", "--short=7", "HEAD"], root).stdout.strip()
    assert flow_run.name == f"main@{sha}" and {"branch:main", f"commit:{sha}"} <= set(flow_run.tags)

    # A param of c: the cluster starts, c runs there, a and b are Cached; DVC agrees afterwards.
    write_params(root, c__offset=4)
    rows = _rows(run_pipeline(root, api_url=api, fake_gpus=1, return_state=True))
    assert len(started) == 1
    assert _ran(rows) == ["c"] and rows["a"]["status"] == rows["b"]["status"] == "up to date"
    assert rows["c"]["worker"] in ("cpu0", "gpu0")
    assert dvc_status(root) == {}


def test_run_without_api_url_reports_into_the_running_flows_server(tmp_path, api, monkeypatch):
    """`python -m flows.server` announces itself in its PREFECT_HOME; a flow run without --api-url on that
    database reports into it instead of starting a throw-away server (a dead or silent one is ignored)."""
    import flows.server as S
    from flowkit import _SERVER
    from flows.pipeline import run_pipeline

    home = _SERVER["home"]
    assert S.find_running(home) == api
    assert S.find_running(tmp_path / "elsewhere") is None
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / S.SERVER_FILE).write_text(json.dumps({"api_url": api, "pid": int(dead.stdout)}))
    assert S.find_running(tmp_path / "stale") is None  # its process is gone

    root = make_fake_project(tmp_path / "p")
    dvc(root, "repro")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)

    def no_server(*args, **kwargs):
        raise AssertionError("a throw-away server was started")

    monkeypatch.setattr(S, "starting_server", no_server)
    state = run_pipeline(root, prefect_home=home, return_state=True)
    assert {r["status"] for r in _rows(state).values()} == {"up to date"}
    runs = _task_runs(api, state.state_details.flow_run_id, expect=3)
    assert {n: r.state.name for n, r in runs.items()} == {"a": "Cached", "b": "Cached", "c": "Cached"}


def test_stage_commands_get_the_flows_wait_policy_unless_the_launcher_sets_one(monkeypatch):
    from flows import dvcstate

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as dask sets it in its workers
    env = dvcstate.stage_env(dvcstate.launch_threads())
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert dvcstate.stage_env(dvcstate.launch_threads())["OMP_WAIT_POLICY"] == "ACTIVE"
