"""The evaluate stage on GT-derived fake artifacts, and the `actparse eval` commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from actparse import __main__ as cli
from actparse.metrics import multisports as M
from actparse.formats import read_pickle

sys.path.insert(0, str(Path(__file__).parent))
from _fakes import make_ground_truth, make_predictions  # noqa: E402
from _params import overlaid  # noqa: E402

PARAMS = overlaid({"data": {"root": "artifacts/synth"}, "_path": "params.yaml"})


def run_stages(root: Path) -> dict:
    from stages import evaluate, link_tubes

    link_tubes.run(PARAMS, root)
    evaluate.run(PARAMS, root)
    return json.loads((root / "metrics" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def perfect(tmp_path_factory):
    root = tmp_path_factory.mktemp("perfect")
    make_ground_truth(root, n_videos=6, n_frames=40)
    make_predictions(root)
    return root, run_stages(root)


def test_perfect_predictions_score_one(perfect):
    root, m = perfect
    assert m["person_ap50"] == m["part_ap50"] == 1.0
    assert m["video_acc"] == m["video_acc_ip"] == m["video_mean_class_acc"] == 1.0
    assert m["part_state_acc"] == m["part_state_recall"] == 1.0
    assert m["tps_psc_mean"] == 1.0 and m["tps_score"] == 0.9999  # official area skips t = 0
    assert m["video_map20"] == m["video_map50"] == 100.0
    for name in ("person_pr.csv", "part_pr.csv", "tps_curve.csv", "confusion.csv"):
        assert len(pd.read_csv(root / "plots" / name)) > 0
    conf = pd.read_csv(root / "plots" / "confusion.csv")
    assert (conf["actual"] == conf["predicted"]).all() and len(conf) == m["n_test_videos"]


def test_submission_files_score_the_same_with_the_cli(perfect, capsys):
    root, m = perfect
    ann = root / "artifacts" / "synth" / "annotations"
    sub = root / "artifacts" / "submission"
    # the fake GT stores states as strings: the official 5-proposal check would count characters
    assert cli.main(["eval", "tps", "--gt", str(ann / "tps" / "test"), "--pred", str(sub), "--no-limits"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tps_score"] == m["tps_score"] and out["n_videos"] == m["n_test_videos"]
    assert cli.main(["eval", "multisports", "--gt", str(ann / "multisports_gt.pkl"),
                     "--dets", str(sub / "frame_detections.pkl"), "--dets", str(sub / "video_detections.pkl")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["video_map@0.2"] == pytest.approx(m["video_map20"], abs=1e-6)
    gt = read_pickle(ann / "multisports_gt.pkl")
    assert out["frame_map@0.5"] == M.frame_ap(gt, read_pickle(sub / "frame_detections.pkl")).map


def test_wrong_predictions_score_zero(tmp_path):
    make_ground_truth(tmp_path, n_videos=4, n_frames=30)
    make_predictions(tmp_path, wrong_video=True, wrong_states=1.0)
    m = run_stages(tmp_path)
    assert m["video_acc"] == 0.0 and m["tps_score"] == 0.0 and m["part_state_acc"] == 0.0
    assert m["person_ap50"] == 1.0  # the boxes are still right


def test_degraded_predictions_lower_every_score(tmp_path):
    make_ground_truth(tmp_path, n_videos=6, n_frames=40)
    make_predictions(tmp_path, jitter=3.0, wrong_states=0.3, drop=0.1, extra=True)
    m = run_stages(tmp_path)
    for key in ("person_ap50", "part_ap50", "part_state_acc", "tps_psc_mean"):
        assert 0.0 < m[key] < 1.0, key
    assert 0.0 < m["video_map50"] <= 100.0


def test_per_video_records_give_back_the_stage_metrics(tmp_path):
    """artifacts/eval_records/ holds what the metrics are made of: scoring every video once from the
    records gives metrics.json's numbers; a bootstrap interval brackets each of them."""
    from actparse.ablation import read_records
    from actparse.metrics import bootstrap as BS

    make_ground_truth(tmp_path, n_videos=6, n_frames=40)
    make_predictions(tmp_path, jitter=3.0, wrong_states=0.3, drop=0.1, extra=True, wrong_video=False)
    m = run_stages(tmp_path)
    rec = read_records(tmp_path / "artifacts" / "eval_records")
    assert len(rec.videos) == m["n_test_videos"] and rec.detections["tp"].any() and not rec.detections["tp"].all()
    iv = BS.intervals(rec, n_boot=200, seed=1)
    for key in BS.METRICS:
        assert iv[key]["value"] == pytest.approx(m[key], abs=1e-6), key
        assert iv[key]["lo"] <= m[key] + 1e-6 and m[key] - 1e-6 <= iv[key]["hi"], key
    assert iv["person_ap50"]["lo"] < iv["person_ap50"]["hi"]


def test_missing_annotations_are_rebuilt_and_no_gt_is_not_scored(tmp_path):
    import shutil

    from actparse.ablation import read_records

    make_ground_truth(tmp_path, n_videos=4, n_frames=30)
    make_predictions(tmp_path, jitter=2.0)
    with_files = run_stages(tmp_path)
    shutil.rmtree(tmp_path / "artifacts" / "synth" / "annotations")
    rebuilt = run_stages(tmp_path)
    for key in ("tps_score", "tps_psc_mean", "frame_map50", "video_map20", "video_map50"):
        assert rebuilt[key] == with_files[key], key
    (tmp_path / "artifacts" / "synth" / "gt_persons.parquet").unlink()
    m = run_stages(tmp_path)
    assert m["scored"] is False
    assert len(read_records(tmp_path / "artifacts" / "eval_records").videos) == 0
    assert (tmp_path / "artifacts" / "submission" / "pred_part_result.json").exists()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["eval", "tps", "--gt", str(tmp_path), "--pred", str(tmp_path)]) == 2
    assert "gt_part_result.json: file not found" in capsys.readouterr().err
    bad = tmp_path / "gt.pkl"
    bad.write_bytes(b"junk")
    assert cli.main(["eval", "multisports", "--gt", str(bad), "--dets", str(bad)]) == 2
    assert "cannot read pickle" in capsys.readouterr().err


def test_cli_finegym(tmp_path, capsys):
    gt = {"c1": {"event": "E", "element": "a"}, "c2": {"event": "E", "element": "b"}}
    pred = {"c1": {"event": "E", "element": "a"}, "c2": {"event": "F", "element": "a"}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    assert cli.main(["eval", "finegym", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["element"] == {"top1": 0.5, "mean_class": 0.5} and out["event"]["top1"] == 0.5
