"""Seed 003's action detector: a SlowFast backbone and a RoI head, Person-Context Cross Attention
(``kind="pcca"``) or a linear classifier (``"linear"``, the seed's ablation); see :mod:`actparse.stad`
for how it is trained and used.

Build one with :func:`create_stad_model`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .slowfast import SlowFastBackbone, SlowFastConfig

HEADS = ("pcca", "linear")
PRIOR = 0.1  # initial sigmoid output of the classifier (bias init, as for focal-loss heads)


def expand_rois(rois: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, 5) [batch, x1, y1, x2, y2] boxes grown ``scale`` times about their centres."""
    c = (rois[:, 1:3] + rois[:, 3:5]) / 2
    half = (rois[:, 3:5] - rois[:, 1:3]) * (scale / 2)
    return torch.cat([rois[:, :1], c - half, c + half], dim=1)


class PCCAHead(nn.Module):
    """RoI head: Person-Context Cross Attention (``kind="pcca"``) or a linear classifier (``"linear"``).

    ``forward(feat, rois)``: ``feat`` (B, C, h, w) backbone map; ``rois`` (N, 5) float boxes
    ``[batch index, x1, y1, x2, y2]`` in input-pixel coordinates; ``spatial_scale`` = 1 / stride.
    Returns logits (N, num_classes). :meth:`features` gives the input of :attr:`classifier`.
    """

    def __init__(self, in_channels: int, num_classes: int, kind: str = "pcca", dim: int = 128, heads: int = 4,
                 roi_size: int = 7, context_scale: float = 2.0, spatial_scale: float = 1 / 16,
                 dropout: float = 0.3, layers: int = 1):
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {kind!r}")
        if dim % heads:
            raise ValueError(f"head dim ({dim}) must be divisible by heads ({heads})")
        self.kind, self.roi_size, self.context_scale = kind, int(roi_size), float(context_scale)
        self.spatial_scale = float(spatial_scale)
        self.dropout = nn.Dropout(dropout)
        if kind == "pcca":
            n = self.roi_size ** 2
            self.q_proj = nn.Linear(in_channels, dim)
            self.kv_proj = nn.Linear(in_channels, dim)
            self.pos_q = nn.Parameter(torch.zeros(1, n, dim))
            self.pos_kv = nn.Parameter(torch.zeros(1, n, dim))
            nn.init.trunc_normal_(self.pos_q, std=0.02)
            nn.init.trunc_normal_(self.pos_kv, std=0.02)
            self.attn = nn.ModuleList(nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)
                                      for _ in range(layers))
            self.norm1 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
            self.ffn = nn.ModuleList(nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(inplace=True), nn.Linear(2 * dim, dim))
                                     for _ in range(layers))
            self.norm2 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
            self.feature_dim = dim
        else:
            self.feature_dim = in_channels
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        nn.init.constant_(self.classifier.bias, -math.log((1 - PRIOR) / PRIOR))  # sigmoid starts at PRIOR
        self.last_attention: torch.Tensor | None = None  # (N, cells, cells) of the last PCCA layer

    def _roi(self, feat: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import roi_align

        return roi_align(feat, rois.to(feat.dtype), (self.roi_size, self.roi_size), self.spatial_scale,
                         sampling_ratio=2, aligned=True)

    def features(self, feat: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """(N, feature_dim) RoI features (before dropout and the classifier)."""
        if rois.dim() != 2 or rois.shape[1] != 5:
            raise ValueError(f"rois must be (N, 5) [batch, x1, y1, x2, y2], got {tuple(rois.shape)}")
        person = self._roi(feat, rois)  # (N, C, r, r)
        if self.kind == "linear":
            return person.amax(dim=(2, 3))
        context = self._roi(feat, expand_rois(rois, self.context_scale))
        q = self.q_proj(person.flatten(2).transpose(1, 2)) + self.pos_q  # (N, r*r, dim)
        kv = self.kv_proj(context.flatten(2).transpose(1, 2)) + self.pos_kv
        x = q
        for attn, n1, ffn, n2 in zip(self.attn, self.norm1, self.ffn, self.norm2):
            a, w = attn(x, kv, kv, need_weights=True)
            self.last_attention = w.detach()
            x = n1(x + self.dropout(a))
            x = n2(x + self.dropout(ffn(x)))
        return x.mean(dim=1)

    def forward(self, feat: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(feat, rois)))


class STADModel(nn.Module):
    """SlowFast backbone + RoI action head: ``model(clip, rois) -> logits (N, num_classes)``."""

    def __init__(self, backbone_cfg: SlowFastConfig, num_classes: int, head: str = "pcca", **head_kw):
        super().__init__()
        self.backbone_cfg = backbone_cfg
        self.head_kw = dict(head_kw, kind=head)
        self.num_classes = int(num_classes)
        self.backbone = SlowFastBackbone(backbone_cfg)
        self.head = PCCAHead(backbone_cfg.out_channels, num_classes, kind=head,
                             spatial_scale=1.0 / backbone_cfg.output_stride, **head_kw)

    def forward(self, clip: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(clip), rois)

    def roi_features(self, clip: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return self.head.features(self.backbone(clip), rois)


def create_stad_model(*, backbone: SlowFastConfig, num_classes: int, head: str = "pcca", dim: int = 128,
                      heads: int = 4, roi_size: int = 7, context_scale: float = 2.0, dropout: float = 0.3,
                      layers: int = 1) -> STADModel:
    """A :class:`STADModel`: ``backbone`` (:class:`~actparse.models.slowfast.SlowFastConfig`) and a
    ``head`` of ``num_classes`` sigmoid outputs."""
    return STADModel(backbone, num_classes, head=head, dim=dim, heads=heads, roi_size=roi_size,
                     context_scale=context_scale, dropout=dropout, layers=layers)
