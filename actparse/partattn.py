"""Seed 000 (Hikvision, Kinetics-TPS): part-state recognition with part RoI features, human context,
multi-head attention across parts and the action class as an input.

For one person on one key frame the input is a short clip (``T`` frames around the key frame) of the
person crop, the boxes of its ten parts (crop pixels, with a validity flag) and an action class. The
network (:class:`PartStateNet`):

1. a video backbone (SlowOnly, :class:`actparse.models.slowonly.SlowOnlyBackbone`, output stride 8) on the
   person clip, averaged over time -> feature map;
2. a feature per part: **RoI pooling** (``roi_mode="align"``: RoIAlign of the part box on the map,
   flattened) or, without it (``roi_mode="crop"``), the part cropped from the input clip and run
   through its own small backbone (the seed's "no RoI pooling" row);
3. the human box feature (global average of the map) concatenated to every part (global context);
4. a learned part embedding, plus an action embedding when ``use_action`` (seed: "add action category
   information to the network");
5. multi-head self-attention across the parts of the person (``use_attention``; masked for missing
   parts) -> one state classifier per part group (the part-state vocabularies of
   ``constants.PART_STATES``).

The seed's ablation (Top-1 72.4 -> 73.6 -> 74.2 -> 74.9) toggles augmentation, action info, RoI
pooling and attention; all four are switches here (augmentation lives in the sampler).

The network is in :mod:`actparse.models.partattn` (:class:`~actparse.models.partattn.PartAttnConfig`,
:class:`~actparse.models.partattn.PartStateNet`).

Public API: :func:`part_state_loss`, :func:`train_step`,
:func:`state_targets`, :func:`person_crop_box`, :func:`make_sample`, :class:`PartAttnSettings`,
:func:`fit`, :func:`predict`, :func:`part_accuracy`, checkpoints.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .constants import GROUP_OF_PART, GROUPS, NUM_PARTS, PART_INDEX, PART_STATES, PARTS
from .models.partattn import ROI_MODES, PartAttnConfig, PartStateNet
from .models.video_resnet import MEAN, STD
from .train import adamw, read_checkpoint, save_checkpoint as _save, set_lr, warmup_cosine_partattn

log = logging.getLogger("actparse.partattn")

# left <-> right part permutation for horizontal flips
FLIP_PARTS = [PART_INDEX[p.replace("left_", "#").replace("right_", "left_").replace("#", "right_")] for p in PARTS]


def state_targets(part_states: Sequence[str], part_visible: Sequence[bool]) -> np.ndarray:
    """(10,) state index within each part's group vocabulary; -1 for invisible parts or unknown states."""
    out = np.full(NUM_PARTS, -1, np.int64)
    for j, p in enumerate(PARTS):
        voc = PART_STATES[GROUP_OF_PART[p]]
        if part_visible[j] and part_states[j] in voc:
            out[j] = voc.index(part_states[j])
    return out


