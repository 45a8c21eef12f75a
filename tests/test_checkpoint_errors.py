"""Checkpoint-loading errors not covered elsewhere: ultralytics detectors and mmpose HRNet files.

tests/test_detection.py covers missing / garbage ``.pt`` files and a real trained round trip;
tests/test_pose.py covers mmpose layouts, a wrong shape, an unknown, a missing key and junk files.
Here: a YOLO checkpoint of the wrong task, a file that is a torch file but not an ultralytics
checkpoint, the ``.pt`` suffix check, and the safe (weights_only) HRNet loader's allow-list.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from actparse import yolo
from actparse.hrnet import CheckpointError, build_pose_model, load_checkpoint

torch.set_num_threads(1)


# ---------------------------------------------------------------- ultralytics .pt detectors
def test_yolo_checkpoint_of_another_task_is_refused_with_both_tasks(tmp_path):
    yolo.configure()
    from ultralytics.nn.tasks import PoseModel

    torch.manual_seed(0)
    path = tmp_path / "pose.pt"
    torch.save({"model": PoseModel("yolo11n-pose.yaml", nc=1, verbose=False), "train_args": {"task": "pose"}}, path)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: checkpoint is a YOLO 'pose' model, "
                                         rf"expected 'detect'"):
        yolo.load_model(path, task="detect")


def test_a_state_dict_is_not_an_ultralytics_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"model.0.conv.weight": torch.zeros(16, 3, 3, 3)}}, path)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: not a usable ultralytics YOLO checkpoint"):
        yolo.load_model(path)


def test_yolo_weights_must_be_a_pt_file(tmp_path):
    path = tmp_path / "detector.pth"
    torch.save({"model": None}, path)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: expected an ultralytics YOLO checkpoint "
                                         rf"ending in \.pt"):
        yolo.load_model(path)


# ---------------------------------------------------------------- mmpose HRNet: the safe loader
@pytest.fixture(scope="module")
def mmpose_state():
    torch.manual_seed(0)
    sd = build_pose_model("hrnet_w18_small").state_dict()
    # mmpose 1.x names (written independently of actparse.hrnet): backbone.* as is, head.final_layer.*
    return {(k if k.startswith("backbone.") else "head.final_layer." + k[len("head."):]): v for k, v in sd.items()}


def test_mmpose_meta_with_numpy_values_still_loads_safely(tmp_path, mmpose_state):
    path = tmp_path / "numpy_meta.pth"
    torch.save({"meta": {"epoch": 210, "best_ap": np.float64(0.75), "flip": np.array([1, 0, 2])},
                "state_dict": mmpose_state}, path)
    model, info = load_checkpoint(path)
    assert info["format"] == "mmpose" and info["arch"] == "hrnet_w18_small"
    for k, v in model.state_dict().items():
        name = k if k.startswith("backbone.") else "head.final_layer." + k[len("head."):]
        assert torch.equal(v, mmpose_state[name]), k


class _Hook:
    """A Python object (as a training framework might store in a checkpoint's meta)."""


def test_mmpose_file_with_python_objects_is_refused_naming_the_file(tmp_path, mmpose_state):
    path = tmp_path / "pickled.pth"
    torch.save({"meta": {"hook": _Hook()}, "state_dict": mmpose_state}, path)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: cannot be loaded safely with "
                                              rf"torch\.load\(weights_only=True\).*re-save just the weights"):
        load_checkpoint(path)
