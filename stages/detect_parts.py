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
from actparse.detector_data import decode_frames, person_crops, refined_by_video
from actparse.paint import PaintConfig
from actparse.params import get, resolve_device
from actparse.paths import Paths
from actparse.schemas import ParquetStreamWriter, from_columns
from actparse.shards import VideoSkipped, VideoWork, cached, frames_tables, frames_videos, mapper_of, run_videos
from actparse.stage import SkipLedger, new_columns, row_groups, stage_log, stage_main

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
        if not best:
            continue
        w, h = orig_wh[c["frame"]]
        ks = sorted(best)
        # element-wise, so the same values as box by box
        fbs = clip(c["tf"].boxes_to_frame(np.stack([best[k][0] for k in ks])) / c["scale"], w, h).astype(np.float32)
        n = len(ks)
        cols["video"] += [video] * n
        cols["frame"] += [c["frame"]] * n
        cols["person"] += [c["person"]] * n
        cols["part"] += [names[k] for k in ks]
        cols["box"] += list(fbs)
        cols["score"] += [best[k][1] for k in ks]
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


class Work(VideoWork):
    """detect_parts per video: the params and the part model read once, then :meth:`one` per video with
    refined persons (the stage's run and the flow's shards, actparse/shards.py)."""

    STAGE, SCHEMA, SECTIONS = "detect_parts", "parts", (S,)

    def __init__(self, params: dict, root: Path):
        super().__init__(params, root)
        paths = Paths(root)
        self.cfg = PaintConfig.from_params(params, S)
        self.imgsz = get(params, f"{S}.imgsz", int, min_value=32)
        self.conf = get(params, f"{S}.conf", float, min_value=0.0, max_value=1.0)
        self.iou = get(params, f"{S}.iou", float, min_value=0.0, max_value=1.0)
        self.batch = get(params, f"{S}.predict_batch", int, min_value=1)
        self.device = resolve_device(params)
        self.threads = get(params, f"{S}.threads", int, min_value=0)
        self.frames, self.refined, self.output, self.where = paths.frames, paths.refined, paths.parts, paths.frames
        self.model_path = paths.models / "part_detector" / "model.pt"
        self.skipped = _skipped_training(self.model_path.parent)
        self._refined: dict = {}

    def no_model(self) -> bool:
        """train_part_detector skipped training and left no model: the stage writes empty outputs."""
        return bool(self.skipped) and not self.model_path.exists()

    def inputs(self) -> list[Path]:
        return [self.frames, self.refined, self.model_path.parent]

    def check(self) -> None:
        if not self.no_model() and not self.model_path.is_file():
            raise FileNotFoundError(f"{self.model_path}: YOLO model file not found")

    def setup(self) -> None:
        def load():
            model = yolo.load_model(self.model_path)
            names = yolo.model_names(model)
            unknown = sorted(set(names) - set(PARTS))
            if unknown:
                raise ValueError(f"{self.model_path}: classes {unknown} are not body parts {list(PARTS)}")
            return model, names

        self.model, self.names = cached(("yolo", S), [self.model_path], load)

    def videos(self) -> list[str]:
        if self.no_model():
            return []
        have = set(refined_by_video(self.refined))
        return [v for v in frames_videos(self.frames) if v in have]

    def total(self) -> int | None:
        return row_groups(self.frames)

    def tables(self, videos=None):
        self._refined = refined_by_video(self.refined, videos)
        for video, table in frames_tables(self.frames, videos):
            persons = self._refined.get(video)
            if persons is not None and len(persons):
                yield video, table

    def prepare(self, video: str, table):
        """Decoded frames and the (painted) person crops: on the prefetch thread."""
        persons = self._refined[video]
        try:
            images, frames, scales, orig_wh = decode_frames(table)
        except ValueError as exc:
            raise VideoSkipped(str(exc)) from None
        crops = person_crops(images, frames, scales, persons, self.cfg)
        missing = len(persons) - len(crops)
        if missing:
            log.warning("%s: %d refined persons on frames missing from %s", video, missing, self.frames)
        return crops, frames, orig_wh

    def one(self, video: str, prepared):
        crops, frames, orig_wh = prepared
        dets = yolo.predict(self.model, [c["crop"] for c in crops], imgsz=self.imgsz, conf=self.conf, iou=self.iou,
                            max_det=100, batch=self.batch, device=self.device, threads=self.threads)
        wh = {int(f): tuple(x) for f, x in zip(frames, orig_wh)}
        return parts_table(video, crops, dets, wh, self.names)


FLOW_MAPPER = mapper_of(Work)  # the flow's shards of consecutive videos (flow.map_stages, flow.shard_videos)


def run(params: dict, root: Path) -> None:
    work = Work(params, root)
    if work.no_model():
        log.warning("no part detector (train_part_detector: %s): writing an empty %s", work.skipped, work.output)
        with ParquetStreamWriter(work.output, "parts"):
            pass
        SkipLedger("detect_parts", root).write()
        return
    rows, ledger = run_videos(work)
    log.info("%d part boxes for %d videos (%d skipped)", rows, ledger.n_tried, ledger.n_failed)


def main(argv=None) -> int:
    return stage_main("detect_parts", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
