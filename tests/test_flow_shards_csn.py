"""The flow's shards of the csn stage (stages/csn.py ``Shards``): each shard writes its videos'
probabilities of every CSN variant, the merge searches the ensemble weights and writes what
``python -m stages.csn`` writes, byte for byte; complete parts are reused after a crash; a shard that keeps
failing becomes recorded skips -- on 8 tiny real videos (plus an undecodable one) and CSN models that
train_csn trained for one epoch."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from actparse.schemas import from_rows, read_table, write_table
from flowkit import run_shards

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]
BROKEN = "broken"
FIXED = {"default": {"ip": 2.0, "ir": 1.0}}


@pytest.fixture(scope="module")
def project(tmp_path_factory, one_torch_thread):
    """(root, params): tiny videos v0..v7 with "broken" (not a video) after v2, part labels, two CSN
    variants trained one epoch with 2 of the 6 train videos held out for the ensemble search."""
    from actparse.dataset import load_videos
    from stages import train_csn
    from test_csn import _tiny_csn_project

    root = tmp_path_factory.mktemp("csn_shards")
    params, _ = _tiny_csn_project(root)
    droot = Path(params["data"]["root"])
    rows = load_videos(droot).to_pylist()
    rows = [r for r in rows if r["video"] != BROKEN]
    rows.insert(3, next(r for r in load_videos(droot).to_pylist() if r["video"] == BROKEN))
    write_table(from_rows(rows, "videos"), droot / "videos.parquet", "videos")
    params["csn"].update(epochs=1, train_workers=1, batch_size=2, val_fraction=0.34, ensemble_grid=11)
    params["flow"].update(shard_videos=3, n_workers=2, processes=False, workdir="work", map_stages=[])
    train_csn.run(params, root)
    return root, params


def _params(project, search: bool) -> dict:
    p = copy.deepcopy(project[1])
    p["csn"]["ensemble_weights"] = "search" if search else copy.deepcopy(FIXED)
    return p


OUTS = ("artifacts/video_predictions.parquet", "artifacts/skips/csn.parquet", "metrics/ensemble.json")


def _outputs(root: Path) -> dict[str, bytes]:
    return {p: (root / p).read_bytes() for p in OUTS}


def _clear(root: Path) -> None:
    for p in OUTS:
        (root / p).unlink()


def _mapped(root: Path, params: dict, work: Path, only=None, reverse=True):
    """What the flow does: items -> run_item each (errors collected as the flow records them)."""
    from stages import csn

    mapper = csn.FLOW_MAPPER(root, params)
    items, errors = run_shards(mapper, work, only, reverse=reverse)
    return mapper, items, errors


@pytest.fixture
def forwards(monkeypatch):
    """The batch groups csn's forward passes see (lists of video names, in call order)."""
    from stages import csn

    seen: list[list[str]] = []
    real = csn.Work.forward

    def recording(self, clips):
        seen.append(list(clips))
        return real(self, clips)

    monkeypatch.setattr(csn.Work, "forward", recording)
    return seen


# ------------------------------------------------------------------------------------ (a) equality
@pytest.mark.parametrize("search", [False, True], ids=["fixed_weights", "search"])
def test_merged_csn_shards_equal_the_stage_byte_for_byte(project, search, tmp_path, forwards):
    """Predictions, skips and metrics/ensemble.json of the mapped stage are the bytes its own run writes;
    the shards run exactly the stage's batches (whole batch groups of test_batch // test_clips = 2
    videos; the undecodable video keeps its place), the validation videos in shards of their own."""
    from stages import csn

    root, _ = project
    params = _params(project, search)
    csn.run(params, root)
    want = _outputs(root)
    stage_batches = sorted(forwards)
    _clear(root)
    forwards.clear()
    mapper, items, errors = _mapped(root, params, tmp_path)
    assert errors == {}
    assert mapper.size == 4  # flow.shard_videos 3 rounded up to whole batch groups of 2 videos
    videos = [v for _, vs in items for v in vs]
    assert sorted(videos) == sorted([f"v{i}" for i in range(8)] + [BROKEN])
    val = mapper.work.val_names()
    if search:
        assert len(val) == 2 and items[0][1] == sorted(val, key=videos.index)  # the validation shard first
        assert all(not (set(vs) & val) for _, vs in items[1:])
    else:
        assert val == set() and [len(vs) for _, vs in items] == [4, 4, 1]
    assert sorted(forwards) == stage_batches  # the same forward passes, in another order
    assert any(len(b) == 2 for b in stage_batches) and [BROKEN] not in stage_batches
    info = mapper.merge(items, errors, tmp_path)
    assert _outputs(root) == want
    out = read_table(root / OUTS[0], "video_predictions")
    assert info == {"videos": 8, "rows": out.num_rows, "skipped": 1, "shards": len(items)}
    assert out.num_rows == 8 * 2 * 3 and BROKEN not in set(out.column("video").to_pylist())
    skips = read_table(root / OUTS[1], "skips").to_pylist()
    assert [s["video"] for s in skips] == [BROKEN] and "broken.mp4" in skips[0]["error"]
    rep = yaml.safe_load((root / OUTS[2]).read_text())
    assert rep["search"] is search and ("val_videos" in rep) is search


