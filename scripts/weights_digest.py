"""Digests of the weights that tiny trainings of the 3D-CNN systems produce (CSN, seeds 003, 004, 000).

A refactor of model or training code must leave trained weights equal bit for bit. Run this script
in two checkouts (before and after, e.g. with ``git worktree add``) and compare the output::

    python scripts/weights_digest.py > after.json
    (cd ../before && python scripts/weights_digest.py) | diff - after.json

It builds each network from a fixed seed and trains it for a few steps on random videos, through the
library's own training loops (optimizers, schedules, sampling), then prints a SHA-256 prefix of each
state dict and the architecture dicts that checkpoints store. It runs in about ten seconds on a CPU.
Checkouts from before ``actparse/models`` existed are read through their old module names.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path.cwd()))


def digest(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def modules():
    """(csn, stad, gym, partattn library modules, the model classes, seed_everything) of this checkout."""
    from actparse import csn, partattn

    try:
        from actparse import gym, stad
        from actparse.models.csn import CSNConfig, MultiTaskCSN
        from actparse.models.gym import JointModel, LevelModel
        from actparse.models.partattn import PartAttnConfig, PartStateNet
        from actparse.models.slowfast import SlowFastConfig
        from actparse.models.slowonly import SlowOnlyConfig
        from actparse.models.stad import STADModel
        from actparse.train import seed_everything
    except ImportError:  # the layout before actparse/models
        from actparse import finegym as gym, pcca as stad
        from actparse.csn import CSNConfig, MultiTaskCSN, seed_everything
        from actparse.finegym import JointModel, LevelModel, SlowOnlyConfig
        from actparse.partattn import PartAttnConfig, PartStateNet
        from actparse.pcca import SlowFastConfig, STADModel
    return (csn, stad, gym, partattn, CSNConfig, MultiTaskCSN, SlowFastConfig, STADModel, SlowOnlyConfig,
            LevelModel, JointModel, PartAttnConfig, PartStateNet, seed_everything)


def main() -> int:
    (C, P, G, A, CSNConfig, MultiTaskCSN, SlowFastConfig, STADModel, SlowOnlyConfig, LevelModel, JointModel,
     PartAttnConfig, PartStateNet, seed_everything) = modules()
    from actparse.clips import ClipSpec
    from actparse.constants import NUM_PARTS

    torch.set_num_threads(1)
    out = {}
    rng = np.random.default_rng(0)
    vids = [rng.integers(0, 255, size=(24, 48, 64, 3), dtype=np.uint8) for _ in range(4)]

    for variant in ("ir", "ip"):  # CSN (seed 001): SGD, step schedule with warm-up, mixup on ip
        seed_everything(0)
        m = MultiTaskCSN(CSNConfig(variant=variant, stage_depths=(1, 1, 1, 1), stem_dim=8,
                                   shared_backbone=variant == "ir"), {"action": 3, "hand": 2})
        out[f"csn_{variant}_init"] = digest(m.state_dict())
        spec = ClipSpec(num_frames=4, interval=2, short_side=40, crop=(32, 32), train_short_side=(36, 44),
                        color_jitter=0.1)
        st = C.TrainSettings(epochs=2, batch_size=2, lr=0.01, warmup_iters=3, lr_steps=(1.0,),
                             mixup_alpha=0.2 if variant == "ip" else 0.0, momentum=0.9, weight_decay=1e-4, nesterov=True,
                             lr_gamma=0.1)
        C.fit(m, vids, {"action": np.array([0, 1, 2, 0]), "hand": np.array([0, 1, 1, 0])}, spec, st, seed=0)
        out[f"csn_{variant}"] = digest(m.state_dict())

    for opt in ("adamw", "sgd"):  # seed 003: both optimizers, multi-scale with SGD, then the decoupled phase
        seed_everything(0)
        model = STADModel(SlowFastConfig(), 3, head="pcca", dim=16, heads=2, roi_size=3)
        out[f"stad_{opt}_init"] = digest(model.state_dict())
        s = P.STADSettings(epochs=2, samples_per_video=2, batch_size=2, optimizer=opt, num_frames=4, interval=2,
                           warmup_epochs=1.0, lr_steps=(1.5,), decoupled_epochs=2, decoupled_keyframes=2,
                           train_scales=(40, 56) if opt == "sgd" else None,
                           scale_batch_sizes=(2, 3) if opt == "sgd" else None, lr=0.002, momentum=0.9, weight_decay=1e-4,
                           lr_gamma=0.1, flip=True, color_jitter=0.2, channel_shuffle=True, input_norm="kinetics",
                           decoupled_lr=0.02, decoupled_reinit=False)
        samples = [[P.KeyframeSample(v, f, np.array([[5., 5., 30., 40.], [20., 4., 60., 44.]]),
                                     np.eye(3, dtype=np.float32)[[f % 3, (f + 1) % 3]], [str(f % 3), "none"])
                    for f in (4, 10, 16)] for v in range(4)]
        P.fit_phase1(model, vids, samples, s, seed=0)
        out[f"stad_{opt}_p1"] = digest(model.state_dict())
        feats, tg, labels = P.cache_features(model, vids, [x for p in samples for x in p], s)
        P.fit_classifier(model, feats, tg, labels, s, seed=1)
        out[f"stad_{opt}_p2"] = digest(model.state_dict())

    seed_everything(0)  # seed 004: three pathways, then the joint model
    gs = G.GymSettings(num_frames={"event": 2, "set": 4, "element": 4}, interval=1, crop=32, epochs=2, batch_size=2,
                       joint_epochs=3, joint_views=1, joint_hidden=16, views_per_clip=2, lr=6e-3, weight_decay=1e-4, dropout=0.5,
                       color_aug=True, joint_lr=2e-3, loss_weights={"event": 1.0, "set": 2.0, "element": 4.0},
                       input_norm="kinetics")
    frames = [rng.integers(0, 255, size=(10, 40, 40, 3), dtype=np.uint8) for _ in range(5)]
    paths = []
    for k, lvl in enumerate(G.LEVELS):
        torch.manual_seed(k)
        m = LevelModel(SlowOnlyConfig(), 3, gs.dropout)
        G.fit_level(m, frames, np.array([0, 1, 2, 0, 1]), gs.num_frames[lvl], gs, seed=k)
        out[f"gym_{lvl}"] = digest(m.state_dict())
        paths.append(m)
    feats = G.pathway_features(paths, frames, [gs.num_frames[lvl] for lvl in G.LEVELS], gs, np.random.default_rng(5))
    torch.manual_seed(20)
    j = JointModel(paths, [m.classifier.in_features for m in paths], {lvl: 3 for lvl in G.LEVELS}, gs.joint_hidden,
                   gs.dropout)
    G.fit_joint(j, feats, {lvl: np.array([0, 1, 2, 0, 1]) for lvl in G.LEVELS}, gs, seed=20)
    out["gym_joint"] = digest(j.state_dict())

    for mode in ("align", "crop"):  # seed 000: both part-feature modes
        seed_everything(0)
        m = PartStateNet(PartAttnConfig(num_actions=3, roi_mode=mode, dim=16, heads=2, input_size=(48, 32)))
        out[f"partattn_{mode}_init"] = digest(m.state_dict())
        ps = A.PartAttnSettings(num_frames=2, interval=1, epochs=2, samples_per_video=2, batch_size=3, lr=3e-3,
                                weight_decay=1e-4, augment=True, margin=1.15)
        r2 = np.random.default_rng(3)
        pb = np.array([[10 + j, 10 + j, 20 + j, 22 + j] for j in range(NUM_PARTS)], np.float64)
        pools = [[A.PersonSample(v, f, np.array([5., 5., 40., 45.]), pb, np.ones(NUM_PARTS, bool), f % 3,
                                 r2.integers(-1, 2, size=NUM_PARTS)) for f in (3, 9)] for v in range(4)]
        A.fit(m, vids, pools, ps, seed=0)
        out[f"partattn_{mode}"] = digest(m.state_dict())

    out["configs"] = {"csn": CSNConfig(variant="ip", stage_depths=(1, 2, 1, 1), stem_dim=8).to_dict(),
                      "slowfast": SlowFastConfig().to_dict(), "slowonly": SlowOnlyConfig().to_dict(),
                      "partattn": PartAttnConfig().to_dict()}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
