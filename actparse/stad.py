"""Seed 003: spatio-temporal action detection with Person-Context Cross Attention (MultiSports winners).

A SlowFast video backbone (pytorchvideo ``create_slowfast``; a slim R50 on CPU by default, the
published R101 8x8 as the GPU preset) turns a clip centred on a key frame into two 3D feature
maps (Slow and Fast pathway). Each is averaged over time and concatenated along channels, giving
one 2D map at output stride 16 (the last stage keeps its resolution, as SlowFast for AVA does).
For each person box on the key frame:

* RoIAlign of the box -> the *person* feature (``roi_size`` x ``roi_size`` cells);
* RoIAlign of the same box enlarged ``context_scale`` (2x) about its centre -> the *context* feature;
* **PCCA** head: the person cells, projected to ``dim`` channels plus learned position embeddings,
  are the queries of a multi-head cross attention over the context cells (keys / values); the
  output goes through a residual + LayerNorm + feed-forward block, is averaged over the cells and
  classified by a linear layer;
* **Linear** head (seed 003's ablation): max-pooled person RoI feature -> dropout -> linear layer.

Classification is multi-label: sigmoid + binary cross-entropy, a person not acting has an all-zero
target. Decoupled learning (seed 003 sec 3.4): phase 1 trains everything with standard sampling;
phase 2 freezes everything except the final classifier and retrains it with class-balanced
sampling (each class, "no action" included, drawn equally often) on features of the frozen model.

The networks are in :mod:`actparse.models.slowfast` (backbone) and :mod:`actparse.models.stad`
(:class:`~actparse.models.stad.PCCAHead`, :class:`~actparse.models.stad.STADModel`).

Public API: :func:`bce_loss`, :func:`train_step`, :func:`freeze_for_decoupling`,
:func:`class_balanced_weights`, clip helpers :func:`keyframe_indices` / :func:`make_clip`,
:class:`STADSettings`, :func:`fit_phase1`, :func:`fit_classifier`, the per-epoch validation
:func:`validate` / :func:`roi_top1`, checkpoints
:func:`save_model` / :func:`load_model`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .models.stad import STADModel
from .models.slowfast import DEPTHS, SlowFastConfig
from .train import adamw, cosine, make_optimizer, read_checkpoint, save_checkpoint as _save, set_lr, step_lr

log = logging.getLogger("actparse.stad")



# --------------------------------------------------------------------------------------------
# Loss and decoupled learning (the networks: actparse.models.slowfast and actparse.models.stad)
# --------------------------------------------------------------------------------------------
def bce_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Sigmoid + binary cross-entropy, mean over persons and classes (optional per-person weights)."""
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none").mean(dim=1)
    if weights is not None:
        return (loss * weights).sum() / weights.sum().clamp_min(1e-12)
    return loss.mean()


def train_step(model: nn.Module, clip: torch.Tensor, rois: torch.Tensor, targets: torch.Tensor,
               optimizer: torch.optim.Optimizer) -> float:
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = bce_loss(model(clip, rois), targets)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def freeze_for_decoupling(model: STADModel, reinit: bool = False) -> list[nn.Parameter]:
    """Phase 2 of decoupled learning: freeze everything but the final classifier (BN in eval mode).

    Returns the trainable parameters; ``reinit`` re-initialises the classifier first (cRT).
    """
    for p in model.parameters():
        p.requires_grad_(False)
    clf = model.head.classifier
    if reinit:
        clf.reset_parameters()
    for p in clf.parameters():
        p.requires_grad_(True)
    return list(clf.parameters())


def class_balanced_weights(labels: Sequence) -> np.ndarray:
    """Sampling weight per sample so that every class (any hashable, e.g. "none") is drawn equally often."""
    labels = list(labels)
    if not labels:
        return np.zeros(0)
    uniq, inv, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True, return_counts=True)
    w = 1.0 / counts[inv]
    return w / w.sum()


