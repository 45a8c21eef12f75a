"""Train the seed 004 hierarchical recogniser: one SlowOnly pathway per FineGym level, then the joint model.

Reads:  <data.root>/annotations/finegym/ (FineGym layout: finegym_annotation_info*.json,
        gym*_categories.txt, gym*_train_element*.txt; the synth stage writes one), the train videos of
        <data.root>/videos.parquet, <data.root>/gt_persons.parquet (person crops when an event names
        a person).
Writes: artifacts/models/gym/{event,set,element}.pt   stage 1: a SlowOnly network per level, trained
          on the element clips with that level's labels
        artifacts/models/gym/joint.pt   stage 2: the three pathways frozen, features concatenated,
          shared linear layer + three classifiers, loss gym.loss_weights (seed 004: 1, 2, 4)
        artifacts/models/gym/train_info.json   loss histories (with gym.val_fraction > 0 also the
          top-1 per epoch on the held-out clips), class counts, timings
        artifacts/skips/gym_train.parquet      videos that could not be decoded
With gym.enabled false it only writes train_info.json {"enabled": false}.
Params: seed (or gym.seed, when set), gym.* (enabled, seed, depth, stage_depths, stem_dim, size, crop, margin, num_frames, interval,
        epochs, views_per_clip, batch_size, lr, weight_decay, dropout, joint_epochs, joint_views,
        joint_hidden, joint_lr, loss_weights, input_norm, val_fraction, pretrained.path / pretrained.format:
        SlowOnly weights each pathway starts from, pytorchvideo | pyslowfast | mmaction2; docs/checkpoints.md).
With gym.val_fraction > 0 a seeded share of the train element clips, per element class (a class keeps
at least one clip in training), is held out: after every epoch each pathway's top-1 on them, and after
every joint epoch the top-1 of the joint model's event / set / element heads (centred views, as
gym_evaluate predicts), go into train_info.json and the progress lines. The validation only watches:
the weights are those of a training on the same clips without it.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from actparse.params import ParamError, get, resolve_device, system_seed
from actparse.paths import Paths
from actparse.atomic import write_json
from actparse.stage import (SkipLedger, given_model, model_folder, seed_disabled, stage_log, stage_main,
                            use_given_model)

log = stage_log("gym_train")


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    if seed_disabled(params, "gym", "gym_train", root, model_dir=paths.models / "gym", skips=True):
        return
    given = given_model(params, "gym", root)
    if given is not None:  # gym.model: a trained folder (event/set/element/joint .pt) used as is
        from actparse.gym import LEVELS, load_joint, load_level

        def check(d):
            load_joint(d / "joint.pt", [load_level(d / f"{lvl}.pt", "cpu")[0] for lvl in LEVELS], "cpu")

        use_given_model(given, paths.models / "gym", "gym", "gym_train", root,
                        [f"{lvl}.pt" for lvl in LEVELS] + ["joint.pt"], check)
        return
    import torch

    from actparse.gym import LEVELS, config_from_params, fit_joint, fit_level, load_split, pathway_features, \
        save_checkpoint, settings_from_params
    from actparse.models.gym import JointModel, LevelModel
    from actparse.train import seed_everything
    from actparse.weights.resnet3d import load_slowonly, pretrained_from_params

    cfg = config_from_params(params)
    s = settings_from_params(params)
    pretrained, pre_format = pretrained_from_params(params, "gym")
    if pretrained is not None:  # fail fast on a bad file, before the videos are decoded
        load_slowonly(LevelModel(cfg, 2).backbone, pretrained, pre_format, "gym")
    val_fraction = get(params, "gym.val_fraction", float, min_value=0.0)
    if val_fraction >= 1.0:  # the schema's bound: a class keeps at least one clip in training
        raise ParamError.of(params, f"parameter 'gym.val_fraction' must be < 1.0, "
                         f"got {val_fraction!r}")
    seed = system_seed(params, "gym")
    device = resolve_device(params)
    seed_everything(seed)
    t0, c0 = time.time(), time.process_time()
    hier, clips, frames, skips = load_split(params, root, "train")
    ledger = SkipLedger("gym_train", root)
    for c in clips:
        ledger.tried(c.video)
    for r in skips:
        ledger.skip(r["video"], r["error"])
    ledger.check()
    if not clips:
        raise ValueError("gym: no train element clips could be loaded")
    val = None
    if val_fraction > 0:  # held-out element clips, watched after every epoch
        from actparse.train import val_split

        held = set(val_split([c.clip for c in clips], [str(c.label) for c in clips], val_fraction, seed))
        val_clips = [(c, f) for c, f in zip(clips, frames) if c.clip in held]
        keep = [k for k, c in enumerate(clips) if c.clip not in held]
        clips, frames = [clips[k] for k in keep], [frames[k] for k in keep]
        val = ([f for _, f in val_clips], {lvl: np.array([hier.labels_of(c.label)[lvl] for c, _ in val_clips])
                                           for lvl in LEVELS})
        log.info("held out %d of %d train element clips for validation (gym.val_fraction %s)", len(val_clips),
                 len(clips) + len(val_clips), val_fraction)
    t_load = time.time() - t0
    targets = {lvl: np.array([hier.labels_of(c.label)[lvl] for c in clips]) for lvl in LEVELS}
    classes = {lvl: hier.classes(lvl) for lvl in LEVELS}
    info = {"enabled": True, "train_clips": len(clips), "backbone": cfg.to_dict(), "settings": s.to_dict(),
            "pretrained": str(pretrained) if pretrained else None, "pretrained_format": pre_format,
            "class_counts": {lvl: {classes[lvl][k]: int(n) for k, n in sorted(Counter(targets[lvl].tolist()).items())}
                             for lvl in LEVELS},
            "history": {}, "seconds": {"load": round(t_load, 1)}, "device": device}
    if val is not None:
        info["val_clips"] = [c.clip for c, _ in val_clips]
    with model_folder(paths.models / "gym") as out:  # replaces the old folder only on success
        pathways = []
        for k, lvl in enumerate(LEVELS):
            t1 = time.time()
            torch.manual_seed(seed + k)
            m = LevelModel(cfg, len(classes[lvl]), s.dropout)
            if pretrained is not None:
                load_slowonly(m.backbone, pretrained, pre_format, "gym")
            hist = fit_level(m, frames, targets[lvl], s.num_frames[lvl], s, seed=seed + k, device=device,
                             desc=f"gym {lvl}", val=None if val is None else (val[0], val[1][lvl]))
            save_checkpoint({"backbone": cfg.to_dict(), "classes": classes[lvl], "level": lvl, "dropout": s.dropout,
                             "num_frames": s.num_frames[lvl], "settings": s.to_dict(), "state": m.state_dict()},
                            out / f"{lvl}.pt")
            info["history"][lvl] = hist
            info["seconds"][lvl] = round(time.time() - t1, 1)
            pathways.append(m.cpu())
        t2 = time.time()
        rng = np.random.default_rng(seed + 10)
        feats = torch.cat([pathway_features(pathways, frames, [s.num_frames[lvl] for lvl in LEVELS], s, rng, device)
                           for _ in range(s.joint_views)])
        rep = {lvl: np.tile(targets[lvl], s.joint_views) for lvl in LEVELS}
        joint_val = None
        if val is not None and len(val[0]):  # the centred view of each held-out clip, as gym_evaluate
            from actparse.train import monitoring

            with monitoring():
                joint_val = (pathway_features(pathways, val[0], [s.num_frames[lvl] for lvl in LEVELS], s, None, device),
                             val[1])
        torch.manual_seed(seed + 20)
        joint = JointModel(pathways, [m.classifier.in_features for m in pathways], {lvl: len(classes[lvl]) for lvl in LEVELS},
                           s.joint_hidden, s.dropout)
        hist = fit_joint(joint, feats, rep, s, seed=seed + 20, val=joint_val)
        save_checkpoint({"classes": classes, "hidden": s.joint_hidden, "dropout": s.dropout, "settings": s.to_dict(),
                         "loss_weights": s.loss_weights, "state": joint.state_dict()}, out / "joint.pt")
        info["history"]["joint"] = hist
        info["seconds"]["joint"] = round(time.time() - t2, 1)
        info["cpu_seconds"] = round(time.process_time() - c0, 1)
        write_json(info, out / "train_info.json")
    ledger.write()
    log.info("%d train clips, pathways %ss, joint %ss -> %s", len(clips), [info["seconds"][lvl] for lvl in LEVELS],
             info["seconds"]["joint"], paths.models / "gym")


def main(argv=None):
    return stage_main("gym_train", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
