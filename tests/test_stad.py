"""Seed 003 system: SlowFast + Person-Context Cross Attention head, decoupled learning, stad stages."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from _params import overlaid
from actparse.models.stad import PCCAHead, STADModel, expand_rois
from actparse.models.slowfast import SlowFastBackbone, SlowFastConfig
from actparse.stad import (bce_loss, cache_features, class_balanced_weights, fit_classifier, fit_phase1,
                           freeze_for_decoupling, gt_samples, keyframe_indices, roi_top1, settings_from_params,
                           train_step)
from actparse.schemas import read_df

TINY_SF = SlowFastConfig(stem_dim=4, beta_inv=4, alpha=4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(seed: int = 0, k: int = 5):
    g = torch.Generator().manual_seed(seed)
    clip = torch.randn(2, 3, 8, 48, 64, generator=g)
    rois = torch.tensor([[0, 4.0, 6.0, 24.0, 44.0], [1, 30.0, 2.0, 60.0, 46.0], [1, 2.0, 10.0, 20.0, 40.0]])
    tg = torch.zeros(3, k)
    tg[0, 1] = 1
    tg[1, 3] = 1  # third person: no action (all zeros)
    return clip, rois, tg


def test_backbone_shapes_and_stride():
    bb = SlowFastBackbone(TINY_SF)
    clip = torch.randn(2, 3, 8, 48, 64)
    slow, fast = bb.pathways(clip)
    assert slow.shape[2] == 2 and fast.shape[2] == 8  # alpha = 4
    fmap = bb(clip)
    assert fmap.shape == (2, TINY_SF.out_channels, 48 // 16, 64 // 16)
    with pytest.raises(ValueError, match="multiple of alpha"):
        bb(torch.randn(1, 3, 6, 48, 64))
    with pytest.raises(ValueError, match="stage_depths"):
        SlowFastConfig(stage_depths=(1, 1, 9, 1))


@pytest.mark.parametrize("head", ["pcca", "linear"])
def test_model_logits_shape(head):
    torch.manual_seed(0)
    m = STADModel(TINY_SF, 5, head=head, dim=16, heads=2, roi_size=3)
    clip, rois, _ = _batch()
    out = m(clip, rois)
    assert out.shape == (3, 5) and torch.isfinite(out).all()
    assert m.roi_features(clip, rois).shape == (3, m.head.feature_dim)
    # the classifier starts at the prior probability (bias init), whatever the input
    m.eval()
    with torch.no_grad():
        m.head.classifier.weight.zero_()
        assert torch.allclose(torch.sigmoid(m(clip, rois)), torch.full((3, 5), 0.1), atol=1e-5)


def test_bce_loss_matches_definition():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    tg = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.sigmoid(logits)
    manual = -(tg * torch.log(p) + (1 - tg) * torch.log(1 - p)).mean()
    assert torch.allclose(bce_loss(logits, tg), manual, atol=1e-6)
    w = torch.tensor([1.0, 0.0])
    first = -(tg[0] * torch.log(p[0]) + (1 - tg[0]) * torch.log(1 - p[0])).mean()
    assert torch.allclose(bce_loss(logits, tg, w), first, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        bce_loss(logits, tg[:1])


@pytest.mark.parametrize("head", ["pcca", "linear"])
def test_training_steps_decrease_loss_on_fixed_batch(head):
    torch.manual_seed(1)
    m = STADModel(TINY_SF, 5, head=head, dim=16, heads=2, roi_size=3, dropout=0.0)
    clip, rois, tg = _batch()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    m.train()
    with torch.no_grad():
        before = float(bce_loss(m(clip, rois), tg))
    for _ in range(3):
        train_step(m, clip, rois, tg, opt)
    with torch.no_grad():
        after = float(bce_loss(m(clip, rois), tg))
    assert after < before


def test_pcca_uses_context_linear_does_not():
    """Changing features outside the person box but inside its 2x context changes PCCA, not Linear."""
    torch.manual_seed(2)
    feat = torch.randn(1, 8, 12, 12)
    rois = torch.tensor([[0, 4.0 * 16, 4.0 * 16, 8.0 * 16, 8.0 * 16]])  # cells 4..8 of a stride-16 map
    ctx = feat.clone()
    ctx[:, :, 0:3, 2:10] += 5.0  # above the person (rows 0-2), partly inside the doubled box (cells 2..10)
    outs = {}
    for kind in ("pcca", "linear"):
        h = PCCAHead(8, 3, kind=kind, dim=16, heads=2, roi_size=4, spatial_scale=1 / 16, dropout=0.0).eval()
        with torch.no_grad():
            outs[kind] = (h(feat, rois), h(ctx, rois))
    assert torch.allclose(*outs["linear"])
    assert not torch.allclose(*outs["pcca"])
    assert h.feature_dim == 8


def test_expand_rois_doubles_about_centre():
    r = torch.tensor([[0, 10.0, 20.0, 30.0, 60.0]])
    e = expand_rois(r, 2.0)
    assert torch.allclose(e, torch.tensor([[0, 0.0, 0.0, 40.0, 80.0]]))


def test_class_balanced_weights_equalise_classes():
    labels = ["a"] * 8 + ["b"] * 2 + ["none"] * 2
    w = class_balanced_weights(labels)
    assert math.isclose(w.sum(), 1.0)
    per = {c: w[[i for i, x in enumerate(labels) if x == c]].sum() for c in set(labels)}
    assert all(math.isclose(v, 1 / 3) for v in per.values())


def test_decoupled_phase_trains_only_the_classifier():
    torch.manual_seed(3)
    m = STADModel(TINY_SF, 5, head="pcca", dim=16, heads=2, roi_size=3)
    video = np.random.default_rng(0).integers(0, 255, size=(20, 48, 64, 3), dtype=np.uint8)
    smp = gt_samples(pd.DataFrame({"frame": [3, 3, 9], "person": [0, 1, 0],
                                   "box": [np.array([2, 4, 20, 40.]), np.array([30, 2, 60, 44.]), np.array([5, 5, 25, 45.])],
                                   "action": ["b", "none", "a"]}), 0, 1.0, ["a", "b", "c", "d", "e"])
    assert [s.frame for s in smp] == [3, 9]
    assert smp[0].targets.tolist() == [[0, 1, 0, 0, 0], [0, 0, 0, 0, 0]] and smp[0].labels == ["b", "none"]
    s = settings_from_params(overlaid({"stad": dict(num_frames=8, interval=1, batch_size=2, decoupled_epochs=3,
                                                     decoupled_lr=0.5)}))
    backbone_before = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    clf_before = m.head.classifier.weight.detach().clone()
    feats, targets, labels = cache_features(m, [video], smp, s)
    assert feats.shape == (3, m.head.feature_dim) and labels == ["b", "none", "a"]
    fit_classifier(m, feats, targets, labels, s, seed=0)
    assert all(torch.equal(v, m.backbone.state_dict()[k]) for k, v in backbone_before.items())
    assert not torch.equal(clf_before, m.head.classifier.weight)
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable == ["head.classifier.weight", "head.classifier.bias"]
    freeze_for_decoupling(m, reinit=True)
    assert not torch.equal(clf_before, m.head.classifier.weight)


def test_per_epoch_validation_only_watches():
    """Both phases with held-out key frames record the action top-1 of their persons after every epoch;
    the weights (dropout, flips and colour jitter on) equal those of the same training without it."""
    rng = np.random.default_rng(4)
    videos = [rng.integers(0, 255, size=(16, 48, 64, 3), dtype=np.uint8) for _ in range(3)]
    boxes = [np.array([2, 4, 20, 40.]), np.array([30, 2, 60, 44.])]

    def samples(video, actions):
        return gt_samples(pd.DataFrame({"frame": [3, 3, 9, 9], "person": [0, 1, 0, 1], "box": boxes * 2,
                                        "action": actions}), video, 1.0, ["a", "b", "c"])

    pools = [samples(0, ["a", "none", "b", "a"]), samples(1, ["c", "b", "none", "c"])]
    val = (videos[2:], samples(0, ["a", "b", "c", "none"]))
    s = settings_from_params(overlaid({"stad": dict(num_frames=4, interval=2, batch_size=2, epochs=2,
                                                     samples_per_video=2, decoupled_epochs=3, decoupled_lr=0.5,
                                                     flip=True, color_jitter=0.2)}))
    runs = []
    for held in (val, None):
        torch.manual_seed(3)
        m = STADModel(TINY_SF, 3, head="pcca", dim=16, heads=2, roi_size=3, dropout=0.5)
        h1 = fit_phase1(m, videos[:2], pools, s, seed=0, val=held)
        feats, targets, labels = cache_features(m, videos[:2], [x for p in pools for x in p], s)
        vf = None if held is None else cache_features(m, *held, s)[:2]
        h2 = fit_classifier(m, feats, targets, labels, s, seed=0, val=vf)
        runs.append((h1, h2, m.state_dict()))
    (w1, w2, a), (p1, p2, b) = runs
    assert len(w1["val_top1"]) == 2 and len(w2["val_top1"]) == 3 and "val_top1" not in p1 and "val_top1" not in p2
    # three acting persons held out: top-1 in thirds
    assert all(any(math.isclose(v, k / 3) for k in range(4)) for v in w1["val_top1"] + w2["val_top1"])
    assert w1["loss"] == p1["loss"] and w2["loss"] == p2["loss"] and all(torch.equal(a[k], b[k]) for k in a)
    assert roi_top1(np.array([[0.9, 0.1], [0.2, 0.7], [0.5, 0.4]]), np.array([[1, 0], [1, 0], [0, 0]])) == 0.5
    assert math.isnan(roi_top1(np.zeros((1, 2)), np.zeros((1, 2))))


def test_keyframe_indices_centred_and_clamped():
    assert keyframe_indices(100, 50, 8, 2).tolist() == [42, 44, 46, 48, 50, 52, 54, 56]
    assert keyframe_indices(10, 0, 4, 3).tolist() == [0, 0, 0, 3]
    assert keyframe_indices(10, 9, 4, 3).tolist() == [3, 6, 9, 9]


# ------------------------------------------------------------------------------ stages
@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    from actparse.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("stad")
    cfg = SynthConfig.from_params(overlaid({"synth": dict(
        seed=5, n_train=2, n_test=1, width=64, height=48, min_seconds=1.0, max_seconds=1.2, max_people=2, occluder_prob=0.0)}))
    generate(cfg, root / "artifacts" / "synth", progress=False)
    return root


def _params(root, **stad):
    p = overlaid({"seed": 0, "device": "cpu", "data": {"root": "artifacts/synth"},
         "stad": {"enabled": True, "head": "pcca", "boxes": "gt", "stride": 5, "short_side": 48, "stem_dim": 4,
                  "dim": 16, "heads": 2, "roi_size": 3, "epochs": 1, "samples_per_video": 1, "batch_size": 2,
                  "decoupled": True, "decoupled_epochs": 2, "decoupled_keyframes": 2, **stad},
         "link": {}})
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    return str(path)


def test_stad_stages_end_to_end(tiny_root):
    from stages import stad_detect, stad_evaluate, stad_train

    params = _params(tiny_root)
    for mod in (stad_train, stad_detect, stad_evaluate):
        assert mod.main(["--params", params, "--root", str(tiny_root)]) == 0
    det = read_df(tiny_root / "artifacts" / "stad" / "action_detections.parquet", "action_detections")
    gt = read_df(tiny_root / "artifacts" / "synth" / "gt_persons.parquet", "gt_persons")
    videos = read_df(tiny_root / "artifacts" / "synth" / "videos.parquet", "videos")
    test_gt = gt[gt.video.isin(videos.video[videos.split == "test"]) & (gt.frame % 5 == 0)]
    assert len(det) == len(test_gt) * 10  # every GT box on every key frame x 10 classes
    assert det.score.between(0, 1).all()
    m = json.loads((tiny_root / "metrics" / "stad.json").read_text())
    assert m["enabled"] and m["decoupled"] and m["head"] == "pcca"
    for key in ("frame_map@0.5", "video_map@0.2", "video_map@0.5", "video_map@0.10:0.90"):
        assert m[key] is None or 0 <= m[key] <= 100
        assert key in m["phase1"]
    read_df(tiny_root / "artifacts" / "stad" / "tubes.parquet", "tubes")


def test_stad_disabled_and_bad_params(tiny_root, tmp_path):
    from stages import stad_evaluate, stad_train

    params = _params(tiny_root, enabled=False)
    assert stad_train.main(["--params", params, "--root", str(tmp_path)]) == 0
    assert stad_evaluate.main(["--params", params, "--root", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "metrics" / "stad.json").read_text()) == {"enabled": False}
    bad = _params(tiny_root, num_frames=6)
    assert stad_train.main(["--params", bad, "--root", str(tiny_root)]) == 2
    bad = _params(tiny_root, head="mlp")
    assert stad_train.main(["--params", bad, "--root", str(tiny_root)]) == 2


@pytest.fixture(scope="module")
def val_root(tmp_path_factory):
    """Three train videos, two of one action (the long tail), so stad.val_fraction 0.5 holds one out."""
    from actparse.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("stad_val")
    cfg = SynthConfig.from_params(overlaid({"synth": dict(
        seed=5, n_train=3, n_test=1, long_tail=1000.0, width=64, height=48, min_seconds=1.0, max_seconds=1.2,
        max_people=2, occluder_prob=0.0)}))
    generate(cfg, root / "artifacts" / "synth", progress=False)
    return root


def test_stad_train_holds_out_videos_and_watches_them(val_root, caplog):
    import logging

    from actparse.curves import curve
    from stages import stad_train

    params = _params(val_root, epochs=2, val_fraction=0.5)
    with caplog.at_level(logging.INFO, logger="actparse"):
        assert stad_train.main(["--params", params, "--root", str(val_root)]) == 0
    info = json.loads((val_root / "artifacts" / "models" / "stad" / "train_info.json").read_text())
    (held,) = info["val_videos"]
    gt = read_df(val_root / "artifacts" / "synth" / "gt_persons.parquet", "gt_persons")
    assert info["train_videos"] == 2 and info["val_persons"] == int((gt[gt.video == held].frame % 5 == 0).sum())
    assert len(info["phase1_val_top1"]) == 2 and len(info["phase2_val_top1"]) == 2
    assert all(0.0 <= v <= 1.0 for v in info["phase1_val_top1"] + info["phase2_val_top1"])
    df = curve("stad", info)
    assert df.phase.tolist() == [1, 1, 2, 2]
    assert df.val_top1.tolist() == info["phase1_val_top1"] + info["phase2_val_top1"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert any("2/2 epochs " in ln and "val_top1=" in ln for ln in lines)
    assert any("(phase 2)" in ln and "val_top1=" in ln for ln in lines)
    assert stad_train.main(["--params", _params(val_root, val_fraction=-0.1), "--root", str(val_root)]) == 2
