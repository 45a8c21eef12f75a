"""Weights as users hold them: a COCO-pretrained YOLO as the person detector, and published SlowFast /
SlowOnly backbones in the pytorchvideo, PySlowFast (PyTorch and Caffe2) and mmaction2 layouts.

Every checkpoint here is made by the test from the upstream projects' own model definitions:
ultralytics' ``yolo11n.yaml`` (80 classes, COCO names) saved the way ultralytics saves checkpoints,
and pytorchvideo's hub builders ``slowfast_r101`` / ``slow_r50`` with ``pretrained=False``. The
PySlowFast and mmaction2 files are that pytorchvideo state dict renamed by the tables below, which
spell out the upstream module names (PySlowFast ``s<k>.pathway<p>_res<b>.branch2.a`` ..., its
Caffe2 blobs ``res<k>_<b>_branch2a_w`` ..., mmaction2 ``slow_path.layer<s>.<b>.conv1.conv`` ...)
independently of :mod:`actparse.weights.resnet3d`.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re

import numpy as np
import pytest
import torch
import yaml

from actparse import yolo
from actparse.gym import config_from_params as gym_config
from actparse.models.gym import LevelModel
from actparse.models.partattn import PartStateNet
from actparse.models.slowfast import SlowFastBackbone, SlowFastConfig
from actparse.models.slowonly import SlowOnlyBackbone, SlowOnlyConfig
from actparse.params import ParamError
from actparse.partattn import config_from_params as partattn_config
from actparse.stad import config_from_params as stad_config
from actparse.weights.resnet3d import load_slowfast, load_slowonly, pretrained_from_params
from _params import overlaid, write_params

torch.set_num_threads(2)
R101_8x8 = dict(depth=101, stage_depths=None, stem_dim=64, beta_inv=8, alpha=4, fusion_kernel=5, output_stride=32)


# =============================================================================================
# Person detector: classes of a COCO-pretrained .pt
# =============================================================================================
PERSON, CHAIR = 0, 56


def save_ultralytics_checkpoint(model, path, imgsz=64):
    """A checkpoint as ultralytics' trainer leaves it after training (optimizer stripped, fp16 model)."""
    import ultralytics

    torch.save({"epoch": -1, "best_fitness": None, "model": model.half(), "ema": None, "updates": None,
                "optimizer": None, "train_args": {"task": "detect", "model": "yolo11n.yaml", "imgsz": imgsz},
                "train_metrics": {}, "date": "2026-01-01T00:00:00", "version": ultralytics.__version__}, path)
    return path


@pytest.fixture(scope="module")
def coco_pt(tmp_path_factory):
    """yolo11n (nc=80, COCO names) whose head fires 'person' on its stride-8 level and 'chair' (a higher
    score) on the other two, everywhere: an untrained stand-in for a COCO detector seeing both."""
    yolo.configure()
    import ultralytics
    from ultralytics.nn.tasks import DetectionModel

    coco_yaml = os.path.join(os.path.dirname(ultralytics.__file__), "cfg", "datasets", "coco.yaml")
    with open(coco_yaml) as fh:
        names = yaml.safe_load(fh)["names"]
    torch.manual_seed(0)
    model = DetectionModel("yolo11n.yaml", nc=80, verbose=False)
    model.names = dict(names)
    model.args = {"task": "detect", "imgsz": 64}
    for level, seq in enumerate(model.model[-1].cv3):
        with torch.no_grad():
            seq[-1].weight.zero_()
            seq[-1].bias.fill_(-20.0)
            seq[-1].bias[PERSON if level == 0 else CHAIR] = 4.0 if level == 0 else 6.0
    return save_ultralytics_checkpoint(model, tmp_path_factory.mktemp("coco") / "yolo11n_coco.pt")


