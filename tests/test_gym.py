"""Seed 004 system: FineGym-layout labels from the synthetic set, SlowOnly pathways, joint model, gym stages;
and the synth long-tail switch the seed 003 system uses."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from _params import overlaid
from actparse.constants import ACTIONS
from actparse.gym import (LEVELS, crop_clips, fit_joint, fit_level, hierarchical_loss, load_annotations,
                          pathway_features, sample_indices, train_step)
from actparse.gym import settings_from_params as gym_settings
from actparse.models.gym import JointModel, LevelModel
from actparse.models.slowonly import SlowOnlyBackbone, SlowOnlyConfig
from actparse.schemas import read_df
from actparse.synth import (FINEGYM_ELEMENTS, FINEGYM_SETS, Figure, SynthConfig, finegym_element, finegym_hierarchy,
                            generate, long_tail_counts, plan_videos)

TINY_SO = SlowOnlyConfig(stem_dim=4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("gym")
    cfg = SynthConfig.from_params(overlaid({"synth": dict(
        seed=11, n_train=3, n_test=2, width=64, height=48, min_seconds=1.0, max_seconds=1.2, max_people=2, occluder_prob=0.0)}))
    generate(cfg, root / "artifacts" / "synth", progress=False)
    return root


# ------------------------------------------------------------------------------ labels
def test_hierarchy_is_a_tree_over_the_actions():
    h = finegym_hierarchy()
    assert {s["name"] for s in h["sets"]} == set(ACTIONS)
    assert [e["label"] for e in h["elements"]] == list(range(len(h["elements"])))
    set_event = {s["id"]: s["event"] for s in h["sets"]}
    for e in h["elements"]:
        assert set_event[e["set"]] == e["event"]  # element -> set -> event is consistent
        assert e["set"] // 10 == h["events"].index(e["event"]) + 1  # FineGym-style set ids
    assert len({e["name"] for e in h["elements"]}) == len(h["elements"]) == 21


def test_element_follows_the_drawn_variant():
    def fig(**kw):
        base = dict(pid=0, size=60.0, x0=10.0, vx=0.0, ground=100.0, colors={}, start=0, end=10, side=0, freq=0.2,
                    amp=0.2, phase=0.0, style=0, idle_phase=0.0)
        return Figure(**{**base, **kw})

    assert finegym_element("waving", fig(side=1)) == "waving_right"
    assert finegym_element("kicking", fig(style=1, side=0)) == "kicking_forward_left"
    assert finegym_element("squatting", fig(amp=0.9)) == "squatting_deep"
    assert finegym_element("clapping", fig(freq=0.9)) == "clapping_fast"
    assert finegym_element("clapping", fig(freq=0.1)) == "clapping_slow"
    assert finegym_element("idle", fig()) == "idle"
    with pytest.raises(ValueError, match="unknown"):
        finegym_element("dancing", fig())


def test_annotation_files_parse_and_agree_with_ground_truth(tiny_root):
    data = tiny_root / "artifacts" / "synth"
    videos = read_df(data / "videos.parquet", "videos")
    gt = read_df(data / "gt_persons.parquet", "gt_persons")
    fps = dict(zip(videos.video, videos.fps))
    hier, clips = load_annotations(data / "annotations" / "finegym", fps)
    assert hier.classes("element") == [e["name"] for e in finegym_hierarchy()["elements"]]
    acting = gt[gt.action != "none"].groupby(["video", "person"]).size()
    assert len(clips) == len(acting)  # one element clip per acting person
    action_of = dict(zip(videos.video, videos.action))
    split_of = dict(zip(videos.video, videos.split))
    for c in clips:
        lab = hier.labels_of(c.label)
        assert hier.classes("set")[lab["set"]] == action_of[c.video]
        assert hier.classes("element")[c.label] in FINEGYM_ELEMENTS[action_of[c.video]]
        assert hier.classes("event")[lab["event"]] == FINEGYM_SETS[action_of[c.video]][1]
        assert c.split == split_of[c.video] and c.person is not None
        frames = gt[(gt.video == c.video) & (gt.person == c.person) & (gt.action != "none")].frame
        assert abs(c.start * fps[c.video] - frames.min()) < 1e-3
        assert abs(c.end * fps[c.video] - (frames.max() + 1)) < 1e-3
    parents = hier.parents()
    assert set(parents["element"][1].values()) <= set(hier.classes("set"))


def test_bad_annotation_lines_are_named(tmp_path, tiny_root):
    src = tiny_root / "artifacts" / "synth" / "annotations" / "finegym"
    for p in src.iterdir():
        (tmp_path / p.name).write_text(p.read_text())
    (tmp_path / "gym_train_element.txt").write_text("not_an_element_id 3\n")
    with pytest.raises(ValueError, match="gym_train_element.txt:1"):
        load_annotations(tmp_path, {})


def test_crop_clips_follow_the_person(tiny_root):
    from actparse.clips import load_video

    data = tiny_root / "artifacts" / "synth"
    videos = read_df(data / "videos.parquet", "videos")
    gt = read_df(data / "gt_persons.parquet", "gt_persons")
    hier, clips = load_annotations(data / "annotations" / "finegym", dict(zip(videos.video, videos.fps)))
    c = clips[0]
    row = videos[videos.video == c.video].iloc[0]
    v = load_video(data / row.path)
    out = crop_clips(v, row.fps, [c], gt[gt.video == c.video], 32)[0]
    assert out.shape[1:] == (32, 32, 3) and out.dtype == np.uint8
    assert len(out) == round((c.end - c.start) * row.fps)
    assert sample_indices(40, 8, 3, None).tolist() == [9, 12, 15, 18, 21, 24, 27, 30]
    assert sample_indices(5, 4, 3, None).tolist() == [0, 3, 4, 4]


# ------------------------------------------------------------------------------ models
def test_slowonly_shapes():
    bb = SlowOnlyBackbone(TINY_SO)
    x = torch.randn(2, 3, 8, 32, 32)
    assert bb(x).shape == (2, TINY_SO.out_channels, 8, 1, 1)
    assert bb.pooled(x).shape == (2, TINY_SO.out_channels)
    # SlowOnly: no temporal kernel in the stem / res2 / res3, 3x1x1 in res4 / res5
    assert bb.blocks[0].conv.kernel_size == (1, 7, 7)
    assert bb.blocks[1].res_blocks[0].branch2.conv_a.kernel_size == (1, 1, 1)
    assert bb.blocks[3].res_blocks[0].branch2.conv_a.kernel_size == (3, 1, 1)


def test_hierarchical_loss_weights():
    torch.manual_seed(0)
    logits = {lvl: torch.randn(4, n) for lvl, n in zip(LEVELS, (3, 5, 7))}
    tg = {lvl: torch.randint(0, n, (4,)) for lvl, n in zip(LEVELS, (3, 5, 7))}
    ce = {lvl: F.cross_entropy(logits[lvl], tg[lvl]) for lvl in LEVELS}
    assert torch.allclose(hierarchical_loss(logits, tg), ce["event"] + 2 * ce["set"] + 4 * ce["element"])
    assert torch.allclose(hierarchical_loss(logits, tg, {"event": 1, "set": 0, "element": 0}), ce["event"])
    with pytest.raises(ValueError, match="no logits"):
        hierarchical_loss({"event": logits["event"]}, tg)


def _joint(seed=0):
    torch.manual_seed(seed)
    paths = [LevelModel(TINY_SO, n, dropout=0.0) for n in (3, 5, 7)]
    return JointModel(paths, [p.classifier.in_features for p in paths], dict(zip(LEVELS, (3, 5, 7))), hidden=16,
                      dropout=0.0)


def test_joint_model_shapes_and_frozen_pathways():
    j = _joint()
    x = torch.randn(2, 3, 4, 32, 32)
    out = j(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"event": (2, 3), "set": (2, 5), "element": (2, 7)}
    assert not any(p.requires_grad for p in j.pathways.parameters())
    j.train()
    assert not j.pathways[0].training  # frozen pathways stay in eval mode (BN statistics fixed)
    with pytest.raises(ValueError, match="pathways"):
        j([x, x])


def test_level_model_step_decreases_loss():
    torch.manual_seed(1)
    m = LevelModel(TINY_SO, 5, dropout=0.0)
    x, y = torch.randn(4, 3, 4, 32, 32), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.AdamW(m.parameters(), lr=5e-3)
    m.train()
    with torch.no_grad():
        before = float(F.cross_entropy(m(x), y))
    for _ in range(4):
        train_step(m, x, y, opt)
    with torch.no_grad():
        after = float(F.cross_entropy(m(x), y))
    assert after < before


def test_joint_step_decreases_loss_and_keeps_pathways():
    j = _joint(2)
    x = torch.randn(4, 3, 4, 32, 32)
    tg = {"event": torch.tensor([0, 1, 2, 0]), "set": torch.tensor([0, 1, 2, 3]), "element": torch.tensor([6, 5, 4, 3])}
    opt = torch.optim.AdamW([p for p in j.parameters() if p.requires_grad], lr=1e-2)
    frozen = {k: v.clone() for k, v in j.pathways.state_dict().items()}
    with torch.no_grad():
        before = float(hierarchical_loss(j(x), tg))
    for _ in range(5):
        train_step(j, x, tg, opt)
    with torch.no_grad():
        after = float(hierarchical_loss(j(x), tg))
    assert after < before
    assert all(torch.equal(v, j.pathways.state_dict()[k]) for k, v in frozen.items())
    # fit_joint on cached features gives the same kind of improvement
    s = gym_settings(overlaid({"gym": dict(batch_size=4, joint_epochs=3, joint_lr=1e-2, crop=32,
                                           num_frames={"event": 4, "set": 4, "element": 4})}))
    frames = [np.random.default_rng(i).integers(0, 255, (12, 36, 36, 3), dtype=np.uint8) for i in range(4)]
    feats = pathway_features(list(j.pathways), frames, [4, 4, 4], s, None)
    assert feats.shape == (4, 3 * TINY_SO.out_channels)
    hist = fit_joint(j, feats, {k: v.numpy() for k, v in tg.items()}, s)
    assert hist["loss"][-1] < hist["loss"][0]


def test_per_epoch_validation_only_watches():
    """fit_level / fit_joint with held-out clips record their top-1 after every epoch; the weights (dropout
    on, so the torch random stream matters) equal those of the same training without the validation."""
    s = gym_settings(overlaid({"gym": dict(batch_size=2, epochs=2, views_per_clip=1, crop=32, interval=2,
                                           joint_epochs=3, joint_lr=1e-2,
                                           num_frames={"event": 4, "set": 4, "element": 4})}))
    frames = [np.random.default_rng(i).integers(0, 255, (12, 36, 36, 3), dtype=np.uint8) for i in range(6)]
    labels, val = np.array([0, 1, 2, 0]), (frames[4:], np.array([1, 2]))
    runs = []
    for held in (val, None):
        torch.manual_seed(0)
        m = LevelModel(TINY_SO, 3, dropout=0.5)
        runs.append((fit_level(m, frames[:4], labels, 4, s, seed=0, val=held), m.state_dict()))
    (watched, a), (plain, b) = runs
    assert len(watched["val_acc"]) == 2 and "val_acc" not in plain
    assert all(v in (0.0, 0.5, 1.0) for v in watched["val_acc"])
    assert watched["loss"] == plain["loss"] and all(torch.equal(a[k], b[k]) for k in a)
    # the joint model on cached features, its three heads watched on the held-out clips' centred views
    torch.manual_seed(1)
    paths = [LevelModel(TINY_SO, n, dropout=0.0) for n in (3, 5, 7)]
    feats = pathway_features(paths, frames[:4], [4, 4, 4], s, np.random.default_rng(0))
    vfeats = pathway_features(paths, frames[4:], [4, 4, 4], s, None)
    tg = {"event": np.array([0, 1, 2, 0]), "set": np.array([0, 1, 2, 3]), "element": np.array([6, 5, 4, 3])}
    vtg = {"event": np.array([1, 2]), "set": np.array([4, 0]), "element": np.array([0, 1])}
    runs = []
    for held in ((vfeats, vtg), None):
        torch.manual_seed(2)
        j = JointModel(paths, [p.classifier.in_features for p in paths], dict(zip(LEVELS, (3, 5, 7))), hidden=16,
                       dropout=0.5)
        runs.append((fit_joint(j, feats, tg, s, seed=0, val=held), j.state_dict()))
    (watched, a), (plain, b) = runs
    assert len(watched["val_acc"]) == 3 and "val_acc" not in plain
    assert all(set(acc) == set(LEVELS) and all(v in (0.0, 0.5, 1.0) for v in acc.values())
               for acc in watched["val_acc"])
    assert watched["loss"] == plain["loss"] and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ long tail
def test_long_tail_counts():
    c = long_tail_counts(48, 10.0)
    assert sum(c) == 48 and c == sorted(c, reverse=True) and min(c) >= 1
    assert 6 <= c[0] / c[-1] <= 14
    assert long_tail_counts(48, 1.0) == [5] * 8 + [4] * 2
    assert sum(long_tail_counts(7, 5.0)) == 7


def test_long_tail_plan_keeps_test_balanced_and_default_unchanged():
    base = SynthConfig.from_params(overlaid({"synth": {"n_train": 30, "n_test": 10}}))
    lt = SynthConfig.from_params(overlaid({"synth": {"n_train": 30, "n_test": 10, "long_tail": 10.0}}))
    a, b = plan_videos(base), plan_videos(lt)
    assert [s.n_frames for s in a] == [s.n_frames for s in b]  # same random stream: only labels move
    assert [s.action for s in a if s.split == "test"] == [s.action for s in b if s.split == "test"]
    train = Counter(s.action for s in b if s.split == "train")
    assert [train[x] for x in ACTIONS] == long_tail_counts(30, 10.0)
    assert max(Counter(s.action for s in a if s.split == "train").values()) == 3
    with pytest.raises(ValueError, match="long_tail"):
        SynthConfig.from_params(overlaid({"synth": {"long_tail": 0.5}}))


# ------------------------------------------------------------------------------ stages
def test_gym_stages_end_to_end(tiny_root):
    from stages import gym_evaluate, gym_train

    p = overlaid({"seed": 0, "device": "cpu", "data": {"root": "artifacts/synth"},
         "gym": {"enabled": True, "stem_dim": 4, "size": 36, "crop": 32, "num_frames": {"event": 2, "set": 4, "element": 4},
                 "interval": 2, "epochs": 1, "views_per_clip": 1, "batch_size": 4, "joint_epochs": 2, "joint_views": 1,
                 "joint_hidden": 16}})
    params = tiny_root / "params.yaml"
    params.write_text(yaml.safe_dump(p))
    for mod in (gym_train, gym_evaluate):
        assert mod.main(["--params", str(params), "--root", str(tiny_root)]) == 0
    m = json.loads((tiny_root / "metrics" / "gym.json").read_text())
    assert m["enabled"] and m["classes"] == {"event": 5, "set": 10, "element": 21}
    for part in ("single", "joint"):
        for lvl in LEVELS:
            assert 0 <= m[part][lvl]["top1"] <= 100 and 0 <= m[part][lvl]["mean_class"] <= 100
    pred = read_df(tiny_root / "artifacts" / "gym" / "clip_predictions.parquet", "clip_predictions")
    assert len(pred) == m["test_clips"] * 6  # 3 single models + joint x 3 levels
    assert (pred.groupby("clip").size() == 6).all()
    # per-video counts (bootstrap intervals) give back every accuracy of the metrics file
    from actparse.metrics.bootstrap import count_replicates

    counts = read_df(tiny_root / "artifacts" / "gym" / "video_counts.parquet", "video_counts")
    vids = sorted(set(pred.video))
    assert counts.n.sum() == m["test_clips"] * 6 and sorted(set(counts.video)) == vids
    for part in ("single", "joint"):
        for lvl in LEVELS:
            for stat in ("top1", "mean_class"):
                got = count_replicates(counts, f"{part}.{lvl}", stat, np.ones((1, len(vids))), vids)[0]
                assert round(100 * got, 2) == m[part][lvl][stat], (part, lvl, stat)
    info = json.loads((tiny_root / "artifacts" / "models" / "gym" / "train_info.json").read_text())
    assert set(info["history"]) == {"event", "set", "element", "joint"}
    p["gym"]["num_frames"] = {"event": 2}
    params.write_text(yaml.safe_dump(p))
    assert gym_train.main(["--params", str(params), "--root", str(tiny_root)]) == 2


def test_gym_train_holds_out_clips_and_watches_them(tiny_root, caplog):
    """gym.val_fraction > 0: element clips held out per class; each pathway's and the joint heads' top-1 on
    them per epoch in train_info.json, the training curves and the progress lines."""
    import logging

    from actparse.curves import curve
    from stages import gym_train

    p = overlaid({"seed": 0, "device": "cpu", "data": {"root": "artifacts/synth"},
                  "gym": {"enabled": True, "stem_dim": 4, "size": 36, "crop": 32, "interval": 2, "epochs": 2,
                          "num_frames": {"event": 2, "set": 4, "element": 4}, "views_per_clip": 1, "batch_size": 4,
                          "joint_epochs": 2, "joint_views": 1, "joint_hidden": 16, "val_fraction": 0.5}})
    params = tiny_root / "params.yaml"
    params.write_text(yaml.safe_dump(p))
    with caplog.at_level(logging.INFO, logger="actparse"):
        assert gym_train.main(["--params", str(params), "--root", str(tiny_root)]) == 0
    info = json.loads((tiny_root / "artifacts" / "models" / "gym" / "train_info.json").read_text())
    # 5 train clips: two of element 0, two of element 4, one of element 6 (stays: one clip)
    assert len(info["val_clips"]) == 2 and info["train_clips"] == 3
    assert {c.split("_E_")[0] for c in info["val_clips"]} == {"synth_00000", "synth_00001"}  # one clip of each pair
    assert sum(info["class_counts"]["element"].values()) == 3
    for lvl in LEVELS:
        hist = info["history"][lvl]
        assert len(hist["val_acc"]) == len(hist["loss"]) == 2 and all(v in (0.0, 0.5, 1.0) for v in hist["val_acc"])
        assert curve(f"gym_{lvl}", info).val_acc.tolist() == hist["val_acc"]
    joint = info["history"]["joint"]
    assert len(joint["val_acc"]) == 2 and all(set(a) == set(LEVELS) for a in joint["val_acc"])
    assert curve("gym_joint", info).val_element_acc.tolist() == [a["element"] for a in joint["val_acc"]]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert any("(gym element)" in ln and "val_acc=" in ln for ln in lines)
    assert any("(gym joint)" in ln and "val_element_acc=" in ln for ln in lines)
    p["gym"]["val_fraction"] = 1.0
    params.write_text(yaml.safe_dump(p))
    assert gym_train.main(["--params", str(params), "--root", str(tiny_root)]) == 2
