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
from actparse.detector_data import decode_frames
from actparse.params import get, resolve_device
from actparse.paths import Paths
from actparse.schemas import from_columns
from actparse.shards import VideoSkipped, VideoWork, cached, frames_tables, frames_videos, mapper_of, run_videos
from actparse.stage import new_columns, row_groups, stage_log, stage_main

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


class Work(VideoWork):
    """detect_persons per video: the params and the model read once, then :meth:`one` per video
    (the stage's run and the flow's shards, actparse/shards.py)."""

    STAGE, SCHEMA, SECTIONS = "detect_persons", "persons", (S,)

    def __init__(self, params: dict, root: Path):
        super().__init__(params, root)
        paths = Paths(root)
        self.imgsz = get(params, f"{S}.imgsz", int, min_value=32)
        self.conf = get(params, f"{S}.conf", float, min_value=0.0, max_value=1.0)
        self.iou = get(params, f"{S}.iou", float, min_value=0.0, max_value=1.0)
        self.max_det = get(params, f"{S}.max_det", int, min_value=1)
        self.batch = get(params, f"{S}.predict_batch", int, min_value=1)
        self.device = resolve_device(params)
        self.threads = get(params, f"{S}.threads", int, min_value=0)
        self.frames, self.output, self.where = paths.frames, paths.persons, paths.frames
        self.model_path = paths.models / S / "model.pt"

    def inputs(self) -> list[Path]:
        return [self.frames, self.model_path]

    def _need_frames(self) -> None:
        if not self.frames.exists():
            raise FileNotFoundError(f"{self.frames}: frames not found (run the decode stage first)")

    def check(self) -> None:
        if not self.model_path.is_file():
            raise FileNotFoundError(f"{self.model_path}: YOLO model file not found")
        self._need_frames()

    def setup(self) -> None:
        def load():
            model = yolo.load_model(self.model_path)
            return model, yolo.person_class_ids(self.params, model, self.model_path)

        self.model, self.keep = cached(("yolo", S, repr(self.params.get(S))), [self.model_path], load)
        self._need_frames()

    def videos(self) -> list[str]:
        return frames_videos(self.frames)

    def total(self) -> int | None:
        return row_groups(self.frames)

    def tables(self, videos=None):
        return frames_tables(self.frames, videos)

    def prepare(self, video: str, table):
        try:
            return decode_frames(table)  # on the prefetch thread, while the model runs the previous video
        except ValueError as exc:
            raise VideoSkipped(str(exc)) from None

    def one(self, video: str, prepared):
        images, frames, scales, orig_wh = prepared
        dets = yolo.predict(self.model, images, imgsz=self.imgsz, conf=self.conf, iou=self.iou, max_det=self.max_det,
                            batch=self.batch, device=self.device, threads=self.threads, classes=self.keep)
        return detections_table(video, frames, dets, scales, orig_wh)


FLOW_MAPPER = mapper_of(Work)  # the flow's shards of consecutive videos (flow.map_stages, flow.shard_videos)


def run(params: dict, root: Path) -> None:
    rows, ledger = run_videos(Work(params, root))
    log.info("%d person boxes in %d videos (%d skipped)", rows, ledger.n_tried, ledger.n_failed)


def main(argv=None) -> int:
    return stage_main("detect_persons", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