def test_coco_pt_as_person_detector_yields_person_boxes_only(coco_pt, caplog):
    model = yolo.load_model(coco_pt)
    names = yolo.model_names(model)
    assert len(names) == 80 and names[PERSON] == "person" and names[CHAIR] == "chair"
    images = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(3)]
    kw = dict(imgsz=64, conf=0.25, iou=0.6, max_det=10, threads=1)
    everything = yolo.predict(model, images, **kw)
    assert all(CHAIR in cls for _, _, cls in everything)  # without the filter chairs come out (as persons)
    with caplog.at_level(logging.INFO, logger="actparse.yolo"):
        keep = yolo.person_class_ids({"person_detector": {"classes": None}}, model, coco_pt)
    assert keep == [PERSON]
    assert "keeping 1 of the detector's 80 classes as persons: 0 'person'" in caplog.text
    persons = yolo.predict(model, images, classes=keep, **kw)
    assert all(len(cls) > 0 and set(cls.tolist()) == {PERSON} for _, _, cls in persons)


def test_detect_persons_stage_keeps_only_the_person_class(coco_pt, tmp_path):
    from _detection_data import make_project, write_params

    from actparse.params import load_params
    from actparse.paths import Paths
    from actparse.schemas import read_df
    from stages import detect_persons, train_person_detector

    make_project(tmp_path, n_videos=2, n_test=1, n_frames=2)
    params = load_params(write_params(tmp_path / "params.yaml", person={
        "weights": str(coco_pt), "imgsz": 64, "conf": 0.25, "max_det": 10}))
    train_person_detector.run(params, tmp_path)  # a user .pt without finetune: checked and copied
    info = json.loads((Paths(tmp_path).models / "person_detector" / "train_info.json").read_text())
    assert info["trained"] is False and len(info["classes"]) == 80 and info["person_classes"] == ["person"]
    detect_persons.run(params, tmp_path)
    got = read_df(Paths(tmp_path).persons, "persons")
    # the stage's boxes are exactly the person-class detections of the same model on the same frames
    from actparse.detector_data import decode_frames, frames_by_video

    model = yolo.load_model(coco_pt)
    want, unfiltered = 0, 0
    for _, table in frames_by_video(Paths(tmp_path).frames):
        images = decode_frames(table)[0]
        want += sum(len(s) for _, s, _ in yolo.predict(model, images, imgsz=64, conf=0.25, iou=0.6, max_det=10,
                                                       classes=[PERSON], threads=1))
        unfiltered += sum(int((c == CHAIR).sum()) for _, _, c in yolo.predict(
            model, images, imgsz=64, conf=0.25, iou=0.6, max_det=10, threads=1))
    assert len(got) == want > 0 and unfiltered > 0


def test_person_detector_classes_param_names_the_classes_kept(coco_pt):
    model = yolo.load_model(coco_pt)
    assert yolo.person_class_ids({"person_detector": {"classes": ["Chair", "person"]}}, model, coco_pt) == [0, 56]
    with pytest.raises(ParamError, match=r"'person_detector.classes' must be a list of class names or null"):
        yolo.person_class_ids({"person_detector": {"classes": [0]}}, model, coco_pt)
    with pytest.raises(ParamError, match=r"'person_detector.classes' must be list/NoneType"):
        yolo.person_class_ids({"person_detector": {"classes": "person"}}, model, coco_pt)
    with pytest.raises(ValueError, match=r"detector has no class named 'pedestrian' \(its classes: 'person', "
                                         r"'bicycle', .*\(80 classes\)\)"):
        yolo.person_class_ids({"person_detector": {"classes": ["pedestrian"]}}, model, coco_pt)


def test_keep_classes_keeps_the_chosen_class_outputs_and_everything_else(tmp_path):
    yolo.configure()
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(3)
    net = DetectionModel("yolo11n.yaml", nc=80, verbose=False)
    net.names = {i: f"c{i}" for i in range(80)}
    path = save_ultralytics_checkpoint(net, tmp_path / "random80.pt")
    model = yolo.load_model(path)
    two = yolo.keep_classes(model, [CHAIR, PERSON], ["chair", "person"]).eval()
    assert two.names == {0: "chair", 1: "person"} and two.model[-1].nc == 2
    full = model.model.float().eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y80, y2 = full(x)[0], two(x)[0]  # (1, 4 + nc, anchors): boxes, then class scores
    assert y80.shape[1] == 84 and y2.shape[1] == 6
    torch.testing.assert_close(y2[:, :4], y80[:, :4])
    torch.testing.assert_close(y2[:, 4:], y80[:, [4 + CHAIR, 4 + PERSON]])
    # saved and read back as an ultralytics checkpoint, it is a two-class detector
    back = yolo.load_model(yolo.save_detection_checkpoint(two, tmp_path / "two.pt"))
    assert yolo.model_names(back) == ["chair", "person"]


