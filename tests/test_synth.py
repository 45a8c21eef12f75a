"""Synthetic data set generator: determinism, readable videos, GT geometry, annotation layouts."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from _params import overlaid
from actparse.constants import ACTIONS, GROUP_OF_PART, NUM_KEYPOINTS, NUM_PARTS, PART_KEYPOINTS, PART_STATES, \
    PARTS, tps_frame_name
from actparse.params import ParamError
from actparse.schemas import read_df, read_table
from actparse.synth import SynthConfig, VideoSpec, generate, plan_videos, render_video
from actparse.video import open_video

TINY = dict(seed=3, n_train=3, n_test=2, width=96, height=72, fps=25, min_seconds=1.0, max_seconds=1.3,
            max_people=3, occluder_prob=0.5, workers=1)


def tiny_cfg(**kw) -> SynthConfig:
    return SynthConfig.from_params(overlaid({"synth": {**TINY, **kw}}))


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    cfg = tiny_cfg()
    summary = generate(cfg, out, progress=False)
    return cfg, out, summary


def _load(out: Path):
    videos = read_df(out / "videos.parquet", "videos")
    gt = read_df(out / "gt_persons.parquet", "gt_persons")
    return videos, gt


def test_schemas_and_summary(tiny_set):
    cfg, out, summary = tiny_set
    videos = read_table(out / "videos.parquet", "videos").to_pandas()
    gt = read_table(out / "gt_persons.parquet", "gt_persons").to_pandas()
    assert len(videos) == cfg.n_train + cfg.n_test == summary["videos"]
    assert sorted(Counter(videos["split"]).items()) == [("test", cfg.n_test), ("train", cfg.n_train)]
    assert len(gt) == summary["gt_rows"] > 0
    assert videos["video"].is_unique
    assert all(v.startswith("synth_") for v in videos["video"])
    assert set(gt["video"]) <= set(videos["video"])
    # every frame of every video has at most max_people rows and persons are unique per frame
    assert not gt.duplicated(["video", "frame", "person"]).any()
    assert gt.groupby(["video", "frame"]).size().max() <= cfg.max_people


def test_decord_reads_every_video(tiny_set):
    cfg, out, _ = tiny_set
    videos, gt = _load(out)
    for row in videos.itertuples():
        vr = open_video(out / row.path)
        assert len(vr) == row.n_frames
        assert cfg.min_seconds * cfg.fps - 1 <= row.n_frames <= cfg.max_seconds * cfg.fps + 1
        h, w = vr[0].shape[:2]
        assert (w, h) == (cfg.width, cfg.height) == (row.width, row.height)
        assert abs(vr.get_avg_fps() - cfg.fps) < 0.5
        assert gt.loc[gt.video == row.video, "frame"].max() < row.n_frames
    # no temporary files left behind
    assert not [p for p in (out / "videos").iterdir() if p.name.startswith(".")]


def test_same_seed_same_output_other_seed_differs(tiny_set, tmp_path):
    """Same seed -> same files and GT, also when rendered by several processes (synth.workers)."""
    cfg, out, _ = tiny_set
    generate(tiny_cfg(workers=2), tmp_path / "again", progress=False)
    for mp4 in sorted((out / "videos").glob("*.mp4")):
        assert mp4.read_bytes() == (tmp_path / "again" / "videos" / mp4.name).read_bytes(), mp4.name
    v1, g1 = _load(out)
    v2, g2 = _load(tmp_path / "again")
    pd.testing.assert_frame_equal(v1, v2)
    assert g1.shape == g2.shape
    for col in g1.columns:
        a, b = g1[col].to_numpy(), g2[col].to_numpy()
        if a.dtype == object and len(a) and not isinstance(a[0], str):
            assert all(np.array_equal(x, y) for x, y in zip(a, b)), col
        else:
            assert np.array_equal(a, b), col
    spec = plan_videos(cfg)[0]
    f1 = next(iter(render_video(spec, cfg)))[0]
    f2 = next(iter(render_video(spec, cfg)))[0]
    assert np.array_equal(f1, f2)
    other = tiny_cfg(seed=TINY["seed"] + 1)
    f3 = next(iter(render_video(plan_videos(other)[0], other)))[0]
    assert not np.array_equal(f1, f3)


def test_boxes_contain_keypoints_and_parts(tiny_set):
    cfg, out, _ = tiny_set
    _, gt = _load(out)
    eps = 0.51
    n_checked = 0
    for r in gt.itertuples():
        box = np.asarray(r.box)
        assert 0 <= box[0] < box[2] <= cfg.width and 0 <= box[1] < box[3] <= cfg.height
        assert box[2] - box[0] >= 4 and box[3] - box[1] >= 4
        kps = np.asarray(r.keypoints).reshape(NUM_KEYPOINTS, 3)
        assert set(np.unique(kps[:, 2])) <= {0.0, 1.0}
        vis = kps[:, 2] > 0
        inside = (kps[:, 0] >= 0) & (kps[:, 0] < cfg.width) & (kps[:, 1] >= 0) & (kps[:, 1] < cfg.height)
        assert not (vis & ~inside).any(), "a keypoint outside the image is marked visible"
        pts = kps[inside, :2]
        assert (pts[:, 0] >= box[0] - eps).all() and (pts[:, 0] <= box[2] + eps).all()
        assert (pts[:, 1] >= box[1] - eps).all() and (pts[:, 1] <= box[3] + eps).all()
        pb = np.asarray(r.part_boxes).reshape(NUM_PARTS, 4)
        for j, part in enumerate(PARTS):
            if not r.part_visible[j]:
                continue
            b = pb[j]
            assert b[2] > b[0] and b[3] > b[1], part
            assert (b[:2] >= box[:2] - 1e-3).all() and (b[2:] <= box[2:] + 1e-3).all(), part
            for k in PART_KEYPOINTS[part]:
                if inside[k]:
                    x, y = kps[k, :2]
                    assert b[0] - eps <= x <= b[2] + eps and b[1] - eps <= y <= b[3] + eps, (part, k)
            n_checked += 1
    assert n_checked > 100


def test_states_and_actions_from_vocabularies(tiny_set):
    _, out, _ = tiny_set
    videos, gt = _load(out)
    for r in gt.itertuples():
        assert r.action in ACTIONS or r.action == "none"
        for part, state in zip(PARTS, r.part_states):
            assert state in PART_STATES[GROUP_OF_PART[part]], (part, state)
        if r.action == "none":
            assert set(r.part_states) == {"none"}
    act = dict(zip(videos.video, videos.action))
    assert all(a in (act[v], "none") for v, a in zip(gt.video, gt.action))


def test_occluder_hides_keypoints(tmp_path):
    cfg = tiny_cfg(occluder_prob=1.0, max_people=1, n_train=3, n_test=0)
    hidden = 0
    for spec in plan_videos(cfg):
        for _, gts in render_video(spec, cfg):
            for g in gts:
                k = np.asarray(g["keypoints"]).reshape(NUM_KEYPOINTS, 3)
                inside = (k[:, 0] >= 0) & (k[:, 0] < cfg.width) & (k[:, 1] >= 0) & (k[:, 1] < cfg.height)
                hidden += int((inside & (k[:, 2] == 0)).sum())
    assert hidden > 0
    cfg0 = tiny_cfg(occluder_prob=0.0, max_people=1, n_train=3, n_test=0)
    for spec in plan_videos(cfg0):
        for _, gts in render_video(spec, cfg0):
            for g in gts:
                k = np.asarray(g["keypoints"]).reshape(NUM_KEYPOINTS, 3)
                inside = (k[:, 0] >= 0) & (k[:, 0] < cfg0.width) & (k[:, 1] >= 0) & (k[:, 1] < cfg0.height)
                assert (k[inside, 2] == 1).all()  # one person, no occluder: nothing hides it


EXPECTED = {  # action -> (part, state that must dominate that part while the action is performed)
    "waving": (("left_hand", "right_hand"), "wave"),
    "raising_arms": (("left_arm",), "raise"),
    "punching": (("hip",), "turn"),
    "kicking": (("left_leg", "right_leg"), "kick"),
    "squatting": (("hip",), "bend"),
    "jumping_jacks": (("left_foot",), "jump"),
    "turning_head": (("head",), "turn"),
    "marching": (("left_leg",), "step_on"),
    "clapping": (("right_hand",), "clap"),
}


@pytest.mark.parametrize("action", ACTIONS)
def test_action_states_follow_motion(action):
    cfg = tiny_cfg(max_people=2, occluder_prob=0.0)
    spec = VideoSpec(index=11, name="t", split="train", action=action, n_frames=75)
    frames = list(render_video(spec, cfg))
    rows = [g for _, gts in frames for g in gts if g["action"] == action]
    assert rows, "nobody performs the action"
    states = {p: Counter(r["part_states"][PARTS.index(p)] for r in rows) for p in PARTS}
    if action == "idle":
        assert all(set(c) == {"none"} for c in states.values())
        return
    parts, want = EXPECTED[action]
    # on the acting side (or either part of the group) the expected state dominates
    frac = max(states[p][want] / sum(states[p].values()) for p in parts)
    assert frac > 0.4, (action, {p: dict(states[p]) for p in parts})
    if action in ("raising_arms", "squatting", "jumping_jacks"):
        arm = states["left_arm"]
        assert arm["raise"] > 0 and arm["lower"] > 0, arm  # states vary over frames
    if action == "punching":  # hands punch alternately
        for hand in ("left_hand", "right_hand"):
            assert states[hand]["punch"] > 0 and states[hand]["none"] > 0, states[hand]
    # the figure really moves: keypoints change more than for an idle figure
    kp = np.stack([np.asarray(r["keypoints"]).reshape(-1, 3)[:, :2] for r in rows if r["person"] == rows[0]["person"]])
    motion = np.abs(np.diff(kp - kp[:, 11:13].mean(1, keepdims=True), axis=0)).mean()
    spec_idle = VideoSpec(index=11, name="t", split="train", action="idle", n_frames=75)
    idle = [g for _, gts in render_video(spec_idle, cfg) for g in gts if g["person"] == rows[0]["person"]]
    kpi = np.stack([np.asarray(r["keypoints"]).reshape(-1, 3)[:, :2] for r in idle])
    motion_idle = np.abs(np.diff(kpi - kpi[:, 11:13].mean(1, keepdims=True), axis=0)).mean()
    assert motion > 1.5 * motion_idle, (motion, motion_idle)


def test_tps_json_layout(tiny_set):
    _, out, _ = tiny_set
    videos, gt = _load(out)
    for split in ("train", "test"):
        d = out / "annotations" / "tps" / split
        parts = json.loads((d / "gt_part_result.json").read_text())
        vids = json.loads((d / "gt_vid_result.json").read_text())
        sub = videos[videos.split == split]
        assert set(parts) == set(vids) == set(sub.video)
        for row in sub.itertuples():
            assert vids[row.video] == row.action
            frames = parts[row.video]
            assert list(frames) == [tps_frame_name(i) for i in range(0, row.n_frames, 5)]
            for name, fr in frames.items():
                idx = int(name[4:9]) - 1
                g = gt[(gt.video == row.video) & (gt.frame == idx)].sort_values("person")
                assert len(fr["humans"]) == len(g)
                for k, (h, r) in enumerate(zip(fr["humans"], g.itertuples()), start=1):
                    assert h["number"] == k
                    assert np.allclose(h["box"], r.box, atol=0.01)
                    assert set(h["parts"]) == {p for p, v in zip(PARTS, r.part_visible) if v}
                    for pname, p in h["parts"].items():
                        assert p["name"] == pname and len(p["box"]) == 4
                        assert p["verb"] == r.part_states[PARTS.index(pname)]
                        assert isinstance(p["number"], int)


def test_multisports_pkl_layout(tiny_set):
    _, out, _ = tiny_set
    videos, gt = _load(out)
    with open(out / "annotations" / "multisports_gt.pkl", "rb") as fh:
        ms = pickle.load(fh)
    assert ms["labels"] == list(ACTIONS)
    assert sorted(ms["train_videos"][0]) == sorted(videos.video[videos.split == "train"])
    assert sorted(ms["test_videos"][0]) == sorted(videos.video[videos.split == "test"])
    n_tubes = 0
    for row in videos.itertuples():
        assert ms["nframes"][row.video] == row.n_frames
        assert ms["resolution"][row.video] == (row.height, row.width)
        tubes = ms["gttubes"].get(row.video, {})
        for lab, lst in tubes.items():
            assert ACTIONS[lab] == row.action
            for tube in lst:
                n_tubes += 1
                assert tube.dtype == np.float32 and tube.ndim == 2 and tube.shape[1] == 5
                f = tube[:, 0].astype(int)
                assert f.min() >= 1 and f.max() <= row.n_frames
                assert (np.diff(f) == 1).all()
                g = gt[(gt.video == row.video)].set_index(["frame", "person"])
                # each tube row is some person's GT box in that frame, performing the action
                match = gt[(gt.video == row.video) & (gt.frame == f[0] - 1)]
                assert any(np.allclose(b, tube[0, 1:], atol=1e-3) for b in match.box)
                assert len(g) > 0
    acting = gt[gt.action != "none"].groupby(["video", "person"]).size()
    assert n_tubes >= len(acting)  # at least one tube per acting person


def test_class_balance():
    cfg = tiny_cfg(n_train=25, n_test=10)
    specs = plan_videos(cfg)
    train = Counter(s.action for s in specs if s.split == "train")
    test = Counter(s.action for s in specs if s.split == "test")
    assert set(train) == set(ACTIONS) and max(train.values()) - min(train.values()) <= 1
    assert set(test) == set(ACTIONS) and set(test.values()) == {1}
    assert len({s.name for s in specs}) == len(specs)
    assert [s.action for s in specs] != [ACTIONS[i % 10] for i in range(len(specs))]  # shuffled


@pytest.mark.parametrize("bad", [{"n_train": -1}, {"width": 10}, {"height": "big"},
                                 {"min_seconds": 3.0, "max_seconds": 2.0}, {"max_people": 0},
                                 {"n_train": 0, "n_test": 0}, {"widht": 160}])
def test_bad_params_raise(bad):
    key = next(iter(bad))
    with pytest.raises(ParamError, match=key):
        SynthConfig.from_params(overlaid({"synth": {**TINY, **bad}, "_path": "p.yaml"}))


def test_cli(tmp_path, capsys, caplog):
    from stages.synth import main

    caplog.set_level("INFO", logger="actparse")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(overlaid({"seed": 0, "synth": {**TINY, "n_train": 1, "n_test": 1}})))
    assert main(["--params", str(params), "--root", str(tmp_path), "--width", "64", "--height", "48"]) == 0
    out = tmp_path / "artifacts" / "synth"
    videos = read_df(out / "videos.parquet", "videos")
    assert list(videos.width) == [64, 64] and list(videos.height) == [48, 48]
    assert (out / "annotations" / "multisports_gt.pkl").exists()
    assert any(r.name == "actparse.synth" and "2 videos (1 train / 1 test)" in r.getMessage() for r in caplog.records)
    assert main(["--params", str(params), "--root", str(tmp_path), "--n-train", "-1"]) == 2
    assert "n_train" in capsys.readouterr().err


def test_part_boxes_are_tight_around_drawn_pixels():
    import cv2

    from actparse.synth import figure_motion, shape_box, skeleton, draw_shape, _make_scene

    cfg = tiny_cfg(width=160, height=120, max_people=1, occluder_prob=0.0)
    worst = 0.0
    for action in ("jumping_jacks", "kicking", "squatting", "clapping"):
        spec = VideoSpec(index=5, name="t", split="train", action=action, n_frames=40)
        fig = _make_scene(spec, cfg)[0][0]
        poses = figure_motion(fig, action, spec.n_frames, cfg.fps)[0]
        for pose in poses[::7]:
            kps, shapes = skeleton(pose, fig.size, 80.0, 110.0, fig.build)
            off = np.array([80.0, 60.0])
            for j, part in enumerate(PARTS):
                canvas = np.zeros((240, 320), np.uint8)  # large enough: nothing is clipped
                for kind, label, _, g in shapes:
                    if label == j:
                        g2 = tuple(x + off if isinstance(x, np.ndarray) and x.shape == (2,) else x for x in g) \
                            if kind != "poly" else np.asarray(g) + off
                        draw_shape(canvas, kind, g2, 1, cv2.LINE_8)
                boxes = [shape_box(k, g) for k, lab, _, g in shapes if lab == j]
                b = np.concatenate([np.min(boxes, 0)[:2], np.max(boxes, 0)[2:]]) + np.tile(off, 2)
                ys, xs = np.nonzero(canvas)
                pix = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
                # pixel-quantised drawn extent within 1 px of the GT box on every side
                assert (np.abs(pix - b) <= 1.05).all(), (part, pix, b)
                worst = max(worst, float(np.abs(pix - b).max()))
    assert worst > 0
