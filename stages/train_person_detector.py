"""Train the one-class person detector (ultralytics YOLO) on the train-split frames.

Reads:  artifacts/frames.parquet (decoded JPEG frames), <data.root>/videos.parquet (splits),
        <data.root>/gt_persons.parquet (GT person boxes of the frames in frames.parquet).
Writes: artifacts/models/person_detector/model.pt   (the trained best.pt, or last.pt),
        artifacts/models/person_detector/train_info.json (epochs, images, seconds, val mAP50).
Params: person_detector.model (a YOLO model yaml, default yolo11n.yaml; the scale letter picks
        the size), person_detector.weights (null, or a user .pt: then no training, the file is
        checked and copied; with person_detector.finetune: true it is fine-tuned instead),
        person_detector.classes (the class names that are persons in such a file; null = "person";
        fine-tuning a multi-class file starts from its first person class as the single class),
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
from actparse.stage import model_folder, stage_main
from actparse.dataset import gt_persons_path, load_videos, split_of
from actparse.detector_data import decode_frames, frames_by_video, gt_index
from actparse.params import get
from actparse.paths import Paths, check_outside, data_root

log = logging.getLogger("actparse.train_person_detector")
NAME = "person_detector"


def run(params: dict, root: Path) -> None:
    weights = get(params, f"{NAME}.weights", str)
    if weights:  # dvc repro removes the stage's outputs first: a model given from there would be lost
        check_outside(weights, Paths(root).models / NAME, f"{NAME}.weights")
    with model_folder(Paths(root).models / NAME) as model_dir:  # replaces the old folder only on success
        train_into(model_dir, params, root)


def train_into(model_dir: Path, params: dict, root: Path) -> None:
    paths = Paths(root)
    weights = get(params, f"{NAME}.weights", str)
    finetune = get(params, f"{NAME}.finetune", bool)
    val_fraction = get(params, f"{NAME}.val_fraction", float, min_value=0.0, max_value=0.9)
    frame_step = get(params, f"{NAME}.frame_step", int, min_value=1)
    yolo.configure()
    if weights and not finetune:
        m = yolo.load_model(weights)  # clear error naming the file
        keep = yolo.person_class_ids(params, m, weights)  # fails early when the file has no person class
        yolo.finish_model_dir(model_dir, None, weights, {"classes": yolo.model_names(m),
                                                         "person_classes": [yolo.model_names(m)[i] for i in keep]})
        log.info("using the user's person detector %s (no training)", weights)
        return
    args = yolo.train_args(params, NAME)
    user = None
    if weights:  # fine-tuning: check the file and its person class before preparing the data
        user = yolo.load_model(weights)
        yolo.person_class_ids(params, user, weights)

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
            stems.append(f"{video}_{int(f):06d}".replace("/", "__"))  # MultiSports names hold a "/"
    if not images:
        raise ValueError(f"{paths.frames}: no frames of the {len(train_videos)} train videos")
    if not any(len(b) for b in boxes):
        raise ValueError(f"{gt_persons_path(droot)}: no GT person boxes for the train frames")
    work = model_dir / "_work"
    shutil.rmtree(work, ignore_errors=True)
    try:
        start, init = weights, {}
        if user is not None and yolo.model_names(user) != ["person"]:
            # a multi-class detector (COCO): start from its person class as the single class
            keep, names = yolo.person_class_ids(params, user, weights), yolo.model_names(user)
            start = yolo.save_detection_checkpoint(yolo.keep_classes(user, keep[:1], ["person"]),
                                                   work / "start" / "person_only.pt")
            init = {"finetune_from_class": names[keep[0]]}
            log.info("fine-tuning from %s with its class %r as the single class 'person'%s", weights,
                     names[keep[0]], f" (of {len(keep)} person classes, the first)" if len(keep) > 1 else "")
        val_mask = yolo.split_by_group(groups, val_fraction, seed=args["seed"])
        data_yaml = yolo.export_dataset(work / "data", images, boxes, classes, ["person"], val_mask=val_mask,
                                        stems=stems)
        log.info("training %s on %d images (%d val) for %d epochs", args["model"], int((~val_mask).sum()),
                 int(val_mask.sum()), args["epochs"])
        result = yolo.train(data_yaml, work / "runs", weights=start, **args)
        yolo.finish_model_dir(model_dir, result, weights, {"model": args["model"], "imgsz": args["imgsz"],
                                            "train_videos": len(train_videos), **init})
        log.info("person detector: val mAP50 %.3f after %.0fs", result.map50, result.seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    return stage_main("train_person_detector", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