def test_finetuning_a_coco_pt_starts_from_its_person_class(coco_pt, tmp_path):
    from _detection_data import make_project, write_params

    from actparse.params import load_params
    from actparse.paths import Paths
    from stages import train_person_detector

    make_project(tmp_path, n_videos=3, n_test=1, n_frames=2)
    # lr0 0: the weights stay those the training started from, so the head shows where it started
    params = load_params(write_params(tmp_path / "params.yaml", person={
        "weights": str(coco_pt), "finetune": True, "epochs": 1, "lr0": 0.0, "imgsz": 64}))
    train_person_detector.run(params, tmp_path)
    info = json.loads((Paths(tmp_path).models / "person_detector" / "train_info.json").read_text())
    assert info["trained"] is True and info["finetune_from_class"] == "person"
    tuned = yolo.load_model(Paths(tmp_path).models / "person_detector" / "model.pt")
    assert yolo.model_names(tuned) == ["person"]
    biases = [float(seq[-1].bias[0]) for seq in tuned.model.model[-1].cv3]
    assert biases == pytest.approx([4.0, -20.0, -20.0], abs=0.05)  # COCO's person logits, not a fresh head


def test_a_detector_without_a_person_class_is_refused_naming_the_file(tmp_path):
    yolo.configure()
    from ultralytics.nn.tasks import DetectionModel

    from stages import train_person_detector

    torch.manual_seed(0)
    m = DetectionModel("yolo11n.yaml", nc=3, verbose=False)
    m.names = {0: "cat", 1: "dog", 2: "bird"}
    path = save_ultralytics_checkpoint(m, tmp_path / "pets.pt")
    params = overlaid({"_path": "params.yaml", "person_detector": {"weights": str(path), "finetune": False}})
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: detector has no class named 'person' "
                                         r"\(its classes: 'cat', 'dog', 'bird'\); set person_detector.classes"):
        train_person_detector.run(params, tmp_path)


# =============================================================================================
# Upstream layouts, spelled out from the upstream module structure (test side)
# =============================================================================================
_PARAM = {"weight": "w", "bias": "b"}
_BN_C2 = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
_BRANCH = {"branch2.conv_a": "a", "branch2.norm_a": "a_bn", "branch2.conv_b": "b", "branch2.norm_b": "b_bn",
           "branch2.conv_c": "c", "branch2.norm_c": "c_bn", "branch1_conv": "1", "branch1_norm": "1_bn"}


def _split(key: str):
    """pytorchvideo key -> (kind, pathway, stage, block, branch-module, param)."""
    if m := re.match(r"blocks\.0\.(?:multipathway_blocks\.(\d)\.)?(conv|norm)\.(\w+)$", key):
        return "stem", int(m[1] or 0), 0, 0, m[2], m[3]
    if m := re.match(r"blocks\.(\d)\.(?:multipathway_blocks\.(\d)\.)?res_blocks\.(\d+)\.(.+)\.(\w+)$", key):
        return "res", int(m[2] or 0), int(m[1]), int(m[3]), _BRANCH[m[4]], m[5]
    if m := re.match(r"blocks\.(\d)\.multipathway_fusion\.(conv_fast_to_slow|norm)\.(\w+)$", key):
        return "fuse", 1, int(m[1]), 0, "conv" if m[2] == "conv_fast_to_slow" else "bn", m[3]
    return "head", 0, 0, 0, "", key


