"""Sharded per-video inference (actparse/shards.py): the flow's shards of detect_persons, keypoints and
detect_parts write what the stages write, reuse complete parts after a crash, and retry a failing shard
(then record its videos as skips) -- on a tiny project with real (untrained) YOLO and HRNet models."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from _detection_data import make_project, write_params
from actparse.constants import PARTS
from actparse.params import load_params
from actparse.paths import Paths
from actparse.schemas import ParquetStreamWriter, from_rows, read_table, write_table
from actparse import shards
from flowkit import run_shards

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]
BAD = "vid_bad"  # a video whose JPEGs are corrupt: a recorded skip of detect_persons and detect_parts


def _yolo(path: Path, names: list[str]) -> None:
    from actparse import yolo

    yolo.configure()
    from ultralytics import YOLO

    path.parent.mkdir(parents=True, exist_ok=True)
    m = YOLO("yolo11n.yaml", task="detect")
    m.model.names = dict(enumerate(names))
    m.save(str(path))


def _project(root: Path) -> Path:
    """6 videos of 2 frames (one row group per video, as decode writes them; the 4th has corrupt JPEGs),
    refined persons, detected persons (plus one on a video without frames), untrained models."""
    import torch

    from actparse.hrnet import build_pose_model, save_checkpoint

    make_project(root, n_videos=5, n_test=1, n_frames=2, orig=96)
    paths = Paths(root)
    frames = read_table(paths.frames, "frames").to_pylist()
    refined = read_table(paths.refined, "keypoints").to_pylist()
    bad = [dict(r, video=BAD, jpeg=b"\xff\xd8 not a jpeg") for r in frames if r["video"] == "vid00"]
    order = ["vid00", "vid01", "vid02", BAD, "vid03", "vid04"]
    with ParquetStreamWriter(paths.frames, "frames") as w:
        for v in order:
            w.write(from_rows(bad if v == BAD else [r for r in frames if r["video"] == v], "frames"))
    refined += [dict(r, video=BAD) for r in refined if r["video"] == "vid00"]
    write_table(from_rows(refined, "keypoints"), paths.refined, "keypoints")
    persons = [{"video": r["video"], "frame": r["frame"], "person": r["person"], "box": r["box"], "score": r["score"]}
               for r in refined if r["video"] != BAD]
    persons.append({"video": "ghost", "frame": 0, "person": 0, "box": [1.0, 1.0, 20.0, 40.0], "score": 0.5})
    write_table(from_rows(persons, "persons"), paths.persons, "persons")
    _yolo(paths.models / "person_detector" / "model.pt", ["person"])
    _yolo(paths.models / "part_detector" / "model.pt", list(PARTS))
    torch.manual_seed(0)
    save_checkpoint(build_pose_model("hrnet_w18_small"), paths.models / "pose" / "model.pt", (96, 64))
    write_params(root / "params.yaml", person={"conf": 0.0, "max_det": 3}, parts={"conf": 0.0})
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["keypoints"].update(infer_batch=8, flip_test=False, backend="hrnet")
    params["flow"].update(shard_videos=2, n_workers=2, processes=False, workdir="work", map_stages=[])
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return _project(tmp_path_factory.mktemp("shards"))


def _module(stage: str):
    import importlib

    return importlib.import_module(f"stages.{stage}")


OUTS = {"detect_persons": "persons.parquet", "keypoints": "keypoints.parquet", "detect_parts": "parts.parquet"}


def _outputs(root: Path, stage: str) -> dict[str, bytes]:
    a = Paths(root).frames.parent
    return {p: (a / p).read_bytes() for p in (OUTS[stage], f"skips/{stage}.parquet")}


def _clear(root: Path, stage: str) -> None:
    for p in _outputs(root, stage):
        (Paths(root).frames.parent / p).unlink()


def _mapped(root: Path, stage: str, work: Path, only=None, reverse=True) -> tuple[object, list, dict]:
    """What the flow does: items -> run_item each (errors collected as the flow records them)."""
    mapper = _module(stage).FLOW_MAPPER(root, load_params(root / "params.yaml"))
    items, errors = run_shards(mapper, work, only, reverse=reverse)
    return mapper, items, errors


# ------------------------------------------------------------------------------------ (a) equality
@pytest.mark.parametrize("stage", ["detect_persons", "keypoints", "detect_parts"])
def test_merged_shards_equal_the_stage_byte_for_byte(project, stage, tmp_path):
    """The mapped stage's artifacts (output + skips) are the very bytes its own run() writes."""
    mod = _module(stage)
    params = load_params(project / "params.yaml")
    mod.run(params, project)
    want = _outputs(project, stage)
    _clear(project, stage)
    mapper, items, errors = _mapped(project, stage, tmp_path)
    assert errors == {}
    assert [len(v) for _, v in items] == ([2, 2, 2] if stage != "keypoints" else [2, 2, 1])
    info = mapper.merge(items, errors, tmp_path)
    assert _outputs(project, stage) == want
    skips = read_table(Paths(project).skips / f"{stage}.parquet", "skips").to_pylist()
    out = read_table(Paths(project).frames.parent / OUTS[stage], OUTS[stage].split(".")[0])
    assert out.num_rows == info["rows"] > 0
    if stage == "keypoints":  # the video with no frames is found only by the whole run: the merge finds it too
        assert [s["video"] for s in skips] == ["ghost"] and info["skipped"] == 1
    else:
        assert [s["video"] for s in skips] == [BAD] and "corrupt JPEG" in skips[0]["error"]
        assert BAD not in set(out.column("video").to_pylist())