# --------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------
def keyframe_indices(n_frames: int, frame: int, num_frames: int, interval: int) -> np.ndarray:
    """``num_frames`` Fast-rate frame indices every ``interval`` frames centred on ``frame`` (clamped)."""
    if num_frames < 1 or interval < 1:
        raise ValueError(f"need num_frames >= 1 and interval >= 1, got {num_frames}x{interval}")
    start = frame - (num_frames // 2) * interval
    return np.clip(start + np.arange(num_frames) * interval, 0, n_frames - 1)


def make_clip(video: np.ndarray, frame: int, num_frames: int, interval: int, flip: bool = False,
              jitter: tuple | None = None, norm: str = "kinetics") -> torch.Tensor:
    """uint8 (N, H, W, 3) decoded video -> normalised (3, T, H, W) clip centred on ``frame``.

    ``jitter`` = (per-channel gain (3,), brightness offset[, channel order (3,)]): colour augmentation
    for training. ``norm``: input mean / std by name (:data:`actparse.clips.NORMS`; ``kinetics`` = MEAN /
    STD, the pytorchvideo and PySlowFast SlowFast weights')."""
    from .clips import norm_stats, to_tensor

    frames = video[keyframe_indices(len(video), frame, num_frames, interval)]
    if flip:
        frames = frames[:, :, ::-1]
    x = to_tensor(frames, *norm_stats(norm))
    if jitter is not None:
        gain, offset = jitter[:2]
        if len(jitter) > 2 and jitter[2] is not None:
            x = x[torch.as_tensor(np.asarray(jitter[2]))]
        x = x * torch.as_tensor(np.asarray(gain, np.float32))[:, None, None, None] + float(offset)
    return x


def flip_boxes(boxes: np.ndarray, width: float) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).copy()
    b[:, [0, 2]] = width - b[:, [2, 0]]
    return b


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
@dataclass
class KeyframeSample:
    """Training unit: one key frame of one video with its person boxes (video-input pixels) and targets."""

    video: int            # index into the decoded video list
    frame: int
    boxes: np.ndarray     # (P, 4) in decoded-video pixels
    targets: np.ndarray   # (P, K) multi-hot
    labels: list = field(default_factory=list)  # per person: class name or "none" (for balancing)


@dataclass
class STADSettings:
    """Training settings: params section ``stad`` (:func:`settings_from_params`); no defaults here."""

    epochs: int
    samples_per_video: int  # random key frames per train video per epoch
    batch_size: int
    optimizer: str  # adamw | sgd (SGD + Nesterov: the seed's recipe, slow from scratch)
    lr: float
    momentum: float
    weight_decay: float
    warmup_epochs: float
    lr_steps: tuple[float, ...]
    lr_gamma: float
    flip: bool
    color_jitter: float  # training: random per-channel gain in [1 - j, 1 + j] and offset (0 = off)
    channel_shuffle: bool  # training: random RGB channel order (colours cannot identify a video)
    num_frames: int
    interval: int
    # multi-scale training (seed 003: short sides 256 and 360 with batch sizes 32 and 24): each batch
    # takes a random short side of train_scales and that scale's batch size (None: one scale, batch_size)
    train_scales: tuple[int, ...] | None
    scale_batch_sizes: tuple[int, ...] | None
    input_norm: str  # input mean / std by name (actparse.clips.NORMS): the loaded weights' own
    # phase 2 (decoupled)
    decoupled_epochs: int
    decoupled_lr: float
    decoupled_reinit: bool
    decoupled_keyframes: int  # key frames per train video whose features are cached for phase 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr_steps"] = list(self.lr_steps)
        for k in ("train_scales", "scale_batch_sizes"):
            d[k] = list(d[k]) if d[k] is not None else None
        return d


def rescale_clip(clip: torch.Tensor, factor: float) -> torch.Tensor:
    """(C, T, H, W) clip resized by ``factor`` (bilinear; unchanged at 1)."""
    if factor == 1.0:
        return clip
    h, w = clip.shape[-2:]
    size = (max(1, int(round(h * factor))), max(1, int(round(w * factor))))
    return F.interpolate(clip.permute(1, 0, 2, 3), size=size, mode="bilinear",
                         align_corners=False).permute(1, 0, 2, 3).contiguous()


