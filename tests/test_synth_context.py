"""synth.context: context actions copy their pair's body motion and get a prop beside the figure,
inside seed 003's 2x context box; off (the default) the world is the one it always was."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from _params import overlaid, write_params
from actparse.constants import ACTIONS
from actparse.params import ParamError, load_params
from actparse.synth import CONTEXT_PAIRS, SynthConfig, VideoSpec, context_motion, context_prop, render_video


def _cfg(**kw) -> SynthConfig:
    return SynthConfig.from_params(overlaid({"synth": {"n_train": 4, "n_test": 0, "workers": 1, **kw}}))


def _digest(spec: VideoSpec, cfg: SynthConfig):
    """(per-frame RGB means, sha256 of the ground truth rounded to 1e-3) of one rendered video."""
    means, items = [], []
    for frame, gts in render_video(spec, cfg):
        means.append(frame.reshape(-1, 3).mean(0))
        for g in gts:
            items.append([int(g["person"]), np.round(g["box"], 3).tolist(), np.round(g["keypoints"], 3).tolist(),
                          np.round(g["part_boxes"], 3).tolist(), [bool(v) for v in g["part_visible"]],
                          list(g["part_states"]), g["action"]])
    return np.array(means), len(items), hashlib.sha256(json.dumps(items).encode()).hexdigest()


# Rendered by actparse/synth.py as committed *before* synth.context existed (3 figures, an occluder,
# a "kicking" video: an action that synth.context changes). The ground truth is hashed exactly (pure
# numpy geometry, rounded to 1e-3); the frames as per-frame channel means, compared to 0.02 so that
# a last-bit difference of OpenCV's float resize on another CPU does not matter, while a prop
# (~30 px changed by ~100 levels in 96x72) or any change of the random draws does.
PIN = dict(seed=21, n_train=1, n_test=0, width=96, height=72, fps=25, min_seconds=1.0, max_seconds=1.0,
           max_people=3, occluder_prob=1.0, workers=1)
PIN_SPEC = VideoSpec(9, "synth_00009", "train", "kicking", 12)
PIN_GT_ROWS = 36
PIN_GT_SHA256 = "b1ce2500a5f01ca6b3a904233080d6d4fd48003a1b7d14919bbd0120730b4596"
PIN_MEANS = [[128.952, 122.782, 146.857], [128.067, 124.462, 147.127], [129.489, 125.111, 147.462],
             [129.785, 123.422, 146.868], [130.047, 121.333, 150.692], [129.354, 120.859, 148.848],
             [128.769, 120.388, 146.235], [128.364, 120.887, 146.792], [129.229, 120.826, 146.241],
             [130.154, 121.594, 146.222], [129.048, 121.874, 146.136], [128.419, 122.191, 147.348]]


def test_default_world_is_unchanged():
    cfg = SynthConfig.from_params(overlaid({"synth": PIN}))
    assert cfg.context is False  # the committed default
    means, rows, sha = _digest(PIN_SPEC, cfg)
    assert rows == PIN_GT_ROWS
    assert sha == PIN_GT_SHA256
    np.testing.assert_allclose(means, PIN_MEANS, atol=0.02)
    # the pin sees the switch: with context the figures march and a ball lies beside each
    means_c, rows_c, sha_c = _digest(PIN_SPEC, SynthConfig.from_params(overlaid({"synth": {**PIN, "context": True}})))
    assert sha_c != PIN_GT_SHA256
    assert np.abs(means_c - np.asarray(PIN_MEANS)).max() > 0.1


def test_pairs_are_well_formed():
    motions = [m for m, _, _ in CONTEXT_PAIRS]
    labels = [a for _, a, _ in CONTEXT_PAIRS]
    props = [p for _, _, p in CONTEXT_PAIRS]
    assert set(motions) | set(labels) <= set(ACTIONS)
    assert len(set(motions + labels)) == 2 * len(CONTEXT_PAIRS)  # no action in two pairs
    assert len(set(props)) == len(props)  # one prop per pair, all distinct
    for m, a, p in CONTEXT_PAIRS:
        assert context_motion(a) == m and context_prop(a) == p
        assert context_motion(m) == m and context_prop(m) is None
    assert context_motion("idle") == "idle" and context_prop("idle") is None


def _frames_gt(spec, cfg):
    out = list(render_video(spec, cfg))
    return [f for f, _ in out], [g for _, g in out]


def _strip_action(gts):
    return [[{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in g.items() if k != "action"}
             for g in frame] for frame in gts]


@pytest.mark.parametrize("motion,action,prop", CONTEXT_PAIRS)
def test_paired_actions_share_the_body_and_differ_in_label(motion, action, prop):
    cfg_on = _cfg(context=True, max_people=3, occluder_prob=0.5, width=128, height=96)
    cfg_off = _cfg(context=False, max_people=3, occluder_prob=0.5, width=128, height=96)
    for index in (1, 2):
        spec = VideoSpec(index, "v", "train", action, 30)
        _, gt_a = _frames_gt(spec, cfg_on)
        _, gt_m = _frames_gt(VideoSpec(index, "v", "train", motion, 30), cfg_on)
        _, gt_m_off = _frames_gt(VideoSpec(index, "v", "train", motion, 30), cfg_off)
        _, gt_a_off = _frames_gt(spec, cfg_off)
        # same persons, boxes, keypoints (and their visibility), part boxes and part states
        assert _strip_action(gt_a) == _strip_action(gt_m) == _strip_action(gt_m_off)
        assert sum(len(f) for f in gt_a) > 0
        # only the label differs: the pair's own label inside the action interval
        for fa, fm in zip(gt_a, gt_m):
            for ga, gm in zip(fa, fm):
                assert (ga["action"], gm["action"]) in (("none", "none"), (action, motion))
        assert any(g["action"] == action for f in gt_a for g in f)
        # without the switch the action keeps its own motion
        assert _strip_action(gt_a_off) != _strip_action(gt_a)


@pytest.mark.parametrize("motion,action,prop", CONTEXT_PAIRS)
def test_prop_lies_in_the_context_box_outside_the_person_box(motion, action, prop):
    """One figure, no occluder: the frames of the context action differ from its pair's exactly
    where the prop is, on every frame of the action interval and on no other, and every changed
    pixel is inside the person box enlarged 2x about its centre and outside the person box."""
    cfg = _cfg(context=True, max_people=1, occluder_prob=0.0)
    cfg_off = _cfg(context=False, max_people=1, occluder_prob=0.0)
    n_checked = 0
    for index in range(4):
        fr_a, gt_a = _frames_gt(VideoSpec(index, "v", "train", action, 30), cfg)
        fr_m, gt_m = _frames_gt(VideoSpec(index, "v", "train", motion, 30), cfg)
        assert _strip_action(gt_a) == _strip_action(gt_m)
        if index == 0:  # the pair's first action has no prop: its frames are the context-free ones
            fr_off, _ = _frames_gt(VideoSpec(index, "v", "train", motion, 30), cfg_off)
            assert all(np.array_equal(x, y) for x, y in zip(fr_m, fr_off))
        for fa, fm, gts in zip(fr_a, fr_m, gt_a):
            changed = np.any(fa != fm, axis=2)
            acting = [g for g in gts if g["action"] == action]
            if not acting:
                assert not changed.any()  # no prop outside the action interval
                continue
            (g,) = acting
            x1, y1, x2, y2 = (float(v) for v in g["box"])
            w, h = x2 - x1, y2 - y1
            ys, xs = np.nonzero(changed)
            assert len(xs) >= 4, "the prop is missing on a frame of the action interval"
            # pixel [x, x+1) x [y, y+1) misses the person box ...
            assert np.all((xs >= x2) | (xs + 1 <= x1) | (ys >= y2) | (ys + 1 <= y1))
            # ... and lies inside the 2x context box
            assert xs.min() >= x1 - w / 2 and xs.max() + 1 <= x2 + w / 2
            assert ys.min() >= y1 - h / 2 and ys.max() + 1 <= y2 + h / 2
            n_checked += 1
    assert n_checked >= 40


def test_props_look_different():
    """The three props are told apart by colour: the median colours of their pixels are far apart."""
    cfg = _cfg(context=True, max_people=1, occluder_prob=0.0)
    for index in range(3):
        colours = {}
        for motion, action, prop in CONTEXT_PAIRS:
            fa = next(iter(render_video(VideoSpec(index, "v", "train", action, 3), cfg)))[0]
            fm = next(iter(render_video(VideoSpec(index, "v", "train", motion, 3), cfg)))[0]
            changed = np.any(fa != fm, axis=2)
            assert changed.sum() >= 12, prop
            colours[prop] = np.median(fa[changed].astype(float), axis=0)
        c = list(colours.values())
        assert min(np.abs(c[i] - c[j]).max() for i in range(len(c)) for j in range(i + 1, len(c))) > 80, colours


@pytest.mark.parametrize("value", ["yes", 1, 0, None, [True]])
def test_context_must_be_a_bool(value, tmp_path):
    with pytest.raises(ParamError, match="synth.context"):
        SynthConfig.from_params(overlaid({"synth": {"context": value}}))
    with pytest.raises(ParamError, match="context"):
        load_params(write_params(tmp_path / "params.yaml", {"synth": {"context": value}}))


def test_context_is_required_and_read():
    params = overlaid({})
    del params["synth"]["context"]
    with pytest.raises(ParamError, match="missing parameter 'synth.context'"):
        SynthConfig.from_params(params)
    assert SynthConfig.from_params(overlaid({"synth": {"context": True}})).context is True