@pytest.fixture(autouse=True)
def _persons_back(project):
    """detect_persons rewrites persons.parquet (keypoints' input): keep the handmade one for every test."""
    path = Paths(project).persons
    saved = path.read_bytes()
    yield
    path.write_bytes(saved)


# ------------------------------------------------------------------------------------ (b) resume
def test_rerun_after_a_crash_reuses_complete_parts(project, tmp_path, monkeypatch):
    mod = _module("detect_persons")
    mod.run(load_params(project / "params.yaml"), project)
    want = _outputs(project, "detect_persons")
    _clear(project, "detect_persons")
    work = tmp_path / "work"
    work.mkdir()
    _mapped(project, "detect_persons", work, only={0, 1})  # "crash": shard 2 and the merge never ran
    # shard 2 was half written when it crashed: a part without its sidecar is not complete
    shutil.copyfile(work / "00000.parquet", work / "00002.parquet")
    mtimes = {p.name: p.stat().st_mtime_ns for p in work.iterdir()}

    seen = []
    real = mod.Work.prepare  # every video passes here first (a corrupt one stops here)

    def counting(self, video, table):
        seen.append(video)
        return real(self, video, table)

    monkeypatch.setattr(mod.Work, "prepare", counting)
    mapper, items, errors = _mapped(project, "detect_persons", work)  # the rerun: every item again
    assert seen == ["vid03", "vid04"] and errors == {}  # only shard 2 computed
    assert {n: (work / n).stat().st_mtime_ns for n in ("00000.parquet", "00000.json", "00001.parquet")} == \
        {n: mtimes[n] for n in ("00000.parquet", "00000.json", "00001.parquet")}
    mapper.merge(items, errors, work)
    assert _outputs(project, "detect_persons") == want

    # stale parts are recomputed: another param of the stage, or a rewritten model file
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["person_detector"]["max_det"] = 2
    (project / "params.yaml").write_text(yaml.safe_dump(p))
    try:
        seen.clear()
        _mapped(project, "detect_persons", work)
        assert sorted(seen) == sorted(["vid00", "vid01", "vid02", BAD, "vid03", "vid04"])
    finally:
        p["person_detector"]["max_det"] = 3
        (project / "params.yaml").write_text(yaml.safe_dump(p))
    seen.clear()
    _mapped(project, "detect_persons", work)
    assert len(seen) == 6  # back to max_det 3: the parts of max_det 2 are stale too
    seen.clear()
    model = Paths(project).models / "person_detector" / "model.pt"
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 10**9))
    _mapped(project, "detect_persons", work, only={1})
    assert seen == ["vid02", BAD]