def to_pyslowfast(sd):
    """PySlowFast (slowfast/models: VideoModelStem pathway<p>_stem.conv/bn, ResStage pathway<p>_res<b> with
    ResBlock branch1/branch1_bn + BottleneckTransform a/a_bn/b/b_bn/c/c_bn, FuseFastToSlow s<k>_fuse.conv_f2s/bn,
    ResNetBasicHead head.projection). Its stages are s1 (stem) .. s5."""
    out = {}
    for k, v in sd.items():
        kind, p, s, b, mod, x = _split(k)
        if kind == "stem":
            out[f"s1.pathway{p}_stem.{'conv' if mod == 'conv' else 'bn'}.{x}"] = v
        elif kind == "res":
            name = {"1": "branch1", "1_bn": "branch1_bn"}.get(mod, f"branch2.{mod}")
            out[f"s{s + 1}.pathway{p}_res{b}.{name}.{x}"] = v
        elif kind == "fuse":
            out[f"s{s + 1}_fuse.{'conv_f2s' if mod == 'conv' else 'bn'}.{x}"] = v
        else:
            out[f"head.projection.{x.rsplit('.', 1)[-1]}"] = v
    return out


def to_caffe2(sd, fast_blocks=(3, 4, 23, 3)):
    """PySlowFast's Caffe2 blobs: 't_' marks the Fast pathway; conv '_w'; BN '_bn_s/_b/_rm/_riv'; a lateral is
    named after the Fast output it reads ('t_pool1_subsample' after the stem, 't_res<k>_<last>_branch2c_bn_
    subsample' after stage k); the classifier is 'pred_w/_b'. Blobs are numpy arrays; no BN counters."""
    blobs = {}
    for k, v in sd.items():
        kind, p, s, b, mod, x = _split(k)
        if x == "num_batches_tracked":
            continue
        a = v.detach().cpu().numpy()
        t = "t_" if p == 1 else ""
        if kind == "stem":
            name = f"{t}conv1_{_PARAM[x]}" if mod == "conv" else f"{t}res_conv1_bn_{_BN_C2[x]}"
        elif kind == "res":
            bn = mod.endswith("_bn")
            branch = "1" if mod.startswith("1") else "2" + mod[0]
            name = f"{t}res{s + 1}_{b}_branch{branch}" + (f"_bn_{_BN_C2[x]}" if bn else f"_{_PARAM[x]}")
        elif kind == "fuse":
            base = "t_pool1_subsample" if s == 0 else f"t_res{s + 1}_{fast_blocks[s - 1] - 1}_branch2c_bn_subsample"
            name = base + (f"_bn_{_BN_C2[x]}" if mod == "bn" else f"_{_PARAM[x]}")
        else:
            name = f"pred_{'w' if x.endswith('weight') else 'b'}"
        blobs[name] = a
    blobs["conv1_w_momentum"] = np.zeros_like(blobs["conv1_w"])
    blobs["lr"] = np.array(0.1, np.float32)
    blobs["model_iter"] = np.array(120000)
    return {"blobs": blobs}


def to_mmaction2(sd, head_dim):
    """mmaction2 Recognizer3D: backbone ResNet3dSlowFast (slow_path./fast_path. ResNet3dPathway) or
    ResNet3dSlowOnly; mmcv ConvModule = .conv + .bn (conv1 stem, layer<s>.<b>.conv1/2/3, downsample);
    laterals slow_path.conv1_lateral / layer<s>_lateral are a ConvModule without norm (.conv only);
    cls_head.fc_cls; saved as {'state_dict': ..., 'meta': ...}."""
    multipath = any(".multipathway_blocks." in k for k in sd)
    out = {}
    for k, v in sd.items():
        kind, p, s, b, mod, x = _split(k)
        path = ("slow_path." if p == 0 else "fast_path.") if multipath else ""
        if kind == "stem":
            out[f"backbone.{path}conv1.{'conv' if mod == 'conv' else 'bn'}.{x}"] = v
        elif kind == "res":
            name = {"a": "conv1.conv", "a_bn": "conv1.bn", "b": "conv2.conv", "b_bn": "conv2.bn", "c": "conv3.conv",
                    "c_bn": "conv3.bn", "1": "downsample.conv", "1_bn": "downsample.bn"}[mod]
            out[f"backbone.{path}layer{s}.{b}.{name}.{x}"] = v
        elif kind == "fuse" and mod == "conv":
            out[f"backbone.slow_path.{'conv1' if s == 0 else f'layer{s}'}_lateral.conv.{x}"] = v
    out["cls_head.fc_cls.weight"] = torch.zeros(400, head_dim)
    out["cls_head.fc_cls.bias"] = torch.zeros(400)
    return {"state_dict": out, "meta": {"mmaction2_version": "1.2.0", "epoch": 256, "config": "..."}}