def _batch(videos: Sequence[np.ndarray], samples: Sequence[KeyframeSample], s: STADSettings,
           rng: np.random.Generator | None, short_side: int | None = None):
    """(clips, rois, targets) of ``samples``; ``short_side``: resize clips (and boxes) to it."""
    clips, rois, tg = [], [], []
    for b, smp in enumerate(samples):
        v = videos[smp.video]
        flip = bool(s.flip and rng is not None and rng.random() < 0.5)
        jit = None
        if rng is not None and s.color_jitter > 0:
            j = s.color_jitter
            jit = (rng.uniform(1 - j, 1 + j, size=3), float(rng.uniform(-j, j)),
                   rng.permutation(3) if s.channel_shuffle else None)
        clip = make_clip(v, smp.frame, s.num_frames, s.interval, flip, jit, s.input_norm)
        boxes = flip_boxes(smp.boxes, v.shape[2]) if flip else np.asarray(smp.boxes, np.float64)
        if short_side:
            factor = short_side / float(min(v.shape[1:3]))
            clip, boxes = rescale_clip(clip, factor), boxes * factor
        clips.append(clip)
        rois.append(np.concatenate([np.full((len(boxes), 1), b), boxes], axis=1))
        tg.append(smp.targets)
    return (torch.stack(clips), torch.as_tensor(np.concatenate(rois), dtype=torch.float32),
            torch.as_tensor(np.concatenate(tg), dtype=torch.float32))


def fit_phase1(model: STADModel, videos: Sequence[np.ndarray], samples_by_video: Sequence[Sequence[KeyframeSample]],
               s: STADSettings, seed: int = 0, device: str = "cpu",
               val: tuple[Sequence[np.ndarray], Sequence[KeyframeSample]] | None = None) -> dict:
    """Standard sampling: every epoch takes ``samples_per_video`` random key frames of each train video.

    ``val`` (decoded videos and their key-frame samples; the train videos held out by
    ``stad.val_fraction``): after every epoch :func:`validate` scores them with :func:`predict` and its
    top-1 goes into ``history["val_top1"]``. It only watches (:func:`actparse.train.monitoring`): the
    weights are those of a training without it."""
    from .stage import Progress
    from .train import monitoring

    pools = [list(p) for p in samples_by_video if len(p)]
    if not pools:
        raise ValueError("no training key frames with person boxes")
    rng = np.random.default_rng(seed)
    opt = make_optimizer(model, s.lr, s.momentum, s.weight_decay, nesterov=True) if s.optimizer == "sgd" else \
        adamw(model, s.lr, s.weight_decay)
    model.to(device)
    hist = {"loss": [], "lr": []}
    watch = val is not None and len(val[1]) > 0
    if watch:
        hist["val_top1"] = []
    per_epoch = len(pools) * s.samples_per_video
    iters = math.ceil(per_epoch / s.batch_size)
    scales = list(s.train_scales or ())
    sizes = list(s.scale_batch_sizes or [s.batch_size] * len(scales))
    multi = len(scales) > 0
    bar = Progress(s.epochs, "epochs", "stad_train")
    for epoch in range(s.epochs):
        chosen = [pool[int(rng.integers(len(pool)))] for pool in pools for _ in range(s.samples_per_video)]
        order = rng.permutation(len(chosen))
        tot, n = 0.0, 0
        pos, it = 0, 0
        while pos < len(order):
            scale = None
            if multi:
                k = int(rng.integers(len(scales)))
                scale, bs = scales[k], sizes[k]
                frac = pos / len(order)
            else:
                bs, frac = s.batch_size, it / iters
            idx = order[pos:pos + bs]
            pos, it = pos + bs, it + 1
            lr = step_lr(s.lr, epoch + frac, s.lr_steps, s.lr_gamma, s.warmup_epochs)
            set_lr(opt, lr)
            clip, rois, tg = _batch(videos, [chosen[i] for i in idx], s, rng, scale)
            model.train()
            opt.zero_grad(set_to_none=True)
            loss = bce_loss(model(clip.to(device), rois.to(device)), tg.to(device))
            if not torch.isfinite(loss):
                raise ValueError(f"stad: loss became {float(loss)} in epoch {epoch}; lower stad.lr")
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(idx)
            n += len(idx)
        hist["loss"].append(tot / max(n, 1))
        hist["lr"].append(lr)
        shown = {}
        if watch:
            with monitoring(model):
                hist["val_top1"].append(validate(model, val[0], val[1], s, device))
            shown = {"val_top1": round(hist["val_top1"][-1], 4)}
        bar.update(loss=round(tot / max(n, 1), 4), **shown)
    bar.close()
    model.eval()
    return hist