def test_model_is_loaded_once_per_worker_thread(project, tmp_path, monkeypatch):
    from actparse import yolo

    loads = []
    real = yolo.load_model
    monkeypatch.setattr(yolo, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    shards.cache_clear()
    _mapped(project, "detect_persons", tmp_path)
    assert len(loads) == 1  # three shards, one load


# ------------------------------------------------------------------------------------ (c) failures
def test_a_shard_that_keeps_failing_becomes_skips(project, tmp_path, monkeypatch):
    """Whatever a shard raises besides a video's skip fails its task; once its retries are spent, the
    merge records its videos as skips with the error, and the stage's all-failed check still applies."""
    mod = _module("detect_persons")
    real = mod.Work.one

    def broken(self, video, table):
        if video == "vid02":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(self, video, table)

    monkeypatch.setattr(mod.Work, "one", broken)
    mapper, items, errors = _mapped(project, "detect_persons", tmp_path)
    assert list(errors) == ["vid02..vid_bad"] and errors["vid02..vid_bad"]["type"] == "RuntimeError"
    info = mapper.merge(items, errors, tmp_path)
    assert info["skipped"] == 2
    skips = read_table(Paths(project).skips / "detect_persons.parquet", "skips").to_pylist()
    assert [s["video"] for s in skips] == ["vid02", BAD]
    assert all("shard vid02..vid_bad failed: RuntimeError: CUDA error" in s["error"] for s in skips)
    videos = set(read_table(Paths(project).persons, "persons").column("video").to_pylist())
    assert videos == {"vid00", "vid01", "vid03", "vid04"}
    everything = {mapper.item_name(it): {"type": "RuntimeError", "message": "boom"} for it in items}
    with pytest.raises(ValueError, match="none of the 6 videos"):
        mapper.merge(items, everything, tmp_path)


# ------------------------------------------------------------------------------------ (d) the real flow
def _dvc_project(root: Path, src: Path) -> Path:
    from flowkit import init_repo, run

    init_repo(root)
    shutil.copytree(src / "artifacts", root / "artifacts")
    shutil.copyfile(src / "params.yaml", root / "params.yaml")
    (root / "stages").symlink_to(ROOT / "stages")  # the project's own stage code
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["flow"].update(map_stages=["detect_persons"], gpu_stages=["detect_persons"])
    (root / "params.yaml").write_text(yaml.safe_dump(p))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"detect_persons": {
        "cmd": "python -m stages.detect_persons",
        "deps": ["artifacts/frames.parquet", "artifacts/models/person_detector"],
        "params": ["person_detector.conf", "person_detector.max_det"],
        "outs": ["artifacts/persons.parquet", "artifacts/skips/detect_persons.parquet"]}}}))
    for f in ("persons.parquet", "skips/detect_persons.parquet"):
        (root / "artifacts" / f).unlink(missing_ok=True)
    (root / ".gitignore").write_text("/work/\n/stages\n")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "tiny"], root)
    return root


def test_flow_retries_a_shard_and_records_a_lost_one(project, tmp_path, monkeypatch):
    """The real flow on a local cluster of two single-thread workers (threads of this process, so the
    fault injected here reaches them): the shard failing once is retried and its videos are in the
    output; the shard failing every time is recorded as skips; DVC finds the stage up to date."""
    pytest.importorskip("prefect_dask")
    from flowkit import dvc_status, shared_prefect_server

    from flows.pipeline import run_pipeline

    mod = _module("detect_persons")
    mod.run(load_params(project / "params.yaml"), project)
    stage_out = read_table(Paths(project).persons, "persons")
    root = _dvc_project(tmp_path / "p", project)
    real = mod.Work.one
    calls: dict[str, int] = {}

    def flaky(self, video, table):
        calls[video] = calls.get(video, 0) + 1
        if video == "vid00" and calls[video] == 1:
            raise RuntimeError("worker lost its GPU once")
        if video == "vid03":
            raise RuntimeError("always broken")
        return real(self, video, table)

    monkeypatch.setattr(mod.Work, "one", flaky)
    state = run_pipeline(root, api_url=shared_prefect_server()[1], return_state=True)
    assert state.is_completed(), state.message
    row = {r["stage"]: r for r in state.result()}["detect_persons"]
    assert row["items"] == 3 and row["failed_items"] == 1 and row["status"] == "ran (mapped)"
    assert calls["vid00"] == 2 and calls["vid03"] == 1 + mod.FLOW_MAPPER.retries
    out = read_table(root / "artifacts/persons.parquet", "persons")
    kept = [v for v in stage_out.column("video").to_pylist() if v not in ("vid03", "vid04")]
    assert out.column("video").to_pylist() == kept
    want = stage_out.filter(np.array([v in set(kept) for v in stage_out.column("video").to_pylist()]))
    assert out.equals(want)  # values exactly equal for every shard that ran
    skips = read_table(root / "artifacts/skips/detect_persons.parquet", "skips").to_pylist()
    assert [s["video"] for s in skips] == [BAD, "vid03", "vid04"]
    assert "always broken" in skips[1]["error"]
    assert dvc_status(root) == {}
    assert not (root / "work" / "detect_persons").exists()
