"""The flow as Prefect users expect it, on the diamond project top -> (left, right) -> join, top -> solo:
independent stages run at once with dependency edges in the run graph, a failed stage stops only its
downstream stages, the stage's own exit code and error line, log levels, progress, run name and tags,
retries of transient failures only, and the same dvc.lock as `dvc repro`."""

from __future__ import annotations

import contextlib
import io
import shutil
import time
from pathlib import Path

import pytest
import yaml

from flowkit import dvc, dvc_status, make_diamond_project, run, shared_prefect_server

pytest.importorskip("prefect")
pytest.importorskip("prefect_dask")


@pytest.fixture(scope="module")
def api():
    return shared_prefect_server()[1]


def _client(api):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    @contextlib.contextmanager
    def cm():
        with temporary_settings(updates={PREFECT_API_URL: api}):
            with get_client(sync_client=True) as client:
                yield client
    return cm()


def _task_runs(api, flow_run_id, n: int) -> dict:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.pipeline import drain_prefect

    drain_prefect()
    with _client(api) as client:
        for _ in range(60):
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            if len(runs) >= n and all(r.state and (r.state.is_final() or r.state.name == "NotRun") for r in runs):
                break
            time.sleep(0.5)
    return {r.name: r for r in runs}


def _parents(run) -> set:
    return {i.id for inputs in run.task_inputs.values() for i in inputs if getattr(i, "input_type", "") == "task_run"}


def _logs(api, task_run_id) -> list:
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId

    with _client(api) as client:
        return client.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[task_run_id])))


def _artifacts(api, flow_run_id) -> dict:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with _client(api) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in arts if a.key}


def _set_params(root: Path, **updates) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    for dotted, value in updates.items():
        section, key = dotted.split("__")
        params[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_independent_stages_at_once_with_edges_levels_progress_tags(tmp_path, api, monkeypatch):
    from flows.pipeline import run_pipeline

    root = make_diamond_project(tmp_path / "p")
    twin = tmp_path / "twin"
    shutil.copytree(root, twin)  # the same project, for `dvc repro`

    state = run_pipeline(root, api_url=api, return_state=True)
    assert state.is_completed(), state.message
    rows = {r["stage"]: r for r in state.result()}
    assert {s: r["status"] for s, r in rows.items()} == dict.fromkeys(["top", "left", "right", "join", "solo"], "ran")
    # left and right each waited for the other to start: they ran at the same time, on two workers
    assert {rows["left"]["worker"], rows["right"]["worker"]} == {"cpu0", "cpu1"}
    assert (root / "out/join.txt").read_text() == str(5 * 2 + 5 * 3)
    assert dvc_status(root) == {}

    # the same dvc.lock as `dvc repro` (stage by stage, in one process) on the twin
    monkeypatch.setenv("DIAMOND_ALONE", "1")
    dvc(twin, "repro")
    # (right and left finish in either order; the flow keeps dvc.lock in dvc.yaml order as repro leaves it)
    assert (root / "dvc.lock").read_text() == (twin / "dvc.lock").read_text()

    flow_run = state.state_details.flow_run_id
    runs = _task_runs(api, flow_run, 5)
    ids = {name: r.id for name, r in runs.items()}
    # the run graph's edges: each stage waited for exactly its upstream stages
    assert _parents(runs["top"]) == set()
    assert _parents(runs["left"]) == _parents(runs["right"]) == _parents(runs["solo"]) == {ids["top"]}
    assert _parents(runs["join"]) == {ids["left"], ids["right"]}

    # stage log levels kept: the stage's WARNING line arrives at WARNING, its INFO lines at INFO
    logs = _logs(api, ids["left"])
    warn = [lg for lg in logs if "a warning for the log" in lg.message]
    assert warn and warn[0].level == 30
    assert any("progress: 2/4 videos" in lg.message and lg.level == 20 for lg in logs)
    # progress lines became a progress artifact per stage
    arts = _artifacts(api, flow_run)
    assert arts["left-progress"].type == "progress" and float(arts["left-progress"].data) == 100.0
    assert arts["actparse-stages"].type == "progress"

    # run name and tags: git branch, short commit (no changed params yet)
    sha = run(["git", "rev-parse", "--short=7", "HEAD"], root).stdout.strip()
    with _client(api) as client:
        fr = client.read_flow_run(flow_run)
    assert fr.name == f"main@{sha}"
    assert {"branch:main", f"commit:{sha}"} <= set(fr.tags)
    assert not [t for t in fr.tags if t.startswith("param:")]


def test_failed_stage_stops_only_its_downstream_and_reports_exit_code(tmp_path, api):
    from flows.pipeline import main, run_pipeline

    root = make_diamond_project(tmp_path / "p")
    assert run_pipeline(root, api_url=api, return_state=True).is_completed()
    _set_params(root, top__n=7, right__fail=True)  # every stage stale; right will fail with exit 2
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--root", str(root), "--api-url", api])
    assert code == 1
    err = err.getvalue()
    # the stage's own exit code (not DVC's 255) and its error line; the stage downstream is named not run
    assert "stage 'right' failed with exit code 2" in err
    assert "right: error: out/top.txt: right.fail is set" in err
    assert "not run: join" in err
    # the independent stages went on
    assert (root / "out/left.txt").read_text() == str(7 * 2)
    assert (root / "out/solo.txt").read_text() == str(7 + 100)
    assert set(dvc_status(root)) == {"right", "join"}
    summary = out.getvalue()
    assert "not run" in summary and "FAILED: StageFailed" in summary

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with _client(api) as client:
        (fr,) = [r for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=["param:right.fail=True"]))) if r.state.is_failed()][-1:]
    assert "param:top.n=7" in fr.tags and "right.fail=True" in fr.name
    runs = _task_runs(api, fr.id, 5)
    assert runs["right"].state.is_failed() and runs["right"].run_count == 1  # exit 2 is not retried
    assert "exit code 2" in runs["right"].state.message
    assert runs["join"].state.name == "NotRun" and "right" in runs["join"].state.message
    assert _parents(runs["join"]) == {runs["left"].id, runs["right"].id} and runs["solo"].state.is_completed() and runs["left"].state.is_completed()
    line = "right: error: out/top.txt: right.fail is set"
    assert [lg.level for lg in _logs(api, runs["right"].id) if lg.message == line] == [40]


