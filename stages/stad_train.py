"""Train the seed 003 spatio-temporal action detector: SlowFast + Person-Context Cross Attention.

Reads:  <data.root>/videos.parquet, the train-split videos, <data.root>/gt_persons.parquet (person
        boxes and per-frame actions) and <data.root>/annotations/multisports_gt.pkl (class list).
Writes: artifacts/models/stad/phase1.pt   after phase 1 (standard sampling, whole network)
        artifacts/models/stad/model.pt     the final model (after phase 2 when stad.decoupled)
        artifacts/models/stad/train_info.json   loss history (with stad.val_fraction > 0 also the
          held-out top-1 per epoch of both phases), class counts, timings
        artifacts/skips/stad_train.parquet      train videos without ground truth or not decodable
Trains on every frame of the train videos as a key frame (ground-truth boxes, sigmoid + BCE on the
person's current action). Phase 2 (decoupled learning) freezes everything but the classifier and
retrains it with class-balanced sampling on cached RoI features.
With stad.enabled false it only writes train_info.json {"enabled": false} (a no-op DAG stage).
Params: seed (or stad.seed, when set), stad.* (enabled, seed, head, depth, stage_depths, stem_dim, beta_inv, alpha, output_stride,
        fusion_kernel, lateral_norm, pretrained.path / pretrained.format (backbone weights to start
        from: pytorchvideo | pyslowfast | mmaction2; docs/checkpoints.md),
        num_frames, interval, short_side, roi_size, context_scale, dim, heads, layers, dropout,
        epochs, samples_per_video, batch_size, lr, momentum, weight_decay, warmup_epochs, lr_steps,
        lr_gamma, flip, decoupled, decoupled_epochs, decoupled_lr, decoupled_reinit,
        decoupled_keyframes, train_scales, scale_batch_sizes, val_fraction; stride: the validation's
        key frames).
With stad.val_fraction > 0 a seeded share of the train videos (per video action where videos.parquet
gives one; a class keeps at least one video in training) is held out: after every epoch of both
phases, the action top-1 of the ground-truth persons with an action on every stad.stride-th frame of
those videos (scored as stad_detect scores, at stad.short_side) goes into train_info.json and the
progress lines. The validation only watches: the weights are those of a training without it.
stad.train_scales (seed 003: [256, 360]): videos are decoded at the largest short side and each
phase-1 batch is resized to a random one of them (batch size from stad.scale_batch_sizes).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from actparse import safe_pickle
from actparse.params import ParamError, get, resolve_device, system_seed
from actparse.paths import Paths, data_root
from actparse.atomic import write_json
from actparse.schemas import read_df
from actparse.stage import (SkipLedger, progress, given_model, model_folder, seed_disabled, stage_log, stage_main,
                            use_given_model)

log = stage_log("stad_train")


def class_list(droot: Path) -> list[str]:
    """Action classes: ``labels`` of the MultiSports ground truth (the index space of its tubes)."""
    pkl = droot / "annotations" / "multisports_gt.pkl"
    if not pkl.exists():
        raise FileNotFoundError(f"{pkl}: MultiSports ground truth not found (the class list of stad)")
    gt = safe_pickle.load(pkl)  # allow-listed: containers and numpy arrays only
    if not isinstance(gt, dict) or "labels" not in gt:
        raise ValueError(f"{pkl}: not a MultiSports ground-truth dict (no 'labels')")
    return [str(x) for x in gt["labels"]]


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    if seed_disabled(params, "stad", "stad_train", root, model_dir=paths.models / "stad", skips=True):
        return
    given = given_model(params, "stad", root)
    if given is not None:  # stad.model: a trained folder (model.pt, optionally phase1.pt) used as is
        from actparse.stad import load_model

        use_given_model(given, paths.models / "stad", "stad", "stad_train", root, ["model.pt"],
                        lambda d: [load_model(d / f, "cpu") for f in ("model.pt", "phase1.pt") if (d / f).is_file()])
        return
    import torch

    from actparse.video import VideoError
    from actparse.dataset import gt_persons_path, load_videos, video_path
    from actparse.video import LazyVideo, decode_backend
    from actparse.models.stad import STADModel
    from actparse.stad import cache_features, config_from_params, fit_classifier, fit_phase1, gt_samples, \
        head_kwargs_from_params, save_model, settings_from_params
    from actparse.train import seed_everything
    from actparse.weights.resnet3d import load_slowfast, pretrained_from_params

    head = get(params, "stad.head", str, choices=("pcca", "linear"))
    cfg = config_from_params(params)
    s = settings_from_params(params)
    if s.num_frames % cfg.alpha:
        raise ParamError.of(params, f"stad.num_frames ({s.num_frames}) must be a multiple "
                         f"of stad.alpha ({cfg.alpha})")
    decoupled = get(params, "stad.decoupled", bool)
    short_side = get(params, "stad.short_side", int, min_value=16)
    val_fraction = get(params, "stad.val_fraction", float, min_value=0.0)
    if val_fraction >= 1.0:  # the schema's bound: a class keeps at least one video in training
        raise ParamError.of(params, f"parameter 'stad.val_fraction' must be < 1.0, "
                         f"got {val_fraction!r}")
    seed = system_seed(params, "stad")
    device = resolve_device(params)
    seed_everything(seed)

    droot = data_root(params, root)
    classes = class_list(droot)
    model = STADModel(cfg, len(classes), head=head, **head_kwargs_from_params(params))
    pretrained, pre_format = pretrained_from_params(params, "stad")
    if pretrained is not None:  # before decoding: a bad file fails fast
        n = load_slowfast(model.backbone, pretrained, pre_format)
        log.info("stad: SlowFast backbone starts from %s (%s, %d tensors)", pretrained, pre_format, n)
    videos = load_videos(droot).to_pandas()
    train = videos[videos["split"] == "train"].reset_index(drop=True)
    if train.empty:
        raise ValueError(f"{droot / 'videos.parquet'}: no train-split videos to train stad on")
    gt = read_df(gt_persons_path(droot), "gt_persons", columns=["video", "frame", "person", "box", "action"])
    by_video = {v: g for v, g in gt.groupby("video", sort=False)}
    held: list[str] = []
    if val_fraction > 0:  # held-out train videos, watched after every epoch of both phases
        from actparse.train import val_split

        labelled = train[train["video"].isin(by_video)]
        acts = labelled["action"] if "action" in labelled else [None] * len(labelled)
        held = val_split(list(labelled["video"]), ["" if a is None or a != a else str(a) for a in acts],
                         val_fraction, seed)
        log.info("held out %d of %d train videos for validation (stad.val_fraction %s)", len(held), len(train),
                 val_fraction)

    t0, c0 = time.time(), time.process_time()

    decoded, pools = [], []
    ledger = SkipLedger("stad_train", root, what="train videos")
    for row in progress(list(train[~train["video"].isin(held)].itertuples(index=False)), "stad_train",
                        "videos decoded"):
        g = by_video.get(row.video)
        if g is None:
            ledger.skip(row.video, "train video has no ground truth")
            continue
        ledger.tried(row.video)
        try:
            v = LazyVideo(video_path(droot, row.path), max(s.train_scales or (short_side,)),  # decoded on demand
                          backend=decode_backend(params))
        except (VideoError, ValueError) as exc:
            ledger.skip(row.video, exc)
            continue
        scale = v.shape[1] / float(row.height or v.shape[1])
        pools.append(gt_samples(g, len(decoded), scale, classes))
        decoded.append(v)
    val = None
    if held:  # every stad.stride-th frame, decoded at short_side as stad_detect scores it
        stride = get(params, "stad.stride", int, min_value=1)
        vvideos, vsamples, vnames = [], [], []
        for row in train[train["video"].isin(held)].itertuples(index=False):
            ledger.tried(row.video)
            try:
                v = LazyVideo(video_path(droot, row.path), short_side, backend=decode_backend(params))
            except (VideoError, ValueError) as exc:
                ledger.skip(row.video, exc)
                continue
            g = by_video[row.video]
            frames = [f for f in sorted(set(g["frame"].astype(int))) if f % stride == 0 and f < len(v)]
            vsamples.extend(gt_samples(g, len(vvideos), v.shape[1] / float(row.height or v.shape[1]), classes, frames))
            vvideos.append(v)
            vnames.append(row.video)
        if any(smp.targets.any() for smp in vsamples):
            val = (vvideos, vsamples)
        else:
            log.warning("stad: the %d held-out videos have no person with an action on their key frames; "
                        "no per-epoch validation", len(held))
    ledger.check(droot)
    t_decode = time.time() - t0
    counts = Counter(lab for pool in pools for smp in pool for lab in smp.labels)

    with model_folder(paths.models / "stad") as out:  # replaces the old folder only on success
        t1 = time.time()
        hist1 = fit_phase1(model, decoded, pools, s, seed=seed, device=device, val=val)
        t_phase1 = time.time() - t1
        meta = {"classes": classes, "head": head, "settings": s.to_dict(), "short_side": short_side,
                "pretrained": str(pretrained) if pretrained else None, "pretrained_format": pre_format}
        save_model(model, out / "phase1.pt", classes, extra={**meta, "phase": 1})
        hist2, t_phase2 = None, 0.0
        if decoupled and s.decoupled_epochs > 0:
            t2 = time.time()
            cache = []
            for pool in pools:  # evenly spaced key frames of each video
                pick = np.unique(np.round(np.linspace(0, len(pool) - 1, min(s.decoupled_keyframes, len(pool)))).astype(int))
                cache.extend(pool[i] for i in pick)
            feats, targets, labels = cache_features(model, decoded, cache, s, device,
                                                    short_side if s.train_scales else None)
            val2 = None
            if val is not None:  # the frozen model's RoI features of the held-out key frames (fixed in phase 2)
                from actparse.train import monitoring

                with monitoring(model):
                    vf, vt, _ = cache_features(model, val[0], val[1], s, device)
                val2 = (vf, vt)
            hist2 = fit_classifier(model, feats, targets, labels, s, seed=seed, val=val2)
            t_phase2 = time.time() - t2
        save_model(model, out / "model.pt", classes, extra={**meta, "phase": 2 if hist2 else 1})
        with torch.no_grad():
            n_params = sum(p.numel() for p in model.parameters())
        write_json({"enabled": True, "head": head, "decoupled": bool(hist2), "classes": classes,
                    "train_videos": len(decoded), "person_frames_per_class": dict(sorted(counts.items())),
                    "backbone": cfg.to_dict(), "pretrained": meta["pretrained"], "pretrained_format": pre_format,
                    "settings": s.to_dict(), "parameters": int(n_params),
                    "phase1_loss": hist1["loss"], "phase2_loss": hist2["loss"] if hist2 else None,
                    **({"val_videos": vnames, "val_persons": int(sum(len(smp.boxes) for smp in val[1])),
                        "phase1_val_top1": hist1["val_top1"],
                        "phase2_val_top1": hist2.get("val_top1") if hist2 else None} if val is not None else {}),
                    "seconds": {"decode": round(t_decode, 1), "phase1": round(t_phase1, 1), "phase2": round(t_phase2, 1)},
                    "cpu_seconds": round(time.process_time() - c0, 1),
                    "device": device}, out / "train_info.json")
    ledger.write()
    log.info(f"{head} head, {len(decoded)} videos, phase 1 {t_phase1:.0f}s (loss {hist1['loss'][-1]:.4f})"
             + (f", phase 2 {t_phase2:.0f}s (loss {hist2['loss'][-1]:.4f})" if hist2 else "") + f" -> {paths.models / 'stad'}")


def main(argv=None):
    return stage_main("stad_train", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
