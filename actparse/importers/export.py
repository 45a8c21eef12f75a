"""Write a data root (the synthetic set) in each official download layout, for round-trip tests.

``actparse export-official <dataset> DATA_ROOT --out DST`` writes what a user of that data set
downloads, built from ``videos.parquet`` + ``gt_persons.parquet`` (+ ``annotations/finegym/``):

* kinetics-tps: ``<split>_videos/<action>/<video>.mp4``, ``list/{train,test}.txt`` and one JSON per 5th
  frame under ``<split>_annotations/<action>/<video>/<video>/img_XXXXX.json``; ``shape`` "named" (parts
  keyed by name, as the official ground truth) or "list" (``obj_class`` / ``obj_bbox`` objects);
* multisports: ``trainval/<video>.mp4`` + ``trainval/multisports_GT.pkl`` (train / test as lists of lists);
* finegym: ``videos/<video>.mp4`` + the annotation JSON, ``gym<N>_categories.txt``, ``set_categories.txt``,
  ``gym<N>_train_element_v1.0.txt`` and ``gym<N>_val_element.txt`` under ``annotations/``.

Videos are copied byte for byte. ``import`` of the result gives back the same tables, restricted to what
the format carries (see tests/test_importers.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..constants import NUM_PARTS, PARTS, TPS_SAMPLING, tps_frame_name
from ..dataset import load_videos, video_path


def _load(root: Path):
    from ..schemas import read_df

    videos = load_videos(root).to_pandas()
    gp = root / "gt_persons.parquet"
    gt = read_df(gp, "gt_persons") if gp.exists() else None
    return videos, gt


def _copy_video(root: Path, rel: str, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(video_path(root, rel), dst)


def _dump(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def export_kinetics_tps(root, dst, shape: str = "named", stride: int = TPS_SAMPLING) -> Path:
    """Kinetics-TPS download layout (frames 0, stride, ... annotated, ``number`` = person + 1)."""
    if shape not in ("named", "list"):
        raise ValueError(f"shape must be 'named' or 'list', got {shape!r}")
    root, dst = Path(root), Path(dst)
    videos, gt = _load(root)
    by_video = {v: g for v, g in gt.groupby("video", sort=False)} if gt is not None else {}
    lists = {"train": [], "test": []}
    for r in videos.itertuples(index=False):
        cls = r.action
        _copy_video(root, r.path, dst / f"{r.split}_videos" / cls / f"{r.video}.mp4")
        lists[r.split].append(f"{cls}/{r.video}.mp4")
        g = by_video.get(r.video)
        adir = dst / f"{r.split}_annotations" / cls / r.video / r.video
        for f in range(0, int(r.n_frames), stride):
            humans = []
            rows = g[g["frame"] == f].sort_values("person") if g is not None else []
            for h in (rows.itertuples(index=False) if len(rows) else []):
                pb = np.asarray(h.part_boxes, np.float32).reshape(NUM_PARTS, 4)
                box = [float(x) for x in np.asarray(h.box, np.float32)]
                if shape == "named":
                    parts = {name: {"number": j + 1, "box": [float(x) for x in pb[j]], "verb": [str(h.part_states[j])],
                                    "name": name} for j, name in enumerate(PARTS) if h.part_visible[j]}
                    humans.append({"number": int(h.person) + 1, "box": box, "parts": parts})
                else:
                    parts = [{"obj_class": name, "obj_bbox": [float(x) for x in pb[j]], "verb": str(h.part_states[j])}
                             for j, name in enumerate(PARTS) if h.part_visible[j]]
                    humans.append({"number": int(h.person) + 1, "bbox": box, "parts": parts, "objects": []})
            _dump({"humans": humans}, adir / tps_frame_name(f))
    for split, lines in lists.items():
        (dst / "list").mkdir(parents=True, exist_ok=True)
        (dst / "list" / f"{split}.txt").write_text("".join(x + "\n" for x in lines))
    return dst


def export_multisports(root, dst) -> Path:
    """MultiSports download layout: the GT pkl of :func:`actparse.formats.multisports_ground_truth`."""
    from ..constants import ACTIONS
    from ..formats import multisports_ground_truth, write_pickle

    root, dst = Path(root), Path(dst)
    videos, gt = _load(root)
    for r in videos.itertuples(index=False):
        _copy_video(root, r.path, dst / "trainval" / f"{r.video}.mp4")
    obj = multisports_ground_truth(gt, videos, list(ACTIONS))  # frames where a person is "none": no tube
    (dst / "trainval").mkdir(parents=True, exist_ok=True)
    write_pickle(obj, dst / "trainval" / "multisports_GT.pkl")
    return dst


def export_finegym(root, dst) -> Path:
    """FineGym download layout from the data root's ``annotations/finegym/`` (official file names)."""
    root, dst = Path(root), Path(dst)
    videos, _ = _load(root)
    src = root / "annotations" / "finegym"
    ann = dst / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    cats = (src / "gym_categories.txt").read_text()
    n = sum(1 for line in cats.splitlines() if line.strip())
    sub = f"gym{n}"
    shutil.copyfile(src / "finegym_annotation_info.json", ann / "finegym_annotation_info_v1.0.json")
    (ann / f"{sub}_categories.txt").write_text(cats)
    sets = [line.split(";")[0] + ";" + line.split(")", 1)[1] for line in
            (src / "gym_set_categories.txt").read_text().splitlines() if line.strip()]
    (ann / "set_categories.txt").write_text("".join(x + "\n" for x in sets))
    shutil.copyfile(src / "gym_train_element.txt", ann / f"{sub}_train_element_v1.0.txt")
    shutil.copyfile(src / "gym_val_element.txt", ann / f"{sub}_val_element.txt")
    for r in videos.itertuples(index=False):
        _copy_video(root, r.path, dst / "videos" / f"{r.video}.mp4")
    return dst


EXPORTERS = {"kinetics-tps": export_kinetics_tps, "multisports": export_multisports, "finegym": export_finegym}