def test_killed_stage_is_retried(tmp_path, api, monkeypatch):
    from flows.pipeline import run_pipeline

    root = make_diamond_project(tmp_path / "p")
    marker = tmp_path / "died"
    monkeypatch.setenv("DIAMOND_DIE_ONCE", str(marker))
    state = run_pipeline(root, api_url=api, return_state=True)
    assert state.is_completed(), state.message
    assert marker.exists()  # the first attempt of `top` was killed by SIGKILL ...
    runs = _task_runs(api, state.state_details.flow_run_id, 5)
    assert runs["top"].run_count == 2 and runs["top"].state.is_completed()  # ... and retried once
    assert dvc_status(root) == {}


def test_retry_condition_and_exit_reasons():
    from prefect.states import Failed

    from flows import dvcstate
    from flows.pipeline import StageFailed, StageKilled, is_transient

    assert is_transient(None, None, Failed(data=StageKilled("x", exit_code=-9)))
    assert is_transient(None, None, Failed(data=dvcstate.LockBusy("busy")))
    assert not is_transient(None, None, Failed(data=StageFailed("x", exit_code=2)))
    assert dvcstate.exit_reason(2) == "exit code 2"
    assert dvcstate.exit_reason(-9) == dvcstate.exit_reason(137) == "killed by SIGKILL"
    assert dvcstate.killed(137) and not dvcstate.killed(2)
    levels = dvcstate.LineLevels()
    assert levels("2026-01-02 03:04:05,678 actparse.csn WARNING skip v1: bad")[0] == 30
    assert levels("csn: error: params.yaml: bad") == (40, "csn: error: params.yaml: bad")
    assert levels("Traceback (most recent call last):")[0] == 40
    assert levels('  File "x.py", line 1')[0] == 40
    assert levels("KeyError: 'x'")[0] == 40
    assert levels("plain output")[0] == 20


