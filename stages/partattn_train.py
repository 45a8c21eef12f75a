"""Train the seed 000 part-state network: part RoI features + human context + attention across parts + action.

Reads:  <data.root>/videos.parquet (train split, video actions), the train videos and
        <data.root>/gt_persons.parquet (person boxes, part boxes, part visibility and states).
Writes: artifacts/models/partattn/model.pt         weights, architecture, action list
        artifacts/models/partattn/train_info.json  loss history (with partattn.val_fraction > 0 also the
          held-out part-state accuracy per epoch), ablation switches, timings
        artifacts/skips/partattn_train.parquet     train videos without ground truth or not decodable
Training samples are ground-truth persons on random frames of the train videos (every frame is a
candidate key frame); the action input is the video's action class; visible parts are the targets.
With partattn.enabled false it only writes train_info.json {"enabled": false}.
Params: seed (or partattn.seed, when set), partattn.* (enabled, seed, roi_mode, use_action, use_attention, use_context, augment,
        input_size, num_frames, interval, dim, heads, roi_size, part_crop, dropout, stem_dim,
        stage_depths, epochs, samples_per_video, batch_size, lr, weight_decay, margin, val_fraction,
        stride (the validation's key frames), pretrained.path / pretrained.format: SlowOnly R50 weights
        the person (and part) backbone start from, pytorchvideo | pyslowfast | mmaction2; docs/checkpoints.md).
With partattn.val_fraction > 0 a seeded share of the train videos, per action (an action keeps at
least one video in training), is held out: after every epoch the part-state accuracy of the
ground-truth persons of those videos on every partattn.stride-th frame (visible parts with a known
state; ground-truth part boxes and video action as inputs) goes into train_info.json and the progress
lines. The validation only watches: the weights are those of a training without it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from actparse.params import ParamError, get, resolve_device, system_seed
from actparse.paths import Paths, data_root
from actparse.atomic import write_json
from actparse.schemas import read_df
from actparse.stage import (SkipLedger, progress, given_model, model_folder, seed_disabled, stage_log, stage_main,
                            use_given_model)

log = stage_log("partattn_train")


def gt_person_samples(g, video_index: int, action: int, with_targets: bool = True, frames=None) -> list:
    """PersonSample per ground-truth row of one video (optionally only ``frames``)."""
    from actparse.constants import NUM_PARTS
    from actparse.partattn import PersonSample, state_targets

    if frames is not None:
        g = g[g["frame"].isin(set(int(f) for f in frames))]
    out = []
    for r in g.itertuples(index=False):
        vis = np.asarray(r.part_visible, bool)
        out.append(PersonSample(video_index, int(r.frame), np.asarray(r.box, np.float64),
                                np.asarray(r.part_boxes, np.float64).reshape(NUM_PARTS, 4), vis, action,
                                state_targets(list(r.part_states), vis) if with_targets else None))
    return out


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    if seed_disabled(params, "partattn", "partattn_train", root, model_dir=paths.models / "partattn", skips=True):
        return
    given = given_model(params, "partattn", root)
    if given is not None:  # partattn.model: a trained folder (model.pt) used as is
        from actparse.partattn import load_checkpoint

        use_given_model(given, paths.models / "partattn", "partattn", "partattn_train", root, ["model.pt"],
                        lambda d: load_checkpoint(d / "model.pt", "cpu"))
        return

    from actparse.constants import ACTIONS
    from actparse.dataset import gt_persons_path, load_videos, video_path
    from actparse.video import LazyVideo, decode_backend
    from actparse.models.partattn import PartStateNet
    from actparse.partattn import config_from_params, fit, save_checkpoint, settings_from_params
    from actparse.train import seed_everything
    from actparse.video import VideoError
    from actparse.weights.resnet3d import load_slowonly, pretrained_from_params

    val_fraction = get(params, "partattn.val_fraction", float, min_value=0.0)
    if val_fraction >= 1.0:  # the schema's bound: an action keeps at least one video in training
        raise ParamError.of(params, f"parameter 'partattn.val_fraction' must be < 1.0, "
                         f"got {val_fraction!r}")
    seed = system_seed(params, "partattn")
    device = resolve_device(params)
    seed_everything(seed)
    droot = data_root(params, root)
    videos = load_videos(droot).to_pandas()
    train = videos[(videos["split"] == "train") & videos["action"].notna()].reset_index(drop=True)
    if train.empty:
        raise ValueError(f"{droot / 'videos.parquet'}: no labelled train videos for partattn")
    actions = sorted(set(train["action"]) | set(ACTIONS))
    cfg = config_from_params(params, len(actions))
    s = settings_from_params(params)
    model = PartStateNet(cfg)
    pretrained, pre_format = pretrained_from_params(params, "partattn")
    if pretrained is not None:  # the person backbone (and, in crop mode, the part backbone); fails fast
        for bb in [model.backbone] + ([model.part_backbone] if hasattr(model, "part_backbone") else []):
            load_slowonly(bb, pretrained, pre_format, "partattn")
    gt = read_df(gt_persons_path(droot), "gt_persons",
                 columns=["video", "frame", "person", "box", "part_boxes", "part_visible", "part_states"])
    by_video = {v: g for v, g in gt.groupby("video", sort=False)}
    held: list[str] = []
    if val_fraction > 0:  # held-out train videos, watched after every epoch
        from actparse.train import val_split

        labelled = train[train["video"].isin(by_video)]
        held = val_split(list(labelled["video"]), [str(a) for a in labelled["action"]], val_fraction, seed)
        log.info("held out %d of %d train videos for validation (partattn.val_fraction %s)", len(held), len(train),
                 val_fraction)
    t0, c0 = time.time(), time.process_time()
    decoded, pools = [], []
    ledger = SkipLedger("partattn_train", root, what="train videos")
    for row in progress(list(train[~train["video"].isin(held)].itertuples(index=False)), "partattn_train",
                        "videos decoded"):
        g = by_video.get(row.video)
        if g is None:
            ledger.skip(row.video, "train video has no ground truth")
            continue
        ledger.tried(row.video)
        try:
            v = LazyVideo(video_path(droot, row.path), backend=decode_backend(params))  # decoded when a sample needs them
        except (VideoError, ValueError) as exc:
            ledger.skip(row.video, exc)
            continue
        pools.append(gt_person_samples(g, len(decoded), actions.index(row.action)))
        decoded.append(v)
    val = None
    if held:  # the ground-truth persons on every partattn.stride-th frame of the held-out videos
        stride = get(params, "partattn.stride", int, min_value=1)
        vvideos, vsamples, vnames = [], [], []
        for row in train[train["video"].isin(held)].itertuples(index=False):
            ledger.tried(row.video)
            try:
                v = LazyVideo(video_path(droot, row.path), backend=decode_backend(params))
            except (VideoError, ValueError) as exc:
                ledger.skip(row.video, exc)
                continue
            g = by_video[row.video]
            frames = [f for f in sorted(set(g["frame"].astype(int))) if f % stride == 0]
            vsamples.extend(gt_person_samples(g, len(vvideos), actions.index(row.action), frames=frames))
            vvideos.append(v)
            vnames.append(row.video)
        if any((smp.targets >= 0).any() for smp in vsamples):
            val = (vvideos, vsamples)
        else:
            log.warning("partattn: the %d held-out videos have no visible part with a known state on their key "
                        "frames; no per-epoch validation", len(held))
    ledger.check(droot)
    t_load = time.time() - t0
    t1 = time.time()
    hist = fit(model, decoded, pools, s, seed=seed, device=device, val=val)
    t_fit = time.time() - t1
    with model_folder(paths.models / "partattn") as out:  # replaces the old folder only on success
        save_checkpoint(model, out / "model.pt", actions, extra={"settings": s.to_dict()})
        write_json({"enabled": True, "config": cfg.to_dict(), "settings": s.to_dict(), "actions": actions,
                    "pretrained": str(pretrained) if pretrained else None, "pretrained_format": pre_format,
                    "train_videos": len(decoded), "train_persons": int(sum(len(p) for p in pools)),
                    "parameters": int(sum(p.numel() for p in model.parameters())), "loss": hist["loss"],
                    **({"val_videos": vnames, "val_persons": len(val[1]), "val_acc": hist["val_acc"]}
                       if val is not None else {}),
                    "seconds": {"load": round(t_load, 1), "train": round(t_fit, 1)},
                    "cpu_seconds": round(time.process_time() - c0, 1), "device": device}, out / "train_info.json")
    ledger.write()
    log.info(f"roi {cfg.roi_mode}, action {cfg.use_action}, attention {cfg.use_attention}, "
             f"augment {s.augment}: {len(decoded)} videos, {t_fit:.0f}s, "
             f"loss {hist['loss'][-1] if hist['loss'] else float('nan'):.4f} -> {paths.models / 'partattn'}")


def main(argv=None):
    return stage_main("partattn_train", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
