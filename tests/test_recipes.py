"""The papers' training recipes: presets, input normalisation, the CSN validation split and the
ensemble-weight search (seed 001 Table 2), seed 003's multi-scale training and test views."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from _params import overlaid
from actparse import clips as C
from actparse.csn import (clip_spec_from_params, ensemble_weights_from_params, search_ensemble_weights,
                          train_settings_from_params, weight_grid)
from actparse.models.csn import TASKS
from actparse.params import ParamError, apply_preset, load_params
from actparse.train import val_split

ROOT = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((ROOT / "params.yaml").read_text())
OVERLAYS = ["params.gpu.yaml", "params.gpu.stad.yaml", "params.gpu.gym.yaml", "params.gpu.partattn.yaml"]
SOURCE = "\n".join(p.read_text() for d in ("actparse", "stages") for p in sorted((ROOT / d).rglob("*.py")))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in ("csn.ensemble_weights", "gym.num_frames", "gym.loss_weights"):
            yield from _leaves(v, key + ".")
        else:
            yield key, v


def _merged(*names: str, tmp_path: Path) -> dict:
    params = BASE
    for name in names:
        params = apply_preset(params, yaml.safe_load((ROOT / name).read_text()), name)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return load_params(path)


# ------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("name", OVERLAYS)
def test_each_preset_applies_and_every_key_is_a_param_the_code_reads(name, tmp_path):
    over = yaml.safe_load((ROOT / name).read_text())
    for key, _ in _leaves(over):
        node = BASE
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{name}: {key} is not in params.yaml"
            node = node[part]
        if "." in key:  # the stage code reads it by this dotted name (or f"{section}.<key>" for the YOLO stages)
            rest = key.split(".", 1)[1]
            assert f'"{key}' in SOURCE or f'}}.{rest}"' in SOURCE, f"{name}: no code reads {key}"
    p = _merged("params.gpu.yaml", *([name] if name != "params.gpu.yaml" else []), tmp_path=tmp_path)
    # every section's reader accepts the merged values (types, ranges, choices)
    from actparse import gym, partattn, stad

    train_settings_from_params(p)
    clip_spec_from_params(p)
    ensemble_weights_from_params(p, ["ip", "ir"], TASKS)
    stad.settings_from_params(p), stad.config_from_params(p), stad.head_kwargs_from_params(p)
    gym.settings_from_params(p), gym.config_from_params(p)
    partattn.config_from_params(p, 10), partattn.settings_from_params(p)


def test_use_preset_lays_several_overlays_in_order(tmp_path):
    import subprocess
    import sys

    def main(args):
        return subprocess.run([sys.executable, str(ROOT / "scripts" / "use_preset.py"), *args], cwd=ROOT,
                              capture_output=True, text=True).returncode

    base = tmp_path / "params.yaml"
    base.write_text((ROOT / "params.yaml").read_text())
    assert main([str(ROOT / "params.gpu.yaml"), str(ROOT / "params.gpu.stad.yaml"), "--base", str(base)]) == 0
    p = yaml.safe_load(base.read_text())
    assert p["device"] == "cuda" and p["csn"]["depth"] == 152 and p["stad"]["depth"] == 101
    assert p["stad"]["enabled"] is True and p["gym"] == BASE["gym"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("stadd: {enabled: true}\n")
    assert main([str(bad), "--base", str(base)]) == 2


# Seed papers' numbers -> (overlay, param, value). A spec check of the presets against the papers.
PAPER = [
    # seed 001 sec 2.1 "Training": SGD, batch 4 per GPU, 58 epochs, lr 0.00008 / 10 at 32 and 48,
    # linear warm-up 16 iterations, weight decay 0.0001, Nesterov momentum 0.9; BN frozen (Tables 3, 5);
    # 7 test clips, short side 256; CSN-152 with 32 x 2 clips; fusion weights of Tables 3 (action) and 2.
    ("params.gpu.yaml", "csn.epochs", 58), ("params.gpu.yaml", "csn.batch_size", 4),
    ("params.gpu.yaml", "csn.lr", 8e-5), ("params.gpu.yaml", "csn.lr_steps", [32, 48]),
    ("params.gpu.yaml", "csn.lr_gamma", 0.1), ("params.gpu.yaml", "csn.warmup_iters", 16),
    ("params.gpu.yaml", "csn.weight_decay", 1e-4), ("params.gpu.yaml", "csn.momentum", 0.9),
    ("params.gpu.yaml", "csn.nesterov", True), ("params.gpu.yaml", "csn.freeze_bn", True),
    ("params.gpu.yaml", "csn.depth", 152), ("params.gpu.yaml", "csn.num_frames", 32),
    ("params.gpu.yaml", "csn.interval", 2), ("params.gpu.yaml", "csn.test_clips", 7),
    ("params.gpu.yaml", "csn.short_side", 256), ("params.gpu.yaml", "csn.background", "none"),
    ("params.gpu.yaml", "csn.input_norm", "vmz"),
    ("params.gpu.yaml", "csn.ensemble_weights.action", {"ip": 7.0, "ir": 1.0}),
    ("params.gpu.yaml", "csn.ensemble_weights.head", {"ip": 1.413, "ir": 1.0}),
    ("params.gpu.yaml", "csn.ensemble_weights.hand", {"ip": 1.314, "ir": 1.0}),
    ("params.gpu.yaml", "csn.ensemble_weights.arm", {"ip": 1.0, "ir": 0.0}),
    ("params.gpu.yaml", "csn.ensemble_weights.hip", {"ip": 1.906, "ir": 1.0}),
    ("params.gpu.yaml", "csn.ensemble_weights.leg", {"ip": 3.515, "ir": 1.0}),
    ("params.gpu.yaml", "csn.ensemble_weights.foot", {"ip": 1.576, "ir": 1.0}),
    # seed 003 sec 3.2 / 3.5: SlowFast R101 8x8, alpha 4; SGD lr 0.1, 3-epoch linear warm-up, wd 1e-4,
    # Nesterov 0.9, x0.1 at epochs 5, 8, 10, 12 epochs; scales 256x455 / 360x640 with batch 32 / 24;
    # persons with confidence >= 0.6; test: both scales with horizontal flips; context box 2x.
    ("params.gpu.stad.yaml", "stad.depth", 101), ("params.gpu.stad.yaml", "stad.alpha", 4),
    ("params.gpu.stad.yaml", "stad.num_frames", 32), ("params.gpu.stad.yaml", "stad.interval", 2),
    ("params.gpu.stad.yaml", "stad.optimizer", "sgd"), ("params.gpu.stad.yaml", "stad.lr", 0.1),
    ("params.gpu.stad.yaml", "stad.warmup_epochs", 3.0), ("params.gpu.stad.yaml", "stad.weight_decay", 1e-4),
    ("params.gpu.stad.yaml", "stad.momentum", 0.9), ("params.gpu.stad.yaml", "stad.lr_steps", [5, 8, 10]),
    ("params.gpu.stad.yaml", "stad.lr_gamma", 0.1), ("params.gpu.stad.yaml", "stad.epochs", 12),
    ("params.gpu.stad.yaml", "stad.train_scales", [256, 360]),
    ("params.gpu.stad.yaml", "stad.scale_batch_sizes", [32, 24]),
    ("params.gpu.stad.yaml", "stad.test_scales", [256, 360]), ("params.gpu.stad.yaml", "stad.test_flip", True),
    ("params.gpu.stad.yaml", "stad.min_score", 0.6), ("params.gpu.stad.yaml", "stad.context_scale", 2.0),
    ("params.gpu.stad.yaml", "stad.head", "pcca"),
    # seed 004: SlowOnly R50, C = 64, T 4 / 16 / 32, loss weights 1, 2, 4 on frozen base models.
    ("params.gpu.gym.yaml", "gym.depth", 50), ("params.gpu.gym.yaml", "gym.stem_dim", 64),
    ("params.gpu.gym.yaml", "gym.num_frames", {"event": 4, "set": 16, "element": 32}),
    ("params.gpu.gym.yaml", "gym.loss_weights", {"event": 1.0, "set": 2.0, "element": 4.0}),
    # seed 000: the best row of its ablation (augmentation, action info, RoI pooling, attention).
    ("params.gpu.partattn.yaml", "partattn.augment", True), ("params.gpu.partattn.yaml", "partattn.use_action", True),
    ("params.gpu.partattn.yaml", "partattn.roi_mode", "align"),
    ("params.gpu.partattn.yaml", "partattn.use_attention", True),
]


@pytest.mark.parametrize("name, key, value", PAPER, ids=[f"{n}:{k}" for n, k, _ in PAPER])
def test_recipe_values_equal_the_papers(name, key, value):
    node = yaml.safe_load((ROOT / name).read_text())
    for part in key.split("."):
        node = node[part]
    assert node == value


def test_recipe_reaches_the_training_settings(tmp_path):
    from actparse import gym, stad

    p = _merged("params.gpu.yaml", "params.gpu.stad.yaml", "params.gpu.gym.yaml", tmp_path=tmp_path)
    t = train_settings_from_params(p)
    assert (t.epochs, t.batch_size, t.lr, t.warmup_iters, t.lr_steps, t.nesterov) == (58, 4, 8e-5, 16, (32.0, 48.0), True)
    w = ensemble_weights_from_params(p, ["ip", "ir"], TASKS)
    assert w["action"] == {"ip": 7.0, "ir": 1.0} and w["arm"] == {"ip": 1.0, "ir": 0.0}
    s = stad.settings_from_params(p)
    assert s.train_scales == (256, 360) and s.scale_batch_sizes == (32, 24) and s.lr_steps == (5.0, 8.0, 10.0)
    assert gym.settings_from_params(p).loss_weights == {"event": 1.0, "set": 2.0, "element": 4.0}
    # the CSN schedule of the recipe: warm-up from 0.1 x lr over 16 iterations, / 10 at 32 and 48
    from actparse.train import Schedule

    sch = Schedule(t.lr, t.warmup_iters, 0.1, t.lr_steps, t.lr_gamma)
    assert sch.lr(0, 0.0) == pytest.approx(8e-6) and sch.lr(16, 1.0) == pytest.approx(8e-5)
    assert sch.lr(10 ** 6, 40.0) == pytest.approx(8e-6) and sch.lr(10 ** 6, 50.0) == pytest.approx(8e-7)


def test_bad_recipe_params_are_clear_errors(tmp_path):
    from actparse import stad

    p = _merged("params.gpu.yaml", "params.gpu.stad.yaml", tmp_path=tmp_path)
    p["stad"]["scale_batch_sizes"] = [32]
    with pytest.raises(ParamError, match="scale_batch_sizes"):
        stad.settings_from_params(p)
    p["stad"]["scale_batch_sizes"], p["stad"]["train_scales"] = None, [256, "360"]
    with pytest.raises(ParamError, match="train_scales"):
        stad.settings_from_params(p)
    p["csn"]["input_norm"] = "caffe"
    with pytest.raises(ParamError, match="input_norm"):
        clip_spec_from_params(p)


# ------------------------------------------------------------------------------ normalisation
def _frames():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, size=(4, 40, 48, 3), dtype=np.uint8)


@pytest.mark.parametrize("norm", sorted(C.NORMS))
def test_input_norm_switch_normalises_with_the_weights_statistics(norm):
    frames = _frames()
    spec = C.ClipSpec(num_frames=4, interval=1, short_side=40, crop=(40, 48), train_short_side=(40, 40),
                      input_norm=norm)
    x = C.test_clips(frames, spec, 1)[0]  # (3, T, H, W)
    mean, std = C.NORMS[norm]
    want = (frames.astype(np.float64) / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(x.permute(1, 2, 3, 0).numpy(), want, atol=1e-5)


def test_input_norm_values_and_default_keep_todays_csn_input(tmp_path):
    assert C.NORMS["vmz"] == ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989))
    # mmaction2 writes the same statistics on the 0-255 scale
    np.testing.assert_allclose(np.array(C.NORMS["vmz"]) * 255,
                               [[110.2008, 100.63983, 95.99475], [58.14765, 56.46975, 55.332195]], atol=1e-4)
    np.testing.assert_allclose(np.array(C.NORMS["imagenet"]) * 255,
                               [[123.675, 116.28, 103.53], [58.395, 57.12, 57.375]], atol=1e-4)
    assert C.NORMS["kinetics"] == ((0.45,) * 3, (0.225,) * 3)
    # params.yaml (no preset): the CSN input is exactly what it was (VMZ statistics + clip mean removed)
    p = load_params(ROOT / "params.yaml")
    spec = clip_spec_from_params(p)
    assert spec.input_norm == "vmz" and spec.background == "clip_mean"
    frames = _frames()
    start = int(C.uniform_clip_starts(len(frames), spec.num_frames, spec.interval, 1)[0])
    idx = C.clip_indices(len(frames), spec.num_frames, spec.interval, start)
    old = C.remove_background(C.to_tensor(C.center_crop(C.resize_clip(frames[idx], spec.short_side), spec.crop)),
                              "clip_mean")
    assert torch.equal(C.test_clips(frames, spec, 1)[0], old)
    # the GPU preset feeds plain RGB with the same statistics: no clip mean subtracted
    g = clip_spec_from_params(_merged("params.gpu.yaml", tmp_path=tmp_path))
    assert g.background == "none" and g.input_norm == "vmz"


def test_seed_models_take_the_norm_too():
    from actparse import gym, stad

    video = _frames()
    a = stad.make_clip(video, 2, 2, 1)  # default: kinetics, as before
    b = stad.make_clip(video, 2, 2, 1, norm="imagenet")
    frames = video[stad.keyframe_indices(len(video), 2, 2, 1)].astype(np.float64) / 255.0
    np.testing.assert_allclose(a.permute(1, 2, 3, 0).numpy(), (frames - 0.45) / 0.225, atol=1e-5)
    m, s = C.NORMS["imagenet"]
    np.testing.assert_allclose(b.permute(1, 2, 3, 0).numpy(), (frames - np.array(m)) / np.array(s), atol=1e-5)
    sq = video[:, :40, :40]
    c = gym.to_clip(sq, 40, None, norm="vmz")
    m, s = C.NORMS["vmz"]
    np.testing.assert_allclose(c.permute(1, 2, 3, 0).numpy(), (sq / 255.0 - np.array(m)) / np.array(s), atol=1e-5)


# ------------------------------------------------------------------------------ validation split
def test_val_split_is_stratified_seeded_and_disjoint():
    videos = [f"v{i:02d}" for i in range(40)]
    labels = [["a", "b", "c", "d"][i % 4] for i in range(40)]  # 10 per class
    val = val_split(videos, labels, 0.2, seed=0)
    assert len(val) == 8 and len(set(val)) == 8 and set(val) <= set(videos)
    per_class = {c: sum(labels[videos.index(v)] == c for v in val) for c in "abcd"}
    assert per_class == {"a": 2, "b": 2, "c": 2, "d": 2}
    train = [v for v in videos if v not in val]
    assert not set(train) & set(val) and len(train) == 32
    # same seed -> same split, whatever the input order; another seed -> another split
    order = np.random.default_rng(1).permutation(40)
    assert val_split([videos[i] for i in order], [labels[i] for i in order], 0.2, seed=0) == val
    assert val_split(videos, labels, 0.2, seed=1) != val
    # a class keeps at least one training video; fraction 0 holds out nothing
    assert val_split(["x", "y", "z"], ["a", "a", "b"], 0.5, seed=0) in (["x"], ["y"])
    assert val_split(videos, labels, 0.0) == []
    with pytest.raises(ValueError, match="labels"):
        val_split(videos, labels[:3], 0.2)


# ------------------------------------------------------------------------------ ensemble search
def test_weight_grid_covers_the_simplex():
    g = weight_grid(["ip", "ir"], 5)
    shares = sorted(w["ip"] / (w["ip"] + w["ir"]) for w in g)
    assert shares == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    assert all(max(w.values()) == 1.0 for w in g)


def test_search_picks_the_weight_that_maximises_val_accuracy():
    # three val videos; only an ip share a in (5/11, 8/11) gets all three right:
    # video 0 needs 0.3 + 0.6 a > 0.5, video 1 0.9 - 0.55 a > 0.5, video 2 0.4 + 0.22 a > 0.5
    ip = np.array([[0.9, 0.1], [0.65, 0.35], [0.38, 0.62]])
    ir = np.array([[0.3, 0.7], [0.1, 0.9], [0.6, 0.4]])
    y = np.array([0, 1, 1])
    res = search_ensemble_weights({"ip": ip, "ir": ir}, y, steps=21)
    share = res["weights"]["ip"] / (res["weights"]["ip"] + res["weights"]["ir"])
    assert res["accuracy"] == 1.0 and 5 / 11 < share < 8 / 11
    assert res["single"] == {"ip": pytest.approx(2 / 3), "ir": pytest.approx(1 / 3)}
    # brute force over the same grid: no weight does better, and the winner has the lowest NLL of the best
    best = []
    for w in weight_grid(["ip", "ir"], 21):
        a = w["ip"] / (w["ip"] + w["ir"])
        p = a * ip + (1 - a) * ir
        acc = (p.argmax(1) == y).mean()
        best.append((acc, -np.log(p[np.arange(3), y]).mean(), a))
    top = max(b[0] for b in best)
    assert top == res["accuracy"]
    assert share == pytest.approx(min((b for b in best if b[0] == top), key=lambda b: b[1])[2])
    # one variant (ir useless): weight 0 for it
    res = search_ensemble_weights({"ip": ip, "ir": 1 - ip}, np.array([0, 0, 1]), steps=11)
    assert res["weights"]["ir"] == 0.0 and res["accuracy"] == 1.0


def test_search_params_need_a_validation_split():
    p = {"_path": "p.yaml", "csn": {"ensemble_weights": "search", "val_fraction": 0.0}}
    with pytest.raises(ParamError, match="val_fraction"):
        ensemble_weights_from_params(p, ["ip", "ir"], TASKS)
    p["csn"]["ensemble_weights"] = "best"
    with pytest.raises(ParamError, match="'search'"):
        ensemble_weights_from_params(p, ["ip", "ir"], TASKS)


def test_search_end_to_end_on_tiny_videos(tmp_path):
    """train_csn holds out a stratified val split; csn picks per-task weights on it and uses them."""
    from actparse.paths import Paths
    from actparse.schemas import read_df
    from stages import csn as csn_stage
    from stages import train_csn
    from tests.test_csn import _tiny_csn_project

    params, classes = _tiny_csn_project(tmp_path)
    params["csn"].update(val_fraction=0.34, ensemble_weights="search", ensemble_grid=11, train_workers=1,
                         batch_size=2)
    paths = Paths(tmp_path)
    train_csn.run(params, tmp_path)
    info = json.loads((paths.models / "csn" / "train_info.json").read_text())
    val = info["val_videos"]
    assert len(val) == 2 and info["videos"] == 4  # one of the 3 train videos of each class held out
    labels = read_df(paths.part_labels / "labels.parquet", "part_labels")
    act = dict(labels.loc[labels.task == "action", ["video", "label"]].itertuples(index=False))
    assert sorted(act[v] for v in val) == ["side", "updown"]
    from actparse.curves import curve  # the held-out videos are also watched after every epoch

    for variant in ("ip", "ir"):
        var = info["variants"][variant]
        assert len(var["val_acc"]) == len(var["loss"]) == params["csn"]["epochs"]
        assert all(acc["action"] in (0.0, 0.5, 1.0) for acc in var["val_acc"])
        df = curve(f"csn_{variant}", info)
        assert df.val_action_acc.tolist() == [acc["action"] for acc in var["val_acc"]]

    csn_stage.run(params, tmp_path)
    rep = json.loads((paths.metrics / "ensemble.json").read_text())
    assert rep["search"] is True and rep["val_videos"] == 2 and rep["grid"] == 11
    pred = read_df(paths.video_predictions, "video_predictions")
    assert len(pred) == 8 * 2 * 3
    for task in classes:
        row = rep["tasks"][task]
        w = row["weights"]
        assert set(row["val"]) == {"ip", "ir", "ensemble"} and set(row["test"]) == {"ip", "ir", "ensemble"}
        # the chosen weights are the best on val, re-scored from the written val predictions
        probs = {m: np.stack([np.asarray(pred[(pred.video == v) & (pred.task == task) & (pred.model == m)].probs.iloc[0])
                              for v in val]) for m in ("ip", "ir")}
        y = np.array([classes[task].index(dict(labels.loc[labels.task == task, ["video", "label"]]
                                                .itertuples(index=False))[v]) for v in val])
        assert row["val"]["ensemble"] == search_ensemble_weights(probs, y, 11)["accuracy"]
        assert row["val"]["ensemble"] >= max(row["val"]["ip"], row["val"]["ir"])
        # and they are the weights of the ensemble rows of every video
        for video, g in pred[pred.task == task].groupby("video"):
            p = {m: np.asarray(r) for m, r in zip(g["model"], g["probs"])}
            np.testing.assert_allclose(p["ensemble"], (w["ip"] * p["ip"] + w["ir"] * p["ir"]) / (w["ip"] + w["ir"]),
                                       atol=1e-5)


def test_default_run_writes_fixed_weights_report(tmp_path):
    from actparse.paths import Paths
    from stages import csn as csn_stage
    from stages import train_csn
    from tests.test_csn import _tiny_csn_project

    params, classes = _tiny_csn_project(tmp_path)
    params["csn"].update(epochs=1, train_workers=1)
    train_csn.run(params, tmp_path)
    info = json.loads((Paths(tmp_path).models / "csn" / "train_info.json").read_text())
    assert info["videos"] == 6 and info["val_videos"] == []
    ck = torch.load(Paths(tmp_path).models / "csn" / "ip.pt", weights_only=True)
    assert "val_videos" not in ck["extra"]  # checkpoints of the default run are as before
    csn_stage.run(params, tmp_path)
    rep = json.loads((Paths(tmp_path).metrics / "ensemble.json").read_text())
    assert rep["search"] is False and rep["tasks"]["action"]["weights"] == {"ip": 2.0, "ir": 1.0}
    assert "val" not in rep["tasks"]["action"] and set(rep["tasks"]["hand"]["test"]) == {"ip", "ir", "ensemble"}
    # a search asked of models trained without a validation split is a clear error
    params["csn"].update(ensemble_weights="search", val_fraction=0.3)
    with pytest.raises(ValueError, match="trained without a validation split"):
        csn_stage.run(params, tmp_path)


# ------------------------------------------------------------------------------ seed 003 scales and flips
def test_stad_multi_scale_batch_resizes_clips_and_boxes():
    from actparse.stad import KeyframeSample, _batch, settings_from_params

    video = _frames()  # 40 x 48
    smp = KeyframeSample(0, 1, np.array([[4.0, 8.0, 20.0, 36.0]]), np.zeros((1, 3), np.float32), ["none"])
    s = settings_from_params(overlaid({"stad": dict(num_frames=4, interval=1, color_jitter=0.0, flip=False)}))
    clip, rois, _ = _batch([video], [smp], s, None)
    small, rois_s, _ = _batch([video], [smp], s, None, short_side=20)
    assert clip.shape[-2:] == (40, 48) and small.shape[-2:] == (20, 24)
    np.testing.assert_allclose(rois_s[0, 1:].numpy(), rois[0, 1:].numpy() / 2)
    np.testing.assert_allclose(small.numpy(), torch.nn.functional.interpolate(
        clip.permute(0, 2, 1, 3, 4).flatten(0, 1), size=(20, 24), mode="bilinear",
        align_corners=False).reshape(1, 4, 3, 20, 24).permute(0, 2, 1, 3, 4).numpy(), atol=1e-6)


def test_stad_test_views_average_scales_and_flips():
    from stages.stad_detect import predict_views

    video = _frames()  # short side 40
    boxes = [np.array([[4.0, 8.0, 20.0, 36.0]])]
    seen = []

    def score(v, b):  # a stand-in scorer that records each view and scores it by its mean pixel
        seen.append((v.shape, b[0].copy(), float(v[:, :, 0].mean())))
        return [[np.full((1, 2), float(v[:, :, 0].mean()), np.float32)]]

    out = predict_views(video, [0], boxes, (20, 40), True, score)
    shapes = [s[0] for s in seen]
    assert shapes == [(4, 20, 24, 3), (4, 20, 24, 3), (4, 40, 48, 3), (4, 40, 48, 3)]
    np.testing.assert_allclose(seen[0][1], boxes[0] / 2)
    np.testing.assert_allclose(seen[3][1], [[48 - 20.0, 8.0, 48 - 4.0, 36.0]])  # mirrored box
    np.testing.assert_allclose(out[0][0], np.mean([s[2] for s in seen]), rtol=1e-6)
    # one scale, no flip: the scorer's own output, untouched
    seen.clear()
    one = predict_views(video, [0], boxes, (40,), False, score)
    assert len(seen) == 1 and one[0][0][0, 0] == np.float32(seen[0][2])


def test_stad_recipe_runs_end_to_end_with_scales_and_flips(tmp_path):
    from actparse.synth import SynthConfig, generate
    from actparse.schemas import read_df
    from stages import stad_detect, stad_train
    from tests.test_stad import _params

    cfg = SynthConfig.from_params(overlaid({"synth": dict(
        seed=5, n_train=2, n_test=1, width=64, height=48, min_seconds=1.0, max_seconds=1.2, max_people=2, occluder_prob=0.0)}))
    generate(cfg, tmp_path / "artifacts" / "synth", progress=False)
    params = _params(tmp_path, train_scales=[40, 48], scale_batch_sizes=[2, 1], test_scales=[40, 48],
                     test_flip=True, short_side=48, optimizer="sgd", lr=0.01, warmup_epochs=0.5, lr_steps=[1])
    for mod in (stad_train, stad_detect):
        assert mod.main(["--params", params, "--root", str(tmp_path)]) == 0
    info = json.loads((tmp_path / "artifacts" / "models" / "stad" / "train_info.json").read_text())
    assert info["settings"]["train_scales"] == [40, 48] and info["settings"]["scale_batch_sizes"] == [2, 1]
    det = read_df(tmp_path / "artifacts" / "stad" / "action_detections.parquet", "action_detections")
    assert len(det) > 0 and det.score.between(0, 1).all()