@torch.no_grad()
def cache_features(model: STADModel, videos: Sequence[np.ndarray], samples: Sequence[KeyframeSample],
                   s: STADSettings, device: str = "cpu",
                   short_side: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list]:
    """RoI features (frozen model, eval mode) of every person of ``samples``: (features, targets, labels).
    ``short_side``: clips resized to it first (videos decoded larger for multi-scale training)."""
    model.eval().to(device)
    if not len(samples):
        raise ValueError("no key frames to cache features from")
    # The outputs are allocated once and filled batch by batch: small per-batch tensors that outlive
    # each batch's large clip buffers would pin the allocator's heap, so memory would grow with the
    # number of samples even though nothing but the features is kept.
    n = sum(len(smp.boxes) for smp in samples)
    feats, tgs, labels, row = None, torch.empty((n, np.shape(samples[0].targets)[1])), [], 0
    for i in range(0, len(samples), s.batch_size):
        batch = samples[i:i + s.batch_size]
        clip, rois, tg = _batch(videos, batch, s, None, short_side)
        f = model.roi_features(clip.to(device), rois.to(device))
        if feats is None:
            feats = torch.empty((n, f.shape[1]), dtype=torch.float32)
        feats[row:row + len(f)] = f
        tgs[row:row + len(f)] = tg
        row += len(f)
        for smp in batch:
            labels.extend(smp.labels)
    return feats, tgs, labels


