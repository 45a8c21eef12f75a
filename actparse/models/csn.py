"""CSN networks: ir-CSN and ip-CSN backbones and the seven-task classifier of seed 001.

Both variants are built with pytorchvideo's ``create_csn`` factory:

* **ir-CSN** (interaction-reduced): pytorchvideo's own bottleneck, whose 3x3x3 conv is depthwise.
* **ip-CSN** (interaction-preserved): the same bottleneck with ``conv_b`` replaced by a 1x1x1 conv
  (channel interaction), BN, then the depthwise 3x3x3 conv; passed to the factory as a custom
  ``bottleneck`` callable (:func:`create_ip_bottleneck_block`).

Depth 50 / 101 / 152 picks pytorchvideo's stage depths; a slim CPU variant keeps only the first
``stage_depths[i]`` blocks of each stage and narrows the stem (``stem_dim``; stage widths follow
as 4x, 8x, 16x, 32x of it), so block structure, strides and key names are unchanged.

A :class:`MultiTaskCSN` predicts the seven seed-001 tasks (video action + six part groups), either
with one backbone and seven linear heads (``shared_backbone``, CPU default) or seven separate
single-head networks like the paper. Pretrained backbone weights load from a local file in
pytorchvideo's key layout (``blocks.0.conv.weight``, ``blocks.1.res_blocks.0.branch2.conv_a...``) or,
through the key maps of :mod:`actparse.weights.csn`, in VMZ's or mmaction2's CSN layout, checked
strictly (docs/checkpoints.md).

Build one with :func:`create_multitask_csn`; training, inference and checkpoints are in
:mod:`actparse.csn`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.nn as nn

from ..constants import GROUPS
from .video_resnet import STAGE_DEPTHS, ResNetConfig, check_depths, truncate_stages

TASKS: tuple[str, ...] = ("action",) + GROUPS
VARIANTS: tuple[str, ...] = ("ip", "ir")
DEPTHS: dict[int, tuple[int, int, int, int]] = {d: STAGE_DEPTHS[d] for d in (50, 101, 152)}


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------
class InteractionPreservedConv(nn.Sequential):
    """ip-CSN ``conv_b``: 1x1x1 conv (keeps channel interaction) -> BN -> depthwise 3x3x3 conv.

    Called by pytorchvideo's ``create_bottleneck_block`` with the keyword arguments of an
    ``nn.Conv3d``; ``groups`` is the depthwise grouping the factory asks for.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = False, groups: int = 1, dilation=1):
        super().__init__(OrderedDict([
            ("pointwise", nn.Conv3d(in_channels, in_channels, kernel_size=1, bias=False)),
            ("norm", nn.BatchNorm3d(in_channels)),
            ("depthwise", nn.Conv3d(in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                                    padding=padding, bias=bias, groups=groups, dilation=dilation)),
        ]))


def create_ip_bottleneck_block(**kwargs) -> nn.Module:
    """pytorchvideo bottleneck with the ip-CSN ``conv_b`` (same signature as ``create_bottleneck_block``)."""
    from pytorchvideo.models.resnet import create_bottleneck_block

    kwargs["conv_b"] = InteractionPreservedConv
    return create_bottleneck_block(**kwargs)


def bottleneck_for(variant: str) -> Callable[..., nn.Module]:
    from pytorchvideo.models.resnet import create_bottleneck_block

    if variant == "ip":
        return create_ip_bottleneck_block
    if variant == "ir":
        return create_bottleneck_block
    raise ValueError(f"unknown CSN variant {variant!r}; choose from {list(VARIANTS)}")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass
