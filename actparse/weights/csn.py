"""Key maps of CSN backbone checkpoints (``csn.pretrained.key_map``): VMZ's and mmaction2's layouts
renamed to pytorchvideo's ``create_csn`` naming, which :class:`actparse.csn.CSNBackbone` uses.
The loader with its strict checks is :func:`actparse.csn.load_pretrained` (docs/checkpoints.md).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable, Mapping

import torch

from .core import KeyMapError, drop_head, read_state_dict, strip_wrappers

_log = logging.getLogger("actparse.csn")  # the model's logger: messages read as the CSN loader's

# Human-readable name of each checkpoint layout (used in error messages and docs/checkpoints.md).
LAYOUTS: dict[str, str] = {
    "pytorchvideo": "pytorchvideo create_csn layout (blocks.0.conv.weight, "
                    "blocks.<s>.res_blocks.<b>.branch2.conv_a...)",
    "vmz": "VMZ / torchvision VideoResNet layout (stem.0.weight, layer<s>.<b>.conv<k>.<i>..., fc.*)",
    "mmaction2": "mmaction2 ResNet3dCSN layout (backbone.conv1.conv.weight, backbone.layer<s>.<b>.conv<k>.conv/bn...)",
}

_PARAM_RE = re.compile(r"^(?P<mod>.+)\.(?P<param>weight|bias|running_mean|running_var|num_batches_tracked)$")
_LAYER_RE = re.compile(r"^layer(?P<stage>[1-4])\.(?P<block>0|[1-9][0-9]*)\.(?P<mod>.+)$")

# Module names inside one residual block: external layout -> our pytorchvideo bottleneck.
# VMZ (torchvision Bottleneck): conv<k> = Sequential(conv, BN[, ReLU]); ir's conv2.0 is the depthwise conv
# itself, ip's conv2.0 is Sequential(1x1x1 conv, BN, depthwise conv); downsample = Sequential(conv, BN).
_VMZ_STEM = {"stem.0": "blocks.0.conv", "stem.1": "blocks.0.norm"}
_VMZ_BLOCK = {
    "conv1.0": "branch2.conv_a", "conv1.1": "branch2.norm_a",
    "conv2.0": "branch2.conv_b",                                     # ir
    "conv2.0.0": "branch2.conv_b.pointwise", "conv2.0.1": "branch2.conv_b.norm",  # ip
    "conv2.0.2": "branch2.conv_b.depthwise",                         # ip
    "conv2.1": "branch2.norm_b",
    "conv3.0": "branch2.conv_c", "conv3.1": "branch2.norm_c",
    "downsample.0": "branch1_conv", "downsample.1": "branch1_norm",
}
# mmaction2 (mmcv ConvModule = .conv + .bn): conv2 is a Sequential of ConvModules, [depthwise] in ir and
# [1x1x1, depthwise] in ip, so ``conv2.0`` means a different conv in the two variants.
_MMA_STEM = {"conv1.conv": "blocks.0.conv", "conv1.bn": "blocks.0.norm"}
_MMA_COMMON = {
    "conv1.conv": "branch2.conv_a", "conv1.bn": "branch2.norm_a",
    "conv3.conv": "branch2.conv_c", "conv3.bn": "branch2.norm_c",
    "downsample.conv": "branch1_conv", "downsample.bn": "branch1_norm",
}
_MMA_IR_BLOCK = {**_MMA_COMMON, "conv2.0.conv": "branch2.conv_b", "conv2.0.bn": "branch2.norm_b"}
_MMA_IP_BLOCK = {**_MMA_COMMON, "conv2.0.conv": "branch2.conv_b.pointwise", "conv2.0.bn": "branch2.conv_b.norm",
                 "conv2.1.conv": "branch2.conv_b.depthwise", "conv2.1.bn": "branch2.norm_b"}


def _rename(state: Mapping[str, torch.Tensor], name: str, stem: Mapping[str, str],
            block_table: Callable[[str], Mapping[str, str]]) -> dict[str, torch.Tensor]:
    """Rename ``<module>.<param>`` keys through the stem table or, for ``layer<s>.<b>.<module>``, the
    block table of that block; any other key is an error naming it and the layout."""
    out: dict[str, torch.Tensor] = {}
    for key, val in state.items():
        new = None
        m = _PARAM_RE.match(key)
        if m and m["mod"] in stem:
            new = f"{stem[m['mod']]}.{m['param']}"
        elif m and (b := _LAYER_RE.match(m["mod"])):
            table = block_table(f"layer{b['stage']}.{b['block']}")
            if b["mod"] in table:
                new = f"blocks.{b['stage']}.res_blocks.{b['block']}.{table[b['mod']]}.{m['param']}"
        if new is None:
            raise KeyMapError(f"key {key!r} is not part of the {LAYOUTS[name]} (key_map {name!r})")
        if new in out:
            raise KeyMapError(f"keys map twice onto {new!r} (key_map {name!r}); last from {key!r}")
        out[new] = val
    return out


def _pytorchvideo_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pytorchvideo's own layout (csn_r101 hub checkpoints, ``create_csn`` state dicts): names kept."""
    state = strip_wrappers(state, "pytorchvideo", _log)
    for k in state:
        if not k.startswith("blocks."):
            raise KeyMapError(f"key {k!r} is not part of the {LAYOUTS['pytorchvideo']} (key_map 'pytorchvideo')")
    return state


def _vmz_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """VMZ's PyTorch CSN (ir_csn_152 / ip_csn_152: torchvision ``VideoResNet`` with a pooled stem)."""
    state = drop_head(strip_wrappers(state, "vmz", _log), "vmz", ("fc.",), _log)
    return _rename(state, "vmz", _VMZ_STEM, lambda block: _VMZ_BLOCK)


def _mmaction2_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmaction2's ``ResNet3dCSN`` (bottleneck_mode ir / ip), bare backbone or whole recognizer."""
    state = drop_head(strip_wrappers(state, "mmaction2", _log), "mmaction2",
                      ("cls_head.", "neck.", "data_preprocessor."), _log)
    ip_blocks = {k.split(".conv2.1.", 1)[0] for k in state if k.startswith("layer") and ".conv2.1." in k}
    return _rename(state, "mmaction2", _MMA_STEM,
                   lambda block: _MMA_IP_BLOCK if block in ip_blocks else _MMA_IR_BLOCK)


# Key mappers from a checkpoint's layout (``csn.pretrained.key_map``) to pytorchvideo's: each takes the
# raw state dict and returns it in pytorchvideo layout (no tensor is copied or reshaped: the published
# VMZ / mmaction2 CSN tensors already have pytorchvideo's shapes, e.g. the (64, 3, 3, 7, 7) stem conv).
KEY_MAPS: dict[str, Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]] = {
    "pytorchvideo": _pytorchvideo_keys,
    "vmz": _vmz_keys,
    "mmaction2": _mmaction2_keys,
}


def _describe(key_map: str) -> str:
    return f"key_map {key_map!r}: {LAYOUTS.get(key_map, key_map)}"


def _raw_state_dict(path: Path, key_map: str = "pytorchvideo") -> dict[str, torch.Tensor]:
    return read_state_dict(path, "pretrained CSN weights", _describe(key_map))
