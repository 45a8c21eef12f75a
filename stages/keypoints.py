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
from actparse.schemas import ParquetStreamWriter, from_columns, iter_row_groups, read_df
from actparse.stage import SkipLedger, progress, row_groups, stage_log, stage_main
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
    kps = estimator.predict(images, img_boxes)
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
    return cols, int((~have).sum())


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    estimator = load_estimator(params, root)
    persons = read_df(paths.persons, "persons")
    by_video = {v: g for v, g in persons.groupby("video", sort=False)}
    done, ledger = set(), SkipLedger("keypoints", root)
    with ParquetStreamWriter(paths.keypoints, "keypoints") as writer:
        for frames in progress(iter_row_groups(paths.frames, "frames"), "keypoints", total=row_groups(paths.frames)):
            if frames.num_rows == 0:
                continue
            # a row group normally holds one video; be robust to several
            vids = frames.column("video").to_pylist()
            for video in dict.fromkeys(vids):
                if video not in by_video or video in done:
                    continue
                ledger.tried(video)
                sub = frames.filter(np.asarray([v == video for v in vids]))
                cols, missing = video_keypoints(estimator, sub, by_video[video])
                if missing:
                    ledger.note(video, f"{missing} person box(es) on frames not in {paths.frames.name}")
                writer.write(from_columns(cols, "keypoints"))
                done.add(video)
        for video in by_video:
            if video not in done:
                ledger.skip(video, f"no decoded frames in {paths.frames.name} for {len(by_video[video])} person box(es)")
        ledger.check(paths.persons)
    ledger.write()
    log.info("keypoints for %d persons in %d videos (%d skipped)", writer.rows, len(done),
             len(by_video) - len(done))


def main(argv=None) -> int:
    return stage_main("keypoints", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
