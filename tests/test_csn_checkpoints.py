"""Pretrained CSN checkpoints in the pytorchvideo, VMZ and mmaction2 key layouts (``csn.pretrained.key_map``).

Each test writes its checkpoint itself, in the external layout, by renaming the state dict of one of
our backbones with a name table built here from the published layouts (independently of
``actparse.csn.KEY_MAPS``), then loads it with :func:`load_pretrained`.
"""

from __future__ import annotations

import logging
import re

import pytest
import torch
import torch.nn as nn

from actparse.csn import KEY_MAPS, load_pretrained
from actparse.models.csn import DEPTHS, CSNConfig, MultiTaskCSN

LAYOUTS = ("pytorchvideo", "vmz", "mmaction2")
VARIANTS = ("ip", "ir")
SLIM = (2, 1, 2, 1)  # two blocks in stages 1 and 3: block indices > 0 and blocks without downsample
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


# ---------------------------------------------------------------- published layouts, written out
def _params(ext: str, ours: str, kind: str) -> dict[str, str]:
    return {f"{ext}.{p}": f"{ours}.{p}" for p in (("weight",) if kind == "conv" else BN)}


def vmz_names(variant: str, layers) -> dict[str, str]:
    """VMZ ir_csn / ip_csn (torchvision VideoResNet) key -> our key, for ``layers`` blocks per stage."""
    out = {**_params("stem.0", "blocks.0.conv", "conv"), **_params("stem.1", "blocks.0.norm", "bn")}
    for s, n in enumerate(layers, 1):
        for b in range(n):
            e, o = f"layer{s}.{b}.", f"blocks.{s}.res_blocks.{b}.branch2."
            out.update(_params(e + "conv1.0", o + "conv_a", "conv"))
            out.update(_params(e + "conv1.1", o + "norm_a", "bn"))
            if variant == "ir":
                out.update(_params(e + "conv2.0", o + "conv_b", "conv"))
            else:  # Sequential(1x1x1 conv, BN, depthwise conv) in place of the depthwise conv
                out.update(_params(e + "conv2.0.0", o + "conv_b.pointwise", "conv"))
                out.update(_params(e + "conv2.0.1", o + "conv_b.norm", "bn"))
                out.update(_params(e + "conv2.0.2", o + "conv_b.depthwise", "conv"))
            out.update(_params(e + "conv2.1", o + "norm_b", "bn"))
            out.update(_params(e + "conv3.0", o + "conv_c", "conv"))
            out.update(_params(e + "conv3.1", o + "norm_c", "bn"))
            if b == 0:
                out.update(_params(e + "downsample.0", f"blocks.{s}.res_blocks.0.branch1_conv", "conv"))
                out.update(_params(e + "downsample.1", f"blocks.{s}.res_blocks.0.branch1_norm", "bn"))
    return out


def mmaction2_names(variant: str, layers) -> dict[str, str]:
    """mmaction2 ResNet3dCSN (ConvModule .conv/.bn; conv2 a Sequential) key -> our key."""
    out = {**_params("conv1.conv", "blocks.0.conv", "conv"), **_params("conv1.bn", "blocks.0.norm", "bn")}
    for s, n in enumerate(layers, 1):
        for b in range(n):
            e, o = f"layer{s}.{b}.", f"blocks.{s}.res_blocks.{b}.branch2."
            out.update(_params(e + "conv1.conv", o + "conv_a", "conv"))
            out.update(_params(e + "conv1.bn", o + "norm_a", "bn"))
            if variant == "ir":
                out.update(_params(e + "conv2.0.conv", o + "conv_b", "conv"))
                out.update(_params(e + "conv2.0.bn", o + "norm_b", "bn"))
            else:  # conv2.0 = 1x1x1 ConvModule (no act), conv2.1 = depthwise ConvModule
                out.update(_params(e + "conv2.0.conv", o + "conv_b.pointwise", "conv"))
                out.update(_params(e + "conv2.0.bn", o + "conv_b.norm", "bn"))
                out.update(_params(e + "conv2.1.conv", o + "conv_b.depthwise", "conv"))
                out.update(_params(e + "conv2.1.bn", o + "norm_b", "bn"))
            out.update(_params(e + "conv3.conv", o + "conv_c", "conv"))
            out.update(_params(e + "conv3.bn", o + "norm_c", "bn"))
            if b == 0:
                out.update(_params(e + "downsample.conv", f"blocks.{s}.res_blocks.0.branch1_conv", "conv"))
                out.update(_params(e + "downsample.bn", f"blocks.{s}.res_blocks.0.branch1_norm", "bn"))
    return out


