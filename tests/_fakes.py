"""Small ground truth and GT-derived "predictions" for the metrics / link / evaluate tests.

Builds, under a tmp root, a data root (videos.parquet, gt_persons.parquet, official-format
annotations via actparse.formats) and every artifact the link_tubes and evaluate stages read, made
from the ground truth with controllable jitter, so tests know what the scores must be.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from actparse.constants import ACTIONS, PART_GROUPS, PART_STATES, PARTS, GROUP_OF_PART
from actparse.formats import multisports_ground_truth, tps_ground_truth, write_pickle
from actparse.paths import Paths
from actparse.atomic import write_json
from actparse.schemas import from_columns, write_table

PART_FRAC = {  # part box as fractions of the person box (x1, y1, x2, y2)
    "head": (0.35, 0.0, 0.65, 0.15), "left_arm": (0.65, 0.15, 0.9, 0.5), "right_arm": (0.1, 0.15, 0.35, 0.5),
    "left_hand": (0.8, 0.45, 0.95, 0.55), "right_hand": (0.05, 0.45, 0.2, 0.55), "hip": (0.3, 0.45, 0.7, 0.6),
    "left_leg": (0.5, 0.55, 0.75, 0.9), "right_leg": (0.25, 0.55, 0.5, 0.9), "left_foot": (0.55, 0.88, 0.8, 1.0),
    "right_foot": (0.2, 0.88, 0.45, 1.0),
}


def make_ground_truth(root: Path, n_videos: int = 6, n_frames: int = 40, seed: int = 0,
                      verb_as_list: bool = False) -> Path:
    """Write a small data root under ``root/artifacts/synth``; return its path."""
    rng = np.random.default_rng(seed)
    droot = Paths(root).synth
    rows, vids = [], []
    for v in range(n_videos):
        name = f"vid_{v:03d}"
        action = ACTIONS[1 + v % (len(ACTIONS) - 1)]
        split = "test" if v % 2 == 0 else "train"
        vids.append({"video": name, "path": f"videos/{name}.mp4", "split": split, "action": action,
                     "n_frames": n_frames, "fps": 25.0, "width": 160, "height": 120})
        for pid in range(1 + v % 3):
            x0, y0 = 10 + 45 * pid + rng.uniform(0, 5), 20 + rng.uniform(0, 10)
            start, stop = (0, n_frames) if pid == 0 else (int(rng.integers(0, 10)), n_frames - int(rng.integers(0, 10)))
            act_start = int(rng.integers(0, n_frames // 3))
            states = {g: PART_STATES[g][int(rng.integers(len(PART_STATES[g])))] for g in PART_GROUPS}
            for f in range(start, stop):
                x, y = x0 + 0.3 * f, y0 + 0.1 * f
                box = np.array([x, y, x + 30, y + 70], np.float32)
                pb = np.concatenate([[box[0] + fr[0] * 30, box[1] + fr[1] * 70, box[0] + fr[2] * 30,
                                      box[1] + fr[3] * 70] for fr in (PART_FRAC[p] for p in PARTS)])
                vis = [not (p == "left_foot" and f % 7 == 3) for p in PARTS]
                rows.append({"video": name, "frame": f, "person": pid, "box": box,
                             "keypoints": np.zeros(51, np.float32), "part_boxes": pb.astype(np.float32),
                             "part_visible": vis, "part_states": [states[GROUP_OF_PART[p]] for p in PARTS],
                             "action": action if f >= act_start else "none"})
    videos = pd.DataFrame(vids)
    gt = pd.DataFrame(rows)
    write_table(from_columns({k: videos[k].tolist() for k in videos.columns}, "videos"), droot / "videos.parquet", "videos")
    write_table(from_columns({k: gt[k].tolist() for k in gt.columns}, "gt_persons"), droot / "gt_persons.parquet",
                "gt_persons")
    for split in ("train", "test"):
        part, vid = tps_ground_truth(gt, videos, split, verb_as_list=verb_as_list)
        write_json(part, droot / "annotations" / "tps" / split / "gt_part_result.json", indent=None)
        write_json(vid, droot / "annotations" / "tps" / split / "gt_vid_result.json")
    write_pickle(multisports_ground_truth(gt, videos, list(ACTIONS)), droot / "annotations" / "multisports_gt.pkl")
    return droot


def make_predictions(root: Path, stride: int = 5, jitter: float = 0.0, wrong_states: float = 0.0,
                     wrong_video: bool = False, drop: float = 0.0, extra: bool = False, seed: int = 1) -> None:
    """Write refined_persons / parts / part_states / video_predictions / part_labels from the GT."""
    rng = np.random.default_rng(seed)
    paths = Paths(root)
    gt = pd.read_parquet(paths.synth / "gt_persons.parquet")
    videos = pd.read_parquet(paths.synth / "videos.parquet")
    gt = gt[gt["frame"] % stride == 0].sort_values(["video", "frame", "person"])
    keep = rng.random(len(gt)) >= drop
    gt = gt[keep]
    per, parts, states = [], [], []
    for (v, f), g in gt.groupby(["video", "frame"], sort=True):
        order = np.argsort(-np.linspace(0.9, 0.6, len(g)))
        for rank, (_, r) in enumerate(g.iloc[order].iterrows()):
            box = np.asarray(r["box"], np.float32) + rng.normal(0, jitter, 4).astype(np.float32)
            score = float(0.95 - 0.1 * rank)
            per.append({"video": v, "frame": f, "person": rank, "det_box": box, "box": box, "score": score,
                        "keypoints": np.zeros(51, np.float32)})
            pb = np.asarray(r["part_boxes"], np.float32).reshape(-1, 4)
            for k, name in enumerate(PARTS):
                if not r["part_visible"][k]:
                    continue
                b = pb[k] + rng.normal(0, jitter / 4, 4).astype(np.float32)
                st = r["part_states"][k]
                if rng.random() < wrong_states:
                    choices = [s for s in PART_STATES[GROUP_OF_PART[name]] if s != st]
                    st = choices[int(rng.integers(len(choices)))]
                parts.append({"video": v, "frame": f, "person": rank, "part": name, "box": b, "score": 0.9})
                states.append({"video": v, "frame": f, "person": rank, "part": name, "box": b, "state": st,
                               "score": 0.8})
        if extra:
            per.append({"video": v, "frame": f, "person": len(g), "det_box": np.array([140, 5, 155, 30], np.float32),
                        "box": np.array([140, 5, 155, 30], np.float32), "score": 0.3,
                        "keypoints": np.zeros(51, np.float32)})
    cols = lambda rows, keys: {k: [r[k] for r in rows] for k in keys}  # noqa: E731
    write_table(from_columns(cols(per, ["video", "frame", "person", "det_box", "box", "score", "keypoints"]), "keypoints"),
                paths.refined, "keypoints")
    write_table(from_columns(cols(parts, ["video", "frame", "person", "part", "box", "score"]), "parts"), paths.parts, "parts")
    write_table(from_columns(cols(states, ["video", "frame", "person", "part", "box", "state", "score"]), "part_states"),
                paths.part_states, "part_states")
    classes = list(ACTIONS)
    vp = []
    for v, a in zip(videos["video"], videos["action"]):
        probs = np.full(len(classes), 0.02, np.float32)
        label = a if not wrong_video else classes[(classes.index(a) + 1) % len(classes)]
        probs[classes.index(label)] = 1 - 0.02 * (len(classes) - 1)
        for model in ("ip", "ir", "ensemble"):
            vp.append({"video": v, "task": "action", "model": model, "label": label, "score": float(probs.max()),
                       "probs": probs.tolist()})
    write_table(from_columns(cols(vp, ["video", "task", "model", "label", "score", "probs"]), "video_predictions"),
                paths.video_predictions, "video_predictions")
    paths.part_labels.mkdir(parents=True, exist_ok=True)
    (paths.part_labels / "classes.json").write_text(json.dumps({"action": classes}))
