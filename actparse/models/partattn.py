"""Seed 000's part-state network (:class:`PartStateNet`): a SlowOnly backbone on the person clip, a
feature per part (RoIAlign on the map, or the part cropped and run through its own backbone), the
human context, part and action embeddings, attention across the parts and one state classifier per
part group; see :mod:`actparse.partattn` for the samples and the training.

Build one with :func:`create_part_state_net`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from ..constants import GROUP_OF_PART, GROUPS, NUM_PARTS, PART_STATES, PARTS
from .slowonly import SlowOnlyBackbone, SlowOnlyConfig

ROI_MODES = ("align", "crop")


@dataclass
class PartAttnConfig:
    """Architecture + ablation switches (stored in checkpoints)."""

    num_actions: int = 10
    roi_mode: str = "align"        # align: RoIAlign on the person map | crop: per-part image crops
    use_action: bool = True
    use_attention: bool = True
    use_context: bool = True       # human box feature concatenated to each part
    dim: int = 128
    heads: int = 4
    roi_size: int = 3
    part_crop: int = 24            # crop mode: part crop size (px)
    part_scale: float = 1.5        # crop mode: part box grown this much before cropping
    dropout: float = 0.2
    stem_dim: int = 8
    stage_depths: tuple[int, ...] = (1, 1, 1, 1)
    input_size: tuple[int, int] = (96, 64)  # person crop h, w

    def __post_init__(self):
        if self.roi_mode not in ROI_MODES:
            raise ValueError(f"roi_mode must be one of {ROI_MODES}, got {self.roi_mode!r}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        self.stage_depths = tuple(int(x) for x in self.stage_depths)
        self.input_size = tuple(int(x) for x in self.input_size)

    def backbone(self) -> SlowOnlyConfig:
        # output stride 8: the last two stages keep the resolution of res3
        return SlowOnlyConfig(stem_dim=self.stem_dim, stage_depths=self.stage_depths, spatial_strides=(1, 2, 1, 1))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stage_depths"] = list(self.stage_depths)
        d["input_size"] = list(self.input_size)
        return d


class PartStateNet(nn.Module):
    """``forward(clip (B,3,T,H,W), part_boxes (B,10,4) crop px, part_valid (B,10) bool, action (B,) long)``
    -> logits per part: list of 10 tensors (B, states of the part's group)."""

    def __init__(self, cfg: PartAttnConfig):
        super().__init__()
        self.cfg = cfg
        bcfg = cfg.backbone()
        C = bcfg.out_channels
        self.stride = bcfg.output_stride
        self.backbone = SlowOnlyBackbone(bcfg)
        if cfg.roi_mode == "align":
            self.part_proj = nn.Linear(C * cfg.roi_size ** 2, cfg.dim)
        else:
            self.part_backbone = SlowOnlyBackbone(SlowOnlyConfig(stem_dim=cfg.stem_dim, stage_depths=cfg.stage_depths))
            self.part_proj = nn.Linear(C, cfg.dim)
        if cfg.use_context:
            self.ctx_proj = nn.Linear(C, cfg.dim)
            self.merge = nn.Sequential(nn.Linear(2 * cfg.dim, cfg.dim), nn.ReLU(inplace=True))
        self.part_embed = nn.Parameter(torch.zeros(1, NUM_PARTS, cfg.dim))
        nn.init.trunc_normal_(self.part_embed, std=0.02)
        if cfg.use_action:
            self.action_embed = nn.Embedding(cfg.num_actions, cfg.dim)
        if cfg.use_attention:
            self.attn = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, dim_feedforward=2 * cfg.dim,
                                                   dropout=cfg.dropout, batch_first=True)
        else:
            self.mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.ReLU(inplace=True))
        self.norm = nn.LayerNorm(cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.heads = nn.ModuleDict({g: nn.Linear(cfg.dim, len(PART_STATES[g])) for g in GROUPS})

    # -- part features --------------------------------------------------------------------
    def _rois(self, boxes: torch.Tensor) -> torch.Tensor:
        B = boxes.shape[0]
        idx = torch.arange(B, device=boxes.device, dtype=boxes.dtype).repeat_interleave(NUM_PARTS)[:, None]
        return torch.cat([idx, boxes.reshape(-1, 4)], dim=1)

    def _part_features(self, clip: torch.Tensor, fmap: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import roi_align

        B = clip.shape[0]
        rois = self._rois(boxes.to(fmap.dtype))
        if self.cfg.roi_mode == "align":
            r = roi_align(fmap, rois, (self.cfg.roi_size, self.cfg.roi_size), 1.0 / self.stride, 2, aligned=True)
            return self.part_proj(r.flatten(1)).view(B, NUM_PARTS, -1)
        # crop mode: cut each (enlarged) part out of the input clip, run the part backbone
        c = (rois[:, 1:3] + rois[:, 3:5]) / 2
        half = ((rois[:, 3:5] - rois[:, 1:3]) * self.cfg.part_scale / 2).clamp_min(4.0)
        big = torch.cat([rois[:, :1], c - half, c + half], dim=1)
        _, _, T, H, W = clip.shape
        flat = clip.reshape(B, 3 * T, H, W)
        pc = self.cfg.part_crop
        crops = roi_align(flat, big, (pc, pc), 1.0, 2, aligned=True).view(B * NUM_PARTS, 3, T, pc, pc)
        return self.part_proj(self.part_backbone(crops).mean(dim=(2, 3, 4))).view(B, NUM_PARTS, -1)

    def forward(self, clip: torch.Tensor, part_boxes: torch.Tensor, part_valid: torch.Tensor,
                action: torch.Tensor | None = None) -> list[torch.Tensor]:
        if part_boxes.shape[1:] != (NUM_PARTS, 4):
            raise ValueError(f"part_boxes must be (B, {NUM_PARTS}, 4), got {tuple(part_boxes.shape)}")
        fmap = self.backbone(clip).mean(dim=2)  # (B, C, h, w)
        x = self._part_features(clip, fmap, part_boxes)
        if self.cfg.use_context:
            ctx = self.ctx_proj(fmap.mean(dim=(2, 3)))[:, None].expand(-1, NUM_PARTS, -1)
            x = self.merge(torch.cat([x, ctx], dim=2))
        x = x + self.part_embed
        if self.cfg.use_action:
            if action is None:
                raise ValueError("this model uses the action class: pass `action`")
            x = x + self.action_embed(action)[:, None]
        if self.cfg.use_attention:
            valid = part_valid.bool()
            pad = ~valid
            pad[~valid.any(dim=1)] = False  # a person without any part: attend over all (no NaN)
            x = self.attn(x, src_key_padding_mask=pad)
        else:
            x = x + self.mlp(x)
        x = self.dropout(self.norm(x))
        return [self.heads[GROUP_OF_PART[p]](x[:, j]) for j, p in enumerate(PARTS)]


def create_part_state_net(*, num_actions: int = 10, roi_mode: str = "align", use_action: bool = True,
                          use_attention: bool = True, use_context: bool = True, dim: int = 128, heads: int = 4,
                          roi_size: int = 3, part_crop: int = 24, part_scale: float = 1.5, dropout: float = 0.2,
                          stem_dim: int = 8, stage_depths: tuple[int, ...] = (1, 1, 1, 1),
                          input_size: tuple[int, int] = (96, 64)) -> PartStateNet:
    """A :class:`PartStateNet` (the arguments are the fields of :class:`PartAttnConfig`)."""
    return PartStateNet(PartAttnConfig(num_actions=num_actions, roi_mode=roi_mode, use_action=use_action,
                                       use_attention=use_attention, use_context=use_context, dim=dim, heads=heads,
                                       roi_size=roi_size, part_crop=part_crop, part_scale=part_scale,
                                       dropout=dropout, stem_dim=stem_dim, stage_depths=stage_depths,
                                       input_size=input_size))
