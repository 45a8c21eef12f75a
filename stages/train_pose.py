"""Train the top-down HRNet keypoint model on GT persons of the train split.

Reads:  artifacts/frames.parquet (JPEG frames), <data.root>/videos.parquet (splits) and
        <data.root>/gt_persons.parquet (GT person boxes + 17 COCO keypoints with visibility).
Writes: artifacts/models/pose/model.pt (our checkpoint: arch, input_size, num_keypoints, state_dict) and
        artifacts/models/pose/train_info.json (epochs, loss and held-out PCK@0.2 per epoch, time, PCK@0.2 /
        mean error / OKS on held-out train videos, and on the test split with GT boxes when keypoints.eval_test).
Params: seed, device, keypoints.arch (hrnet_w18_small | hrnet_w18_small_v2 | hrnet_w18 | hrnet_w32 |
        hrnet_w48), keypoints.input_size [h, w], keypoints.checkpoint (optional: our or an mmpose HRNet
        .pth to start from; with keypoints.epochs 0 it is used as is, at its own input size, and no
        ground truth is needed), keypoints.epochs, batch_size, lr,
        weight_decay, sigma, val_fraction, aug_scale, aug_rotation, aug_shift, aug_flip, flip_test,
        infer_batch, eval_test, keypoints.backend (hrnet | mmpose), keypoints.mmpose_config.
Ground truth without keypoints (Kinetics-TPS, MultiSports imports: gt_persons.keypoints null): nothing
is trained or scored; keypoints.checkpoint is used as given, whatever keypoints.epochs says
(train_info.json "skipped" says why), and the stage stops (exit 2) without one.
Model: timm HRNet backbone (raw stride-4 branch of stage 4) + 1x1 conv heatmap head, trained from
scratch with Adam, MSE heatmap loss weighted by keypoint visibility, random scale/rotation/shift/flip.
With keypoints.backend 'mmpose' (optional install extra) nothing is trained: keypoints.mmpose_config (an
mmpose top-down config) and keypoints.checkpoint (its weights) are used as they are, keypoints.epochs must
be 0; the stage writes the resolved config and the weights (mmpose_config.py, mmpose_weights.pth) and
train_info.json with the same evaluation (see docs/pose.md).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np

from actparse import determinism
from actparse.stage import model_folder, stage_main
from actparse.dataset import gt_has_keypoints, gt_persons_path, load_videos, split_of
from actparse.hrnet import ARCHS, build_pose_model, load_checkpoint, save_checkpoint
from actparse.params import get, resolve_device
from actparse.paths import Paths, check_outside, data_root
from actparse.pose import AugmentConfig, PoseEstimator, evaluate_samples, input_size_param, load_pose_samples, train
from actparse.atomic import write_json
from actparse.train import seed_everything

log = logging.getLogger("actparse.train_pose")


BACKENDS = ("hrnet", "mmpose")


def run(params: dict, root: Path) -> None:
    with model_folder(Paths(root).models / "pose") as out_dir:  # replaces the old folder only on success
        if get(params, "keypoints.backend", str, choices=BACKENDS) == "mmpose":
            export_mmpose_into(out_dir, params, root)
        else:
            train_into(out_dir, params, root)


def train_into(out_dir: Path, params: dict, root: Path) -> None:
    paths = Paths(root)
    seed = get(params, "seed", int)
    arch = get(params, "keypoints.arch", str, choices=ARCHS)
    input_size = input_size_param(params)
    checkpoint = get(params, "keypoints.checkpoint", str)
    epochs = get(params, "keypoints.epochs", int, min_value=0)
    batch_size = get(params, "keypoints.batch_size", int, min_value=2)
    lr = get(params, "keypoints.lr", float, min_value=0.0)
    weight_decay = get(params, "keypoints.weight_decay", float, min_value=0.0)
    sigma = get(params, "keypoints.sigma", float, min_value=0.1)
    val_fraction = get(params, "keypoints.val_fraction", float, min_value=0.0, max_value=0.9)
    aug = AugmentConfig(scale=get(params, "keypoints.aug_scale", float, min_value=0.0, max_value=0.9),
                        rotation=get(params, "keypoints.aug_rotation", float, min_value=0.0),
                        shift=get(params, "keypoints.aug_shift", float, min_value=0.0),
                        flip=get(params, "keypoints.aug_flip", bool))
    flip_test = get(params, "keypoints.flip_test", bool)
    infer_batch = get(params, "keypoints.infer_batch", int, min_value=1)
    eval_test = get(params, "keypoints.eval_test", bool)
    device = resolve_device(params)
    seed_everything(seed)
    t0 = time.time()

    droot = data_root(params, root)
    splits = split_of(load_videos(droot))
    gt_path = gt_persons_path(droot)
    has_gt = gt_path.exists()
    if not has_gt and epochs > 0:
        raise FileNotFoundError(f"{gt_path}: GT persons needed to train the pose model (keypoints.epochs={epochs}); "
                                f"give a trained keypoints.checkpoint with keypoints.epochs: 0 for a data set without GT")
    no_kp_gt = f"{gt_path} has no keypoint ground truth" if has_gt and not gt_has_keypoints(gt_path) else None
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
        check_outside(ck, paths.models / "pose", "keypoints.checkpoint")
        model, info = load_checkpoint(ck)
        if info["arch"] != arch:
            log.info("checkpoint %s is %s (keypoints.arch %s ignored)", ck, info["arch"], arch)
        if info["input_size"] and tuple(info["input_size"]) != input_size and epochs == 0:
            input_size = tuple(int(x) for x in info["input_size"])  # used as is: at the size it was trained at
            log.info("checkpoint %s used as is at its input size %s", ck, input_size)
        elif info["input_size"] and tuple(info["input_size"]) != input_size:
            log.warning("checkpoint %s was trained at input %s, using keypoints.input_size %s",
                        ck, info["input_size"], input_size)
        start = f"{info['format']}:{ck.name}"
    else:
        model = build_pose_model(arch)
        start = "scratch"
        if epochs == 0:
            log.warning("keypoints.epochs is 0 and no keypoints.checkpoint is given: the pose model is untrained")

    history: list[float] = []
    val_pck: list[float] = []  # per epoch, when videos are held out
    watched = None  # the held-out samples, once loaded
    n_fit = 0
    if epochs > 0:
        fit, stats = load_pose_samples(paths.frames, gt_path, fit_videos)
        n_fit = len(fit)
        if n_fit < 2:
            raise ValueError(f"{paths.frames} + {gt_path}: only {n_fit} GT persons on train-split frames; "
                             f"cannot train the pose model")
        log.info("training %s on %d persons (%d frames) for %d epochs", model.arch, n_fit, stats["frames"], epochs)
        def watch() -> float:  # PCK@0.2 on the held-out videos after every epoch
            est = PoseEstimator(model, input_size, device, flip_test=flip_test, batch_size=infer_batch)
            val_pck.append(round(float(evaluate_samples(est, watched)["pck"]), 6))
            return val_pck[-1]

        if val_videos and has_gt and not no_kp_gt:
            watched, _ = load_pose_samples(paths.frames, gt_path, val_videos)
        history = train(model, fit, epochs, input_size, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                        sigma=sigma, aug=aug, seed=seed, device=device,
                        validate=watch if watched is not None else None)
        del fit
    train_time = time.time() - t0

    save_checkpoint(model, out_dir / "model.pt", input_size, extra={"start": start, "epochs": epochs})

    estimator = PoseEstimator(model, input_size, device, flip_test=flip_test, batch_size=infer_batch)
    result = {"arch": model.arch, "input_size": list(input_size), "start": start, "epochs": epochs,
              "loss": history, "val_pck": val_pck, "final_loss": history[-1] if history else None,
              "n_train_persons": n_fit,
              "train_videos": len(fit_videos), "val_videos": len(val_videos), "flip_test": flip_test,
              "train_time_s": round(train_time, 1), "device": device, "determinism": determinism.report()}
    if no_kp_gt:
        result["skipped"] = {"training": f"{no_kp_gt}: keypoints.checkpoint used as given",
                             "pck": f"{no_kp_gt}: nothing to score the keypoints against"}
        has_gt = False  # no keypoints to score against
    elif not has_gt:
        log.info("%s: no ground truth: pose metrics skipped (checkpoint used as is)", gt_path)
    if val_videos and has_gt:
        val = watched if watched is not None else load_pose_samples(paths.frames, gt_path, val_videos)[0]
        result["val"] = evaluate_samples(estimator, val)
        log.info("held-out train videos: PCK@0.2 %.3f, mean error %.2f px", result["val"]["pck"],
                 result["val"]["mean_error_px"])
    test_videos = {v for v, s in splits.items() if s == "test"}
    if eval_test and test_videos and has_gt:
        test, _ = load_pose_samples(paths.frames, gt_path, test_videos)
        result["test_gt_boxes"] = evaluate_samples(estimator, test)
        log.info("test split, GT boxes: PCK@0.2 %.3f, OKS %.3f", result["test_gt_boxes"]["pck"],
                 result["test_gt_boxes"]["oks"])
    result["time_s"] = round(time.time() - t0, 1)
    write_json(result, out_dir / "train_info.json")


def _eval_sets(params: dict, root: Path) -> dict[str, tuple]:
    """{'val' | 'test_gt_boxes': (frames path, GT path, videos)}, as the HRNet branch evaluates them."""
    paths = Paths(root)
    droot = data_root(params, root)
    gt_path = gt_persons_path(droot)
    if not gt_has_keypoints(gt_path):  # no GT, or GT without keypoints (Kinetics-TPS, MultiSports)
        if gt_path.exists():
            log.warning("%s has no keypoint ground truth: no PCK evaluation", gt_path)
        return {}
    seed = get(params, "seed", int)
    val_fraction = get(params, "keypoints.val_fraction", float, min_value=0.0, max_value=0.9)
    splits = split_of(load_videos(droot))
    train_videos = sorted(v for v, s in splits.items() if s == "train")
    shuffled = list(np.random.default_rng(seed).permutation(train_videos)) if train_videos else []
    n_val = int(round(val_fraction * len(shuffled))) if len(shuffled) > 1 else 0
    out = {}
    if n_val:
        out["val"] = (paths.frames, gt_path, set(shuffled[:n_val]))
    test_videos = {v for v, s in splits.items() if s == "test"}
    if get(params, "keypoints.eval_test", bool) and test_videos:
        out["test_gt_boxes"] = (paths.frames, gt_path, test_videos)
    return out


def export_mmpose_into(out_dir: Path, params: dict, root: Path) -> None:
    """keypoints.backend 'mmpose': check the config + checkpoint, export them into ``out_dir``, evaluate."""
    from actparse import mmpose_backend as mb
    from actparse.params import ParamError, where_of

    where = where_of(params)
    epochs = get(params, "keypoints.epochs", int, min_value=0)
    if epochs != 0:
        raise ParamError(f"{where}: keypoints.backend 'mmpose' does not train: it uses keypoints.checkpoint as it "
                         f"is, so keypoints.epochs must be 0 (got {epochs}); fine-tune with mmpose's own tools "
                         f"(tools/train.py), or train here with keypoints.backend 'hrnet'")
    config = get(params, "keypoints.mmpose_config", str)
    checkpoint = get(params, "keypoints.checkpoint", str)
    if not config or not checkpoint:
        raise ParamError(f"{where}: keypoints.backend 'mmpose' needs keypoints.mmpose_config (an mmpose top-down "
                         f"config) and keypoints.checkpoint (its .pth weights, a local path); got "
                         f"mmpose_config={config!r}, checkpoint={checkpoint!r}")
    device = resolve_device(params)
    t0 = time.time()
    cfg_path = mb.resolve_config_path(config, root)
    ck = Path(checkpoint)
    ck = ck if ck.is_absolute() else Path(root) / ck
    cfg = mb.load_config(cfg_path)
    sd, _ = mb.load_weights(ck)
    model = mb.build_model(cfg, sd, ck, device)
    mb.export(cfg, model.state_dict(), out_dir, {"config": config, "checkpoint": ck.name})
    estimator = mb.MMPoseEstimator(model, flip_test=get(params, "keypoints.flip_test", bool),
                                   batch_size=get(params, "keypoints.infer_batch", int, min_value=1))
    result = {"backend": "mmpose", "mmpose_config": config, "checkpoint": ck.name, "epochs": 0, "loss": [],
              "final_loss": None, "input_size": list(estimator.input_size) if estimator.input_size else None,
              "num_keypoints": estimator.num_keypoints, "flip_test": bool(model.test_cfg.get("flip_test", False)),
              "device": device}
    for name, (frames, gt_path, videos) in _eval_sets(params, root).items():
        samples, _ = load_pose_samples(frames, gt_path, videos)
        result[name] = mb.evaluate(estimator, samples)
        log.info("%s: PCK@0.2 %.3f, OKS %.3f (mmpose %s)", name, result[name]["pck"], result[name]["oks"], cfg_path.name)
    result["time_s"] = round(time.time() - t0, 1)
    write_json(result, out_dir / "train_info.json")


def main(argv=None) -> int:
    return stage_main("train_pose", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
