"""CSN models (ip vs ir, frozen BN, training, pretrained loading), clip sampling and the CSN stages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from _params import overlaid
from actparse import clips as C
from actparse.csn import (ensemble, ensemble_weights_from_params, load_checkpoint, load_pretrained, multitask_loss,
                          predict_clips, save_checkpoint, train_step)
from actparse.models.csn import DEPTHS, TASKS, CSNConfig, InteractionPreservedConv, MultiTaskCSN
from actparse.train import Schedule, make_optimizer
from actparse.params import ParamError

TINY = dict(depth=50, stage_depths=(1, 1, 1, 1), stem_dim=8)
NUM = {"action": 3, "hand": 2}


def tiny(variant="ir", **kw) -> MultiTaskCSN:
    torch.manual_seed(0)
    return MultiTaskCSN(CSNConfig(variant=variant, **{**TINY, **kw}), NUM)


def first_bottleneck(model: MultiTaskCSN, stage: int = 1):
    return model.backbones()[0].blocks[stage].res_blocks[0].branch2


def batch(n=4, t=4, s=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, t, s, s, generator=g)
    y = {"action": torch.tensor([0, 1, 2, 0][:n]), "hand": torch.tensor([1, 0, 1, 0][:n])}
    return x, y


# ---------------------------------------------------------------- architecture
def test_ir_and_ip_bottlenecks_differ_by_one_pointwise_conv():
    ir, ip = tiny("ir"), tiny("ip")
    b_ir, b_ip = first_bottleneck(ir, 2), first_bottleneck(ip, 2)
    # ir: conv_b is a single depthwise 3x3x3 conv
    assert type(b_ir.conv_b) is nn.Conv3d
    assert b_ir.conv_b.kernel_size == (3, 3, 3) and b_ir.conv_b.groups == b_ir.conv_b.in_channels
    # ip: 1x1x1 full conv (channel interaction) + BN, then the same depthwise conv
    assert isinstance(b_ip.conv_b, InteractionPreservedConv)
    pw, dw = b_ip.conv_b.pointwise, b_ip.conv_b.depthwise
    assert pw.kernel_size == (1, 1, 1) and pw.groups == 1 and pw.in_channels == pw.out_channels == dw.in_channels
    assert isinstance(b_ip.conv_b.norm, nn.BatchNorm3d)
    assert dw.kernel_size == (3, 3, 3) and dw.groups == dw.in_channels == b_ir.conv_b.groups
    assert dw.stride == b_ir.conv_b.stride == (2, 2, 2)
    # everything else is identical: parameter difference is exactly the pointwise convs + their BN
    extra = sum(sum(p.numel() for p in m.conv_b.pointwise.parameters()) + 2 * m.conv_b.pointwise.out_channels
                for bb in ip.backbones() for stage in bb.blocks[1:] for m in (r.branch2 for r in stage.res_blocks))
    n_ir = sum(p.numel() for p in ir.parameters())
    n_ip = sum(p.numel() for p in ip.parameters())
    assert n_ip - n_ir == extra > 0


def test_depths_and_slim_stage_depths():
    full = MultiTaskCSN(CSNConfig(variant="ir", depth=50, stem_dim=4), {"action": 2})
    assert tuple(len(s.res_blocks) for s in full.backbones()[0].blocks[1:]) == DEPTHS[50]
    slim = tiny("ip", stage_depths=(1, 2, 1, 1))
    assert tuple(len(s.res_blocks) for s in slim.backbones()[0].blocks[1:]) == (1, 2, 1, 1)
    x, _ = batch(2, 4, 32)
    out = slim(x)
    assert out["action"].shape == (2, 3) and out["hand"].shape == (2, 2)
    with pytest.raises(ValueError, match="stage_depths"):
        CSNConfig(variant="ir", depth=50, stage_depths=(1, 1, 7, 1))
    with pytest.raises(ValueError, match="depth"):
        CSNConfig(variant="ir", depth=34)


def test_shared_backbone_vs_separate_networks():
    shared = tiny("ir")
    separate = tiny("ir", shared_backbone=False)
    assert len(shared.backbones()) == 1 and len(separate.backbones()) == len(NUM)
    x, _ = batch(2)
    assert set(separate(x)) == set(NUM)


# ---------------------------------------------------------------- frozen BN / training
def _bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items()
            if any(s in k for s in ("running_mean", "running_var", "num_batches"))} | \
           {n: p.detach().clone() for n, p in model.named_parameters() if "norm" in n or ".bn" in n}


@pytest.mark.parametrize("variant", ["ip", "ir"])
def test_frozen_bn_stays_frozen_after_a_train_step(variant):
    x, y = batch()
    frozen = tiny(variant, freeze_bn=True)
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    bns = [m for bb in frozen.backbones() for m in bb.modules() if isinstance(m, nn.BatchNorm3d)]
    assert bns and all(not p.requires_grad for m in bns for p in m.parameters())
    opt = make_optimizer(frozen, lr=0.1)
    frozen.train()
    assert all(not m.training for m in bns)
    train_step(frozen, x, y, opt)
    after = frozen.state_dict()
    bn_keys = [k for k in before if any(f".{s}" in k for s in ("running_mean", "running_var", "num_batches_tracked"))]
    bn_keys += [f"{name}.{p}" for name, m in frozen.named_modules() if isinstance(m, nn.BatchNorm3d) for p in ("weight", "bias")]
    assert bn_keys
    for k in bn_keys:
        assert torch.equal(before[k], after[k]), k
    conv_keys = [k for k in before if k.endswith("conv_a.weight")]
    assert any(not torch.equal(before[k], after[k]) for k in conv_keys)  # the step did train
    # control: without freezing the same step moves the running statistics
    free = tiny(variant)
    b2 = {k: v.clone() for k, v in free.state_dict().items()}
    train_step(free, x, y, make_optimizer(free, lr=0.1))
    assert any(not torch.equal(b2[k], free.state_dict()[k]) for k in bn_keys if "running_mean" in k)


@pytest.mark.parametrize("variant", ["ip", "ir"])
def test_training_steps_decrease_loss_on_a_fixed_batch(variant):
    x, y = batch()
    model = tiny(variant)
    opt = make_optimizer(model, lr=0.05)
    model.eval()
    with torch.no_grad():
        start = float(multitask_loss(model(x), y))
    for _ in range(8):
        train_step(model, x, y, opt)
    model.eval()
    with torch.no_grad():
        end = float(multitask_loss(model(x), y))
    assert end < start * 0.8


def test_schedule_warmup_and_steps():
    s = Schedule(base_lr=1.0, warmup_iters=10, warmup_factor=0.1, steps=(5, 8), gamma=0.1)
    assert s.lr(0, 0.0) == pytest.approx(0.1)
    assert s.lr(5, 0.5) == pytest.approx(0.55)
    assert s.lr(10, 1.0) == pytest.approx(1.0)
    assert s.lr(100, 5.0) == pytest.approx(0.1)
    assert s.lr(200, 9.0) == pytest.approx(0.01)
    opt = make_optimizer(tiny("ir", freeze_bn=True), lr=0.1)
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    assert opt.param_groups[0]["weight_decay"] == 1e-4 and opt.param_groups[1]["weight_decay"] == 0.0


# ---------------------------------------------------------------- pretrained weights
def test_pretrained_loading_from_pytorchvideo_layout(tmp_path):
    from pytorchvideo.models.csn import create_csn

    torch.manual_seed(1)
    pv = create_csn(model_depth=50, stem_dim_out=4, model_num_class=7)  # pytorchvideo's own ir-CSN, with head
    path = tmp_path / "ir50.pt"
    torch.save({"state_dict": pv.state_dict()}, path)
    model = MultiTaskCSN(CSNConfig(variant="ir", depth=50, stem_dim=4, stem_pool=False), {"action": 3})
    n = load_pretrained(model, path)
    assert n == len(model.backbones()[0].state_dict())
    w = model.backbones()[0].blocks[2].res_blocks[1].branch2.conv_b.weight
    assert torch.equal(w, pv.blocks[2].res_blocks[1].branch2.conv_b.weight)
    # same features as pytorchvideo's backbone
    x = torch.randn(1, 3, 4, 32, 32)
    model.eval(), pv.eval()
    with torch.no_grad():
        f = x
        for blk in pv.blocks[:-1]:
            f = blk(f)
        assert torch.allclose(model.backbones()[0](x), f, atol=1e-5)


def test_pretrained_loading_errors_name_file_and_key(tmp_path):
    ir = tiny("ir")
    good = ir.backbones()[0].state_dict()
    missing = dict(good)
    first = next(iter(good))
    del missing[first]
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=rf"missing\.pt.*{first.replace('.', '[.]')}"):
        load_pretrained(tiny("ir"), tmp_path / "missing.pt")

    shaped = dict(good)
    k = "blocks.1.res_blocks.0.branch2.conv_a.weight"
    shaped[k] = torch.zeros(3, 3, 1, 1, 1)
    torch.save(shaped, tmp_path / "shape.pt")
    with pytest.raises(ValueError, match=rf"shape\.pt: first mismatching key '{k}': shape \(3, 3, 1, 1, 1\)"):
        load_pretrained(tiny("ir"), tmp_path / "shape.pt")

    torch.save(good, tmp_path / "ir.pt")
    with pytest.raises(ValueError, match=r"ir\.pt.*conv_b\.pointwise"):  # ir weights into an ip model
        load_pretrained(tiny("ip"), tmp_path / "ir.pt")
    with pytest.raises(ValueError, match=r"ir\.pt: first mismatching key .*not in the ir-CSN"):  # deeper file
        load_pretrained(tiny("ir"), _deeper(tmp_path))

    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_pretrained(tiny("ir"), tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: cannot load"):
        load_pretrained(tiny("ir"), tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="unknown pretrained key_map 'caffe2'"):
        load_pretrained(tiny("ir"), tmp_path / "ir.pt", key_map="caffe2")

    model = tiny("ir")
    load_pretrained(model, tmp_path / "ir.pt")
    for k, v in model.backbones()[0].state_dict().items():
        assert torch.equal(v, good[k])


def _deeper(tmp_path):
    deeper = tiny("ir", stage_depths=(2, 1, 1, 1)).backbones()[0].state_dict()
    path = tmp_path / "deep" / "ir.pt"
    path.parent.mkdir()
    torch.save(deeper, path)
    return path


# ---------------------------------------------------------------- inference helpers
def test_checkpoint_roundtrip_and_prediction(tmp_path):
    model = tiny("ip", shared_backbone=False)
    classes = {"action": ["a", "b", "c"], "hand": ["x", "y"]}
    save_checkpoint(model, tmp_path / "ip.pt", classes, extra={"clip": {"num_frames": 4}})
    loaded, ck = load_checkpoint(tmp_path / "ip.pt")
    assert ck["classes"] == classes and ck["extra"]["clip"]["num_frames"] == 4
    x, _ = batch(3)
    model.eval()
    p = predict_clips(loaded, x)
    with torch.no_grad():
        ref = {t: v.softmax(1).mean(0).numpy() for t, v in model(x).items()}
    for t in NUM:
        np.testing.assert_allclose(p[t], ref[t], atol=1e-6)
        assert p[t].sum() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(FileNotFoundError, match="has train_csn run"):
        load_checkpoint(tmp_path / "missing.pt")


def test_ensemble_and_weights_from_params():
    p = {"ip": np.array([0.8, 0.2]), "ir": np.array([0.2, 0.8])}
    np.testing.assert_allclose(ensemble(p, {"ip": 1, "ir": 1}), [0.5, 0.5])
    np.testing.assert_allclose(ensemble(p, {"ip": 3, "ir": 1}), [0.65, 0.35])
    np.testing.assert_allclose(ensemble(p, {"ip": 0, "ir": 1}), [0.2, 0.8])
    params = {"csn": {"ensemble_weights": {"default": {"ip": 1.0, "ir": 2.0}, "action": {"ip": 7, "ir": 1}}}}
    w = ensemble_weights_from_params(params, ["ip", "ir"], TASKS)
    assert w["action"] == {"ip": 7.0, "ir": 1.0} and w["hand"] == {"ip": 1.0, "ir": 2.0}
    with pytest.raises(ParamError, match="unknown task"):
        ensemble_weights_from_params({"csn": {"ensemble_weights": {"torso": {}}}}, ["ip"], TASKS)
    with pytest.raises(ParamError, match="all zero"):
        ensemble_weights_from_params({"csn": {"ensemble_weights": {"default": {"ip": 0}}}}, ["ip"], TASKS)


# ---------------------------------------------------------------- clips
def test_clip_indices_and_uniform_test_sampling():
    np.testing.assert_array_equal(C.clip_indices(100, 4, 3, 10), [10, 13, 16, 19])
    np.testing.assert_array_equal(C.clip_indices(12, 4, 3, 5), [5, 8, 11, 11])  # past the end: repeat last
    assert C.clip_span(8, 2) == 15
    starts = C.uniform_clip_starts(60, 8, 2, 7)
    assert starts[0] == 0 and starts[-1] + C.clip_span(8, 2) - 1 == 59
    assert np.all(np.diff(starts) > 0) and len(starts) == 7
    assert C.uniform_clip_starts(60, 8, 2, 1).tolist() == [(60 - 15) // 2]
    assert C.uniform_clip_starts(10, 8, 2, 3).tolist() == [0, 0, 0]  # shorter than a clip
    rng = np.random.default_rng(0)
    s = [C.random_clip_start(30, 8, 2, rng) for _ in range(300)]
    assert min(s) == 0 and max(s) == 15
    with pytest.raises(ValueError):
        C.uniform_clip_starts(60, 8, 2, 0)


def _numbered_video(n=30, h=24, w=32):
    """Frame i is filled with value 8*i in channel 0, a horizontal ramp in channel 1."""
    v = np.zeros((n, h, w, 3), np.uint8)
    v[..., 0] = (8 * np.arange(n) % 256)[:, None, None]
    v[..., 1] = np.arange(w)[None, None, :] * 4
    return v


def test_clip_transforms_shapes_crop_flip_and_normalisation():
    v = _numbered_video()
    spec = C.ClipSpec(num_frames=4, interval=3, short_side=24, crop=(24, 24), train_short_side=(24, 30), flip=True)
    clips = C.test_clips(v, spec, 3)
    assert clips.shape == (3, 3, 4, 24, 24) and clips.dtype == torch.float32
    # first clip = frames 0, 3, 6, 9 (channel 0 encodes the frame number)
    r = clips[0, 0, :, 0, 0] * C.CSN_STD[0] + C.CSN_MEAN[0]
    np.testing.assert_allclose((r * 255 / 8).numpy(), [0, 3, 6, 9], atol=0.05)
    # centre crop of width 32 -> 24 starts at column 4
    g = clips[0, 1, 0, 0] * C.CSN_STD[1] + C.CSN_MEAN[1]
    np.testing.assert_allclose((g * 255 / 4).numpy()[:3], [4, 5, 6], atol=0.05)
    rng = np.random.default_rng(0)
    tr = [C.train_clip(v, spec, rng) for _ in range(20)]
    assert all(c.shape == (3, 4, 24, 24) for c in tr)
    ramps = [(c[1, 0, 0, -1] - c[1, 0, 0, 0]).item() for c in tr]
    assert min(ramps) < 0 < max(ramps)  # some clips flipped, some not
    # temporal augmentation: random interval in [2, 3], always reversed
    rev = C.ClipSpec(num_frames=4, interval=1, short_side=24, crop=(24, 24), train_short_side=(24, 24), flip=False,
                     train_interval=(2, 3), reverse_prob=1.0)
    seen = set()
    for _ in range(20):
        c = C.train_clip(v, rev, rng)
        fr = np.round(((c[0, :, 0, 0] * C.CSN_STD[0] + C.CSN_MEAN[0]) * 255 / 8).numpy())
        steps = set(np.diff(fr).tolist())
        assert len(steps) == 1 and steps.pop() in (-2, -3)
        seen.add(fr[0] - fr[1])
    assert seen == {2, 3}
    with pytest.raises(ValueError, match="train_interval"):
        C.ClipSpec(train_interval=(3, 2))
    # padding when the frame is smaller than the crop
    small = C.center_crop(v[:2, :10, :10], (16, 16))
    assert small.shape == (2, 16, 16, 3)


def test_background_removal_keeps_only_what_moves():
    rng = np.random.default_rng(1)
    bg = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    frames = np.repeat(bg[None], 6, axis=0)
    for t in range(6):
        frames[t, 4:8, 2 * t:2 * t + 4] = 255  # a square moving right
    x = C.to_tensor(frames)
    for mode in ("clip_mean", "clip_median", "frame_diff"):
        y = C.remove_background(x, mode)
        assert y.shape == x.shape
        static = y[:, :, 12:, :]  # rows the square never touches
        assert static.abs().max() < 1e-5, mode
        assert y[:, :, 4:8].abs().max() > 1.0, mode
    assert torch.equal(C.remove_background(x, "frame_diff")[:, 0], torch.zeros_like(x[:, 0]))
    assert torch.equal(C.remove_background(x, "none"), x)
    with pytest.raises(ValueError, match="background"):
        C.ClipSpec(background="median")
    spec = C.ClipSpec(num_frames=4, interval=1, short_side=16, crop=(16, 16), train_short_side=(16, 16),
                      background="clip_mean")
    clips = C.test_clips(frames, spec, 2)
    assert clips[:, :, :, 12:].abs().max() < 1e-5 and clips.abs().max() > 1.0


def test_color_jitter_is_per_clip_and_grayscale_works():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    frames = np.stack([frame, frame, frame])
    out = C.jitter_colors(frames, 0.4, 0.0, rng)
    assert out.dtype == np.uint8 and out.shape == frames.shape
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[1], out[2])  # same transform for all frames
    assert not np.array_equal(out, frames)
    grey = C.jitter_colors(frames, 0.0, 1.0, rng)
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])


def _write_video(path, n, h, w, kind, rng):
    import cv2

    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (w, h))
    for i in range(n):
        img = np.full((h, w, 3), 40, np.uint8)
        x = int((w - 8) * (0.5 + 0.4 * np.sin(i / 2.0))) if kind == 0 else w // 2
        y = h // 2 if kind == 0 else int((h - 8) * (0.5 + 0.4 * np.sin(i / 2.0)))
        img[y:y + 8, x:x + 8] = (255, 255, 255) if kind == 0 else (0, 200, 255)
        img = np.clip(img.astype(int) + rng.integers(-5, 6, img.shape), 0, 255).astype(np.uint8)
        vw.write(img)
    vw.release()


def test_load_video_decodes_and_resizes(tmp_path):
    rng = np.random.default_rng(0)
    _write_video(tmp_path / "a.mp4", 12, 48, 64, 0, rng)
    v = C.load_video(tmp_path / "a.mp4", 24)
    assert v.shape == (12, 24, 32, 3) and v.dtype == np.uint8
    assert C.load_video(tmp_path / "a.mp4").shape == (12, 48, 64, 3)


def _tiny_csn_project(tmp_path):
    """8 tiny two-class videos (horizontal vs vertical motion) + part labels; returns (params, classes)."""
    from actparse.paths import Paths
    from actparse.atomic import write_json
    from actparse.schemas import from_rows, write_table

    rng = np.random.default_rng(0)
    droot = tmp_path / "data"
    (droot / "videos").mkdir(parents=True)
    vids, labels = [], []
    for i in range(8):
        kind, split = i % 2, ("train" if i < 6 else "test")
        name = f"v{i}"
        _write_video(droot / "videos" / f"{name}.mp4", 20, 32, 40, kind, rng)
        action = ["side", "updown"][kind]
        vids.append({"video": name, "path": f"videos/{name}.mp4", "split": split, "action": action,
                     "n_frames": 20, "fps": 25.0, "width": 40, "height": 32})
        labels.append({"video": name, "split": split, "task": "action", "label": action, "state": None})
        labels.append({"video": name, "split": split, "task": "hand", "label": f"{action}_hand_none", "state": "none"})
    vids.append({"video": "broken", "path": "videos/broken.mp4", "split": "test", "action": "side",
                 "n_frames": 20, "fps": 25.0, "width": 40, "height": 32})
    (droot / "videos" / "broken.mp4").write_bytes(b"garbage")
    write_table(from_rows(vids, "videos"), droot / "videos.parquet", "videos")
    paths = Paths(tmp_path)
    paths.part_labels.mkdir(parents=True)
    write_table(from_rows(labels, "part_labels"), paths.part_labels / "labels.parquet", "part_labels")
    classes = {"action": ["side", "updown"], "hand": ["side_hand_none", "updown_hand_none"]}
    write_json(classes, paths.part_labels / "classes.json")

    params = overlaid({"seed": 0, "device": "cpu", "data": {"root": str(droot)},
                       "csn": {"variants": ["ip", "ir"], "depth": 50, "stage_depths": [1, 1, 1, 1], "stem_dim": 8,
                               "stem_pool": True, "dropout": 0.0, "shared_backbone": True, "freeze_bn": "auto",
                               "pretrained": {"ip": None, "ir": None}, "num_frames": 4, "interval": 2,
                               "short_side": 32, "crop": [32, 32], "train_short_side": [32, 36], "flip": True,
                               "color_jitter": 0.0, "grayscale_prob": 0.0, "background": "none", "reverse_prob": 0.0,
                               "epochs": 2, "batch_size": 3, "lr": 0.05, "warmup_iters": 1, "lr_steps": [1],
                               "mixup_alpha": 0.0, "test_clips": 2, "test_batch": 4}})
    params["csn"]["ensemble_weights"] = {"default": {"ip": 2.0, "ir": 1.0}}  # replaces (not merges) the committed map
    return params, classes


def test_train_and_predict_stages_on_tiny_videos(tmp_path):
    """train_csn + csn end to end on 8 tiny two-class videos (horizontal vs vertical motion)."""
    from actparse.paths import Paths
    from actparse.schemas import read_df
    from stages import csn as csn_stage
    from stages import train_csn

    params, classes = _tiny_csn_project(tmp_path)
    paths = Paths(tmp_path)
    train_csn.run(params, tmp_path)
    info = json.loads((paths.models / "csn" / "train_info.json").read_text())
    assert info["videos"] == 6 and set(info["variants"]) == {"ip", "ir"}
    assert len(info["variants"]["ip"]["loss"]) == 2
    assert (paths.models / "csn" / "ip.pt").exists() and (paths.models / "csn" / "ir.pt").exists()

    csn_stage.run(params, tmp_path)
    pred = read_df(paths.video_predictions, "video_predictions")
    assert len(pred) == 8 * 2 * 3  # videos x tasks x (ip, ir, ensemble)
    assert set(pred["model"]) == {"ip", "ir", "ensemble"}
    for (video, task), g in pred.groupby(["video", "task"]):
        p = {m: np.asarray(r) for m, r in zip(g["model"], g["probs"])}
        np.testing.assert_allclose(p["ensemble"], (2 * p["ip"] + p["ir"]) / 3, atol=1e-5)
        row = g[g["model"] == "ensemble"].iloc[0]
        assert row["label"] == classes[task][int(np.argmax(p["ensemble"]))]
        assert row["score"] == pytest.approx(float(np.max(p["ensemble"])), abs=1e-6)
    skips = read_df(paths.skips / "csn.parquet", "skips")
    assert skips["video"].tolist() == ["broken"]


def test_variants_in_parallel_processes_equal_one_after_another(tmp_path):
    """csn.train_workers only changes where the variants train: same threads -> same weights."""
    import torch

    from actparse.paths import Paths
    from stages import train_csn

    params, _ = _tiny_csn_project(tmp_path)
    out = Paths(tmp_path).models / "csn"
    weights = {}
    for workers in (1, 2):
        params["csn"].update(train_workers=workers, train_threads=1)
        train_csn.run(params, tmp_path)
        info = json.loads((out / "train_info.json").read_text())
        assert (info["processes"], info["threads_per_process"]) == (workers, 1)
        weights[workers] = {v: torch.load(out / f"{v}.pt", weights_only=False)["model_state"] for v in ("ip", "ir")}
    for v in ("ip", "ir"):
        a, b = weights[1][v], weights[2][v]
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), v
    assert not all(torch.equal(weights[1]["ip"][k], weights[1]["ir"][k])
                   for k in weights[1]["ip"] if k in weights[1]["ir"] and weights[1]["ip"][k].shape == weights[1]["ir"][k].shape)
    # the stage's own choice here: on CPU one process per variant, at most one per (pinned) core
    from actparse.determinism import cores

    assert train_csn.training_processes(overlaid({}), 2, "cpu")[0] == min(2, cores())
    assert train_csn.training_processes(overlaid({}), 2, "cuda") == (1, cores())
    with pytest.raises(Exception, match="train_workers"):
        train_csn.training_processes(overlaid({"csn": {"train_workers": -1}}), 2, "cpu")


def test_per_epoch_validation_only_watches():
    """fit() with held-out videos records each head's top-1 per epoch; the weights (dropout on, so the
    torch random stream matters) equal those of the same training without them."""
    from actparse.csn import TrainSettings, fit

    spec = C.ClipSpec(num_frames=4, interval=2, short_side=24, crop=(20, 20), train_short_side=(24, 30),
                      flip=True, color_jitter=0.4, grayscale_prob=0.0, background="none", reverse_prob=0.0)
    vids = [np.random.default_rng(k).integers(0, 255, (12, 24, 32, 3), dtype=np.uint8) for k in range(6)]
    targets = {"action": np.array([0, 1, 2, 0]), "hand": np.array([1, 0, 1, 0])}
    val = (vids[4:], {"action": np.array([1, 2]), "hand": np.array([0, 1])})
    settings = TrainSettings(epochs=3, batch_size=2, lr=0.05, momentum=0.9, weight_decay=1e-4, nesterov=True,
                             warmup_iters=0, lr_steps=(2.0,), lr_gamma=0.1, mixup_alpha=0.0)
    runs = []
    for held in (val, None):
        model = tiny("ir", dropout=0.5)
        hist = fit(model, vids[:4], targets, spec, settings, seed=0, val=held)
        runs.append((hist, model.state_dict()))
    (watched, a), (plain, b) = runs
    assert len(watched["val_acc"]) == 3 and "val_acc" not in plain
    assert all(set(acc) == {"action", "hand"} and all(v in (0.0, 0.5, 1.0) for v in acc.values())
               for acc in watched["val_acc"])
    assert watched["loss"] == plain["loss"] and all(torch.equal(a[k], b[k]) for k in a)


def test_threaded_clip_maker_gives_the_same_clips_whatever_the_threads():
    """The CUDA path's clip pool: clips depend on the seeds drawn in batch order, not on timing."""
    from actparse.csn import _ClipMaker

    spec = C.ClipSpec(num_frames=4, interval=2, short_side=24, crop=(20, 20), train_short_side=(24, 30),
                      flip=True, color_jitter=0.4, grayscale_prob=0.3, background="clip_mean", reverse_prob=0.5)
    vids = [np.random.default_rng(k).integers(0, 255, (12, 24, 32, 3), dtype=np.uint8) for k in range(5)]
    order = np.random.default_rng(1).permutation(5)
    out = []
    for batch in (2, 3):  # pool sizes differ with the batch size
        maker = _ClipMaker(vids, spec, batch)
        maker.start_epoch(order, np.random.default_rng(7))
        clips = torch.cat([maker.batch(b) for b in range(len(maker.batches))])
        maker.close()
        # the same clips made one by one from the same seeds
        rng = np.random.default_rng(7)
        seeds = np.concatenate([rng.integers(0, 2 ** 63 - 1, size=len(order[s:s + batch]))
                                for s in range(0, 5, batch)])
        serial = torch.stack([C.train_clip(vids[i], spec, np.random.default_rng(int(s))) for i, s in zip(order, seeds)])
        assert torch.equal(clips, serial)
        out.append(clips)
    assert clips.shape == (5, 3, 4, 20, 20)
    assert not torch.equal(out[0][0], out[0][1])  # distinct clips
