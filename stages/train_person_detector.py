"""Train the one-class person detector (ultralytics YOLO) on the train-split frames.

Reads:  artifacts/frames.parquet (decoded JPEG frames), <data.root>/videos.parquet (splits),
        <data.root>/gt_persons.parquet (GT person boxes of the frames in frames.parquet).
Writes: artifacts/models/person_detector/model.pt   (the trained best.pt, or last.pt),
        artifacts/models/person_detector/train_info.json (epochs, images, seconds, val mAP50).
Params: person_detector.model (a YOLO model yaml, default yolo11n.yaml; the scale letter picks
        the size), person_detector.weights (null, or a user .pt: then no training, the file is
        checked and copied; with person_detector.finetune: true it is fine-tuned instead),
        person_detector.imgsz / epochs / batch / lr0 / optimizer / warmup_epochs / mosaic /
        close_mosaic / fliplr / val_fraction (share of train videos held out, whole videos) /
        workers / threads (torch CPU threads, 0 = ACTPARSE_CPU_THREADS or 2), person_detector.frame_step (train on
        every k-th decoded frame: neighbouring frames are near duplicates), seed, device.
Nothing is downloaded: ultralytics runs offline with a private settings folder.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from actparse import yolo
from actparse.cli import stage_main
from actparse.dataset import gt_persons_path, load_videos, split_of
from actparse.detection import decode_frames, frames_by_video, gt_index
from actparse.params import get
from actparse.paths import Paths, data_root

log = logging.getLogger("actparse.train_person_detector")
NAME = "person_detector"


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    model_dir = paths.models / NAME
    weights = get(params, f"{NAME}.weights", str, default=None)
    finetune = get(params, f"{NAME}.finetune", bool, default=False)
    val_fraction = get(params, f"{NAME}.val_fraction", float, default=0.15, min_value=0.0, max_value=0.9)
    frame_step = get(params, f"{NAME}.frame_step", int, default=1, min_value=1)
    model_dir.mkdir(parents=True, exist_ok=True)
    yolo.configure()
    if weights and not finetune:
        m = yolo.load_model(weights)  # clear error naming the file
        yolo.finish_model_dir(model_dir, None, weights, {"classes": yolo.model_names(m)})
        log.info("using the user's person detector %s (no training)", weights)
        return
    args = yolo.train_args(params, NAME)

    droot = data_root(params, root)
    splits = split_of(load_videos(droot))
    train_videos = sorted(v for v, s in splits.items() if s == "train")
    if not train_videos:
        raise ValueError(f"{droot / 'videos.parquet'}: no videos in the train split")
    gt = gt_index(gt_persons_path(droot), train_videos, columns=("box",))
    images, boxes, classes, groups, stems = [], [], [], [], []
    for video, table in tqdm(frames_by_video(paths.frames, train_videos), desc="person data", unit="video",
                             disable=None):
        imgs, frames, scales, _ = decode_frames(table)
        for img, f, s in list(zip(imgs, frames, scales))[::frame_step]:
            rec = gt.get((video, int(f)))
            b = rec["box"] * s if rec is not None else np.zeros((0, 4))
            images.append(img)
            boxes.append(b)
            classes.append(np.zeros(len(b), np.int64))
            groups.append(video)
            stems.append(f"{video}_{int(f):06d}")
    if not images:
        raise ValueError(f"{paths.frames}: no frames of the {len(train_videos)} train videos")
    if not any(len(b) for b in boxes):
        raise ValueError(f"{gt_persons_path(droot)}: no GT person boxes for the train frames")
    work = model_dir / "_work"
    shutil.rmtree(work, ignore_errors=True)
    try:
        val_mask = yolo.split_by_group(groups, val_fraction, seed=args["seed"])
        data_yaml = yolo.export_dataset(work / "data", images, boxes, classes, ["person"], val_mask=val_mask,
                                        stems=stems)
        log.info("training %s on %d images (%d val) for %d epochs", args["model"], int((~val_mask).sum()),
                 int(val_mask.sum()), args["epochs"])
        result = yolo.train(data_yaml, work / "runs", weights=weights if finetune else None, **args)
        yolo.finish_model_dir(model_dir, result, weights, {"model": args["model"], "imgsz": args["imgsz"],
                                            "train_videos": len(train_videos)})
        log.info("person detector: val mAP50 %.3f after %.0fs", result.map50, result.seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    return stage_main("train_person_detector", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