def assert_backbone_equals(backbone, ref_sd, skip=()):
    got = backbone.state_dict()
    compared = 0
    for k, v in ref_sd.items():
        if k in got and not any(s in k for s in skip):
            assert torch.equal(got[k], v), k
            compared += 1
    return compared


# =============================================================================================
# SlowFast R101 8x8 (seed 003)
# =============================================================================================
@pytest.fixture(scope="module")
def slowfast_r101():
    from pytorchvideo.models.hub import slowfast_r101 as build

    torch.manual_seed(1)
    net = build(pretrained=False).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a wrong mapping of running stats shows
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return net


def _backbone_sd(net):
    return {k: v for k, v in net.state_dict().items() if k.split(".")[1] in "01234"}


def test_pytorchvideo_slowfast_r101_loads_completely_with_the_same_features(slowfast_r101, tmp_path):
    path = tmp_path / "SLOWFAST_8x8_R101.pyth"
    torch.save({"model_state": slowfast_r101.state_dict()}, path)  # pytorchvideo's hub checkpoint layout
    bb = SlowFastBackbone(SlowFastConfig(**R101_8x8)).eval()
    n = load_slowfast(bb, path, "pytorchvideo")
    assert n == len(bb.state_dict()) == len(_backbone_sd(slowfast_r101))
    assert assert_backbone_equals(bb, slowfast_r101.state_dict()) == n
    clip = torch.randn(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = bb.pathways(clip)
        ref = [clip[:, :, ::4], clip]
        for block in slowfast_r101.blocks[:5]:
            ref = block(ref)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_pyslowfast_pyth_and_caffe2_pkl_load_every_backbone_tensor(slowfast_r101, tmp_path, caplog):
    sd = slowfast_r101.state_dict()
    pyth = tmp_path / "SLOWFAST_8x8_R101.pyth"
    torch.save({"epoch": 196, "model_state": {f"module.{k}": v for k, v in to_pyslowfast(sd).items()},
                "cfg": "MODEL:\n  ARCH: slowfast\n"}, pyth)
    pkl = tmp_path / "SLOWFAST_8x8_R101.pkl"
    with open(pkl, "wb") as fh:
        pickle.dump(to_caffe2(sd), fh, protocol=2)
    for path in (pyth, pkl):
        bb = SlowFastBackbone(SlowFastConfig(**R101_8x8))
        with caplog.at_level(logging.INFO, logger="actparse.weights"):
            n = load_slowfast(bb, path, "pyslowfast")
        counters = sum(k.endswith("num_batches_tracked") for k in bb.state_dict())
        assert n == len(bb.state_dict()) - (counters if path == pkl else 0)
        assert assert_backbone_equals(bb, sd, skip=("num_batches_tracked",)) == len(bb.state_dict()) - counters
    assert "ignoring 2 classifier key(s) (pred_b, pred_w)" in caplog.text or \
        "ignoring 2 classifier key(s) (pred_w, pred_b)" in caplog.text
    assert "BN num_batches_tracked counter(s) absent from the file; kept the model's" in caplog.text  # Caffe2


def test_mmaction2_slowfast_loads_into_conv_only_laterals(slowfast_r101, tmp_path):
    sd = slowfast_r101.state_dict()
    path = tmp_path / "slowfast_r101_8x8x1_256e_kinetics400_rgb.pth"
    torch.save(to_mmaction2(sd, 2304), path)
    bb = SlowFastBackbone(SlowFastConfig(**R101_8x8, lateral_norm=False))
    n = load_slowfast(bb, path, "mmaction2")
    counters = sum(k.endswith("num_batches_tracked") for k in bb.state_dict())
    assert n == len(bb.state_dict())  # mmaction2 keeps the BN counters
    assert assert_backbone_equals(bb, sd) == len(bb.state_dict()) and counters > 0
    # the published laterals have no BN: a model with BN laterals says which param to change
    with pytest.raises(ValueError, match=r"multipathway_fusion\.norm\.weight': missing from the file.*"
                                         r"laterals have no BN \(\+ReLU\): set stad\.lateral_norm: false"):
        load_slowfast(SlowFastBackbone(SlowFastConfig(**R101_8x8)), path, "mmaction2")


def test_stad_params_build_the_published_shape_and_point_at_the_file(slowfast_r101, tmp_path):
    gpu = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "params.gpu.stad.yaml")))["stad"]
    cfg = stad_config(overlaid({"stad": gpu}))  # the preset laid over the committed params
    assert (cfg.depth, cfg.stage_depths, cfg.stem_dim, cfg.beta_inv, cfg.alpha, cfg.fusion_kernel) == \
        (101, None, 64, 8, 4, 5)
    path = tmp_path / "sf.pyth"
    torch.save({"model_state": slowfast_r101.state_dict()}, path)
    pre, fmt = pretrained_from_params({"stad": {"pretrained": {"path": str(path), "format": "pytorchvideo"}}}, "stad")
    assert (pre, fmt) == (path, "pytorchvideo")
    # the GPU preset keeps the AVA-style output stride 16: same tensors, the last stage just keeps its resolution
    assert load_slowfast(SlowFastBackbone(cfg), pre, fmt) == len(_backbone_sd(slowfast_r101))
    with pytest.raises(ParamError, match=r"'stad.pretrained.format' must be one of \['pytorchvideo', 'pyslowfast', "
                                         r"'mmaction2'\], got 'slowfast'"):
        pretrained_from_params({"stad": {"pretrained": {"path": "x", "format": "slowfast"}}}, "stad")


