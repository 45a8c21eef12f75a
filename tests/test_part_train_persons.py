"""parts.train_persons: gt -> the part detector's input does not follow refined_persons.parquet.

The part_train_persons stage passes refined persons on only where train_part_detector reads them;
`dvc repro` then reruns that one cheap stage and leaves the part detector alone."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from actparse.constants import NUM_KEYPOINTS, NUM_PARTS
from actparse.params import load_params
from actparse.schemas import SCHEMAS, read_table, write_table
from flowkit import dvc, init_repo, run
from stages import part_train_persons

ROOT = Path(__file__).resolve().parents[1]


def _gt(path: Path, keypoints: bool) -> None:
    kp = [np.ones(NUM_KEYPOINTS * 3, np.float32).tolist() if keypoints else None]
    write_table(pa.Table.from_pydict({
        "video": ["v0"], "frame": [0], "person": [0], "box": [[1.0, 2.0, 30.0, 40.0]], "keypoints": kp,
        "part_boxes": [[0.0] * (NUM_PARTS * 4)], "part_visible": [[True] * NUM_PARTS],
        "part_states": [["none"] * NUM_PARTS], "action": ["idle"]}, schema=SCHEMAS["gt_persons"]),
        path, "gt_persons")


def _refined(path: Path, shift: float) -> None:
    write_table(pa.Table.from_pydict({
        "video": ["v0", "v0"], "frame": [0, 5], "person": [0, 0],
        "det_box": [[1.0, 2.0, 30.0, 40.0]] * 2, "box": [[1.0 + shift, 2.0, 31.0, 41.0]] * 2, "score": [0.9, 0.8],
        "keypoints": [[0.5] * (NUM_KEYPOINTS * 3)] * 2}, schema=SCHEMAS["keypoints"]), path, "keypoints")


def _project(root: Path, mode: str, gt_keypoints: bool, paint: bool = True) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["root"] = "data"
    params["parts"]["train_persons"] = mode
    params["parts"]["paint"] = paint
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "artifacts").mkdir(exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _gt(root / "data/gt_persons.parquet", gt_keypoints)
    _refined(root / "artifacts/refined_persons.parquet", 0.0)
    return root


@pytest.mark.parametrize("mode, gt_keypoints, paint, rows", [
    ("detected", True, True, 2),   # crops of refined detections
    ("gt", False, True, 2),        # GT crops painted with the refined persons' keypoints (Kinetics-TPS)
    ("gt", True, True, 0),         # GT crops painted with GT keypoints: no refined persons read
    ("gt", False, False, 0),       # GT crops, nothing painted
])
def test_passes_refined_persons_only_when_read(tmp_path, mode, gt_keypoints, paint, rows):
    root = _project(tmp_path, mode, gt_keypoints, paint)
    part_train_persons.run(load_params(root / "params.yaml"), root)
    out = read_table(root / "artifacts/part_train_persons.parquet", "keypoints")
    assert out.num_rows == rows
    if rows:
        assert out.equals(read_table(root / "artifacts/refined_persons.parquet", "keypoints"))


DVC_YAML = '''
stages:
  refine_boxes:
    cmd: python make_refined.py
    deps: [make_refined.py, shift.txt]
    outs: [artifacts/refined_persons.parquet]
  part_train_persons:
    cmd: {python} -m stages.part_train_persons
    deps: [artifacts/refined_persons.parquet, data]
    params: [parts.train_persons, parts.paint]
    outs: [artifacts/part_train_persons.parquet]
  train_part_detector:
    cmd: python train.py
    deps: [train.py, artifacts/part_train_persons.parquet]
    outs: [trained.txt]
'''

MAKE_REFINED = '''
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_part_train_persons import _refined
_refined(Path("artifacts/refined_persons.parquet"), float(Path("shift.txt").read_text()))
'''

TRAIN = '''
from pathlib import Path
n = int(Path("runs.txt").read_text()) if Path("runs.txt").exists() else 0
Path("runs.txt").write_text(str(n + 1))
Path("trained.txt").write_text("model")
'''


@pytest.mark.parametrize("mode, retrains", [("gt", False), ("detected", True)])
def test_dvc_retrains_part_detector_only_when_its_input_changes(tmp_path, mode, retrains):
    root = init_repo(tmp_path / "repo")
    _project(root, mode, gt_keypoints=True)
    (root / "artifacts/refined_persons.parquet").unlink()
    (root / "dvc.yaml").write_text(DVC_YAML.replace("{python}", sys.executable))
    (root / "make_refined.py").write_text(MAKE_REFINED.format(tests=str(ROOT / "tests")))
    (root / "train.py").write_text(TRAIN)
    (root / "shift.txt").write_text("0")
    (root / ".gitignore").write_text("runs.txt\n")
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + env_path if env_path else "")
    try:
        dvc(root, "repro")
        assert (root / "runs.txt").read_text() == "1"
        (root / "shift.txt").write_text("3")  # the refined boxes change
        status = dvc(root, "status").stdout
        assert "refine_boxes" in status and "train_part_detector" not in status  # its own deps are unchanged
        dvc(root, "repro")
    finally:
        os.environ["PYTHONPATH"] = env_path
        if not env_path:
            del os.environ["PYTHONPATH"]
    assert (root / "runs.txt").read_text() == ("2" if retrains else "1")
    assert "up to date" in dvc(root, "status").stdout
    dag = dvc(root, "dag", "--dot").stdout
    assert '"part_train_persons" -> "train_part_detector"' in dag
