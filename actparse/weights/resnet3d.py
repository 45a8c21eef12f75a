"""Key maps of ResNet-3D video backbones: SlowFast (seed 003) and SlowOnly (seeds 004 and 000).

Our backbones (:class:`actparse.models.slowfast.SlowFastBackbone`,
:class:`actparse.models.slowonly.SlowOnlyBackbone`) keep pytorchvideo's module names (``blocks.<i>...``),
so pytorchvideo's hub checkpoints load as they are. Three other layouts of the same networks are renamed here, through one canonical description
of each tensor: ``(kind, pathway, stage, block, module, param)`` with kind ``stem`` / ``res`` /
``fuse`` (the Fast-to-Slow lateral after the stem or after res stage ``stage``), pathway 0 = Slow,
1 = Fast, module ``conv`` / ``bn`` (stem, lateral) or ``a``, ``a_bn``, ``b``, ``b_bn``, ``c``,
``c_bn``, ``short``, ``short_bn`` (the bottleneck's 1x1 / 3x3 / 1x1 convs and the shortcut).

* ``pytorchvideo``: stem ``blocks.0[.multipathway_blocks.<p>].conv/norm``, bottleneck
  ``blocks.<s>[.multipathway_blocks.<p>].res_blocks.<b>.branch2.conv_a/norm_a...``, shortcut
  ``branch1_conv/norm``, lateral ``blocks.<i>.multipathway_fusion.conv_fast_to_slow/norm``;
* ``pyslowfast``: stem ``s1.pathway<p>_stem.conv/bn``, bottleneck ``s<s+1>.pathway<p>_res<b>.branch2.a/a_bn...``,
  shortcut ``branch1/branch1_bn``, lateral ``s<i+1>_fuse.conv_f2s/bn``; its Caffe2 blobs: ``[t_]conv1_w``,
  ``[t_]res_conv1_bn_s/b/rm/riv``, ``[t_]res<s+1>_<b>_branch2a_w``, ``..._branch2a_bn_s``, ``..._branch1_w``,
  laterals ``t_pool1_subsample[_bn]_*`` / ``t_res<s+1>_<last>_branch2c_bn_subsample[_bn]_*`` (``t_`` = Fast);
* ``mmaction2``: stem ``[slow_path.|fast_path.]conv1.conv/bn``, bottleneck ``layer<s>.<b>.conv1/2/3.conv/bn``,
  shortcut ``downsample.conv/bn``, laterals ``slow_path.conv1_lateral.conv`` / ``slow_path.layer<i>_lateral.conv``.

mmaction2's laterals are a bare conv (no BN, no ReLU); a SlowFast built with ``lateral_norm=False``
has the same. Tensors are never reshaped: all layouts store PyTorch's ``(out, in, T, H, W)`` convs.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Callable, Mapping, NamedTuple

import torch
import torch.nn as nn

from .core import KeyMapError, check_keys, drop_head, read_state_dict, strip_wrappers

log = logging.getLogger("actparse.weights")

PARAMS = "weight|bias|running_mean|running_var|num_batches_tracked"
FORMATS: dict[str, str] = {
    "pytorchvideo": "pytorchvideo layout (hub slowfast_r50/r101, slow_r50: blocks.0..., blocks.<s>...res_blocks.<b>"
                    ".branch2.conv_a...)",
    "pyslowfast": "PySlowFast layout (s1.pathway0_stem.conv, s2.pathway0_res0.branch2.a, s1_fuse.conv_f2s; "
                  "{'model_state': ...} .pyth files or Caffe2 .pkl blobs)",
    "mmaction2": "mmaction2 layout (ResNet3dSlowFast slow_path./fast_path. or ResNet3dSlowOnly: conv1.conv, "
                 "layer<s>.<b>.conv1.conv/bn, slow_path.layer<s>_lateral.conv; backbone./cls_head. prefixes)",
}


class Key(NamedTuple):
    kind: str          # stem | res | fuse
    pathway: int       # 0 Slow, 1 Fast
    stage: int         # res: 1..4; fuse: 0 (after the stem) .. 3; stem: 0
    block: int         # res: block index in the stage; else 0
    module: str        # conv | bn | a | a_bn | b | b_bn | c | c_bn | short | short_bn
    param: str


# --------------------------------------------------------------------------------------------
# Our naming (= pytorchvideo's)
# --------------------------------------------------------------------------------------------
_PTV_RES = {"a": "branch2.conv_a", "a_bn": "branch2.norm_a", "b": "branch2.conv_b", "b_bn": "branch2.norm_b",
            "c": "branch2.conv_c", "c_bn": "branch2.norm_c", "short": "branch1_conv", "short_bn": "branch1_norm"}
_PTV_RES_INV = {v: k for k, v in _PTV_RES.items()}


def render(key: Key, multipath: bool) -> str:
    """Our (pytorchvideo) name of ``key`` in a two-pathway (SlowFast) or one-pathway (SlowOnly) backbone."""
    path = f".multipathway_blocks.{key.pathway}" if multipath or key.pathway else ""
    if key.kind == "stem":
        return f"blocks.0{path}.{'conv' if key.module == 'conv' else 'norm'}.{key.param}"
    if key.kind == "res":
        return f"blocks.{key.stage}{path}.res_blocks.{key.block}.{_PTV_RES[key.module]}.{key.param}"
    mod = "conv_fast_to_slow" if key.module == "conv" else "norm"
    return f"blocks.{key.stage}.multipathway_fusion.{mod}.{key.param}"


_PTV_PATTERNS = [
    (re.compile(rf"^blocks\.0\.(?:multipathway_blocks\.(?P<p>[01])\.)?(?P<m>conv|norm)\.(?P<x>{PARAMS})$"), "stem"),
    (re.compile(rf"^blocks\.(?P<s>[1-4])\.(?:multipathway_blocks\.(?P<p>[01])\.)?res_blocks\.(?P<b>\d+)\."
                rf"(?P<m>branch1_conv|branch1_norm|branch2\.(?:conv|norm)_[abc])\.(?P<x>{PARAMS})$"), "res"),
    (re.compile(rf"^blocks\.(?P<s>[0-3])\.multipathway_fusion\.(?P<m>conv_fast_to_slow|norm)\.(?P<x>{PARAMS})$"),
     "fuse"),
]


def _parse_pytorchvideo(k: str) -> Key | None:
    for rx, kind in _PTV_PATTERNS:
        m = rx.match(k)
        if m:
            p = int(m.groupdict().get("p") or 0)
            if kind == "stem":
                return Key("stem", p, 0, 0, "conv" if m["m"] == "conv" else "bn", m["x"])
            if kind == "res":
                return Key("res", p, int(m["s"]), int(m["b"]), _PTV_RES_INV[m["m"]], m["x"])
            return Key("fuse", 1, int(m["s"]), 0, "conv" if m["m"] == "conv_fast_to_slow" else "bn", m["x"])
    return None


# --------------------------------------------------------------------------------------------
# PySlowFast (and its Caffe2 blob names)
# --------------------------------------------------------------------------------------------
_PSF_RES = {"branch1": "short", "branch1_bn": "short_bn", "branch2.a": "a", "branch2.a_bn": "a_bn",
            "branch2.b": "b", "branch2.b_bn": "b_bn", "branch2.c": "c", "branch2.c_bn": "c_bn"}
_PSF_STEM = re.compile(rf"^s1\.pathway(?P<p>[01])_stem\.(?P<m>conv|bn)\.(?P<x>{PARAMS})$")
_PSF_RES_RX = re.compile(rf"^s(?P<s>[2-5])\.pathway(?P<p>[01])_res(?P<b>\d+)\."
                         rf"(?P<m>branch1|branch1_bn|branch2\.[abc]|branch2\.[abc]_bn)\.(?P<x>{PARAMS})$")
_PSF_FUSE = re.compile(rf"^s(?P<s>[1-4])_fuse\.(?P<m>conv_f2s|bn)\.(?P<x>{PARAMS})$")


def _parse_pyslowfast(k: str) -> Key | None:
    if m := _PSF_STEM.match(k):
        return Key("stem", int(m["p"]), 0, 0, m["m"], m["x"])
    if m := _PSF_RES_RX.match(k):
        return Key("res", int(m["p"]), int(m["s"]) - 1, int(m["b"]), _PSF_RES[m["m"]], m["x"])
    if m := _PSF_FUSE.match(k):
        return Key("fuse", 1, int(m["s"]) - 1, 0, "conv" if m["m"] == "conv_f2s" else "bn", m["x"])
    return None


# Caffe2 blob suffixes: conv weight / bias, affine BN scale / shift / running mean / running variance
_C2_CONV = {"w": "weight", "b": "bias"}
_C2_BN = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_C2_STEM = re.compile(r"^(?P<t>t_)?(?:conv1|res_conv1(?P<bn>_bn))_(?P<x>w|b|s|rm|riv)$")
_C2_RES = re.compile(r"^(?P<t>t_)?res(?P<s>[2-5])_(?P<b>\d+)_branch(?P<br>1|2[abc])(?P<bn>_bn)?_(?P<x>w|b|s|rm|riv)$")
_C2_FUSE = re.compile(r"^t_(?:pool1|res(?P<s>[2-5])_\d+_branch2c_bn)_subsample(?P<bn>_bn)?_(?P<x>w|b|s|rm|riv)$")
_C2_SKIP = re.compile(r"(_momentum$|^lr$|^model_iter$|^iter$)")


def _c2_param(bn: bool, x: str) -> str | None:
    return (_C2_BN if bn else _C2_CONV).get(x)


def _parse_caffe2(k: str) -> Key | None:
    if m := _C2_FUSE.match(k):
        stage = int(m["s"]) - 1 if m["s"] else 0
        x = _c2_param(bool(m["bn"]), m["x"])
        return Key("fuse", 1, stage, 0, "bn" if m["bn"] else "conv", x) if x else None
    if m := _C2_STEM.match(k):
        x = _c2_param(bool(m["bn"]), m["x"])
        return Key("stem", int(bool(m["t"])), 0, 0, "bn" if m["bn"] else "conv", x) if x else None
    if m := _C2_RES.match(k):
        x = _c2_param(bool(m["bn"]), m["x"])
        mod = "short" if m["br"] == "1" else m["br"][1]
        return Key("res", int(bool(m["t"])), int(m["s"]) - 1, int(m["b"]), mod + ("_bn" if m["bn"] else ""), x) \
            if x else None
    return None


# --------------------------------------------------------------------------------------------
# mmaction2 (ResNet3dSlowFast / ResNet3dSlowOnly, mmcv ConvModule = .conv + .bn)
# --------------------------------------------------------------------------------------------
_MMA_RES = {"conv1.conv": "a", "conv1.bn": "a_bn", "conv2.conv": "b", "conv2.bn": "b_bn", "conv3.conv": "c",
            "conv3.bn": "c_bn", "downsample.conv": "short", "downsample.bn": "short_bn"}
_MMA_PATH = r"(?:(?P<path>slow|fast)_path\.)?"
_MMA_STEM = re.compile(rf"^{_MMA_PATH}conv1\.(?P<m>conv|bn)\.(?P<x>{PARAMS})$")
_MMA_RES_RX = re.compile(rf"^{_MMA_PATH}layer(?P<s>[1-4])\.(?P<b>\d+)\.(?P<m>(?:conv[123]|downsample)\.(?:conv|bn))"
                         rf"\.(?P<x>{PARAMS})$")
_MMA_FUSE = re.compile(rf"^slow_path\.(?:conv1|layer(?P<s>[1-3]))_lateral\.(?P<m>conv|bn)\.(?P<x>{PARAMS})$")


def _parse_mmaction2(k: str) -> Key | None:
    if m := _MMA_FUSE.match(k):
        return Key("fuse", 1, int(m["s"] or 0), 0, m["m"], m["x"])
    if m := _MMA_STEM.match(k):
        return Key("stem", int(m["path"] == "fast"), 0, 0, m["m"], m["x"])
    if m := _MMA_RES_RX.match(k):
        return Key("res", int(m["path"] == "fast"), int(m["s"]), int(m["b"]), _MMA_RES[m["m"]], m["x"])
    return None


# --------------------------------------------------------------------------------------------
# Conversion and loading
# --------------------------------------------------------------------------------------------
def _is_caffe2(state: Mapping[str, torch.Tensor]) -> bool:
    return all("." not in k for k in state)


def convert(raw: Mapping[str, torch.Tensor], fmt: str,
            multipath: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``raw`` state dict in layout ``fmt`` -> (our keys -> tensors, our key -> the file's key).

    Classifier heads and wrappers are dropped (logged); any other key the layout cannot place is a
    :class:`KeyMapError` naming it.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown weights format {fmt!r}; choose from {sorted(FORMATS)}")
    state = strip_wrappers(raw, fmt)
    parse: Callable[[str], Key | None]
    if fmt == "pytorchvideo":
        state = drop_head(state, fmt, ("blocks.5.", "blocks.6."))
        parse = _parse_pytorchvideo
    elif fmt == "pyslowfast":
        if _is_caffe2(state):
            skip = [k for k in state if _C2_SKIP.search(k)]
            state = drop_head({k: v for k, v in state.items() if k not in skip}, "pyslowfast (Caffe2)", ("pred_",))
            parse = _parse_caffe2
        else:
            state = drop_head(state, fmt, ("head.",))
            parse = _parse_pyslowfast
    else:
        state = drop_head(state, fmt, ("cls_head.", "neck.", "data_preprocessor."))
        parse = _parse_mmaction2
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for k, v in state.items():
        key = parse(k)
        if key is None:
            raise KeyMapError(f"key {k!r} is not part of the {FORMATS[fmt]} (format {fmt!r})")
        new = render(key, multipath)
        if new in out:
            raise KeyMapError(f"keys map twice onto {new!r} (format {fmt!r}); last from {k!r}")
        out[new] = v
        origin[new] = k
    return out, origin


def _blocks_per_stage(keys, multipath: bool) -> list[int]:
    n = [0, 0, 0, 0]
    rx = r"blocks\.([1-4])\.(?:multipathway_blocks\.0\.)?res_blocks\.(\d+)\."
    for k in keys:
        m = re.match(rx, k)
        if m:
            n[int(m[1]) - 1] = max(n[int(m[1]) - 1], int(m[2]) + 1)
    return n


def load_backbone(backbone: nn.Module, path: str | os.PathLike, fmt: str, where: str, param_prefix: str) -> int:
    """Load ``path`` (layout ``fmt``) into ``backbone`` strictly; returns the number of tensors loaded.

    After renaming, the file must hold exactly the backbone's tensors with equal shapes (a BN
    ``num_batches_tracked`` counter absent from the file is kept from the model). Otherwise a
    ValueError names the file, the first mismatching key (ours and the file's), both shapes, the
    format and, where it can tell, the parameter to change (``param_prefix``, e.g. ``stad``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained {where} weights not found")
    if fmt not in FORMATS:
        raise ValueError(f"{path}: unknown weights format {fmt!r}; choose from {sorted(FORMATS)}")
    raw = read_state_dict(path, f"pretrained {where} weights", f"format {fmt!r}: {FORMATS[fmt]}")
    want = backbone.state_dict()
    multipath = any(".multipathway_blocks." in k for k in want)
    fmt_note = f"read as format {fmt!r}: {FORMATS[fmt]}"
    try:
        src, origin = convert(raw, fmt, multipath)
    except KeyMapError as exc:
        fits = []
        for other in FORMATS:
            if other != fmt:
                try:
                    convert(raw, other, multipath)
                    fits.append(other)
                except KeyMapError:
                    pass
        hint = f"; the file looks like format {' / '.join(map(repr, fits))}" if fits else ""
        raise ValueError(f"{path}: {exc}{hint}") from None

    stored = {id(v): k for k, v in raw.items()}  # the name as written in the file (before prefix stripping)

    def file_key(k: str) -> str:
        o = stored.get(id(src[k]), origin.get(k))
        return f" (file key {o!r})" if o and o != k else ""

    in_file = f"the file has blocks per stage {_blocks_per_stage(src, multipath)}"
    path_note = ""
    if multipath != any(".multipathway_blocks.1." in k for k in src):
        path_note = "; the file holds a " + ("one-pathway (SlowOnly-like)" if multipath else "two-pathway (SlowFast)") \
            + " network"
        in_file += path_note
    fuse_bn_file = any(".multipathway_fusion.norm." in k for k in src)
    fuse_bn_model = any(".multipathway_fusion.norm." in k for k in want)
    lateral_hint = ""
    if multipath and fuse_bn_file != fuse_bn_model:
        lateral_hint = (f"; the file's Fast->Slow laterals {'have' if fuse_bn_file else 'have no'} BN (+ReLU): set "
                        f"{param_prefix}.lateral_norm: {'true' if fuse_bn_file else 'false'}")
    check_keys(path, src, want, where, fmt_note, file_key, missing_hint=in_file + lateral_hint,
               shape_hint=path_note, extra_hint=in_file + lateral_hint)
    backbone.load_state_dict({k: (src[k] if k in src else v).to(dtype=v.dtype) for k, v in want.items()}, strict=True)
    log.info("%s: loaded %d pretrained tensors (%s) into the %s", path, len(src), fmt, where)
    return len(src)


def load_slowfast(backbone, path: str | os.PathLike, fmt: str = "pytorchvideo") -> int:
    """Pretrained SlowFast weights into an :class:`~actparse.models.slowfast.SlowFastBackbone` (params ``stad``)."""
    c = backbone.cfg
    where = (f"SlowFast backbone (depth {c.depth}, blocks per stage {list(c.blocks_per_stage)}, "
             f"stem {c.stem_dim}, beta_inv {c.beta_inv}, alpha {c.alpha}, fusion_kernel {c.fusion_kernel}, "
             f"lateral_norm {str(c.lateral_norm).lower()})")
    return load_backbone(backbone, path, fmt, where, "stad")


def load_slowonly(backbone, path: str | os.PathLike, fmt: str = "pytorchvideo", param_prefix: str = "gym") -> int:
    """Pretrained SlowOnly weights into a :class:`~actparse.models.slowonly.SlowOnlyBackbone`
    (params ``gym`` or ``partattn``)."""
    c = backbone.cfg
    where = (f"SlowOnly backbone (depth {c.depth}, blocks per stage {list(c.blocks_per_stage)}, "
             f"stem {c.stem_dim})")
    return load_backbone(backbone, path, fmt, where, param_prefix)


def pretrained_from_params(params: dict, section: str) -> tuple[Path | None, str]:
    """(``<section>.pretrained.path`` or None, ``<section>.pretrained.format``) from params."""
    from ..params import get

    p = get(params, f"{section}.pretrained.path", str)
    fmt = get(params, f"{section}.pretrained.format", str, choices=tuple(FORMATS))
    return (Path(p) if p else None), fmt