# =============================================================================================
# SlowOnly R50 (seeds 004 and 000)
# =============================================================================================
@pytest.fixture(scope="module")
def slow_r50():
    from pytorchvideo.models.hub import slow_r50 as build

    torch.manual_seed(2)
    net = build(pretrained=False).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


R50 = SlowOnlyConfig(depth=50, stage_depths=None, stem_dim=64)


def test_pytorchvideo_slow_r50_loads_completely_with_the_same_features(slow_r50, tmp_path):
    path = tmp_path / "SLOW_8x8_R50.pyth"
    torch.save({"model_state": slow_r50.state_dict()}, path)
    bb = SlowOnlyBackbone(R50).eval()
    n = load_slowonly(bb, path, "pytorchvideo")
    assert n == len(bb.state_dict()) == len(_backbone_sd(slow_r50))
    clip = torch.randn(1, 3, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = clip
        for block in slow_r50.blocks[:5]:
            ref = block(ref)
        torch.testing.assert_close(bb(clip), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["pyslowfast", "caffe2", "mmaction2"])
def test_slowonly_r50_in_each_upstream_layout_loads_every_tensor(slow_r50, tmp_path, layout):
    sd = slow_r50.state_dict()
    path = tmp_path / f"slowonly_{layout}.pth"
    if layout == "pyslowfast":
        torch.save({"model_state": to_pyslowfast(sd)}, path)
    elif layout == "caffe2":
        with open(path, "wb") as fh:
            pickle.dump(to_caffe2(sd), fh, protocol=2)
    else:
        torch.save(to_mmaction2(sd, 2048), path)
    bb = SlowOnlyBackbone(R50)
    load_slowonly(bb, path, "mmaction2" if layout == "mmaction2" else "pyslowfast")
    counters = sum(k.endswith("num_batches_tracked") for k in bb.state_dict())
    assert assert_backbone_equals(bb, sd, skip=("num_batches_tracked",)) == len(bb.state_dict()) - counters


def test_gym_and_partattn_params_take_slowonly_r50(slow_r50, tmp_path):
    path = tmp_path / "slow_r50.pyth"
    torch.save({"model_state": slow_r50.state_dict()}, path)
    gpu = {s: yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", f"params.gpu.{s}.yaml")))[s]
           for s in ("gym", "partattn")}
    level = LevelModel(gym_config(overlaid({"gym": {**gpu["gym"], "depth": 50}})), 5)
    pre, fmt = pretrained_from_params({"gym": {"pretrained": {"path": str(path), "format": "pytorchvideo"}}}, "gym")
    assert fmt == "pytorchvideo"
    assert load_slowonly(level.backbone, pre, fmt) == len(_backbone_sd(slow_r50))
    net = PartStateNet(partattn_config(overlaid({"partattn": dict(gpu["partattn"], roi_mode="crop")}), 10))
    for bb in (net.backbone, net.part_backbone):  # output stride 8 (strides 1, 2, 1, 1): same tensors
        assert load_slowonly(bb, path, "pytorchvideo", "partattn") == len(_backbone_sd(slow_r50))
        assert assert_backbone_equals(bb, slow_r50.state_dict()) == len(bb.state_dict())


# =============================================================================================
# Error cases
# =============================================================================================
def test_shape_missing_and_unexpected_keys_are_named(slow_r50, tmp_path):
    sd = dict(slow_r50.state_dict())
    path = tmp_path / "w.pth"
    key = "blocks.2.res_blocks.0.branch2.conv_a.weight"
    bad = dict(sd, **{key: torch.zeros(129, 256, 1, 1, 1)})
    torch.save(to_mmaction2(bad, 2048), path)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: first mismatching key '{re.escape(key)}': shape "
                                         r"\(129, 256, 1, 1, 1\) in file, \(128, 256, 1, 1, 1\) in the SlowOnly backbone "
                                         r"\(depth 50, .*\) \(file key 'backbone.layer2.0.conv1.conv.weight'\); "
                                         r"read as format 'mmaction2'"):
        load_slowonly(SlowOnlyBackbone(R50), path, "mmaction2")
    torch.save({"model_state": {k: v for k, v in sd.items() if k != key}}, path)
    with pytest.raises(ValueError, match=rf"first mismatching key '{re.escape(key)}': missing from the file"):
        load_slowonly(SlowOnlyBackbone(R50), path)
    torch.save({"model_state": sd}, path)  # full R50 file, a model with 5 blocks in res4 -> the 6th block is unexpected
    slim = SlowOnlyBackbone(SlowOnlyConfig(depth=50, stage_depths=(3, 4, 5, 3), stem_dim=64))
    with pytest.raises(ValueError, match=r"first mismatching key 'blocks.3.res_blocks.5.branch2.conv_a.weight': not in "
                                         r"the SlowOnly backbone .* \(18 unexpected key\(s\); the file has blocks per "
                                         r"stage \[3, 4, 6, 3\]\)"):
        load_slowonly(slim, path)


