"""A tiny project for the detection tests: big obvious "persons" with exact boxes, keypoints, parts.

Frames are drawn at the original size (``orig`` x ``orig``) and stored in frames.parquet resized
by ``scale`` (stored / original), so the tests also check the pixel-scale bookkeeping.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from actparse.constants import NUM_KEYPOINTS, NUM_PARTS, PART_KEYPOINTS, PARTS
from actparse.paths import Paths
from actparse.schemas import from_columns, write_table
from actparse.video import encode_jpeg

from _params import overlaid

# keypoints as fractions of the person box (x, y), COCO order
KP_FRAC = np.array([
    [0.5, 0.08], [0.45, 0.06], [0.55, 0.06], [0.4, 0.08], [0.6, 0.08],      # face
    [0.3, 0.22], [0.7, 0.22], [0.2, 0.4], [0.8, 0.4], [0.12, 0.55], [0.88, 0.55],  # arms
    [0.38, 0.55], [0.62, 0.55], [0.36, 0.75], [0.64, 0.75], [0.35, 0.95], [0.65, 0.95],  # legs
])


def person_layout(box) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (17, 3) and part boxes (10, 4) of a person box."""
    b = np.asarray(box, dtype=np.float64)
    w, h = b[2] - b[0], b[3] - b[1]
    xy = b[:2] + KP_FRAC * [w, h]
    kp = np.concatenate([xy, np.ones((NUM_KEYPOINTS, 1))], axis=1)
    pad = 0.05 * w
    parts = np.array([[*(xy[list(PART_KEYPOINTS[p])].min(0) - pad), *(xy[list(PART_KEYPOINTS[p])].max(0) + pad)]
                      for p in PARTS])
    return kp, parts


def draw_person(img: np.ndarray, box) -> None:
    x1, y1, x2, y2 = [int(round(v)) for v in box]
    img[y1:y2, x1:x2] = (220, 40, 40)
    cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), (255, 255, 0), 1)


def make_project(root: Path, n_videos: int = 10, n_test: int = 2, n_frames: int = 4, orig: int = 128,
                 scale: float = 0.5, seed: int = 0) -> dict:
    """Write videos.parquet, gt_persons.parquet (under artifacts/synth), frames.parquet and
    refined_persons.parquet (GT boxes with jitter + GT keypoints). Returns the GT as a dict."""
    rng = np.random.default_rng(seed)
    paths = Paths(root)
    stored = int(round(orig * scale))
    vids, gt, frames, refined = [], {k: [] for k in ("video", "frame", "person", "box", "keypoints", "part_boxes",
                                                     "part_visible", "part_states", "action")}, [], []
    truth = {}
    for v in range(n_videos):
        name = f"vid{v:02d}"
        split = "test" if v >= n_videos - n_test else "train"
        vids.append({"video": name, "path": f"videos/{name}.mp4", "split": split, "action": "idle",
                     "n_frames": n_frames * 5, "fps": 25.0, "width": orig, "height": orig})
        for f in range(n_frames):
            frame = f * 5
            img = (rng.integers(60, 90, (orig, orig, 3))).astype(np.uint8)
            w, h = rng.uniform(0.35, 0.5) * orig, rng.uniform(0.55, 0.8) * orig
            x1, y1 = rng.uniform(0.02, 0.98 - w / orig) * orig, rng.uniform(0.02, 0.98 - h / orig) * orig
            box = np.array([x1, y1, x1 + w, y1 + h]).round()
            draw_person(img, box)
            kp, parts = person_layout(box)
            gt["video"].append(name); gt["frame"].append(frame); gt["person"].append(0)
            gt["box"].append(box.astype(np.float32)); gt["keypoints"].append(kp.reshape(-1).astype(np.float32))
            gt["part_boxes"].append(parts.reshape(-1).astype(np.float32))
            gt["part_visible"].append(np.ones(NUM_PARTS, bool)); gt["part_states"].append(["none"] * NUM_PARTS)
            gt["action"].append("idle")
            small = cv2.resize(img, (stored, stored), interpolation=cv2.INTER_AREA)
            frames.append({"video": name, "frame": frame, "pts": frame / 25.0, "width": stored, "height": stored,
                           "scale": scale, "jpeg": encode_jpeg(small, 95)})
            jit = box + rng.normal(0, 1.0, 4)
            noisy = kp + np.c_[rng.normal(0, 0.5, (NUM_KEYPOINTS, 2)), np.full(NUM_KEYPOINTS, -0.05)]
            refined.append({"video": name, "frame": frame, "person": 0, "det_box": jit.astype(np.float32),
                            "box": jit.astype(np.float32), "score": 0.9,
                            "keypoints": noisy.reshape(-1).astype(np.float32)})
            truth[(name, frame)] = {"box": box, "parts": parts, "split": split}
    write_table(from_columns({k: [r[k] for r in vids] for k in vids[0]}, "videos"), paths.synth / "videos.parquet",
                "videos")
    write_table(from_columns(gt, "gt_persons"), paths.synth / "gt_persons.parquet", "gt_persons")
    write_table(from_columns({k: [r[k] for r in frames] for k in frames[0]}, "frames"), paths.frames, "frames")
    write_table(from_columns({k: [r[k] for r in refined] for k in refined[0]}, "keypoints"), paths.refined, "keypoints")
    return truth


def write_params(path: Path, person: dict | None = None, parts: dict | None = None) -> Path:
    """A params file with tiny detector settings (overridable)."""
    params = {
        "seed": 0, "device": "cpu", "data": {"root": "artifacts/synth"},
        "person_detector": {"model": "yolo11n.yaml", "weights": None, "imgsz": 32, "epochs": 40, "batch": 4,
                            "lr0": 0.01, "optimizer": "AdamW", "warmup_epochs": 0.0, "mosaic": 0.0,
                            "close_mosaic": 0, "fliplr": 0.5, "frame_step": 1, "val_fraction": 0.0, "workers": 0,
                            "threads": 1,
                            "conf": 0.01, "iou": 0.6, "max_det": 10, "predict_batch": 8},
        "parts": {"paint": True, "dot_radius": 1.5, "kp_thr": 0.3, "crop_size": 32, "crop_margin": 0.1,
                  "model": "yolo11n.yaml", "weights": None, "imgsz": 32, "epochs": 1, "batch": 4, "lr0": 0.01,
                  "optimizer": "AdamW", "warmup_epochs": 0.0, "mosaic": 0.0, "close_mosaic": 0, "hsv_h": 0.0,
                  "frame_step": 1, "val_fraction": 0.2, "workers": 0, "threads": 1, "conf": 0.001, "iou": 0.6,
                  "predict_batch": 16},
    }
    params["person_detector"].update(person or {})
    params["parts"].update(parts or {})
    path.write_text(yaml.safe_dump(overlaid(params)))  # on the committed params (load_params checks all)
    return path
