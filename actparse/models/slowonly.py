"""SlowOnly: the Slow pathway of SlowFast on its own (pytorchvideo ``create_resnet`` with a 1x7x7 stem
and temporal convolutions only in res4 / res5), the backbone of seeds 004 and 000.

Build one with :func:`create_slowonly`; pretrained weights load through :mod:`actparse.weights.resnet3d`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .video_resnet import STAGE_DEPTHS, ResNetConfig, check_depths, truncate_stages

DEPTHS = {d: STAGE_DEPTHS[d] for d in (50, 101)}


@dataclass
class SlowOnlyConfig(ResNetConfig):
    """SlowOnly (the Slow pathway of SlowFast on its own) from pytorchvideo ``create_resnet``."""

    depth: int = 50
    stage_depths: tuple[int, ...] | None = (1, 1, 1, 1)  # first k blocks per stage; None = full depth
    stem_dim: int = 8                   # 64 published
    temporal_stages: tuple[int, ...] = (0, 0, 1, 1)      # stages whose conv_a is 3x1x1 (SlowOnly: res4, res5)
    spatial_strides: tuple[int, ...] = (1, 2, 2, 2)      # per stage; output stride = 4 * product

    def __post_init__(self):
        self.stage_depths = check_depths("SlowOnly", self.depth, self.stage_depths, DEPTHS)
        self.temporal_stages = tuple(int(x) for x in self.temporal_stages)
        self.spatial_strides = tuple(int(x) for x in self.spatial_strides)
        if len(self.temporal_stages) != 4 or len(self.spatial_strides) != 4:
            raise ValueError("temporal_stages and spatial_strides need 4 entries (one per stage)")
        if self.stem_dim < 2:
            raise ValueError(f"stem_dim must be >= 2, got {self.stem_dim}")

    @property
    def out_channels(self) -> int:
        return self.stem_dim * 32

    @property
    def output_stride(self) -> int:
        return 4 * int(np.prod(self.spatial_strides))



class SlowOnlyBackbone(nn.Module):
    """Stem + 4 residual stages; ``forward`` -> 5D feature map, :meth:`pooled` -> (B, C)."""

    def __init__(self, cfg: SlowOnlyConfig):
        super().__init__()
        from pytorchvideo.models.resnet import create_resnet

        self.cfg = cfg
        net = create_resnet(
            model_depth=cfg.depth, model_num_class=1, stem_dim_out=cfg.stem_dim,
            stem_conv_kernel_size=(1, 7, 7),
            stage_conv_a_kernel_size=tuple((3, 1, 1) if t else (1, 1, 1) for t in cfg.temporal_stages),
            stage_spatial_h_stride=cfg.spatial_strides, stage_spatial_w_stride=cfg.spatial_strides,
        )
        blocks = list(net.blocks)[:5]
        truncate_stages(blocks[1:], cfg.stage_depths)
        self.blocks = nn.ModuleList(blocks)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        if clip.dim() != 5 or clip.shape[1] != 3:
            raise ValueError(f"clip must be (B, 3, T, H, W), got {tuple(clip.shape)}")
        x = clip
        for b in self.blocks:
            x = b(x)
        return x

    def pooled(self, clip: torch.Tensor) -> torch.Tensor:
        return self(clip).mean(dim=(2, 3, 4))


def create_slowonly(*, depth: int = 50, stage_depths: tuple[int, ...] | None = (1, 1, 1, 1), stem_dim: int = 8,
                    temporal_stages: tuple[int, ...] = (0, 0, 1, 1),
                    spatial_strides: tuple[int, ...] = (1, 2, 2, 2)) -> SlowOnlyBackbone:
    """A :class:`SlowOnlyBackbone` (defaults: the slim CPU variant of SlowOnly R50)."""
    return SlowOnlyBackbone(SlowOnlyConfig(depth=depth, stage_depths=stage_depths, stem_dim=stem_dim,
                                           temporal_stages=temporal_stages, spatial_strides=spatial_strides))