def test_run_labels_from_git_and_changed_params(tmp_path):
    from flows.runinfo import run_labels

    assert run_labels(tmp_path) == (None, [])  # not a git repository
    root = make_diamond_project(tmp_path / "p")
    run(["git", "checkout", "-q", "-b", "wide"], root)
    _set_params(root, top__n=9)
    name, tags = run_labels(root)
    sha = run(["git", "rev-parse", "--short=7", "HEAD"], root).stdout.strip()
    assert tags == ["branch:wide", f"commit:{sha}", "param:top.n=9"]
    assert name == f"wide@{sha} top.n=9"


def test_progress_lines_when_not_a_terminal(monkeypatch):
    """The stage kit's progress helper logs `progress: i/n what` lines (what the flow parses) when stderr is
    not a terminal, at most every ACTPARSE_PROGRESS_SECONDS, always the first and the last."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    root = logging.getLogger("actparse")
    monkeypatch.setattr(root, "level", logging.INFO)
    root.addHandler(handler)
    try:
        _progress_checks(records, monkeypatch)
    finally:
        root.removeHandler(handler)


def _progress_checks(records, monkeypatch):
    from types import SimpleNamespace

    import torch

    from actparse import yolo
    from actparse.params import ParamError
    from actparse.stage import Progress, progress
    from flows.pipeline import PROGRESS

    monkeypatch.setenv("ACTPARSE_PROGRESS_SECONDS", "0")
    assert list(progress(["a", "b", "c"], "detect_persons")) == ["a", "b", "c"]
    lines = [r.getMessage() for r in records if r.name == "actparse.detect_persons"]
    assert lines == ["progress: 1/3 videos", "progress: 2/3 videos", "progress: 3/3 videos"]
    records.clear()
    monkeypatch.setenv("ACTPARSE_PROGRESS_SECONDS", "3600")
    with Progress(4, "epochs", "train_csn") as bar:
        for _ in range(4):
            bar.update(loss=0.25)
    lines = [r.getMessage() for r in records if r.name == "actparse.train_csn"]
    assert lines == ["progress: 1/4 epochs loss=0.25", "progress: 4/4 epochs loss=0.25"]
    m = PROGRESS.search(lines[-1])
    assert (m.group("done"), m.group("total"), m.group("what")) == ("4", "4", "epochs")
    monkeypatch.setenv("ACTPARSE_PROGRESS_SECONDS", "soon")
    with pytest.raises(ParamError, match="ACTPARSE_PROGRESS_SECONDS"):
        Progress(1)
    # YOLO training reports each epoch through the same line
    records.clear()
    calls = []

    def validator(tr):
        calls.append(tr.epoch + 1)
        torch.rand(3)  # a random draw the training must not see
        return {"metrics/mAP50(B)": 0.125, "fitness": 0.5}
    state = torch.get_rng_state()
    trainer = SimpleNamespace(epoch=2, epochs=5, tloss={"box": torch.tensor(0.5), "cls": torch.tensor(0.25)},
                              metrics={}, args=SimpleNamespace(val=False), validator=validator)
    yolo._validate_epoch(trainer)  # epochs 3 and 4 validated by actparse (ultralytics only after the last)
    yolo._log_epoch(trainer)
    yolo._log_epoch(trainer)  # the same epoch again (ultralytics redoes an epoch after a NaN): one line
    trainer.epoch, trainer.tloss = 3, torch.tensor([float("nan")])
    yolo._validate_epoch(trainer)
    yolo._log_epoch(trainer)
    lines = [r.getMessage() for r in records if r.name == "actparse.yolo"]
    assert lines == ["progress: 3/5 epochs loss=0.75 val_map50=0.125", "progress: 4/5 epochs val_map50=0.125"]
    assert calls == [3, 4]  # the validator ran once per epoch, under actparse.train.monitoring
    assert torch.equal(torch.get_rng_state(), state) and trainer.metrics == {}  # trainer's own state untouched
    # no val split (nothing validated per epoch): ultralytics' zero metrics are not a val number
    records.clear()
    trainer = SimpleNamespace(epoch=0, epochs=5, tloss=torch.tensor([0.5]), metrics={"metrics/mAP50(B)": 0.0},
                              args=SimpleNamespace(val=False))
    yolo._log_epoch(trainer)
    assert [r.getMessage() for r in records if r.name == "actparse.yolo"] == ["progress: 1/5 epochs loss=0.5"]