class CSNConfig(ResNetConfig):
    """Architecture of one CSN variant (stored in each checkpoint)."""

    variant: str = "ir"                    # ip | ir
    depth: int = 50                        # 50 | 101 | 152
    stage_depths: tuple[int, ...] | None = None  # None = full depth; else first k blocks per stage
    stem_dim: int = 64                     # 64 = published width
    stem_pool: bool = True                 # 1x3x3 max-pool after the stem conv (as VMZ's CSN stem)
    dropout: float = 0.0
    shared_backbone: bool = True           # one backbone + 7 heads, or 7 single-head networks
    freeze_bn: bool = False                # backbone BN in eval mode, affine frozen (seed 001 Table 3)

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown CSN variant {self.variant!r}; choose from {list(VARIANTS)}")
        self.stage_depths = check_depths("CSN", self.depth, self.stage_depths, DEPTHS, say_depth=True)
        if self.stem_dim < 4 or self.stem_dim % 4:
            raise ValueError(f"stem_dim must be a positive multiple of 4, got {self.stem_dim}")

    @property
    def feature_dim(self) -> int:
        return self.stem_dim * 32  # 4x (bottleneck) * 2^3 (stage widening)


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------
class CSNBackbone(nn.Module):
    """Stem + four residual stages of a pytorchvideo CSN (its ``blocks[0..4]``; head dropped)."""

    def __init__(self, blocks: nn.ModuleList):
        super().__init__()
        self.blocks = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def build_backbone(cfg: CSNConfig) -> CSNBackbone:
    """A CSN backbone from pytorchvideo's ``create_csn`` with the variant's bottleneck."""
    from pytorchvideo.models.csn import create_csn

    net = create_csn(model_depth=cfg.depth, model_num_class=1, stem_dim_out=cfg.stem_dim,
                     stem_pool=nn.MaxPool3d if cfg.stem_pool else None,
                     bottleneck=bottleneck_for(cfg.variant))
    blocks = list(net.blocks)[:-1]  # stem + 4 stages; the classification head is ours
    truncate_stages(blocks[1:], cfg.stage_depths)
    return CSNBackbone(nn.ModuleList(blocks))


class CSNClassifier(nn.Module):
    """Backbone -> global average pool -> dropout -> one linear head per task."""

    def __init__(self, cfg: CSNConfig, num_classes: Mapping[str, int]):
        super().__init__()
        self.backbone = build_backbone(cfg)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.heads = nn.ModuleDict({t: nn.Linear(cfg.feature_dim, int(n)) for t, n in num_classes.items()})
        for head in self.heads.values():
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.dropout(self.pool(self.backbone(x)).flatten(1))
        return {t: head(f) for t, head in self.heads.items()}


class MultiTaskCSN(nn.Module):
    """The seven seed-001 classifiers of one CSN variant.

    ``forward(x)`` with ``x`` of shape (B, 3, T, H, W) returns ``{task: logits (B, n_classes)}``.
    With ``cfg.shared_backbone`` there is one :class:`CSNClassifier` (key ``"shared"``) holding all
    heads; otherwise one per task (keys = task names), as in the paper.
    """

    def __init__(self, cfg: CSNConfig, num_classes: Mapping[str, int]):
        super().__init__()
        self.cfg = cfg
        self.tasks = tuple(num_classes)
        if cfg.shared_backbone:
            nets = {"shared": CSNClassifier(cfg, num_classes)}
        else:
            nets = {t: CSNClassifier(cfg, {t: n}) for t, n in num_classes.items()}
        self.nets = nn.ModuleDict(nets)
        if cfg.freeze_bn:
            freeze_batchnorm(self)

    def backbones(self) -> list[CSNBackbone]:
        return [net.backbone for net in self.nets.values()]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for net in self.nets.values():
            out.update(net(x))
        return out

    def train(self, mode: bool = True) -> "MultiTaskCSN":
        super().train(mode)
        if mode and self.cfg.freeze_bn:
            for bb in self.backbones():
                for m in bb.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self


def freeze_batchnorm(model: MultiTaskCSN) -> int:
    """Backbone BN layers: eval mode (running stats fixed) and affine parameters frozen.

    Stays in force across ``model.train()`` (see :meth:`MultiTaskCSN.train`). Returns the number
    of BN layers frozen.
    """
    n = 0
    for bb in model.backbones():
        for m in bb.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
                for p in m.parameters():
                    p.requires_grad_(False)
                n += 1
    model.cfg.freeze_bn = True
    return n


def create_multitask_csn(*, num_classes: Mapping[str, int], variant: str = "ir", depth: int = 50,
                         stage_depths: tuple[int, ...] | None = None, stem_dim: int = 64, stem_pool: bool = True,
                         dropout: float = 0.0, shared_backbone: bool = True, freeze_bn: bool = False) -> MultiTaskCSN:
    """A :class:`MultiTaskCSN` with one head per ``num_classes`` entry (``{task: classes}``)."""
    return MultiTaskCSN(CSNConfig(variant=variant, depth=depth, stage_depths=stage_depths, stem_dim=stem_dim,
                                  stem_pool=stem_pool, dropout=dropout, shared_backbone=shared_backbone,
                                  freeze_bn=freeze_bn), num_classes)