def fit_classifier(model: STADModel, feats: torch.Tensor, targets: torch.Tensor, labels: Sequence[str],
                   s: STADSettings, seed: int = 0, val: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Phase 2: class-balanced sampling, only the classifier trains (on cached frozen features).

    ``val`` (RoI features and targets of the held-out key frames, :func:`cache_features` of the frozen
    model, whose features phase 2 does not change): after every epoch the classifier's top-1 on them
    (:func:`roi_top1` of its sigmoid scores, as :func:`predict` scores) goes into
    ``history["val_top1"]``; it only watches."""
    from .stage import Progress
    from .train import monitoring

    params = freeze_for_decoupling(model, s.decoupled_reinit)
    clf = model.head.classifier.cpu()
    g = torch.Generator().manual_seed(int(seed))
    w = torch.as_tensor(class_balanced_weights(labels), dtype=torch.double)
    n = len(labels)
    opt = torch.optim.SGD(params, lr=s.decoupled_lr, momentum=s.momentum, nesterov=True, weight_decay=s.weight_decay)
    bs = max(8, s.batch_size * 2)
    iters = math.ceil(n / bs)
    hist = {"loss": []}
    watch = val is not None and len(val[0]) > 0
    if watch:
        hist["val_top1"] = []
    bar = Progress(s.decoupled_epochs, "epochs (phase 2)", "stad_train")
    for epoch in range(s.decoupled_epochs):
        set_lr(opt, s.decoupled_lr * cosine(epoch, s.decoupled_epochs))
        idx = torch.multinomial(w, n, replacement=True, generator=g)
        tot = 0.0
        for it in range(iters):
            j = idx[it * bs:(it + 1) * bs]
            opt.zero_grad(set_to_none=True)
            loss = bce_loss(clf(feats[j]), targets[j])
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(j)
        hist["loss"].append(tot / n)
        shown = {}
        if watch:
            with monitoring(model):
                hist["val_top1"].append(roi_top1(torch.sigmoid(clf(val[0])).numpy(), val[1].numpy()))
            shown = {"val_top1": round(hist["val_top1"][-1], 4)}
        bar.update(loss=round(tot / n, 4), **shown)
    bar.close()
    model.eval()
    return hist


def roi_top1(scores: np.ndarray, targets: np.ndarray) -> float:
    """Action top-1 of person RoIs: the share of the persons with an action (a positive in their
    target row) whose highest-scoring class is that action; NaN without such persons."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    acting = targets.max(axis=1) > 0 if len(targets) else np.zeros(0, bool)
    if not acting.any():
        return float("nan")
    best = scores[acting].argmax(axis=1)
    return float((targets[acting][np.arange(len(best)), best] > 0).mean())


def validate(model: STADModel, videos: Sequence[np.ndarray], samples: Sequence[KeyframeSample], s: STADSettings,
             device: str = "cpu") -> float:
    """:func:`roi_top1` of :func:`predict`'s scores of the person boxes of ``samples`` (key frames of
    ``videos``, boxes in their pixels), video by video."""
    scores, targets = [], []
    by_video: dict[int, list[KeyframeSample]] = {}
    for smp in samples:
        by_video.setdefault(smp.video, []).append(smp)
    for v, smps in sorted(by_video.items()):
        out = predict(model, videos[v], [smp.frame for smp in smps], [smp.boxes for smp in smps], s, device)
        scores.extend(out)
        targets.extend(smp.targets for smp in smps)
    if not scores:
        return float("nan")
    return roi_top1(np.concatenate(scores), np.concatenate(targets))


@torch.no_grad()
def predict(model: STADModel, video: np.ndarray, frames: Sequence[int], boxes: Sequence[np.ndarray],
            s: STADSettings, device: str = "cpu", classifiers: Sequence[nn.Module] | None = None):
    """Sigmoid scores (P_f, K) for the boxes (decoded-video pixels) of each key frame ``frames[f]``.

    ``classifiers``: score the same RoI features with each of these final layers instead of the
    model's own (e.g. the phase-1 and the decoupled classifier, which share everything else);
    then a list with one result per classifier is returned.
    """
    model.eval().to(device)
    clfs = list(classifiers) if classifiers is not None else [model.head.classifier]
    outs = [[np.zeros((len(b), model.num_classes), np.float32) for b in boxes] for _ in clfs]
    todo = [i for i, b in enumerate(boxes) if len(b)]
    use_amp = str(device).startswith("cuda")
    for i in range(0, len(todo), s.batch_size):
        chunk = todo[i:i + s.batch_size]
        clips = torch.stack([make_clip(video, int(frames[k]), s.num_frames, s.interval, norm=s.input_norm)
                             for k in chunk])
        rois = np.concatenate([np.concatenate([np.full((len(boxes[k]), 1), b), np.asarray(boxes[k], np.float64)], 1)
                               for b, k in enumerate(chunk)])
        with torch.autocast("cuda", enabled=use_amp):
            feats = model.roi_features(clips.to(device), torch.as_tensor(rois, dtype=torch.float32, device=device))
        for out, clf in zip(outs, clfs):
            probs = torch.sigmoid(clf.to(device)(feats.float())).cpu().numpy()
            pos = 0
            for k in chunk:
                out[k] = probs[pos:pos + len(boxes[k])]
                pos += len(boxes[k])
    return outs if classifiers is not None else outs[0]


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def save_model(model: STADModel, path: str | os.PathLike, classes: Sequence[str], extra: dict | None = None) -> Path:
    return _save({"backbone": model.backbone_cfg.to_dict(), "head": model.head_kw, "classes": list(classes),
                  "state": model.state_dict(), "extra": dict(extra or {})}, path)


def _rebuild(ck: dict) -> STADModel:
    head_kw = dict(ck["head"])
    kind = head_kw.pop("kind")
    model = STADModel(SlowFastConfig(**ck["backbone"]), len(ck["classes"]), head=kind, **head_kw)
    model.load_state_dict(ck["state"], strict=True)
    return model


def load_model(path: str | os.PathLike, device: str = "cpu") -> tuple[STADModel, dict]:
    model, ck = read_checkpoint(path, "STAD", "stad_train", _rebuild)
    return model.to(device).eval(), ck


# --------------------------------------------------------------------------------------------
# params.yaml section ``stad``
# --------------------------------------------------------------------------------------------
def _tuple(params: dict, key: str, n: int | None = None) -> tuple | None:
    from .params import ParamError, get

    val = get(params, key, (list, tuple, type(None)))
    if val is None:
        return None
    if n is not None and len(val) != n:
        raise ParamError.of(params, f"parameter {key!r} must have {n} entries, got {val!r}")
    return tuple(val)


def config_from_params(params: dict) -> SlowFastConfig:
    from .params import ParamError, get

    try:
        return SlowFastConfig(
            depth=get(params, "stad.depth", int, choices=tuple(DEPTHS)),
            stage_depths=_tuple(params, "stad.stage_depths", 4),
            stem_dim=get(params, "stad.stem_dim", int, min_value=2),
            beta_inv=get(params, "stad.beta_inv", int, min_value=1),
            alpha=get(params, "stad.alpha", int, min_value=1),
            output_stride=get(params, "stad.output_stride", int, choices=(16, 32)),
            fusion_kernel=get(params, "stad.fusion_kernel", int, min_value=1),
            lateral_norm=get(params, "stad.lateral_norm", bool),
        )
    except ValueError as exc:
        if isinstance(exc, ParamError):
            raise
        raise ParamError.of(params, f"section 'stad': {exc}") from None


def head_kwargs_from_params(params: dict) -> dict:
    from .params import get

    return {"dim": get(params, "stad.dim", int, min_value=8),
            "heads": get(params, "stad.heads", int, min_value=1),
            "roi_size": get(params, "stad.roi_size", int, min_value=1),
            "context_scale": get(params, "stad.context_scale", float, min_value=1.0),
            "dropout": get(params, "stad.dropout", float, min_value=0.0, max_value=0.95),
            "layers": get(params, "stad.layers", int, min_value=1)}


def int_list(params: dict, key: str, min_value: int = 1) -> tuple[int, ...] | None:
    """A non-empty list of ints >= ``min_value`` at ``key``, or None (null / absent)."""
    from .params import ParamError, get

    val = get(params, key, (list, type(None)))
    if val is None:
        return None
    if not val or not all(isinstance(x, int) and not isinstance(x, bool) and x >= min_value for x in val):
        raise ParamError.of(params, f"parameter {key!r} must be null or a non-empty list of "
                         f"ints >= {min_value}, got {val!r}")
    return tuple(val)


def settings_from_params(params: dict) -> STADSettings:
    from .params import ParamError, get

    from .clips import NORMS

    scales = int_list(params, "stad.train_scales", min_value=16)
    sizes = int_list(params, "stad.scale_batch_sizes", min_value=1)
    if sizes is not None and (scales is None or len(sizes) != len(scales)):
        raise ParamError.of(params, f"parameter 'stad.scale_batch_sizes' needs one batch size "
                         f"per entry of 'stad.train_scales', got {list(sizes)} for {scales and list(scales)}")
    return STADSettings(
        epochs=get(params, "stad.epochs", int, min_value=0),
        samples_per_video=get(params, "stad.samples_per_video", int, min_value=1),
        batch_size=get(params, "stad.batch_size", int, min_value=1),
        optimizer=get(params, "stad.optimizer", str, choices=("adamw", "sgd")),
        lr=get(params, "stad.lr", float, min_value=0.0),
        momentum=get(params, "stad.momentum", float, min_value=0.0),
        weight_decay=get(params, "stad.weight_decay", float, min_value=0.0),
        warmup_epochs=get(params, "stad.warmup_epochs", float, min_value=0.0),
        lr_steps=tuple(float(x) for x in _tuple(params, "stad.lr_steps") or ()),
        lr_gamma=get(params, "stad.lr_gamma", float, min_value=0.0),
        flip=get(params, "stad.flip", bool),
        color_jitter=get(params, "stad.color_jitter", float, min_value=0.0, max_value=0.9),
        channel_shuffle=get(params, "stad.channel_shuffle", bool),
        num_frames=get(params, "stad.num_frames", int, min_value=1),
        interval=get(params, "stad.interval", int, min_value=1),
        decoupled_epochs=get(params, "stad.decoupled_epochs", int, min_value=0),
        decoupled_lr=get(params, "stad.decoupled_lr", float, min_value=0.0),
        decoupled_reinit=get(params, "stad.decoupled_reinit", bool),
        decoupled_keyframes=get(params, "stad.decoupled_keyframes", int, min_value=1),
        train_scales=scales, scale_batch_sizes=sizes,
        input_norm=get(params, "stad.input_norm", str, choices=tuple(NORMS)),
    )


# --------------------------------------------------------------------------------------------
# Data: ground-truth key frames (training; inference boxes: actparse.dataset.load_person_boxes)
# --------------------------------------------------------------------------------------------
def gt_samples(gt_video, video_index: int, scale: float, classes: Sequence[str],
               frames: Sequence[int] | None = None) -> list[KeyframeSample]:
    """Key-frame samples of one video from its ``gt_persons`` rows (every frame, or ``frames``).

    Boxes are scaled by ``scale`` (original -> decoded-video pixels); a person's target is the
    one-hot of its current action, all zeros for "none" (or an action not in ``classes``).
    """
    index = {c: i for i, c in enumerate(classes)}
    out = []
    keep = None if frames is None else set(int(f) for f in frames)
    for fr, g in gt_video.groupby("frame", sort=True):
        if keep is not None and int(fr) not in keep:
            continue
        boxes = np.stack(g["box"].to_numpy()).astype(np.float64) * scale
        tg = np.zeros((len(g), len(classes)), np.float32)
        labels = []
        for k, a in enumerate(g["action"].to_numpy()):
            if a in index:
                tg[k, index[a]] = 1.0
                labels.append(str(a))
            else:
                labels.append("none")
        out.append(KeyframeSample(video_index, int(fr), boxes, tg, labels))
    return out
