"""Detect the ten body parts of every refined person of every video (all splits).

Each person of refined_persons.parquet is cropped and painted exactly as in training (params
parts.paint / dot_radius / kp_thr / crop_size / crop_margin), the part YOLO runs on the crops,
and the best box of each part class (top-1 per part per person) is mapped back to the frame.

Reads:  artifacts/frames.parquet, artifacts/refined_persons.parquet (schema "keypoints"),
        artifacts/models/part_detector/model.pt (absent when train_part_detector was skipped: data set
        without part ground truth and no parts.weights; then parts.parquet is written empty).
Writes: artifacts/parts.parquet (schema "parts": video, frame, person (as in refined_persons),
        part, box in original video pixels clipped to the frame, score), one row group per video;
        artifacts/skips/detect_parts.parquet (videos whose frames could not be decoded, and why).
Params: parts.paint, dot_radius, kp_thr, crop_size, crop_margin, parts.imgsz, conf (lowest part
        score kept), iou (NMS), predict_batch, threads (torch CPU threads, 0 = ACTPARSE_CPU_THREADS or 2), device.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from actparse import yolo
from actparse.boxes import clip
from actparse.constants import PARTS
from actparse.detector_data import decode_frames, frames_by_video, person_crops, refined_by_video
from actparse.paint import PaintConfig
from actparse.params import get, resolve_device
from actparse.paths import Paths
from actparse.schemas import ParquetStreamWriter, from_columns
from actparse.stage import SkipLedger, new_columns, progress, row_groups, stage_log, stage_main

log = stage_log("detect_parts")
S = "parts"


def top1_per_class(boxes, scores, classes, n_classes: int):
    """Best-scoring detection of each class: {class: (box, score)}."""
    best = {}
    for b, s, c in zip(boxes, scores, classes):
        c = int(c)
        if 0 <= c < n_classes and (c not in best or s > best[c][1]):
            best[c] = (b, float(s))
    return best


def parts_table(video: str, crops: list[dict], dets, orig_wh: dict, names: list[str]):
    """Part detections on crops -> a "parts" table in original-frame pixels."""
    cols = new_columns("parts")
    for c, (boxes, scores, classes) in zip(crops, dets):
        best = top1_per_class(boxes, scores, classes, len(names))
        w, h = orig_wh[c["frame"]]
        for k in sorted(best):
            b, s = best[k]
            fb = clip(c["tf"].boxes_to_frame(b) / c["scale"], w, h)[0]
            cols["video"].append(video)
            cols["frame"].append(c["frame"])
            cols["person"].append(c["person"])
            cols["part"].append(names[k])
            cols["box"].append(fb.astype(np.float32))
            cols["score"].append(s)
    return from_columns(cols, "parts")


def _skipped_training(model_dir: Path) -> str | None:
    """Why train_part_detector skipped training (its train_info.json "skipped"), or None."""
    info = model_dir / "train_info.json"
    if not info.exists():
        return None
    try:
        return json.loads(info.read_text()).get("skipped")
    except (ValueError, AttributeError):
        return None


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    cfg = PaintConfig.from_params(params, S)
    imgsz = get(params, f"{S}.imgsz", int, min_value=32)
    conf = get(params, f"{S}.conf", float, min_value=0.0, max_value=1.0)
    iou = get(params, f"{S}.iou", float, min_value=0.0, max_value=1.0)
    batch = get(params, f"{S}.predict_batch", int, min_value=1)
    device = resolve_device(params)
    threads = get(params, f"{S}.threads", int, min_value=0)
    model_path = paths.models / "part_detector" / "model.pt"
    skipped = _skipped_training(model_path.parent)
    if skipped and not model_path.exists():
        log.warning("no part detector (train_part_detector: %s): writing an empty %s", skipped, paths.parts)
        with ParquetStreamWriter(paths.parts, "parts"):
            pass
        SkipLedger("detect_parts", root).write()
        return
    model = yolo.load_model(model_path)
    names = yolo.model_names(model)
    unknown = sorted(set(names) - set(PARTS))
    if unknown:
        raise ValueError(f"{model_path}: classes {unknown} are not body parts {list(PARTS)}")
    refined = refined_by_video(paths.refined)
    ledger = SkipLedger("detect_parts", root)
    with ParquetStreamWriter(paths.parts, "parts") as writer:
        for video, table in progress(frames_by_video(paths.frames), "detect_parts", total=row_groups(paths.frames)):
            persons = refined.get(video)
            if persons is None or not len(persons):
                continue
            ledger.tried(video)
            try:
                images, frames, scales, orig_wh = decode_frames(table)
            except ValueError as exc:
                ledger.skip(video, exc)
                continue
            crops = person_crops(images, frames, scales, persons, cfg)
            missing = len(persons) - len(crops)
            if missing:
                log.warning("%s: %d refined persons on frames missing from %s", video, missing, paths.frames)
            dets = yolo.predict(model, [c["crop"] for c in crops], imgsz=imgsz, conf=conf, iou=iou, max_det=100,
                                batch=batch, device=device, threads=threads)
            wh = {int(f): tuple(x) for f, x in zip(frames, orig_wh)}
            writer.write(parts_table(video, crops, dets, wh, names))
        ledger.check(paths.frames)
    ledger.write()
    log.info("%d part boxes for %d videos (%d skipped)", writer.rows, len(refined), ledger.n_failed)


def main(argv=None) -> int:
    return stage_main("detect_parts", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
