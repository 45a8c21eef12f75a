"""The flow's shards of part_states, stad_detect and partattn_predict (actparse/shards.py): merged, they
write the very bytes the stages write (tables, skips, metrics JSON), reuse complete parts after a crash,
and record the videos of a shard that keeps failing as skips -- on a tiny synthetic data set with tiny
trained STAD and part-state models and one corrupt test video."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from _params import overlaid
from actparse.constants import PART_GROUPS, PART_STATES
from actparse.params import load_params
from actparse.part_labels import gt_parts
from actparse.paths import Paths
from actparse.schemas import ParquetStreamWriter, from_columns, from_rows, read_df, read_table, write_table
from flowkit import run_shards

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NO_PRED = "no prediction"  # part_states: the video left out of video_predictions (a recorded skip)

STAD = {"enabled": True, "head": "pcca", "boxes": "gt", "stride": 5, "short_side": 48, "stem_dim": 4, "dim": 16,
        "heads": 2, "roi_size": 3, "epochs": 1, "samples_per_video": 1, "batch_size": 2, "decoupled": True,
        "decoupled_epochs": 1, "decoupled_keyframes": 2}
PARTATTN = {"enabled": True, "persons_source": "gt", "parts_source": "gt", "action_source": "gt", "stride": 5,
            "input_size": [48, 32], "num_frames": 2, "epochs": 1, "samples_per_video": 2, "batch_size": 4,
            "stem_dim": 4, "dim": 16, "heads": 2, "dropout": 0.0, "part_crop": 16}


def _write(root: Path, **over) -> None:
    p = overlaid({"seed": 0, "device": "cpu", "data": {"root": "artifacts/synth"}, "stad": STAD, "partattn": PARTATTN,
                  "flow": {"shard_videos": 2, "map_stages": []}, "link": {}})
    for section, values in over.items():
        p[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(p))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """5 test videos (the 4th a corrupt file), parts = the GT parts (one row group per video), CSN-like
    predictions for all but one video, tiny STAD and part-state models trained on 2 train videos."""
    from actparse.synth import SynthConfig, generate
    from stages import partattn_train, stad_train

    root = tmp_path_factory.mktemp("seedshards")
    cfg = SynthConfig.from_params(overlaid({"synth": dict(
        seed=5, n_train=2, n_test=5, width=64, height=48, min_seconds=1.0, max_seconds=1.2, max_people=2,
        occluder_prob=0.0)}))
    generate(cfg, root / "artifacts" / "synth", progress=False)
    _write(root)
    for mod in (stad_train, partattn_train):
        assert mod.main(["--params", str(root / "params.yaml"), "--root", str(root)]) == 0
    droot = root / "artifacts" / "synth"
    videos = read_df(droot / "videos.parquet", "videos")
    test = videos[videos["split"] == "test"]
    (droot / test["path"].iloc[3]).write_bytes(b"not a video at all")  # a skip of stad_detect and partattn_predict
    paths = Paths(root)
    parts = gt_parts(read_df(droot / "gt_persons.parquet", "gt_persons"))
    with ParquetStreamWriter(paths.parts, "parts") as w:
        for _, g in parts.groupby("video", sort=False):
            w.write(from_columns({c: g[c].tolist() for c in g.columns}, "parts"))
    preds = []
    for i, (video, action) in enumerate(zip(videos["video"], videos["action"])):
        if i == 1:
            continue  # NO_PRED
        preds.append({"video": video, "task": "action", "model": "ensemble", "label": action, "score": 0.9,
                      "probs": [0.9, 0.1]})
        for k, group in enumerate(PART_GROUPS):
            state = PART_STATES[group][(i + k) % len(PART_STATES[group])]
            preds.append({"video": video, "task": group, "model": "ensemble", "label": f"{action}_{group}_{state}",
                          "score": 0.5 + 0.05 * k, "probs": [0.5, 0.5]})
    write_table(from_rows(preds, "video_predictions"), paths.video_predictions, "video_predictions")
    return root


def _module(stage: str):
    import importlib

    return importlib.import_module(f"stages.{stage}")


OUTS = {"part_states": ["part_states.parquet"],
        "stad_detect": ["stad/action_detections.parquet", "stad/action_detections_phase1.parquet"],
        "partattn_predict": ["partattn/part_states.parquet", "../metrics/partattn.json",
                             "partattn/video_counts.parquet"]}


def _outputs(root: Path, stage: str) -> dict[str, bytes]:
    a = root / "artifacts"
    return {p: (a / p).read_bytes() for p in (*OUTS[stage], f"skips/{stage}.parquet")}


def _clear(root: Path, stage: str) -> None:
    for p in _outputs(root, stage):
        (root / "artifacts" / p).unlink()


def _mapped(root: Path, stage: str, work: Path, only=None):
    """What the flow does: items -> run_item each, last shard first (errors recorded as the flow does)."""
    mapper = _module(stage).FLOW_MAPPER(root, load_params(root / "params.yaml"))
    items, errors = run_shards(mapper, work, only, reverse=True)
    return mapper, items, errors


def _skips(root: Path, stage: str) -> list[dict]:
    return read_table(Paths(root).skips / f"{stage}.parquet", "skips").to_pylist()


CASES = [("part_states", {}), ("part_states", {"part_labels": {"parts_source": "gt"}}),
         ("stad_detect", {}), ("partattn_predict", {}),
         ("partattn_predict", {"partattn": {"parts_source": "detected"}})]


@pytest.mark.parametrize("stage,over", CASES, ids=[f"{s}-{o}" for s, o in CASES])
def test_merged_shards_equal_the_stage_byte_for_byte(project, stage, over, tmp_path):
    _write(project, **over)
    try:
        mod = _module(stage)
        mod.run(load_params(project / "params.yaml"), project)
        want = _outputs(project, stage)
        _clear(project, stage)
        mapper, items, errors = _mapped(project, stage, tmp_path)
        assert errors == {}
        info = mapper.merge(items, errors, tmp_path)
        assert _outputs(project, stage) == want
    finally:
        _write(project)
    videos = read_df(project / "artifacts/synth/videos.parquet", "videos")
    n = len(videos) if stage == "part_states" else 5
    assert [len(v) for _, v in items] == [2] * (n // 2) + [1] * (n % 2)
    skipped = videos["video"].iloc[1] if stage == "part_states" else videos[videos["split"] == "test"]["video"].iloc[3]
    assert [s["video"] for s in _skips(project, stage)] == [skipped] and info["skipped"] == 1
    first = project / "artifacts" / OUTS[stage][0]
    out = read_df(first, "action_detections" if stage == "stad_detect" else "part_states")
    assert len(out) == info["rows"] > 0 and skipped not in set(out["video"])
    if stage == "partattn_predict":
        m = json.loads((project / "metrics/partattn.json").read_text())
        assert m["enabled"] and m["model"]["matched_persons"] > 0 and 0 <= m["model"]["top1"] <= 100


def test_rerun_after_a_crash_reuses_complete_parts(project, tmp_path, monkeypatch):
    mod = _module("stad_detect")
    mod.run(load_params(project / "params.yaml"), project)
    want = _outputs(project, "stad_detect")
    _clear(project, "stad_detect")
    _mapped(project, "stad_detect", tmp_path, only={0, 2})  # "crash": shard 1 and the merge never ran
    (tmp_path / "00002.1.parquet").unlink()  # a shard missing one of its two parts is not complete
    seen = []
    real = mod.Work.prepare  # every video passes here first (the corrupt one stops here)
    monkeypatch.setattr(mod.Work, "prepare", lambda self, video, table: seen.append(video) or real(self, video, table))
    mapper, items, errors = _mapped(project, "stad_detect", tmp_path)
    assert seen == [*items[2][1], *items[1][1]] and errors == {}  # only shards 2 (incomplete) and 1 computed
    mapper.merge(items, errors, tmp_path)
    assert _outputs(project, "stad_detect") == want
    seen.clear()
    _write(project, stad={"test_flip": True})  # another param of the stage: every part is stale
    try:
        _mapped(project, "stad_detect", tmp_path)
    finally:
        _write(project)
    assert sorted(seen) == sorted(v for _, vs in items for v in vs)
    _mapped(project, "stad_detect", tmp_path)  # back to the committed params: recomputed again
    seen.clear()
    droot = project / "artifacts" / "synth"
    video = droot / read_df(droot / "videos.parquet", "videos").set_index("video").loc[items[2][1][0], "path"]
    os.utime(video, ns=(video.stat().st_atime_ns, video.stat().st_mtime_ns + 10**9))  # a replaced video file
    _mapped(project, "stad_detect", tmp_path)
    assert seen == items[2][1]


@pytest.mark.parametrize("stage", ["part_states", "partattn_predict"])
def test_a_shard_that_keeps_failing_becomes_skips(project, stage, tmp_path, monkeypatch):
    mod = _module(stage)
    mod.run(load_params(project / "params.yaml"), project)
    full = read_df(project / "artifacts" / OUTS[stage][0], "part_states")
    real = mod.Work.one
    mapper = mod.FLOW_MAPPER(project, load_params(project / "params.yaml"))
    victim = mapper.items()[0][1][0]

    def broken(self, video, table):
        if video == victim:
            raise RuntimeError("worker lost")
        return real(self, video, table)

    monkeypatch.setattr(mod.Work, "one", broken)
    mapper, items, errors = _mapped(project, stage, tmp_path)
    name = mapper.item_name(items[0])
    assert list(errors) == [name]
    info = mapper.merge(items, errors, tmp_path)
    skips = _skips(project, stage)
    # the shard's two videos, and the corrupt test video (partattn_predict) of another shard
    assert [s["video"] for s in skips[:2]] == items[0][1] and info["skipped"] == 2 + (stage == "partattn_predict")
    assert all(f"shard {name} failed: RuntimeError: worker lost" in s["error"] for s in skips[:2])
    out = read_df(project / "artifacts" / OUTS[stage][0], "part_states")
    assert set(out["video"]) == set(full["video"]) - set(items[0][1])
    everything = {mapper.item_name(it): {"type": "RuntimeError", "message": "boom"} for it in items}
    with pytest.raises(ValueError, match="none of the"):
        mapper.merge(items, everything, tmp_path)


def test_switched_off_seed_stage_merges_its_placeholders(project, tmp_path):
    _write(project, stad={"enabled": False}, partattn={"enabled": False})
    try:
        for stage in ("stad_detect", "partattn_predict"):
            mapper, items, errors = _mapped(project, stage, tmp_path)
            assert items == []
            mapper.merge(items, errors, tmp_path)
            assert _skips(project, stage) == []
            assert read_table(project / "artifacts" / OUTS[stage][0],
                              "action_detections" if stage == "stad_detect" else "part_states").num_rows == 0
        assert json.loads((project / "metrics/partattn.json").read_text()) == {"enabled": False}
    finally:
        _write(project)


def test_the_real_flow_runs_the_seed_stages_as_shards(project, tmp_path):
    """The real flow on a local cluster of two thread workers: stad_detect (two tables) and
    partattn_predict (a table and a metrics file) as shards, merged into what the stages write; DVC
    then finds both stages up to date."""
    pytest.importorskip("prefect_dask")
    import shutil

    from flowkit import dvc_status, init_repo, run, shared_prefect_server, run_shards

    from flows.pipeline import run_pipeline

    want = {}
    for stage in ("stad_detect", "partattn_predict"):
        _module(stage).run(load_params(project / "params.yaml"), project)
        want[stage] = _outputs(project, stage)
    root = init_repo(tmp_path / "p")
    shutil.copytree(project / "artifacts", root / "artifacts")
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["flow"].update(map_stages=["stad_detect", "partattn_predict"], gpu_stages=["stad_detect", "partattn_predict"],
                     n_workers=2, processes=False, workdir="work")
    (root / "params.yaml").write_text(yaml.safe_dump(p))
    (root / "stages").symlink_to(Path(__file__).resolve().parents[1] / "stages")  # the project's own stage code
    stages = {"stad_detect": {"cmd": "python -m stages.stad_detect",
                              "deps": ["artifacts/synth", "artifacts/models/stad"], "params": ["stad"],
                              "outs": [f"artifacts/{o}" for o in OUTS["stad_detect"]] +
                                      ["artifacts/skips/stad_detect.parquet"]},
              "partattn_predict": {"cmd": "python -m stages.partattn_predict",
                                   "deps": ["artifacts/synth", "artifacts/models/partattn"], "params": ["partattn"],
                                   "outs": ["artifacts/partattn", "artifacts/skips/partattn_predict.parquet"],
                                   "metrics": [{"metrics/partattn.json": {"cache": False}}]}}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    for stage in want:
        for out in (*OUTS[stage], f"skips/{stage}.parquet"):
            (root / "artifacts" / out).unlink(missing_ok=True)
    (root / ".gitignore").write_text("/work/\n/stages\n")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "tiny"], root)
    state = run_pipeline(root, api_url=shared_prefect_server()[1], return_state=True)
    assert state.is_completed(), state.message
    rows = {r["stage"]: r for r in state.result()}
    for stage in want:
        assert rows[stage]["status"] == "ran (mapped)" and rows[stage]["items"] == 3
        got = _outputs(root, stage)
        skips = f"skips/{stage}.parquet"
        assert {k: v for k, v in got.items() if k != skips} == {k: v for k, v in want[stage].items() if k != skips}
        # the skip names the corrupt video file, under the other project here
        assert [{**r, "error": r["error"].replace(str(root), str(project))} for r in _skips(root, stage)] == \
            _skips(project, stage) and len(_skips(project, stage)) == 1
    assert dvc_status(root) == {}