def test_wrong_format_and_wrong_network_are_explained(slowfast_r101, slow_r50, tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"model_state": to_pyslowfast(slow_r50.state_dict())}, path)
    with pytest.raises(ValueError, match=r"key 's1.pathway0_stem.conv.weight' is not part of the mmaction2 layout "
                                         r".*\(format 'mmaction2'\); the file looks like format 'pyslowfast'"):
        load_slowonly(SlowOnlyBackbone(R50), path, "mmaction2")
    torch.save({"model_state": slowfast_r101.state_dict()}, path)  # a SlowFast file given to a SlowOnly model
    with pytest.raises(ValueError, match=r"in the SlowOnly backbone .*holds a two-pathway \(SlowFast\) network"):
        load_slowonly(SlowOnlyBackbone(SlowOnlyConfig(depth=101, stage_depths=None, stem_dim=64)), path)
    with pytest.raises(FileNotFoundError, match=r"nope.pth: pretrained SlowOnly backbone .* weights not found"):
        load_slowonly(SlowOnlyBackbone(R50), tmp_path / "nope.pth")


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_pickles_never_run_code(slow_r50, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a torch file with a Python object next to the weights: refused by weights_only
    path = tmp_path / "full.pth"
    torch.save({"model_state": slow_r50.state_dict(), "hook": _Payload()}, path)
    with pytest.raises(ValueError, match=r"cannot load pretrained SlowOnly backbone .* weights with "
                                         r"torch.load\(weights_only=True\).*save its state dict alone"):
        load_slowonly(SlowOnlyBackbone(R50), path)
    # a Caffe2-style pickle whose blobs call os.system: refused by the numpy-only unpickler
    pkl = tmp_path / "evil.pkl"
    blobs = to_caffe2(slow_r50.state_dict())
    blobs["blobs"]["conv1_b"] = _Payload()
    with open(pkl, "wb") as fh:
        pickle.dump(blobs, fh, protocol=2)
    with pytest.raises(ValueError, match=r"evil.pkl: cannot load .*: it imports or calls (posix|nt|os)\.system, "
                                         r"which Caffe2 blob files do not hold"):
        load_slowonly(SlowOnlyBackbone(R50), pkl, "pyslowfast")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


# =============================================================================================
# The train stages start from the file (seed 003), or stop at once on a bad one (003, 004, 000)
# =============================================================================================
@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from actparse.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("seeds")
    cfg = SynthConfig.from_params(overlaid({"synth": dict(
        seed=5, n_train=2, n_test=1, width=64, height=48, min_seconds=1.0, max_seconds=1.2, max_people=2, occluder_prob=0.0)}))
    generate(cfg, root / "artifacts" / "synth", progress=False)
    return root


def _write_params(root, **sections):
    return str(write_params(root / "params.yaml", {"seed": 0, "device": "cpu", "data": {"root": "artifacts/synth"},
                                                   **sections}))


def test_stad_train_starts_from_the_pretrained_backbone(synth_root, tmp_path):
    from stages import stad_train

    slim = SlowFastConfig(stem_dim=4)
    torch.manual_seed(7)
    src = SlowFastBackbone(slim).state_dict()
    path = tmp_path / "slim_slowfast.pyth"
    torch.save({"model_state": to_pyslowfast(src)}, path)
    stad = {"enabled": True, "head": "linear", "short_side": 48, "stem_dim": 4, "epochs": 1, "samples_per_video": 1,
            "batch_size": 2, "lr": 0.0, "decoupled": False, "pretrained": {"path": str(path), "format": "pyslowfast"}}
    params = _write_params(synth_root, stad=stad)
    assert stad_train.main(["--params", params, "--root", str(synth_root)]) == 0
    info = json.loads((synth_root / "artifacts" / "models" / "stad" / "train_info.json").read_text())
    assert info["pretrained"] == str(path) and info["pretrained_format"] == "pyslowfast"
    state = torch.load(synth_root / "artifacts" / "models" / "stad" / "model.pt", weights_only=True)["state"]
    convs = [k for k, v in src.items() if v.ndim == 5]  # lr 0: trained convs are still the file's
    assert convs and all(torch.equal(state[f"backbone.{k}"], src[k]) for k in convs)
    # a file that does not fit stops the stage before any video is decoded (exit 2, one line naming it)
    stad["pretrained"] = {"path": str(path), "format": "mmaction2"}
    assert stad_train.main(["--params", _write_params(synth_root, stad=stad), "--root", str(synth_root)]) == 2


@pytest.mark.parametrize("section", ["gym", "partattn"])
def test_gym_and_partattn_train_stop_on_a_missing_or_wrong_file(synth_root, tmp_path, capsys, section):
    from stages import gym_train, partattn_train

    stage = {"gym": gym_train, "partattn": partattn_train}[section]
    cfg = {"enabled": True, "stem_dim": 4, "pretrained": {"path": str(tmp_path / "none.pth")}}
    assert stage.main(["--params", _write_params(synth_root, **{section: cfg}), "--root", str(synth_root)]) == 2
    assert "none.pth: pretrained SlowOnly backbone" in capsys.readouterr().err
    wrong = tmp_path / "r50.pth"
    torch.save({"state_dict": {"backbone.conv1.conv.weight": torch.zeros(64, 3, 1, 7, 7)}}, wrong)
    cfg["pretrained"] = {"path": str(wrong), "format": "mmaction2"}
    assert stage.main(["--params", _write_params(synth_root, **{section: cfg}), "--root", str(synth_root)]) == 2
    assert re.search(r"r50.pth: first mismatching key 'blocks.0.conv.weight': shape \(64, 3, 1, 7, 7\) in file, "
                     r"\(4, 3, 1, 7, 7\)", capsys.readouterr().err)