def pytorchvideo_names(variant: str, layers) -> dict[str, str]:
    depth = min(d for d, full in DEPTHS.items() if all(n <= f for n, f in zip(layers, full)))
    return {k: k for k in backbone_state(variant, depth, layers, stem_dim=4)}


NAMES = {"pytorchvideo": pytorchvideo_names, "vmz": vmz_names, "mmaction2": mmaction2_names}


# ---------------------------------------------------------------- helpers
def make(variant: str, depth: int = 50, layers=SLIM, stem_dim: int = 8, seed: int = 0) -> MultiTaskCSN:
    torch.manual_seed(seed)
    stage_depths = None if tuple(layers) == DEPTHS[depth] else tuple(layers)
    return MultiTaskCSN(CSNConfig(variant=variant, depth=depth, stage_depths=stage_depths, stem_dim=stem_dim),
                        {"action": 3})


def backbone_state(variant: str, depth: int = 50, layers=SLIM, stem_dim: int = 8) -> dict[str, torch.Tensor]:
    return make(variant, depth, layers, stem_dim).backbones()[0].state_dict()


def randomised(state: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    """Distinct random values everywhere (BN statistics and counters too), so a fresh model differs."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        if v.dtype == torch.long:
            out[k] = torch.randint(1, 1000, v.shape, generator=g)
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(v.shape, generator=g)
    return out


def external(layout: str, variant: str, state: dict[str, torch.Tensor], layers=SLIM) -> dict[str, torch.Tensor]:
    """``state`` (our layout) renamed into ``layout``; checks the name table covers it exactly."""
    inverse = {ours: ext for ext, ours in NAMES[layout](variant, layers).items()}
    assert set(inverse) == set(state)
    return {inverse[k]: v.clone() for k, v in state.items()}


def write(layout: str, ext: dict[str, torch.Tensor], path, stem_dim: int = 8):
    """Save ``ext`` wrapped as that layout's published files are."""
    feat = stem_dim * 32
    if layout == "pytorchvideo":  # hub checkpoint: {"model_state": full create_csn state dict}
        obj = {"model_state": {**ext, "blocks.5.proj.weight": torch.randn(7, feat),
                               "blocks.5.proj.bias": torch.randn(7)}}
    elif layout == "vmz":  # VMZ .pth: the VideoResNet state dict, classifier included
        obj = {**ext, "fc.weight": torch.randn(400, feat), "fc.bias": torch.randn(400)}
    else:  # mmaction2 recognizer checkpoint: meta + state_dict with backbone./cls_head. prefixes
        obj = {"meta": {"mmaction2_version": "1.2.0", "epoch": 58},
               "state_dict": {**{f"backbone.{k}": v for k, v in ext.items()},
                              "cls_head.fc_cls.weight": torch.randn(400, feat),
                              "cls_head.fc_cls.bias": torch.randn(400)}}
    torch.save(obj, path)
    return path


def assert_loaded(model: MultiTaskCSN, state: dict[str, torch.Tensor]):
    got = model.backbones()[0].state_dict()
    assert set(got) == set(state)
    for k, v in state.items():
        assert torch.equal(got[k], v), k


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_checkpoint_in_each_layout_loads_every_backbone_tensor(tmp_path, layout, variant, caplog):
    state = randomised(backbone_state(variant))
    path = write(layout, external(layout, variant, state), tmp_path / f"{variant}_{layout}.pth")
    model = make(variant, seed=5)
    with caplog.at_level(logging.INFO, logger="actparse.csn"):
        n = load_pretrained(model, path, key_map=layout)
    assert n == len(state)
    assert_loaded(model, state)
    assert re.search(r"ignoring 2 (classifier|non-backbone) key\(s\)", caplog.text)


@pytest.mark.parametrize("layout", ["vmz", "mmaction2"])
def test_wrapped_prefixes_bare_backbones_and_shared_backbones(tmp_path, layout):
    variant = "ip"
    state = randomised(backbone_state(variant), seed=3)
    ext = external(layout, variant, state)
    # DataParallel / DDP prefix (module.), and for mmaction2 a bare backbone file (no backbone. prefix)
    torch.save({"state_dict": {f"module.{k}": v for k, v in ext.items()}}, tmp_path / "module.pth")
    model = MultiTaskCSN(CSNConfig(variant=variant, depth=50, stage_depths=SLIM, stem_dim=8, shared_backbone=False),
                         {"action": 3, "hand": 2})
    load_pretrained(model, tmp_path / "module.pth", key_map=layout)
    for bb in model.backbones():  # every one of the seven-per-task backbones
        for k, v in bb.state_dict().items():
            assert torch.equal(v, state[k]), k


def test_converted_checkpoints_without_bn_counters_load(tmp_path):
    state = randomised(backbone_state("ir"))
    ext = {k: v for k, v in external("vmz", "ir", state).items() if not k.endswith("num_batches_tracked")}
    write("vmz", ext, tmp_path / "old.pth")
    model = make("ir", seed=5)
    before = {k: v.clone() for k, v in model.backbones()[0].state_dict().items()}
    load_pretrained(model, tmp_path / "old.pth", key_map="vmz")
    for k, v in model.backbones()[0].state_dict().items():
        assert torch.equal(v, before[k] if k.endswith("num_batches_tracked") else state[k]), k


@pytest.mark.parametrize("variant", VARIANTS)
def test_depth_152_key_sets_map_onto_the_152_backbone(tmp_path, variant):
    """The published ip/ir-CSN-152 layouts ([3, 8, 36, 3] blocks): every name maps onto a key of our
    depth-152 backbone, one to one, and a full file in each layout loads (narrow stem: cheap)."""
    layers = DEPTHS[152]
    assert layers == (3, 8, 36, 3)
    model = make(variant, depth=152, layers=layers, stem_dim=4)
    ours = model.backbones()[0].state_dict()
    for layout in ("vmz", "mmaction2"):
        names = NAMES[layout](variant, layers)
        assert len(names) == len(ours) and set(names.values()) == set(ours)
        tagged = {k: torch.tensor(float(i)) for i, k in enumerate(names)}
        mapped = KEY_MAPS[layout](tagged)
        assert set(mapped) == set(ours)
        for ext, t in tagged.items():
            assert mapped[names[ext]] is t, ext
    state = randomised(ours, seed=7)
    for layout in LAYOUTS:
        path = write(layout, external(layout, variant, state, layers), tmp_path / f"{layout}152.pth", stem_dim=4)
        model.backbones()[0].load_state_dict({k: torch.zeros_like(v) for k, v in ours.items()})  # wipe
        assert load_pretrained(model, path, key_map=layout) == len(ours)
        assert_loaded(model, state)


# ---------------------------------------------------------------- same features as a VMZ-built network
class _Depthwise(nn.Conv3d):
    """VMZ-style depthwise 3x3x3 conv maker for torchvision's VideoResNet."""

    def __init__(self, in_planes, out_planes, midplanes=None, stride=1, padding=1):
        super().__init__(in_planes, out_planes, kernel_size=3, stride=stride, padding=padding, groups=in_planes,
                         bias=False)

    @staticmethod
    def get_downsample_stride(stride):
        return (stride, stride, stride)


class _InteractionPreserved(nn.Sequential):
    """VMZ-style ip conv maker: 1x1x1 conv, BN, depthwise 3x3x3 conv."""

    def __init__(self, in_planes, out_planes, midplanes=None, stride=1, padding=1):
        super().__init__(nn.Conv3d(in_planes, out_planes, kernel_size=1, bias=False), nn.BatchNorm3d(out_planes),
                         _Depthwise(out_planes, out_planes, None, stride))

    @staticmethod
    def get_downsample_stride(stride):
        return (stride, stride, stride)


class _PooledStem(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv3d(3, 64, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
                         nn.BatchNorm3d(64), nn.ReLU(inplace=True),
                         nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))


@pytest.mark.parametrize("variant", VARIANTS)
def test_vmz_weights_give_the_vmz_network_features(tmp_path, variant):
    video = pytest.importorskip("torchvision.models.video.resnet")
    layers = (2, 1, 1, 1)
    torch.manual_seed(2)
    maker = _InteractionPreserved if variant == "ip" else _Depthwise
    ref = video.VideoResNet(block=video.Bottleneck, conv_makers=[maker] * 4, layers=list(layers), stem=_PooledStem,
                            num_classes=5)
    ref.load_state_dict(randomised(ref.state_dict(), seed=4))
    torch.save(ref.state_dict(), tmp_path / "vmz.pth")
    model = make(variant, layers=layers, stem_dim=64, seed=6)
    load_pretrained(model, tmp_path / "vmz.pth", key_map="vmz")
    ref.eval(), model.eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        f = ref.stem(x)
        for layer in (ref.layer1, ref.layer2, ref.layer3, ref.layer4):
            f = layer(f)
        assert torch.allclose(model.backbones()[0](x), f, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- errors
SHAPE_KEY = "blocks.2.res_blocks.0.branch2.conv_a.weight"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_wrong_shape_names_file_layout_and_first_key(tmp_path, layout, variant):
    state = randomised(backbone_state(variant))
    ext = external(layout, variant, state)
    to_file = {ours: e for e, ours in NAMES[layout](variant, SLIM).items()}
    file_key = to_file[SHAPE_KEY]
    good = tuple(ext[file_key].shape)
    ext[file_key] = torch.zeros(good[0] + 1, *good[1:])
    # a later tensor is wrong too: the message names the first one, in backbone order
    ext[to_file["blocks.4.res_blocks.0.branch2.conv_c.weight"]] = torch.zeros(1)
    path = write(layout, ext, tmp_path / f"bad_{layout}.pth")
    with pytest.raises(ValueError) as err:
        load_pretrained(make(variant), path, key_map=layout)
    msg = str(err.value)
    assert msg.startswith(f"{path}: first mismatching key '{SHAPE_KEY}'")
    assert f"shape {(good[0] + 1, *good[1:])} in file, {good} in the {variant}-CSN backbone" in msg
    assert f"key_map '{layout}'" in msg and {"pytorchvideo": "pytorchvideo", "vmz": "VMZ",
                                             "mmaction2": "mmaction2 ResNet3dCSN"}[layout] in msg
    if layout != "pytorchvideo":  # the name as stored in the file
        assert f"file key '{'backbone.' if layout == 'mmaction2' else ''}{file_key}'" in msg


@pytest.mark.parametrize("layout,extra", [("pytorchvideo", "head.proj.weight"),
                                          ("vmz", "layer1.0.se.fc.weight"),
                                          ("mmaction2", "layer2.0.non_local_block.g.conv.weight")])
def test_unknown_key_names_the_key_and_layout(tmp_path, layout, extra):
    ext = external(layout, "ir", randomised(backbone_state("ir")))
    ext[extra] = torch.zeros(3)
    path = write(layout, ext, tmp_path / "unknown.pth")
    # (mmaction2: written as backbone.<key>; the prefix is stripped before the key is read)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: key '{re.escape(extra)}' is not part of the "
                                         rf".*\(key_map '{layout}'\)"):
        load_pretrained(make("ir"), path, key_map=layout)


def test_a_key_that_maps_but_is_not_in_the_backbone(tmp_path):
    # a deeper mmaction2 file (3 blocks in stage 1) into the slim model: the extra block is named
    state = randomised(backbone_state("ir", layers=(3, 1, 2, 1)))
    path = write("mmaction2", external("mmaction2", "ir", state, (3, 1, 2, 1)), tmp_path / "deep.pth")
    with pytest.raises(ValueError, match=r"deep\.pth: first mismatching key 'blocks\.1\.res_blocks\.2\..*"
                                         r"\(file key 'backbone\.layer1\.2\..*not in the ir-CSN backbone.*"
                                         r"file has blocks per stage \[3, 1, 2, 1\].*key_map 'mmaction2'"):
        load_pretrained(make("ir"), path, key_map="mmaction2")


@pytest.mark.parametrize("layout", ["vmz", "mmaction2"])
def test_variant_mismatch_says_which_variant_the_file_holds(tmp_path, layout):
    path = write(layout, external(layout, "ip", randomised(backbone_state("ip"))), tmp_path / "ip.pth")
    with pytest.raises(ValueError, match=r"ip\.pth: first mismatching key 'blocks\.1\.res_blocks\.0\.branch2\.conv_b"
                                         r"\.weight': missing from the file.*holds ip-CSN weights"):
        load_pretrained(make("ir"), path, key_map=layout)


def test_wrong_key_map_suggests_the_layout_the_file_has(tmp_path):
    path = write("vmz", external("vmz", "ir", randomised(backbone_state("ir"))), tmp_path / "vmz.pth")
    with pytest.raises(ValueError, match=r"vmz\.pth: key 'stem\.0\.weight' is not part of the mmaction2 .*"
                                         r"looks like key_map 'vmz'"):
        load_pretrained(make("ir"), path, key_map="mmaction2")


class _NotATensor:
    """A Python object that torch.load(weights_only=True) refuses."""


def test_files_with_python_objects_are_refused_by_the_safe_loader(tmp_path):
    ext = external("mmaction2", "ir", randomised(backbone_state("ir")))
    torch.save({"meta": {"hook": _NotATensor()}, "state_dict": ext}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match=r"pickled\.pth: cannot load pretrained CSN weights with "
                                         r"torch\.load\(weights_only=True\) \(key_map 'mmaction2'.*state dict alone"):
        load_pretrained(make("ir"), tmp_path / "pickled.pth", key_map="mmaction2")
