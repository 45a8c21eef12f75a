"""SlowFast (pytorchvideo ``create_slowfast``), the backbone of seed 003: a Slow and a Fast pathway
with Fast-to-Slow lateral fusions; :meth:`SlowFastBackbone.forward` gives one 2D map per clip.

Build one with :func:`create_slowfast`; pretrained weights load through :mod:`actparse.weights.resnet3d`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .video_resnet import STAGE_DEPTHS, ResNetConfig, check_depths, truncate_stages

DEPTHS = {d: STAGE_DEPTHS[d] for d in (50, 101)}


@dataclass
class SlowFastConfig(ResNetConfig):
    """SlowFast architecture (stored in checkpoints). Defaults: slim CPU variant of R50 8x8."""

    depth: int = 50                       # 50 | 101 (pytorchvideo create_slowfast model_depth)
    stage_depths: tuple[int, ...] | None = (1, 1, 1, 1)  # first k blocks per stage; None = full depth
    stem_dim: int = 8                     # Slow stem width (64 published)
    beta_inv: int = 4                     # Fast channels = Slow / beta_inv (8 published)
    alpha: int = 4                        # Slow frames = Fast frames / alpha (4 published for 8x8 -> 32/8)
    fusion_ratio: int = 2                 # lateral connection channel ratio
    output_stride: int = 16               # 16: last stage stride 1 (AVA-style); 32: all strides 2
    fusion_kernel: int = 7                # temporal kernel of the Fast->Slow lateral convs (R50 7, R101 5)
    lateral_norm: bool = True             # laterals conv + BN + ReLU (PySlowFast, pytorchvideo); False: conv
                                          # only (mmaction2)

    def __post_init__(self):
        self.stage_depths = check_depths("SlowFast", self.depth, self.stage_depths, DEPTHS)
        if self.stem_dim < 2 or self.stem_dim % self.beta_inv:
            raise ValueError(f"stem_dim ({self.stem_dim}) must be a positive multiple of beta_inv ({self.beta_inv})")
        if self.alpha < 1:
            raise ValueError(f"alpha must be >= 1, got {self.alpha}")
        if self.output_stride not in (16, 32):
            raise ValueError(f"output_stride must be 16 or 32, got {self.output_stride}")
        if self.fusion_kernel < 1 or self.fusion_kernel % 2 == 0:
            raise ValueError(f"fusion_kernel must be an odd number >= 1, got {self.fusion_kernel}")

    @property
    def out_channels(self) -> int:
        """Channels of the concatenated (Slow + Fast) feature map."""
        return self.stem_dim * 32 + self.stem_dim // self.beta_inv * 32



class SlowFastBackbone(nn.Module):
    """pytorchvideo SlowFast without its head; :meth:`forward` returns the pooled 2D map."""

    def __init__(self, cfg: SlowFastConfig):
        super().__init__()
        from pytorchvideo.models.slowfast import FastToSlowFusionBuilder, create_slowfast

        self.cfg = cfg
        last = 1 if cfg.output_stride == 16 else 2
        fusion = FastToSlowFusionBuilder(
            slowfast_channel_reduction_ratio=cfg.beta_inv, conv_fusion_channel_ratio=cfg.fusion_ratio,
            conv_kernel_size=(cfg.fusion_kernel, 1, 1), conv_stride=(cfg.alpha, 1, 1),
            norm=nn.BatchNorm3d if cfg.lateral_norm else None,
            activation=nn.ReLU if cfg.lateral_norm else None,
        ).create_module
        net = create_slowfast(
            model_depth=cfg.depth, model_num_class=1, fusion_builder=fusion,
            slowfast_channel_reduction_ratio=(cfg.beta_inv,),
            stem_dim_outs=(cfg.stem_dim, cfg.stem_dim // cfg.beta_inv),
            stage_spatial_strides=((1, 2, 2, last), (1, 2, 2, last)),
        )
        blocks = list(net.blocks)[:5]  # stem + 4 stages (with lateral fusions); head is ours
        truncate_stages(blocks[1:], cfg.stage_depths)
        self.blocks = nn.ModuleList(blocks)

    @property
    def stride(self) -> int:
        return self.cfg.output_stride

    def pathways(self, clip: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, T, H, W) Fast-rate clip -> [Slow (B, Cs, T/alpha, h, w), Fast (B, Cf, T, h, w)]."""
        if clip.dim() != 5 or clip.shape[1] != 3:
            raise ValueError(f"clip must be (B, 3, T, H, W), got {tuple(clip.shape)}")
        if clip.shape[2] % self.cfg.alpha:
            raise ValueError(f"clip length {clip.shape[2]} is not a multiple of alpha={self.cfg.alpha}")
        x = [clip[:, :, ::self.cfg.alpha].contiguous(), clip]
        for block in self.blocks:
            x = block(list(x))
        return x

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """Time-averaged, channel-concatenated feature map (B, out_channels, H/stride, W/stride)."""
        return torch.cat([p.mean(dim=2) for p in self.pathways(clip)], dim=1)


def create_slowfast(*, depth: int = 50, stage_depths: tuple[int, ...] | None = (1, 1, 1, 1), stem_dim: int = 8,
                    beta_inv: int = 4, alpha: int = 4, fusion_ratio: int = 2, output_stride: int = 16,
                    fusion_kernel: int = 7, lateral_norm: bool = True) -> SlowFastBackbone:
    """A :class:`SlowFastBackbone` (defaults: the slim CPU variant of SlowFast R50)."""
    return SlowFastBackbone(SlowFastConfig(depth=depth, stage_depths=stage_depths, stem_dim=stem_dim,
                                           beta_inv=beta_inv, alpha=alpha, fusion_ratio=fusion_ratio,
                                           output_stride=output_stride, fusion_kernel=fusion_kernel,
                                           lateral_norm=lateral_norm))
