"""Train the 10-class body-part detector (YOLO) on keypoint-painted person crops (seed 001 sec. 1.2).

Each refined detected person of a train-split frame that matches a GT person (IoU >= 0.5 with
the GT person box) gives one training image: its crop (refined box grown by parts.crop_margin,
made square, resized to parts.crop_size) painted with a dot of a fixed colour per confident
predicted keypoint (X' = X + G(K)); the labels are that GT person's visible part boxes mapped
into the crop. parts.paint: false trains on the same crops unpainted (seed 001 Table 4 ablation).
parts.train_persons: gt trains on the GT person boxes painted with the GT keypoints instead (for
data sets with keypoint annotations, e.g. the synthetic one; it does not depend on how good the
person detector and HRNet already are, which the smoke-test params set needs).

Reads:  artifacts/frames.parquet, artifacts/part_train_persons.parquet (refined_persons.parquet as
        the part_train_persons stage passes it on: schema "keypoints", refined box + predicted keypoints;
        empty with parts.train_persons: gt on keypoint ground truth), <data.root>/videos.parquet,
        <data.root>/gt_persons.parquet.
Writes: artifacts/models/part_detector/model.pt and train_info.json (epochs, crops, seconds,
        val mAP50, paint settings).
Params: parts.train_persons (detected | gt), parts.paint, dot_radius, kp_thr, crop_size,
        crop_margin (the crops), parts.model,
        weights (a user .pt: checked and copied, no training; finetune: true fine-tunes it),
        imgsz, epochs, batch, lr0, optimizer, warmup_epochs, mosaic, close_mosaic, hsv_h,
        val_fraction, frame_step, workers, threads (torch CPU threads, 0 = ACTPARSE_CPU_THREADS or 2); seed, device.
        Horizontal flips are never used (they would swap left and right parts).
Ground truth without parts (MultiSports imports: gt_persons.part_boxes null): nothing is trained;
parts.weights is used as given, or, without it, the stage is skipped (train_info.json "skipped",
no model.pt) and detect_parts writes an empty parts table. Ground truth without keypoints
(Kinetics-TPS) and parts.train_persons: gt: the GT crops are painted with the keypoints HRNet
predicted for the matching refined person.
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
from actparse.constants import NUM_PARTS, PARTS
from actparse.dataset import gt_has_keypoints, gt_has_parts, gt_persons_path, load_videos, split_of
from actparse.detector_data import (decode_frames, frames_by_video, gt_index, gt_persons_by_video, match_greedy,
                                person_crops, refined_by_video, with_predicted_keypoints)
from actparse.paint import PaintConfig
from actparse.params import get
from actparse.paths import Paths, check_outside, data_root
from actparse.atomic import write_json

log = logging.getLogger("actparse.train_part_detector")
NAME = "part_detector"
S = "parts"
MIN_PART = 2.0  # crop pixels: thinner part boxes are dropped


def crop_labels(tf, gt_part_boxes, gt_part_visible, scale: float, crop_size: int):
    """GT part boxes (original pixels, 10x4) of one person -> (boxes in crop pixels, class ids)."""
    pb = np.asarray(gt_part_boxes, dtype=np.float64).reshape(NUM_PARTS, 4) * scale
    vis = np.asarray(gt_part_visible, bool).reshape(NUM_PARTS)
    cb = np.clip(tf.boxes_to_crop(pb), 0, crop_size)
    keep = vis & ((cb[:, 2] - cb[:, 0]) >= MIN_PART) & ((cb[:, 3] - cb[:, 1]) >= MIN_PART)
    return cb[keep], np.nonzero(keep)[0]


def run(params: dict, root: Path) -> None:
    weights = get(params, f"{S}.weights", str)
    if weights:  # dvc repro removes the stage's outputs first: a model given from there would be lost
        check_outside(weights, Paths(root).models / NAME, f"{S}.weights")
    with model_folder(Paths(root).models / NAME) as model_dir:  # replaces the old folder only on success
        train_into(model_dir, params, root)


def train_into(model_dir: Path, params: dict, root: Path) -> None:
    paths = Paths(root)
    weights = get(params, f"{S}.weights", str)
    finetune = get(params, f"{S}.finetune", bool)
    val_fraction = get(params, f"{S}.val_fraction", float, min_value=0.0, max_value=0.9)
    frame_step = get(params, f"{S}.frame_step", int, min_value=1)
    cfg = PaintConfig.from_params(params, S)
    yolo.configure()
    paint_info = {"paint": cfg.paint, "crop_size": cfg.crop_size, "crop_margin": cfg.margin, "kp_thr": cfg.kp_thr,
                  "dot_radius": cfg.radius}
    droot = data_root(params, root)
    gt_path = gt_persons_path(droot)
    no_parts = None if gt_has_parts(gt_path) else (
        f"{gt_path} has no part ground truth" if gt_path.exists() else f"{gt_path} does not exist")
    if no_parts and finetune and weights:
        raise ValueError(f"{no_parts}: cannot fine-tune parts.weights on it; set parts.finetune: false to use "
                         f"parts.weights as given")
    if weights and not finetune:
        m = yolo.load_model(weights)
        names = yolo.model_names(m)
        if names != list(PARTS):
            raise ValueError(f"{weights}: part detector classes {names} differ from the parts {list(PARTS)}")
        yolo.finish_model_dir(model_dir, None, weights, {"classes": names, **paint_info})
        return
    if no_parts:
        log.warning("%s: part detector skipped (not trained); detect_parts writes no part boxes and the "
                    "part metrics are skipped. Set parts.weights to a trained part detector to detect parts",
                    no_parts)
        write_json({"trained": False, "skipped": f"{no_parts}; no parts.weights given", **paint_info},
                   model_dir / "train_info.json")
        return
    args = yolo.train_args(params, S)
    args["fliplr"] = 0.0  # a mirrored crop would need left/right labels swapped
    args["hsv_h"] = get(params, f"{S}.hsv_h", float, min_value=0.0, max_value=0.5)

    splits = split_of(load_videos(droot))
    train_videos = sorted(v for v, s in splits.items() if s == "train")
    if not train_videos:
        raise ValueError(f"{droot / 'videos.parquet'}: no videos in the train split")
    source = get(params, f"{S}.train_persons", str, choices=("detected", "gt"))
    if source == "gt":
        refined = gt_persons_by_video(gt_path, train_videos)
        if cfg.paint and not gt_has_keypoints(gt_path):
            log.info("%s has no keypoint ground truth: GT person crops are painted with the keypoints "
                     "of the refined person that matches each one (IoU >= 0.5), none where none matches", gt_path)
            refined = with_predicted_keypoints(refined, refined_by_video(paths.part_train_persons, train_videos))
    else:
        refined = refined_by_video(paths.part_train_persons, train_videos)
    gt = gt_index(gt_path, train_videos, columns=("box", "part_boxes", "part_visible"))
    images, boxes, classes, groups, stems = [], [], [], [], []
    n_persons = n_unmatched = 0
    for video, table in tqdm(frames_by_video(paths.frames, train_videos), desc="part data", unit="video",
                             disable=None):
        persons = refined.get(video)
        if persons is None or not len(persons):
            continue
        imgs, frames, scales, _ = decode_frames(table)
        keep_frames = set(int(f) for f in frames[::frame_step])
        persons = persons[persons["frame"].isin(keep_frames)]
        crops = person_crops(imgs, frames, scales, persons, cfg)
        by_frame: dict[int, list[dict]] = {}
        for c in crops:
            by_frame.setdefault(c["frame"], []).append(c)
        for f, cs in by_frame.items():
            n_persons += len(cs)
            rec = gt.get((video, f))
            if rec is None:
                n_unmatched += len(cs)
                continue
            pairs = match_greedy(np.stack([c["box"] for c in cs]), rec["box"], 0.5)
            n_unmatched += len(cs) - len(pairs)
            for i, j in pairs:
                c = cs[i]
                b, k = crop_labels(c["tf"], rec["part_boxes"][j], rec["part_visible"][j], c["scale"], cfg.crop_size)
                images.append(c["crop"])
                boxes.append(b)
                classes.append(k)
                groups.append(video)
                stems.append(f"{video}_{f:06d}_{c['person']:03d}".replace("/", "__"))  # MultiSports names hold a "/"
    if not images:
        raise ValueError(f"{paths.refined}: no refined person of the train frames matches a GT person "
                         f"(IoU >= 0.5); {n_persons} persons seen. The person detector or HRNet may be "
                         f"undertrained: train longer, or set parts.train_persons: gt to train on GT boxes")
    work = model_dir / "_work"
    shutil.rmtree(work, ignore_errors=True)
    try:
        val_mask = yolo.split_by_group(groups, val_fraction, seed=args["seed"])
        data_yaml = yolo.export_dataset(work / "data", images, boxes, classes, list(PARTS), val_mask=val_mask,
                                        stems=stems)
        log.info("training %s on %d crops (%d val; %d of %d persons unmatched), paint=%s", args["model"],
                 int((~val_mask).sum()), int(val_mask.sum()), n_unmatched, n_persons, cfg.paint)
        result = yolo.train(data_yaml, work / "runs", weights=weights if finetune else None, **args)
        yolo.finish_model_dir(model_dir, result, weights, {"model": args["model"], "imgsz": args["imgsz"], **paint_info,
                                            "train_persons": source, "persons_seen": n_persons, "persons_unmatched": n_unmatched})
        log.info("part detector: val mAP50 %.3f after %.0fs", result.map50, result.seconds)
        dead = result.unlearned()
        if dead:
            log.warning("part detector: val AP@0.5 below 0.01 for %s: not learned. Small parts that lie "
                        "inside a larger part's box (hands, feet) need a larger parts.imgsz or more "
                        "epochs (see docs/detection.md)", ", ".join(dead))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    return stage_main("train_part_detector", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
