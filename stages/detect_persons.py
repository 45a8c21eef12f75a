"""Detect persons in every decoded frame of every video (all splits) with the trained YOLO.

Reads:  artifacts/frames.parquet, artifacts/models/person_detector/model.pt.
Writes: artifacts/persons.parquet (schema "persons": video, frame, person, box, score; boxes in
        original video pixels, clipped to the frame; `person` = rank within the frame by score),
        one row group per video; artifacts/skips/detect_persons.parquet (videos whose frames could
        not be decoded, and why).
Params: person_detector.imgsz / conf / iou / max_det (top-k persons per frame) / predict_batch /
        threads (torch CPU threads, 0 = ACTPARSE_CPU_THREADS or 2), person_detector.classes (class names kept as
        persons; null = the class named "person", so a COCO-pretrained detector keeps persons only),
        device.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from actparse import yolo
from actparse.boxes import clip
from actparse.detector_data import decode_frames, frames_by_video
from actparse.params import get, resolve_device
from actparse.paths import Paths
from actparse.schemas import ParquetStreamWriter, from_columns
from actparse.stage import SkipLedger, new_columns, progress, row_groups, stage_log, stage_main

log = stage_log("detect_persons")
S = "person_detector"


def detections_table(video: str, frames, dets, scales, orig_wh):
    """Per-frame YOLO outputs (stored-image pixels) -> a "persons" table in original pixels."""
    cols = new_columns("persons")
    for f, (boxes, scores, _), s, (w, h) in zip(frames, dets, scales, orig_wh):
        if not len(boxes):
            continue
        order = np.argsort(-scores, kind="stable")
        b = clip(boxes[order] / s, w, h)
        cols["video"] += [video] * len(b)
        cols["frame"] += [int(f)] * len(b)
        cols["person"] += list(range(len(b)))
        cols["box"] += [np.asarray(x, np.float32) for x in b]
        cols["score"] += [float(x) for x in scores[order]]
    return from_columns(cols, "persons")


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    imgsz = get(params, f"{S}.imgsz", int, min_value=32)
    conf = get(params, f"{S}.conf", float, min_value=0.0, max_value=1.0)
    iou = get(params, f"{S}.iou", float, min_value=0.0, max_value=1.0)
    max_det = get(params, f"{S}.max_det", int, min_value=1)
    batch = get(params, f"{S}.predict_batch", int, min_value=1)
    device = resolve_device(params)
    threads = get(params, f"{S}.threads", int, min_value=0)
    model = yolo.load_model(paths.models / S / "model.pt")
    keep = yolo.person_class_ids(params, model, paths.models / S / "model.pt")
    if not paths.frames.exists():
        raise FileNotFoundError(f"{paths.frames}: frames not found (run the decode stage first)")
    ledger = SkipLedger("detect_persons", root)
    with ParquetStreamWriter(paths.persons, "persons") as writer:
        for video, table in progress(frames_by_video(paths.frames), "detect_persons", total=row_groups(paths.frames)):
            ledger.tried(video)
            try:
                images, frames, scales, orig_wh = decode_frames(table)
            except ValueError as exc:
                ledger.skip(video, exc)
                continue
            dets = yolo.predict(model, images, imgsz=imgsz, conf=conf, iou=iou, max_det=max_det, batch=batch,
                                device=device, threads=threads, classes=keep)
            writer.write(detections_table(video, frames, dets, scales, orig_wh))
        ledger.check(paths.frames)
    ledger.write()
    log.info("%d person boxes in %d videos (%d skipped)", writer.rows, ledger.n_tried, ledger.n_failed)


def main(argv=None) -> int:
    return stage_main("detect_persons", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
