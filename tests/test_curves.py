"""Training curves (actparse.curves, stages.training_curves): train_info.json histories -> plots/train/*.csv."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from actparse.curves import CURVES, curve, write_curves
from stages import training_curves

# train_info.json as each training stage writes it (the keys the curves read)
INFOS = {
    "person_detector": {"trained": True, "epochs": 3, "history": {"box_loss": [2.0, 1.5, 1.2],
                                                                   "cls_loss": [3.0, 2.0, 1.0],
                                                                   "dfl_loss": [1.1, 1.0, 0.9],
                                                                   "val_map50": [0.2, 0.5, 0.7]}},
    "pose": {"epochs": 2, "loss": [0.004, 0.002], "val_pck": [0.6, 0.8], "final_loss": 0.002},
    "part_detector": {"trained": False, "skipped": "no parts in the ground truth; no parts.weights given"},
    "csn": {"variants": {"ip": {"loss": [2.3, 2.1], "train_acc": [{"action": 0.1, "hand": 0.2}, {"action": 0.3}],
                                "val_acc": [{"action": 0.25, "hand": 0.5}, {"action": 0.5, "hand": 0.5}]},
                         "ir": {"loss": [2.2, 1.9], "train_acc": [{"action": 0.2}, {"action": 0.4}]}}},
    "stad": {"enabled": True, "phase1_loss": [1.0, 0.8, 0.7], "phase2_loss": [0.5, 0.4],
             "phase1_val_top1": [0.2, 0.4, 0.5], "phase2_val_top1": [0.6, 0.6]},
    "gym": {"enabled": True, "history": {"event": {"loss": [1.0, 0.5], "train_acc": [0.5, 0.7], "val_acc": [0.4, 0.6]},
                                         "set": {"loss": [2.0, 1.5], "train_acc": [0.2, 0.4], "val_acc": [0.1, 0.3]},
                                         "element": {"loss": [3.0, 2.5], "train_acc": [0.1, 0.2],
                                                     "val_acc": [0.0, 0.1]},
                                         "joint": {"loss": [4.0, 3.0, 2.0],
                                                   "val_acc": [{"event": 0.5, "set": 0.3, "element": 0.1}] * 3}}},
    "partattn": {"enabled": False},
}


def _models(root: Path, infos: dict) -> Path:
    for model, info in infos.items():
        (root / "artifacts/models" / model).mkdir(parents=True, exist_ok=True)
        (root / "artifacts/models" / model / "train_info.json").write_text(json.dumps(info))
    return root


def test_training_curves_stage_writes_every_curve(tmp_path):
    root = _models(tmp_path, INFOS)
    (root / "params.yaml").write_text((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    assert training_curves.main(["--root", str(root), "--params", str(root / "params.yaml")]) == 0
    out = root / "plots/train"
    assert sorted(p.stem for p in out.glob("*.csv")) == sorted(CURVES)
    read = {stem: pd.read_csv(out / f"{stem}.csv") for stem in CURVES}
    for stem, (_, cols) in CURVES.items():
        assert list(read[stem].columns) == ["epoch", *cols], stem
    assert read["person_detector"].cls_loss.tolist() == [3.0, 2.0, 1.0]
    assert read["person_detector"].val_map50.tolist() == [0.2, 0.5, 0.7]
    assert read["pose"].epoch.tolist() == [1, 2] and read["pose"].loss.tolist() == [0.004, 0.002]
    assert read["pose"].val_pck.tolist() == [0.6, 0.8]
    # validation per epoch where videos were held out (ip); none held out (ir): an empty column
    assert read["csn_ip"].val_action_acc.tolist() == [0.25, 0.5] and read["csn_ir"].val_action_acc.isna().all()
    assert len(read["part_detector"]) == 0 and len(read["partattn"]) == 0  # not trained / switched off
    assert read["csn_ip"].action_acc.tolist() == [0.1, 0.3] and read["csn_ir"].loss.tolist() == [2.2, 1.9]
    assert read["stad"].phase.tolist() == [1, 1, 1, 2, 2] and read["stad"].epoch.tolist() == [1, 2, 3, 4, 5]
    assert read["gym_set"].train_acc.tolist() == [0.2, 0.4] and read["gym_joint"].loss.tolist() == [4.0, 3.0, 2.0]
    # the seed systems' held-out metrics (their val_fraction > 0)
    assert read["stad"].val_top1.tolist() == [0.2, 0.4, 0.5, 0.6, 0.6]
    assert read["gym_set"].val_acc.tolist() == [0.1, 0.3] and read["gym_joint"].val_set_acc.tolist() == [0.3] * 3
    # the same inputs write the same bytes (nothing timed), and no temporary file is left
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert training_curves.main(["--root", str(root), "--params", str(root / "params.yaml")]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first


def test_seed_curves_without_validation_have_empty_val_columns():
    """val_fraction 0 (the default): the seed systems' val columns are empty, one row per epoch all the same;
    phase 1 watched without a phase 2 (stad.decoupled false) gives a column as long as the loss."""
    stad = curve("stad", {"enabled": True, "phase1_loss": [1.0, 0.8], "phase2_loss": [0.5]})
    assert len(stad) == 3 and stad.val_top1.isna().all()
    stad = curve("stad", {"enabled": True, "phase1_loss": [1.0, 0.8], "phase2_loss": None, "phase1_val_top1": [0.5, 1]})
    assert stad.val_top1.tolist() == [0.5, 1.0]
    gym = {"enabled": True, "history": {"element": {"loss": [3.0, 2.5], "train_acc": [0.1, 0.2]},
                                        "joint": {"loss": [4.0]}}}
    assert curve("gym_element", gym).val_acc.isna().all() and len(curve("gym_element", gym)) == 2
    joint = curve("gym_joint", gym)
    assert len(joint) == 1 and joint[["val_event_acc", "val_set_acc", "val_element_acc"]].isna().all().all()
    part = curve("partattn", {"enabled": True, "loss": [1.0, 0.5]})
    assert part.loss.tolist() == [1.0, 0.5] and part.val_acc.isna().all()
    assert curve("partattn", {"enabled": True, "loss": [1.0], "val_acc": [0.75]}).val_acc.tolist() == [0.75]


def test_a_model_folder_without_train_info_gets_an_empty_curve(tmp_path):
    done = write_curves(_models(tmp_path, {"pose": INFOS["pose"]}) / "artifacts/models", tmp_path / "out")
    assert done["pose"] == 2 and done["csn_ip"] == 0
    assert (tmp_path / "out/csn_ip.csv").read_text().strip() == "epoch,loss,action_acc,val_action_acc"


@pytest.mark.parametrize("info, msg", [
    ({"loss": [0.1, "x"]}, "loss[1]: not a number"),
    ({"loss": 3}, "'loss' is not a list"),
    ([1, 2], "not a JSON object"),
])
def test_bad_history_names_the_file(info, msg):
    with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("]", r"\]")) as exc:
        curve("pose", info, "models/pose/train_info.json")
    assert "models/pose/train_info.json" in str(exc.value)


def test_stage_reports_a_corrupt_train_info(tmp_path, capsys):
    root = _models(tmp_path, {"pose": INFOS["pose"]})
    (root / "artifacts/models/pose/train_info.json").write_text("{not json")
    (root / "params.yaml").write_text((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    assert training_curves.main(["--root", str(root), "--params", str(root / "params.yaml")]) == 2
    err = capsys.readouterr().err
    assert "train_info.json" in err and len(err.strip().splitlines()) == 1
