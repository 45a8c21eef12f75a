"""Train the top-down HRNet keypoint model on GT persons of the train split.

Reads:  artifacts/frames.parquet (JPEG frames), <data.root>/videos.parquet (splits) and
        <data.root>/gt_persons.parquet (GT person boxes + 17 COCO keypoints with visibility).
Writes: artifacts/models/pose/model.pt (our checkpoint: arch, input_size, num_keypoints, state_dict) and
        artifacts/models/pose/train_info.json (epochs, loss per epoch, time, PCK@0.2 / mean error / OKS
        on held-out train videos, and on the test split with GT boxes when keypoints.eval_test).
Params: seed, device, keypoints.arch (hrnet_w18_small | hrnet_w18_small_v2 | hrnet_w18 | hrnet_w32 |
        hrnet_w48), keypoints.input_size [h, w], keypoints.checkpoint (optional: our or an mmpose HRNet
        .pth to start from; with keypoints.epochs 0 it is used as is), keypoints.epochs, batch_size, lr,
        weight_decay, sigma, val_fraction, aug_scale, aug_rotation, aug_shift, aug_flip, flip_test,
        infer_batch, eval_test.
Ground truth without keypoints (Kinetics-TPS, MultiSports imports: gt_persons.keypoints null, or no
gt_persons.parquet): nothing is trained or scored; keypoints.checkpoint is used as given, whatever
keypoints.epochs says (train_info.json "skipped" says why), and the stage stops (exit 2) without one.
Model: timm HRNet backbone (raw stride-4 branch of stage 4) + 1x1 conv heatmap head, trained from
scratch with Adam, MSE heatmap loss weighted by keypoint visibility, random scale/rotation/shift/flip.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from actparse.stage import model_folder, stage_main
from actparse.dataset import gt_has_keypoints, gt_persons_path, load_videos, split_of
from actparse.hrnet import ARCHS, build_pose_model, load_checkpoint, save_checkpoint
from actparse.params import get, resolve_device
from actparse.paths import Paths, data_root
from actparse.pose import AugmentConfig, PoseEstimator, evaluate_samples, input_size_param, load_pose_samples, train
from actparse.schemas import write_json

log = logging.getLogger("actparse.train_pose")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(params: dict, root: Path) -> None:
    with model_folder(Paths(root).models / "pose") as out_dir:  # replaces the old folder only on success
        train_into(out_dir, params, root)


def train_into(out_dir: Path, params: dict, root: Path) -> None:
    paths = Paths(root)
    seed = get(params, "seed", int, default=0)
    arch = get(params, "keypoints.arch", str, default="hrnet_w18_small", choices=ARCHS)
    input_size = input_size_param(params)
    checkpoint = get(params, "keypoints.checkpoint", str, default=None)
    epochs = get(params, "keypoints.epochs", int, default=5, min_value=0)
    batch_size = get(params, "keypoints.batch_size", int, default=32, min_value=2)
    lr = get(params, "keypoints.lr", float, default=2e-3, min_value=0.0)
    weight_decay = get(params, "keypoints.weight_decay", float, default=0.0, min_value=0.0)
    sigma = get(params, "keypoints.sigma", float, default=2.0, min_value=0.1)
    val_fraction = get(params, "keypoints.val_fraction", float, default=0.1, min_value=0.0, max_value=0.9)
    aug = AugmentConfig(scale=get(params, "keypoints.aug_scale", float, default=0.25, min_value=0.0, max_value=0.9),
                        rotation=get(params, "keypoints.aug_rotation", float, default=30.0, min_value=0.0),
                        shift=get(params, "keypoints.aug_shift", float, default=0.1, min_value=0.0),
                        flip=get(params, "keypoints.aug_flip", bool, default=True))
    flip_test = get(params, "keypoints.flip_test", bool, default=False)
    infer_batch = get(params, "keypoints.infer_batch", int, default=64, min_value=1)
    eval_test = get(params, "keypoints.eval_test", bool, default=True)
    device = resolve_device(params)
    seed_everything(seed)
    t0 = time.time()

    droot = data_root(params, root)
    splits = split_of(load_videos(droot))
    gt_path = gt_persons_path(droot)
    no_kp_gt = None if gt_has_keypoints(gt_path) else (
        f"{gt_path} has no keypoint ground truth" if gt_path.exists() else f"{gt_path} does not exist")
    if no_kp_gt and not checkpoint:
        raise ValueError(f"{no_kp_gt} (data.root {droot}): set keypoints.checkpoint to a trained HRNet "
                         f"checkpoint (ours or mmpose); it is used as given, the pose model cannot be trained here")
    if no_kp_gt:
        log.warning("%s: no pose training and no PCK evaluation; using keypoints.checkpoint %s as given "
                    "(keypoints.epochs %d not used)", no_kp_gt, checkpoint, epochs)
        epochs = 0
    train_videos = sorted(v for v, s in splits.items() if s == "train")
    rng = np.random.default_rng(seed)
    shuffled = list(rng.permutation(train_videos)) if train_videos else []
    n_val = int(round(val_fraction * len(shuffled))) if len(shuffled) > 1 else 0
    val_videos, fit_videos = set(shuffled[:n_val]), set(shuffled[n_val:])

    if checkpoint:
        ck = Path(checkpoint)
        ck = ck if ck.is_absolute() else Path(root) / ck
        model, info = load_checkpoint(ck)
        if info["arch"] != arch:
            log.info("checkpoint %s is %s (keypoints.arch %s ignored)", ck, info["arch"], arch)
        if info["input_size"] and tuple(info["input_size"]) != input_size:
            log.warning("checkpoint %s was trained at input %s, using keypoints.input_size %s",
                        ck, info["input_size"], input_size)
        start = f"{info['format']}:{ck.name}"
    else:
        model = build_pose_model(arch)
        start = "scratch"

    history: list[float] = []
    n_fit = 0
    if epochs > 0:
        fit, stats = load_pose_samples(paths.frames, gt_path, fit_videos)
        n_fit = len(fit)
        if n_fit < 2:
            raise ValueError(f"{paths.frames} + {gt_path}: only {n_fit} GT persons on train-split frames; "
                             f"cannot train the pose model")
        log.info("training %s on %d persons (%d frames) for %d epochs", model.arch, n_fit, stats["frames"], epochs)
        history = train(model, fit, epochs, input_size, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                        sigma=sigma, aug=aug, seed=seed, device=device)
        del fit
    train_time = time.time() - t0

    save_checkpoint(model, out_dir / "model.pt", input_size, extra={"start": start, "epochs": epochs})

    estimator = PoseEstimator(model, input_size, device, flip_test=flip_test, batch_size=infer_batch)
    result = {"arch": model.arch, "input_size": list(input_size), "start": start, "epochs": epochs,
              "loss": history, "final_loss": history[-1] if history else None, "n_train_persons": n_fit,
              "train_videos": len(fit_videos), "val_videos": len(val_videos), "flip_test": flip_test,
              "train_time_s": round(train_time, 1), "device": device}
    if no_kp_gt:
        result["skipped"] = {"training": f"{no_kp_gt}: keypoints.checkpoint used as given",
                             "pck": f"{no_kp_gt}: nothing to score the keypoints against"}
        val_videos, eval_test = set(), False
    if val_videos:
        val, _ = load_pose_samples(paths.frames, gt_path, val_videos)
        result["val"] = evaluate_samples(estimator, val)
        log.info("held-out train videos: PCK@0.2 %.3f, mean error %.2f px", result["val"]["pck"],
                 result["val"]["mean_error_px"])
    test_videos = {v for v, s in splits.items() if s == "test"}
    if eval_test and test_videos:
        test, _ = load_pose_samples(paths.frames, gt_path, test_videos)
        result["test_gt_boxes"] = evaluate_samples(estimator, test)
        log.info("test split, GT boxes: PCK@0.2 %.3f, OKS %.3f", result["test_gt_boxes"]["pck"],
                 result["test_gt_boxes"]["oks"])
    result["time_s"] = round(time.time() - t0, 1)
    write_json(result, out_dir / "train_info.json")


def main(argv=None) -> int:
    return stage_main("train_pose", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
