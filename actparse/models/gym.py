"""Seed 004's networks: one SlowOnly classifier per FineGym level (:class:`LevelModel`) and the joint
model over the frozen pathways (:class:`JointModel`); see :mod:`actparse.gym` for the training.

Build them with :func:`create_level_model` and :func:`create_joint_model`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .slowonly import SlowOnlyBackbone, SlowOnlyConfig


class LevelModel(nn.Module):
    """One pathway of seed 004 stage 1: SlowOnly -> global average pool -> dropout -> linear."""

    def __init__(self, cfg: SlowOnlyConfig, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.backbone = SlowOnlyBackbone(cfg)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(cfg.out_channels, num_classes)

    def features(self, clip: torch.Tensor) -> torch.Tensor:
        return self.backbone.pooled(clip)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(clip)))


class JointModel(nn.Module):
    """Seed 004 stage 2: frozen pathways -> concat -> shared linear (+ReLU, dropout) -> 3 classifiers.

    ``forward(clips)`` takes one clip tensor per pathway (same order as ``pathways``; one tensor is
    used for all); :meth:`fuse` takes pre-computed pathway features (B, sum C).
    """

    def __init__(self, pathways: Sequence[nn.Module], feature_dims: Sequence[int], num_classes: Mapping[str, int],
                 hidden: int = 256, dropout: float = 0.5, freeze: bool = True):
        super().__init__()
        self.pathways = nn.ModuleList(pathways)
        self.frozen = bool(freeze)
        if freeze:
            for p in self.pathways.parameters():
                p.requires_grad_(False)
        self.fusion = nn.Linear(int(sum(feature_dims)), hidden)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({lvl: nn.Linear(hidden, int(n)) for lvl, n in num_classes.items()})
        self.train()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:  # frozen pathways keep their BN statistics and no dropout
            self.pathways.eval()
        return self

    def pathway_features(self, clips) -> torch.Tensor:
        if isinstance(clips, torch.Tensor):
            clips = [clips] * len(self.pathways)
        if len(clips) != len(self.pathways):
            raise ValueError(f"{len(clips)} clip tensors for {len(self.pathways)} pathways")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return torch.cat([p.features(c) for p, c in zip(self.pathways, clips)], dim=1)

    def fuse(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.dropout(F.relu(self.fusion(feats)))
        return {lvl: head(h) for lvl, head in self.heads.items()}

    def forward(self, clips) -> dict[str, torch.Tensor]:
        return self.fuse(self.pathway_features(clips))


def create_level_model(*, backbone: SlowOnlyConfig, num_classes: int, dropout: float = 0.5) -> LevelModel:
    """A :class:`LevelModel`: SlowOnly ``backbone`` and a linear layer of ``num_classes``."""
    return LevelModel(backbone, num_classes, dropout)


def create_joint_model(*, pathways: Sequence[LevelModel], num_classes: Mapping[str, int], hidden: int = 256,
                       dropout: float = 0.5, freeze: bool = True) -> JointModel:
    """A :class:`JointModel` over trained ``pathways`` (their pooled features concatenated)."""
    return JointModel(pathways, [p.classifier.in_features for p in pathways], num_classes, hidden, dropout, freeze)