# ------------------------------------------------------------------------------------ (b) resume
def test_csn_rerun_after_a_crash_reuses_complete_parts(project, tmp_path, forwards):
    from stages import csn

    root, _ = project
    params = _params(project, False)
    csn.run(params, root)
    want = _outputs(root)
    _clear(root)
    work = tmp_path / "work"
    work.mkdir()
    _mapped(root, params, work, only={0, 1})  # "crash": shard 2 and the merge never ran
    shutil.copyfile(work / "00000.parquet", work / "00002.parquet")  # half written: no sidecar
    mtimes = {p.name: p.stat().st_mtime_ns for p in work.iterdir()}
    forwards.clear()
    mapper, items, errors = _mapped(root, params, work)  # the rerun: every item again
    assert items[2][1] == ["v7"] and forwards == [["v7"]] and errors == {}  # only shard 2 computed
    for name in ("00000.parquet", "00000.json", "00001.parquet", "00001.json"):
        assert (work / name).stat().st_mtime_ns == mtimes[name]
    mapper.merge(items, errors, work)
    assert _outputs(root) == want

    # the parts hold probabilities only: other ensemble weights reuse them all, and the merge matches
    # the stage's run with those weights
    other = copy.deepcopy(params)
    other["csn"]["ensemble_weights"] = {"default": {"ip": 1.0, "ir": 3.0}}
    forwards.clear()
    mapper, items, errors = _mapped(root, other, work)
    assert forwards == []
    mapper.merge(items, errors, work)
    merged = _outputs(root)
    csn.run(other, root)
    assert _outputs(root) == merged != want

    # stale parts are recomputed: a param the probabilities depend on, or a rewritten video file
    forwards.clear()
    other["csn"]["test_batch"] = 5  # same batch groups of 2 videos, yet a param of the parts
    _mapped(root, other, work)
    assert sorted(v for b in forwards for v in b) == sorted(f"v{i}" for i in range(8))
    forwards.clear()
    video = Path(params["data"]["root"]) / "videos" / "v5.mp4"
    os.utime(video, ns=(video.stat().st_atime_ns, video.stat().st_mtime_ns + 10**9))
    _mapped(root, other, work)
    assert items[1][1] == ["v3", "v4", "v5", "v6"] and forwards == [["v3", "v4"], ["v5", "v6"]]


# ------------------------------------------------------------------------------------ (c) failures
def test_a_failing_csn_shard_becomes_skips(project, tmp_path, monkeypatch):
    """A shard that raises (after the flow's retries) has its videos recorded as skips with its error;
    the others' rows are the stage's rows; a lost validation shard leaves nothing to search weights on."""
    from stages import csn

    root, _ = project
    params = _params(project, True)
    csn.run(params, root)
    stage_out = read_table(root / OUTS[0], "video_predictions")
    real = csn.Work.forward

    def broken(self, clips):
        if "v7" in clips:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(self, clips)

    monkeypatch.setattr(csn.Work, "forward", broken)
    mapper, items, errors = _mapped(root, params, tmp_path)
    lost = next(it for it in items if "v7" in it[1])
    assert list(errors) == [mapper.item_name(lost)] and errors[mapper.item_name(lost)]["type"] == "RuntimeError"
    assert mapper.retries >= 1  # the flow retries a shard task before it counts as lost
    info = mapper.merge(items, errors, tmp_path)
    assert info["skipped"] == 1 + len(lost[1]) - (BROKEN in lost[1])
    skips = read_table(root / OUTS[1], "skips").to_pylist()
    lost_skips = [s for s in skips if s["video"] in lost[1]]
    assert [s["video"] for s in lost_skips] == lost[1]
    assert all(f"shard {mapper.item_name(lost)} failed: RuntimeError: CUDA error" in s["error"] for s in lost_skips)
    out = read_table(root / OUTS[0], "video_predictions")
    kept = [v for v in stage_out.column("video").to_pylist() if v not in lost[1]]
    assert out.column("video").to_pylist() == kept
    assert out.equals(stage_out.filter(np.array([v in set(kept) for v in stage_out.column("video").to_pylist()])))

    val_item = items[0]
    val_lost = {mapper.item_name(val_item): {"type": "RuntimeError", "message": "boom"}}
    with pytest.raises(ValueError, match="none of the validation videos"):
        mapper.merge(items, val_lost, tmp_path)
    fixed = csn.FLOW_MAPPER(root, _params(project, False))  # every shard lost: the all-failed check applies
    fixed_items = fixed.items()
    everything = {fixed.item_name(it): {"type": "RuntimeError", "message": "boom"} for it in fixed_items}
    with pytest.raises(ValueError, match="none of the 9 videos"):
        fixed.merge(fixed_items, everything, tmp_path)


