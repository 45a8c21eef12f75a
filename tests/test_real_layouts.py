"""The default DAG on imported official data: synth -> official layout -> `actparse import` -> every stage.

Kinetics-TPS ground truth has person and part boxes but no keypoints; MultiSports has person boxes and
action tubes, no keypoints and no parts. The stages run in DAG order (each stage's main(), tiny params,
as tests/test_pipeline.py's `dvc repro` would) with a keypoints checkpoint the test saves (an untrained
HRNet: what it predicts does not matter here, that it is used as given does). MultiSports reuses the
Kinetics-TPS person detector (person_detector.weights) to save a training.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from pathlib import Path

import pytest
import yaml

from actparse.__main__ import main as cli
from actparse.dag import load_dag
from actparse.schemas import read_df, read_table

from _params import ROOT, committed, write_params

pytestmark = pytest.mark.slow

# every stage of dvc.yaml after synth, in DVC's order (the data root here is an import, not a synth output)
DAG = [s.name for s in load_dag(ROOT) if s.name != "synth"]


def _tiny() -> dict:
    over = yaml.safe_load((ROOT / "tests" / "params.tiny.yaml").read_text())
    over["person_detector"]["max_det"] = 3  # fewer persons per frame: a faster keypoints stage
    over["csn"]["variants"] = ["ip"]         # one CSN is enough to run the action side
    over["synth"].update(n_train=6, n_test=2)
    over["person_detector"]["frame_step"] = 2
    over["parts"]["frame_step"] = 2
    return over


def _stage(name: str, params: Path, root: Path) -> int:
    return importlib.import_module(f"stages.{name}").main(["--params", str(params), "--root", str(root)])


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(f"{record.name} {record.levelname} {record.getMessage()}")

    def of(self, stage: str) -> str:
        return "\n".join(line for line in self.lines if line.startswith(f"actparse.{stage} "))


def _run_dag(root: Path, params: Path) -> _Records:
    rec = _Records()
    logger = logging.getLogger("actparse")
    level = logger.level
    logger.setLevel(logging.INFO)  # the stages' INFO lines, whatever the root logger's level
    logger.addHandler(rec)
    try:
        for name in DAG:
            t0 = time.time()
            assert _stage(name, params, root) == 0, f"{name} failed on {params}:\n" + "\n".join(rec.lines[-20:])
            print(f"{name} {time.time() - t0:.1f}s")
    finally:
        logger.removeHandler(rec)
        logger.setLevel(level)
    return rec


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import torch

    from actparse.hrnet import build_pose_model, save_checkpoint

    work = tmp_path_factory.mktemp("real_layouts")
    tiny = _tiny()
    synth_params = write_params(work / "synth.yaml", tiny)
    assert _stage("synth", synth_params, work / "synth_project") == 0
    synth = work / "synth_project" / "artifacts" / "synth"
    for ds in ("kinetics-tps", "multisports"):
        assert cli(["export-official", ds, str(synth), "--out", str(work / f"src-{ds}")]) == 0
        assert cli(["import", ds, str(work / f"src-{ds}"), "--out", str(work / f"data-{ds}")]) == 0
    torch.manual_seed(0)
    kp = committed()["keypoints"]
    pose_ck = save_checkpoint(build_pose_model(kp["arch"]), work / "pose.pt", tuple(kp["input_size"]))

    out = {"work": work}
    tps = work / "run-tps"
    tps.mkdir()
    tps_params = write_params(tps / "params.yaml", {**tiny, "data": {"root": str(work / "data-kinetics-tps")},
                                                    "keypoints": {**tiny["keypoints"], "checkpoint": str(pose_ck)}})
    out["tps"] = (tps, _run_dag(tps, tps_params))

    ms = work / "run-ms"
    ms.mkdir()
    ms_params = write_params(ms / "params.yaml", {
        **tiny, "data": {"root": str(work / "data-multisports")},
        "keypoints": {**tiny["keypoints"], "checkpoint": str(pose_ck)},
        "person_detector": {**tiny["person_detector"],
                            "weights": str(tps / "artifacts" / "models" / "person_detector" / "model.pt")}})
    out["ms"] = (ms, _run_dag(ms, ms_params))
    return out


def _metrics(root: Path) -> dict:
    return json.loads((root / "metrics" / "metrics.json").read_text())


def test_pose_without_keypoint_gt_needs_a_checkpoint(runs, tmp_path, capsys):
    """No keypoint ground truth and no keypoints.checkpoint: one line, exit 2, nothing written."""
    work = runs["work"]
    tiny = _tiny()
    params = write_params(tmp_path / "params.yaml", {**tiny, "data": {"root": str(work / "data-kinetics-tps")}})
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "frames.parquet").symlink_to(runs["tps"][0] / "artifacts" / "frames.parquet")
    capsys.readouterr()
    assert _stage("train_pose", params, tmp_path) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train_pose: error:")]
    assert len(err) == 1, err
    assert "no keypoint ground truth" in err[0] and "keypoints.checkpoint" in err[0]
    assert not (tmp_path / "artifacts" / "models" / "pose").exists()


@pytest.mark.parametrize("which", ["tps", "ms"])
def test_pose_uses_the_given_checkpoint(runs, which):
    root, logs = runs[which]
    info = json.loads((root / "artifacts" / "models" / "pose" / "train_info.json").read_text())
    assert info["epochs"] == 0 and info["loss"] == [] and info["start"].endswith(":pose.pt")
    assert "val" not in info and "test_gt_boxes" not in info  # no PCK without keypoint ground truth
    assert set(info["skipped"]) == {"training", "pck"}
    msg = logs.of("train_pose")
    assert "no keypoint ground truth" in msg and "as given" in msg and "keypoints.epochs 1 not used" in msg
    # the given model predicts keypoints for every detected person
    persons = read_table(root / "artifacts" / "persons.parquet", "persons").num_rows
    assert persons > 0
    assert read_table(root / "artifacts" / "keypoints.parquet", "keypoints").num_rows == persons
    assert read_table(root / "artifacts" / "refined_persons.parquet", "keypoints").num_rows == persons


def test_kinetics_tps_runs_the_part_side(runs):
    root, logs = runs["tps"]
    art = root / "artifacts"
    info = json.loads((art / "models" / "part_detector" / "train_info.json").read_text())
    assert info["trained"] and (art / "models" / "part_detector" / "model.pt").exists()
    assert "painted with the keypoints of the refined person" in logs.of("train_part_detector")
    assert read_table(art / "parts.parquet", "parts").num_rows > 0
    labels = read_df(art / "part_labels" / "labels.parquet", "part_labels")
    assert set(labels["task"]) == {"action", "head", "hand", "arm", "hip", "leg", "foot"}
    assert read_table(art / "part_states.parquet", "part_states").num_rows > 0
    m = _metrics(root)
    for key in ("person_ap50", "part_ap50", "part_state_recall", "video_acc", "tps_score", "tps_video_acc"):
        assert isinstance(m[key], float), key
    # no action tubes in Kinetics-TPS: the MultiSports metrics are skipped, and the reason is given
    assert "frame_map50" not in m and "video_map50" not in m
    assert set(m["skipped"]) == {"frame_map50"} and "kinetics-tps import" in m["skipped"]["frame_map50"]
    assert "frame_map50 (and the metrics that go with it) skipped" in logs.of("evaluate")
    for sub in ("pred_part_result.json", "pred_vid_result.json"):
        assert (art / "submission" / sub).exists()


def test_multisports_skips_the_part_side(runs):
    root, logs = runs["ms"]
    art = root / "artifacts"
    assert "using the user's person detector" in logs.of("train_person_detector")
    # no part ground truth and no parts.weights: no part detector, valid empty part tables
    info = json.loads((art / "models" / "part_detector" / "train_info.json").read_text())
    assert info["trained"] is False and "no part ground truth" in info["skipped"]
    assert not (art / "models" / "part_detector" / "model.pt").exists()
    assert "part detector skipped" in logs.of("train_part_detector")
    assert read_table(art / "parts.parquet", "parts").num_rows == 0
    assert "writing an empty" in logs.of("detect_parts")
    assert read_table(art / "skips" / "detect_parts.parquet", "skips").num_rows == 0
    labels = read_df(art / "part_labels" / "labels.parquet", "part_labels")
    assert set(labels["task"]) == {"action"} and len(labels) > 0
    assert json.loads((art / "part_labels" / "classes.json").read_text()).keys() == {"action"}
    assert "part-group labels skipped" in logs.of("part_labels")
    assert read_table(art / "part_states.parquet", "part_states").num_rows == 0
    assert "no part states" in logs.of("part_states")
    # the action / tube side runs
    preds = read_df(art / "video_predictions.parquet", "video_predictions")
    assert set(preds["task"]) == {"action"} and len(preds) > 0
    assert read_table(art / "tubes.parquet", "tubes").num_rows > 0
    m = _metrics(root)
    for key in ("person_ap50", "video_acc", "frame_map50", "video_map20", "video_map50", "video_map10_90"):
        assert isinstance(m[key], float), key
    for key in ("part_ap50", "part_state_acc", "tps_score"):
        assert key not in m and "no part ground truth" in m["skipped"][key], key
    assert set(m["skipped"]) == {"part_ap50", "part_state_acc", "tps_score"}
    for sub in ("frame_detections.pkl", "video_detections.pkl"):
        assert (art / "submission" / sub).exists()


def test_multisports_uses_given_part_detector(runs, tmp_path):
    """parts.weights on a data set without part GT: the given detector is used as is and detects parts;
    there are no part-group predictions to give them states, and the part metrics stay skipped."""
    import shutil

    ms, _ = runs["ms"]
    tps, _ = runs["tps"]
    shutil.copytree(ms / "artifacts", tmp_path / "artifacts", ignore=shutil.ignore_patterns("models"))
    given = tps / "artifacts" / "models" / "part_detector" / "model.pt"
    tiny = _tiny()
    params = write_params(tmp_path / "params.yaml", {**tiny, "data": {"root": str(runs["work"] / "data-multisports")},
                                                     "parts": {**tiny["parts"], "weights": str(given)}})
    logs = _Records()
    logger = logging.getLogger("actparse")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(logs)
    try:
        for name in ("train_part_detector", "detect_parts", "part_states", "evaluate"):
            assert _stage(name, params, tmp_path) == 0, name
    finally:
        logger.removeHandler(logs)
        logger.setLevel(level)
    art = tmp_path / "artifacts"
    info = json.loads((art / "models" / "part_detector" / "train_info.json").read_text())
    assert info["trained"] is False and "skipped" not in info and info["source_weights"] == str(given)
    assert read_table(art / "parts.parquet", "parts").num_rows > 0
    assert read_table(art / "part_states.parquet", "part_states").num_rows == 0
    assert "lists no part-group task" in logs.of("part_states")
    m = _metrics(tmp_path)
    assert set(m["skipped"]) == {"part_ap50", "part_state_acc", "tps_score"}
    assert isinstance(m["frame_map50"], float)


def test_multisports_refuses_to_finetune_parts(runs, tmp_path, capsys):
    """parts.weights with parts.finetune: true and no part ground truth: one line, exit 2."""
    tps, _ = runs["tps"]
    tiny = _tiny()
    params = write_params(tmp_path / "params.yaml", {
        **tiny, "data": {"root": str(runs["work"] / "data-multisports")},
        "parts": {**tiny["parts"], "finetune": True,
                  "weights": str(tps / "artifacts" / "models" / "part_detector" / "model.pt")}})
    capsys.readouterr()
    assert _stage("train_part_detector", params, tmp_path) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train_part_detector: error:")]
    assert len(err) == 1 and "no part ground truth" in err[0] and "parts.finetune: false" in err[0], err
    assert not (tmp_path / "artifacts" / "models" / "part_detector").exists()