def part_state_loss(logits: Sequence[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over all (person, part) pairs with a target (>= 0)."""
    losses, n = [], 0
    for j, lg in enumerate(logits):
        t = targets[:, j]
        m = t >= 0
        if m.any():
            losses.append(F.cross_entropy(lg[m], t[m], reduction="sum"))
            n += int(m.sum())
    if n == 0:
        return sum(lg.sum() * 0.0 for lg in logits)
    return sum(losses) / n


def train_step(model: PartStateNet, batch: dict, optimizer: torch.optim.Optimizer) -> float:
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = part_state_loss(model(batch["clip"], batch["boxes"], batch["valid"], batch["action"]), batch["targets"])
    loss.backward()
    optimizer.step()
    return float(loss.detach())


# --------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------
def person_crop_box(person_box: np.ndarray, part_boxes: np.ndarray, part_valid: np.ndarray, aspect: float,
                    margin: float = 1.15) -> np.ndarray:
    """The crop window: the person box joined with its valid parts, grown ``margin``, widened to ``aspect`` (w/h)."""
    from .boxes import expand, to_aspect

    b = np.asarray(person_box, np.float64).reshape(4)
    pb = np.asarray(part_boxes, np.float64).reshape(NUM_PARTS, 4)[np.asarray(part_valid, bool)]
    if len(pb):
        b = np.array([min(b[0], pb[:, 0].min()), min(b[1], pb[:, 1].min()), max(b[2], pb[:, 2].max()), max(b[3], pb[:, 3].max())])
    return to_aspect(expand(b, margin), aspect)[0]


def make_sample(video: np.ndarray, frame: int, crop_box: np.ndarray, part_boxes: np.ndarray, part_valid: np.ndarray,
                size: tuple[int, int], num_frames: int, interval: int, rng: np.random.Generator | None = None,
                augment: bool = False, targets: np.ndarray | None = None):
    """(clip (3, T, h, w), part boxes in crop pixels (10, 4), valid (10,), targets) for one person.

    ``augment`` (training): random shift / scale of the crop window, brightness / contrast jitter, a
    random channel order and a horizontal flip that swaps left and right parts (and their targets).
    """
    import cv2

    from .clips import to_tensor

    h, w = size
    box = np.asarray(crop_box, np.float64).copy()
    part_boxes = np.asarray(part_boxes, np.float64).reshape(NUM_PARTS, 4).copy()
    valid = np.asarray(part_valid, bool).copy()
    tg = None if targets is None else np.asarray(targets).copy()
    flip = False
    gain, bias = 1.0, 0.0
    if augment and rng is not None:
        bw, bh = box[2] - box[0], box[3] - box[1]
        s = float(np.exp(rng.uniform(-0.12, 0.12)))
        cx = (box[0] + box[2]) / 2 + rng.uniform(-0.06, 0.06) * bw
        cy = (box[1] + box[3]) / 2 + rng.uniform(-0.06, 0.06) * bh
        box = np.array([cx - bw * s / 2, cy - bh * s / 2, cx + bw * s / 2, cy + bh * s / 2])
        flip = bool(rng.random() < 0.5)
        gain, bias = float(rng.uniform(0.8, 1.2)), float(rng.uniform(-20, 20))
    sx, sy = w / max(box[2] - box[0], 1e-6), h / max(box[3] - box[1], 1e-6)
    m = np.array([[sx, 0, -box[0] * sx], [0, sy, -box[1] * sy]], np.float32)
    idx = np.clip(frame + (np.arange(num_frames) - num_frames // 2) * interval, 0, len(video) - 1)
    fill = tuple(int(round(c * 255)) for c in MEAN)
    frames = np.stack([cv2.warpAffine(f, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                      borderValue=fill) for f in video[idx]])
    pb = np.empty_like(part_boxes)
    pb[:, [0, 2]] = (part_boxes[:, [0, 2]] - box[0]) * sx
    pb[:, [1, 3]] = (part_boxes[:, [1, 3]] - box[1]) * sy
    if gain != 1.0 or bias != 0.0:
        frames = np.clip(frames.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    if augment and rng is not None:  # random channel order: colours cannot identify a training person
        frames = frames[..., rng.permutation(3)]
    if flip:
        frames = frames[:, :, ::-1]
        pb = pb[FLIP_PARTS]
        pb[:, [0, 2]] = w - pb[:, [2, 0]]
        valid = valid[FLIP_PARTS]
        if tg is not None:
            tg = tg[FLIP_PARTS]
    pb[~valid] = 0.0
    return to_tensor(frames, MEAN, STD), pb.astype(np.float32), valid, tg


# --------------------------------------------------------------------------------------------
# Training / inference
# --------------------------------------------------------------------------------------------
@dataclass
class PartAttnSettings:
    """Training settings: params section ``partattn`` (:func:`settings_from_params`); no defaults here."""

    num_frames: int
    interval: int
    epochs: int
    samples_per_video: int  # random (frame, person) training samples per video per epoch
    batch_size: int
    lr: float  # AdamW, cosine decay with 1-epoch warm-up
    weight_decay: float
    augment: bool
    margin: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PersonSample:
    """One person on one frame of a decoded video (boxes in decoded-video pixels)."""

    video: int
    frame: int
    box: np.ndarray
    part_boxes: np.ndarray
    part_valid: np.ndarray
    action: int
    targets: np.ndarray | None = None


def collate(videos: Sequence[np.ndarray], samples: Sequence[PersonSample], cfg: PartAttnConfig, s: PartAttnSettings,
            rng: np.random.Generator | None, augment: bool) -> dict:
    clips, boxes, valid, tg = [], [], [], []
    aspect = cfg.input_size[1] / cfg.input_size[0]
    for smp in samples:
        cb = person_crop_box(smp.box, smp.part_boxes, smp.part_valid, aspect, s.margin)
        c, b, v, t = make_sample(videos[smp.video], smp.frame, cb, smp.part_boxes, smp.part_valid, cfg.input_size,
                                 s.num_frames, s.interval, rng, augment, smp.targets)
        clips.append(c)
        boxes.append(b)
        valid.append(v)
        tg.append(t if t is not None else np.full(NUM_PARTS, -1, np.int64))
    return {"clip": torch.stack(clips), "boxes": torch.as_tensor(np.stack(boxes)),
            "valid": torch.as_tensor(np.stack(valid)), "targets": torch.as_tensor(np.stack(tg), dtype=torch.long),
            "action": torch.as_tensor([smp.action for smp in samples], dtype=torch.long)}


def fit(model: PartStateNet, videos: Sequence[np.ndarray], pools: Sequence[Sequence[PersonSample]], s: PartAttnSettings,
        seed: int = 0, device: str = "cpu",
        val: tuple[Sequence[np.ndarray], Sequence[PersonSample]] | None = None) -> dict:
    """Each epoch draws ``samples_per_video`` random person samples of every train video.

    ``val`` (decoded videos and person samples with targets; the persons of the train videos held out
    by ``partattn.val_fraction``): after every epoch the part-state accuracy of :func:`predict` on them
    (:func:`part_accuracy`) goes into ``history["val_acc"]``. It only watches
    (:func:`actparse.train.monitoring`): the weights are those of a training without it."""
    from .stage import Progress
    from .train import monitoring

    pools = [p for p in pools if len(p)]
    if not pools:
        raise ValueError("no training persons")
    rng = np.random.default_rng(seed)
    model.to(device)
    opt = adamw(model, s.lr, s.weight_decay)
    per_epoch = len(pools) * s.samples_per_video
    iters = math.ceil(per_epoch / s.batch_size)
    total = iters * s.epochs
    hist = {"loss": []}
    watch = val is not None and len(val[1]) > 0
    if watch:
        hist["val_acc"] = []
        val_targets = np.stack([smp.targets for smp in val[1]])
    step = 0
    bar = Progress(s.epochs, "epochs", "partattn_train")
    for epoch in range(s.epochs):
        chosen = [p[int(rng.integers(len(p)))] for p in pools for _ in range(s.samples_per_video)]
        order = rng.permutation(len(chosen))
        tot, n = 0.0, 0
        for it in range(iters):
            idx = order[it * s.batch_size:(it + 1) * s.batch_size]
            set_lr(opt, s.lr * warmup_cosine_partattn(step, total, iters))
            b = collate(videos, [chosen[i] for i in idx], model.cfg, s, rng, s.augment)
            b = {k: v.to(device) for k, v in b.items()}
            model.train()
            opt.zero_grad(set_to_none=True)
            loss = part_state_loss(model(b["clip"], b["boxes"], b["valid"], b["action"]), b["targets"])
            if not torch.isfinite(loss):
                raise ValueError(f"partattn: loss became {float(loss)} in epoch {epoch}; lower partattn.lr")
            loss.backward()
            opt.step()
            step += 1
            tot += float(loss.detach()) * len(idx)
            n += len(idx)
        hist["loss"].append(tot / max(n, 1))
        shown = {}
        if watch:
            with monitoring(model):
                states, _ = predict(model, val[0], val[1], s, device)
            hist["val_acc"].append(part_accuracy(states, val_targets))
            shown = {"val_acc": round(hist["val_acc"][-1], 4)}
        bar.update(loss=round(tot / max(n, 1), 4), **shown)
    bar.close()
    model.eval()
    return hist


@torch.no_grad()
def predict(model: PartStateNet, videos: Sequence[np.ndarray], samples: Sequence[PersonSample], s: PartAttnSettings,
            device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(state index (n, 10), probability (n, 10)) of the best state of every part of every sample."""
    model.eval().to(device)
    states = np.zeros((len(samples), NUM_PARTS), np.int64)
    probs = np.zeros((len(samples), NUM_PARTS), np.float32)
    for i in range(0, len(samples), s.batch_size):
        b = collate(videos, samples[i:i + s.batch_size], model.cfg, s, None, False)
        out = model(*(b[k].to(device) for k in ("clip", "boxes", "valid", "action")))
        for j, lg in enumerate(out):
            p = lg.float().softmax(1).cpu()
            conf, arg = p.max(1)
            states[i:i + len(arg), j] = arg.numpy()
            probs[i:i + len(arg), j] = conf.numpy()
    return states, probs


def part_accuracy(states: np.ndarray, targets: np.ndarray) -> float:
    """Part-state accuracy: the share of (person, part) pairs with a target (>= 0, a visible part of a
    known state) whose predicted state is that target; NaN without any."""
    states, targets = np.asarray(states), np.asarray(targets)
    known = targets >= 0
    return float((states[known] == targets[known]).mean()) if known.any() else float("nan")


def save_checkpoint(model: PartStateNet, path: str | os.PathLike, actions: Sequence[str], extra: dict | None = None) -> Path:
    return _save({"config": model.cfg.to_dict(), "actions": list(actions), "state": model.state_dict(),
                  "extra": dict(extra or {})}, path)


def _rebuild(ck: dict) -> PartStateNet:
    model = PartStateNet(PartAttnConfig(**ck["config"]))
    model.load_state_dict(ck["state"], strict=True)
    return model


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[PartStateNet, dict]:
    model, ck = read_checkpoint(path, "part-state", "partattn_train", _rebuild)
    return model.to(device).eval(), ck


# --------------------------------------------------------------------------------------------
# Evaluation: part-state top-1 accuracy of matched persons (the seed's "Top1")
# --------------------------------------------------------------------------------------------
def match_persons(pred_boxes: np.ndarray, gt_boxes: np.ndarray, thr: float = 0.5) -> list[tuple[int, int]]:
    """Hungarian matching on IoU; pairs with IoU >= ``thr`` as (pred index, gt index)."""
    from scipy.optimize import linear_sum_assignment

    from .boxes import iou_matrix

    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return []
    iou = iou_matrix(pred_boxes, gt_boxes)
    r, c = linear_sum_assignment(-iou)
    return [(int(i), int(j)) for i, j in zip(r, c) if iou[i, j] >= thr]


def state_accuracy(pred: dict, gt, human_iou: float = 0.5, items: list | None = None) -> dict:
    """Part-state top-1 accuracy over the visible ground-truth parts of the given key frames.

    ``pred``: {(video, frame): [(person box (4,), {part: state})]}; ``gt``: gt_persons rows of the
    scored frames. A ground-truth part counts as correct when its person is matched (IoU >=
    ``human_iou``) and the matched prediction gives that part the same state; unmatched persons and
    missing parts count as wrong. Returns {"top1", "n_parts", "matched_persons", "gt_persons",
    "per_group": {group: top1}} (accuracies x100). ``items``, when given, receives one
    (video, group, right) tuple per scored part (the per-video counts behind bootstrap intervals).
    """
    hits = {g: 0 for g in GROUPS}
    total = {g: 0 for g in GROUPS}
    matched = n_persons = 0
    for (v, fr), g in gt.groupby(["video", "frame"], sort=False):
        preds = pred.get((v, int(fr)), [])
        gboxes = np.stack(g["box"].to_numpy()).astype(np.float64)
        pboxes = np.stack([np.asarray(b, np.float64) for b, _ in preds]) if preds else np.zeros((0, 4))
        pairs = dict((j, i) for i, j in match_persons(pboxes, gboxes, human_iou))
        n_persons += len(g)
        matched += len(pairs)
        for j, row in enumerate(g.itertuples(index=False)):
            states = preds[pairs[j]][1] if j in pairs else {}
            for k, part in enumerate(PARTS):
                if not row.part_visible[k]:
                    continue
                grp = GROUP_OF_PART[part]
                total[grp] += 1
                right = states.get(part) == row.part_states[k]
                hits[grp] += int(right)
                if items is not None:
                    items.append((v, grp, right))
    n = sum(total.values())
    return {"top1": round(100 * sum(hits.values()) / n, 2) if n else None, "n_parts": int(n),
            "matched_persons": int(matched), "gt_persons": int(n_persons),
            "per_group": {g: (round(100 * hits[g] / total[g], 2) if total[g] else None) for g in GROUPS}}


# --------------------------------------------------------------------------------------------
# params.yaml section ``partattn``
# --------------------------------------------------------------------------------------------
def config_from_params(params: dict, num_actions: int) -> PartAttnConfig:
    from .params import ParamError, get

    try:
        size = get(params, "partattn.input_size", list)
        sd = get(params, "partattn.stage_depths", list)
        if len(size) != 2 or len(sd) != 4:
            raise ValueError("input_size needs [h, w] and stage_depths 4 entries")
        return PartAttnConfig(
            num_actions=num_actions,
            roi_mode=get(params, "partattn.roi_mode", str, choices=ROI_MODES),
            use_action=get(params, "partattn.use_action", bool),
            use_attention=get(params, "partattn.use_attention", bool),
            use_context=get(params, "partattn.use_context", bool),
            dim=get(params, "partattn.dim", int, min_value=8),
            heads=get(params, "partattn.heads", int, min_value=1),
            roi_size=get(params, "partattn.roi_size", int, min_value=1),
            part_crop=get(params, "partattn.part_crop", int, min_value=8),
            dropout=get(params, "partattn.dropout", float, min_value=0.0, max_value=0.95),
            stem_dim=get(params, "partattn.stem_dim", int, min_value=2),
            stage_depths=tuple(sd), input_size=tuple(size))
    except ValueError as exc:
        if isinstance(exc, ParamError):
            raise
        raise ParamError.of(params, f"section 'partattn': {exc}") from None


def settings_from_params(params: dict) -> PartAttnSettings:
    from .params import get

    return PartAttnSettings(
        num_frames=get(params, "partattn.num_frames", int, min_value=1),
        interval=get(params, "partattn.interval", int, min_value=1),
        epochs=get(params, "partattn.epochs", int, min_value=0),
        samples_per_video=get(params, "partattn.samples_per_video", int, min_value=1),
        batch_size=get(params, "partattn.batch_size", int, min_value=1),
        lr=get(params, "partattn.lr", float, min_value=0.0),
        weight_decay=get(params, "partattn.weight_decay", float, min_value=0.0),
        augment=get(params, "partattn.augment", bool),
        margin=get(params, "partattn.margin", float, min_value=1.0))
