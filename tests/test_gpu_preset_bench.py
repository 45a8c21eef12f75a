"""benchmarks/gpu_preset.py: the params it runs with and the rows it reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmarks import gpu_preset as gp

ROOT = Path(__file__).resolve().parents[1]


def test_preset_overlay_epochs_and_sets():
    p = gp.build_params(ROOT / "params.yaml", str(ROOT / "params.gpu.yaml"), None, 2,
                        ["csn.test_clips=3", "link.top_k=5"])
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    # the preset's sizes are laid over the base, the rest of the base is kept
    assert p["person_detector"]["model"] == "yolo11l.yaml" and p["csn"]["depth"] == 152
    assert p["csn"]["variants"] == base["csn"]["variants"]
    assert p["device"] == "cuda"
    # --epochs reaches every training stage, with the short-run settings
    assert [p["person_detector"]["epochs"], p["keypoints"]["epochs"], p["parts"]["epochs"],
            p["csn"]["epochs"]] == [2, 2, 2, 2]
    assert p["person_detector"]["conf"] == 0.001 and p["parts"]["train_persons"] == "gt"
    # --set comes last and parses YAML values
    assert p["csn"]["test_clips"] == 3 and p["link"]["top_k"] == 5


def test_no_preset_keeps_base_and_device_override():
    p = gp.build_params(ROOT / "params.yaml", "none", "cpu", None, [])
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert p["device"] == "cpu"
    assert p["person_detector"] == base["person_detector"]


@pytest.mark.parametrize("item, msg", [("nosuch.key=1", "section 'nosuch'"),
                                       ("csn.epochs", "expected section.key=value")])
def test_bad_set_is_a_clear_error(item, msg):
    with pytest.raises(SystemExit, match=msg):
        gp.build_params(ROOT / "params.yaml", "none", None, None, [item])


def test_stage_work_counts_from_artifacts(tmp_path):
    import pandas as pd

    art = tmp_path / "artifacts"
    (art / "models" / "csn").mkdir(parents=True)
    pd.DataFrame({"video": ["a", "a", "b"], "frame": [0, 5, 0]}).to_parquet(art / "frames.parquet")
    pd.DataFrame({"video": ["a", "b"], "person": [0, 0]}).to_parquet(art / "persons.parquet")
    (art / "models" / "csn" / "train_info.json").write_text(json.dumps(
        {"videos": 4, "variants": {"ip": {"seconds": 2.0}, "ir": {"seconds": 3.0}}}))
    params = {"keypoints": {"flip_test": True}, "csn": {"epochs": 5, "variants": ["ip", "ir"]}}
    assert gp.stage_work("decode", tmp_path, params) == (3, "frames", None)
    assert gp.stage_work("keypoints", tmp_path, params) == (4, "person crops", None)  # flip test: 2 per box
    assert gp.stage_work("train_csn", tmp_path, params) == (40, "train clips", 5.0)
    row = {"stage": "train_csn", "seconds": 8.0, "rc": 0, "items": 40, "unit": "train clips",
           "per_second": 5.0, "loop_per_second": 8.0}
    assert "| train_csn | 8.0 | 40 train clips | 5.0 | 8.0 |" in gp.markdown({"stages": [row]})
