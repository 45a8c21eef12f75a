"""Estimate 17 COCO keypoints for every detected person (top-down HRNet).

Reads:  artifacts/persons.parquet (schema "persons": detected boxes + scores, original-video pixels),
        artifacts/frames.parquet (the JPEG frames the boxes were detected on),
        artifacts/models/pose/model.pt (written by train_pose; with keypoints.backend 'mmpose' the
        mmpose config + weights train_pose exported there instead).
Writes: artifacts/keypoints.parquet (schema "keypoints": det_box = box = the detected box,
        score = detection score, keypoints = x, y, confidence (heatmap peak) in original-video pixels),
        streamed one row group per video;
        artifacts/skips/keypoints.parquet (videos whose boxes have no decoded frame, and why).
Params: device, keypoints.backend (hrnet: actparse's HRNet, the default | mmpose: mmpose's
        init_model + inference_topdown, optional install extra), keypoints.flip_test (average with the
        mirrored crop; with mmpose it replaces the config's test_cfg.flip_test), keypoints.infer_batch.
The network input size is the one stored in the checkpoint (mmpose: the config's TopdownAffine).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from actparse.hrnet import load_checkpoint
from actparse.params import get, resolve_device
from actparse.paths import Paths
from actparse.pose import PoseEstimator, input_size_param
from actparse.schemas import from_columns, read_df, read_table
from actparse.shards import VideoWork, cached, frames_tables, frames_videos, mapper_of, run_videos
from actparse.stage import SkipLedger, row_groups, stage_log, stage_main
from actparse.video import decode_jpeg

log = stage_log("keypoints")


def load_estimator(params: dict, root: Path) -> PoseEstimator:
    """The trained pose model of ``root`` wrapped for inference with the stage params."""
    if get(params, "keypoints.backend", str, choices=("hrnet", "mmpose")) == "mmpose":
        from actparse import mmpose_backend as mb

        return mb.MMPoseEstimator(mb.load_exported(Paths(root).models / "pose", resolve_device(params)),
                                  flip_test=get(params, "keypoints.flip_test", bool),
                                  batch_size=get(params, "keypoints.infer_batch", int, min_value=1))
    model, info = load_checkpoint(Paths(root).models / "pose" / "model.pt")
    size = info["input_size"] or input_size_param(params)
    return PoseEstimator(model, tuple(size), resolve_device(params),
                         flip_test=get(params, "keypoints.flip_test", bool),
                         batch_size=get(params, "keypoints.infer_batch", int, min_value=1))


def video_keypoints(estimator: PoseEstimator, frames, persons) -> tuple[dict, int]:
    """Keypoint columns for one video: ``frames`` a "frames" table, ``persons`` a DataFrame of its boxes.

    Returns (columns of schema "keypoints", number of person rows whose frame is not in ``frames``).
    """
    return video_keypoints_of(estimator, prepare_video(estimator, frames, persons))


def prepare_video(estimator, frames, persons) -> dict:
    """The part of :func:`video_keypoints` that needs no model (decoded frames, the person crops when
    the estimator makes its own, :meth:`actparse.pose.PoseEstimator.crop`): the stage runs it on its
    prefetch thread."""
    index = {int(f): j for j, f in enumerate(frames.column("frame").to_pylist())}
    scales = frames.column("scale").to_pylist()
    jpegs = frames.column("jpeg")
    pf = persons["frame"].to_numpy().astype(np.int64)
    have = np.array([int(f) in index for f in pf], bool)
    persons = persons[have]
    pf = pf[have]
    order = np.lexsort((persons["person"].to_numpy(), pf))
    persons = persons.iloc[order]
    pf = pf[order]
    boxes = np.stack(persons["box"].to_numpy()).astype(np.float64) if len(persons) else np.zeros((0, 4))
    images, img_boxes, img_scales = [], [], []
    uniq = np.unique(pf)
    for f in uniq:
        j = index[int(f)]
        s = float(scales[j]) or 1.0
        images.append(decode_jpeg(jpegs[j].as_py()))
        img_boxes.append(boxes[pf == f] * s)
        img_scales.append(s)
    out = {"persons": persons, "pf": pf, "boxes": boxes, "images": images, "img_boxes": img_boxes,
           "img_scales": img_scales, "missing": int((~have).sum()), "cropped": None}
    if hasattr(estimator, "crop"):
        out["cropped"] = estimator.crop(images, img_boxes)
    return out


def video_keypoints_of(estimator, prepared: dict) -> tuple[dict, int]:
    """:func:`video_keypoints` from the output of :func:`prepare_video` (the model's part)."""
    persons, pf, boxes = prepared["persons"], prepared["pf"], prepared["boxes"]
    img_boxes, img_scales = prepared["img_boxes"], prepared["img_scales"]
    if prepared["cropped"] is not None:
        kps = estimator.predict_cropped(prepared["cropped"])
    else:
        kps = estimator.predict(prepared["images"], img_boxes)
    k_dim = getattr(estimator, "num_keypoints", None) or estimator.model.num_keypoints
    kp = np.concatenate([k.copy() for k in kps]) if kps else np.zeros((0, k_dim, 3))
    if len(kp):
        per_row_scale = np.concatenate([[s] * len(b) for s, b in zip(img_scales, img_boxes)])
        kp[..., :2] /= per_row_scale[:, None, None]
    cols = {"video": persons["video"].tolist(), "frame": pf.astype(np.int32).tolist(),
            "person": persons["person"].astype(np.int32).tolist(),
            "det_box": boxes.astype(np.float32), "box": boxes.astype(np.float32),
            "score": persons["score"].astype(np.float32).to_numpy(),
            "keypoints": kp.reshape(len(kp), kp.shape[1] * 3).astype(np.float32)}
    return cols, prepared["missing"]


class Work(VideoWork):
    """keypoints per video: the estimator loaded once, then :meth:`one` per video with detected persons
    (the stage's run and the flow's shards, actparse/shards.py)."""

    STAGE, SCHEMA, SECTIONS = "keypoints", "keypoints", ("keypoints",)

    def __init__(self, params: dict, root: Path):
        super().__init__(params, root)
        paths = Paths(root)
        self.frames, self.persons, self.output, self.where = paths.frames, paths.persons, paths.keypoints, paths.persons
        self.model_dir = paths.models / "pose"
        self._by_video: dict | None = None

    def inputs(self) -> list[Path]:
        return [self.frames, self.persons, self.model_dir]

    def check(self) -> None:
        if not self.model_dir.is_dir():
            raise FileNotFoundError(f"{self.model_dir}: pose model folder not found (run train_pose first)")

    def setup(self) -> None:
        self.estimator = cached(("pose", repr(self.params.get("keypoints")), repr(self.params.get("device"))),
                                [self.model_dir], lambda: load_estimator(self.params, self.root))

    def _persons(self, videos=None) -> dict:
        """Detected persons by video (those of ``videos``; None: all), in persons.parquet order."""
        filters = None if videos is None else [("video", "in", sorted(set(videos)))]
        persons = read_df(self.persons, "persons", filters=filters)
        return {v: g for v, g in persons.groupby("video", sort=False)}

    def _person_videos(self) -> list[str]:
        return list(dict.fromkeys(read_table(self.persons, "persons", columns=["video"]).column("video").to_pylist()))

    def videos(self) -> list[str]:
        have = set(self._person_videos())
        return [v for v in frames_videos(self.frames) if v in have]

    def total(self) -> int | None:
        return row_groups(self.frames)

    def tables(self, videos=None):
        self._by_video = self._persons(videos)
        for video, frames in frames_tables(self.frames, videos):
            if video in self._by_video:
                yield video, frames

    def prepare(self, video: str, table):
        return prepare_video(self.estimator, table, self._by_video[video])  # on the prefetch thread

    def one(self, video: str, prepared):
        cols, missing = video_keypoints_of(self.estimator, prepared)
        note = f"{missing} person box(es) on frames not in {self.frames.name}" if missing else None
        return from_columns(cols, "keypoints"), note

    def finish(self, ledger: SkipLedger, tried: set[str]) -> None:
        counts = read_df(self.persons, "persons", columns=["video"])["video"].value_counts(sort=False)
        for video in self._person_videos():
            if video not in tried:
                ledger.skip(video, f"no decoded frames in {self.frames.name} for {int(counts[video])} person box(es)")


FLOW_MAPPER = mapper_of(Work)  # the flow's shards of consecutive videos (flow.map_stages, flow.shard_videos)


def run(params: dict, root: Path) -> None:
    work = Work(params, root)
    rows, ledger = run_videos(work)
    log.info("keypoints for %d persons in %d videos (%d skipped)", rows, ledger.n_tried - ledger.n_failed,
             ledger.n_failed)


def main(argv=None) -> int:
    return stage_main("keypoints", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
