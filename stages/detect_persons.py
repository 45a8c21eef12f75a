"""Detect persons in every decoded frame of every video (all splits) with the trained YOLO.

Reads:  artifacts/frames.parquet, artifacts/models/person_detector/model.pt.
Writes: artifacts/persons.parquet (schema "persons": video, frame, person, box, score; boxes in
        original video pixels, clipped to the frame; `person` = rank within the frame by score),
        one row group per video; artifacts/skips/detect_persons.parquet (videos whose frames could
        not be decoded, and why).
Params: person_detector.imgsz / conf / iou / max_det (top-k persons per frame) / predict_batch /
        threads (torch CPU threads, 0 = ACTPARSE_CPU_THREADS or 2), device.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from actparse import yolo
from actparse.boxes import clip
from actparse.cli import stage_main
from actparse.detection import decode_frames, frames_by_video
from actparse.params import get, resolve_device
from actparse.paths import Paths
from actparse.schemas import ParquetStreamWriter, from_columns, from_rows, write_table

log = logging.getLogger("actparse.detect_persons")
S = "person_detector"


def detections_table(video: str, frames, dets, scales, orig_wh):
    """Per-frame YOLO outputs (stored-image pixels) -> a "persons" table in original pixels."""
    cols = {"video": [], "frame": [], "person": [], "box": [], "score": []}
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
    batch = get(params, f"{S}.predict_batch", int, default=32, min_value=1)
    device = resolve_device(params)
    threads = get(params, f"{S}.threads", int, default=0, min_value=0)
    model = yolo.load_model(paths.models / S / "model.pt")
    if not paths.frames.exists():
        raise FileNotFoundError(f"{paths.frames}: frames not found (run the decode stage first)")
    skips = []
    n_videos = 0
    with ParquetStreamWriter(paths.persons, "persons") as writer:
        for video, table in tqdm(frames_by_video(paths.frames), desc="detect_persons", unit="video", disable=None):
            n_videos += 1
            try:
                images, frames, scales, orig_wh = decode_frames(table)
            except ValueError as exc:
                log.warning("skip %s: %s", video, exc)
                skips.append({"video": video, "stage": "detect_persons", "error": str(exc)})
                continue
            dets = yolo.predict(model, images, imgsz=imgsz, conf=conf, iou=iou, max_det=max_det, batch=batch,
                                device=device, threads=threads)
            writer.write(detections_table(video, frames, dets, scales, orig_wh))
    write_table(from_rows(skips, "skips"), paths.skips / "detect_persons.parquet", "skips")
    log.info("%d person boxes in %d videos (%d skipped)", writer.rows, n_videos, len(skips))


def main(argv=None) -> int:
    return stage_main("detect_persons", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