# ------------------------------------------------------------------------------------ (d) the real flow
def _dvc_project(root: Path, project) -> Path:
    from flowkit import init_repo, run

    src, _ = project
    init_repo(root)
    shutil.copytree(src / "data", root / "data")
    (root / "artifacts").mkdir()
    for d in ("part_labels", "models"):
        shutil.copytree(src / "artifacts" / d, root / "artifacts" / d)
    p = _params(project, True)
    p["data"]["root"] = "data"
    p["flow"].update(map_stages=["csn"], gpu_stages=["csn"])
    (root / "params.yaml").write_text(yaml.safe_dump(p))
    (root / "stages").symlink_to(ROOT / "stages")  # the project's own stage code
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"csn": {
        "cmd": "python -m stages.csn", "deps": ["data", "artifacts/part_labels", "artifacts/models/csn"],
        "params": ["csn", "decode.backend"],
        "outs": ["artifacts/video_predictions.parquet", "artifacts/skips/csn.parquet"],
        "metrics": [{"metrics/ensemble.json": {"cache": False}}]}}}))
    (root / ".gitignore").write_text("/work/\n/stages\n")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "tiny"], root)
    return root


def test_flow_runs_csn_shards_retries_one_and_records_a_lost_one(project, tmp_path, monkeypatch):
    """The real flow on a local cluster of two single-thread workers (threads of this process, so the
    fault injected here reaches them), with the ensemble search: the shard failing once is retried and
    its videos are in the output; the shard failing every time is recorded as skips; the weights are
    those the stage chooses, every row that was computed is the stage's row, and DVC finds the stage
    up to date."""
    pytest.importorskip("prefect_dask")
    from flowkit import dvc_status, shared_prefect_server

    from flows.pipeline import run_pipeline
    from stages import csn

    root = _dvc_project(tmp_path / "p", project)
    params = yaml.safe_load((root / "params.yaml").read_text())
    csn.run(params, root)
    stage_out = read_table(root / OUTS[0], "video_predictions")
    stage_rep = yaml.safe_load((root / OUTS[2]).read_text())
    _clear(root)
    items = csn.FLOW_MAPPER(root, params).items()
    once = items[1][1][0]  # the first shard after the validation one fails once, the last one always
    lost = items[-1][1]
    real = csn.Work.forward
    calls: dict[str, int] = {}

    def flaky(self, clips):
        for name in clips:
            calls[name] = calls.get(name, 0) + 1
        if once in clips and calls[once] == 1:
            raise RuntimeError("worker lost its GPU once")
        if set(lost) & set(clips):
            raise RuntimeError("always broken")
        return real(self, clips)

    monkeypatch.setattr(csn.Work, "forward", flaky)
    state = run_pipeline(root, api_url=shared_prefect_server()[1], return_state=True)
    assert state.is_completed(), state.message
    row = {r["stage"]: r for r in state.result()}["csn"]
    assert row["items"] == len(items) and row["failed_items"] == 1 and row["status"] == "ran (mapped)"
    assert calls[once] == 2 and calls[lost[0]] == 1 + csn.FLOW_MAPPER.retries
    out = read_table(root / OUTS[0], "video_predictions")
    kept = [v for v in stage_out.column("video").to_pylist() if v not in lost]
    assert out.column("video").to_pylist() == kept
    assert out.equals(stage_out.filter(np.array([v in set(kept) for v in stage_out.column("video").to_pylist()])))
    skips = read_table(root / OUTS[1], "skips").to_pylist()
    assert [s["video"] for s in skips] == [BROKEN, *lost] and "always broken" in skips[-1]["error"]
    rep = yaml.safe_load((root / OUTS[2]).read_text())
    assert rep["val_videos"] == stage_rep["val_videos"] == 2
    weights = {t: r["weights"] for t, r in rep["tasks"].items()}
    assert weights == {t: r["weights"] for t, r in stage_rep["tasks"].items()}
    assert dvc_status(root) == {}
    assert not (root / "work" / "csn").exists()
