"""Seed 004: joint learning on the FineGym hierarchy (event -> set -> element), SlowOnly pathways.

Two-stage training, as in the seed:

1. one SlowOnly network per level (pytorchvideo ``create_resnet`` with the SlowOnly kernels: 1x7x7
   stem, temporal convolutions only in res4 / res5; slim widths and depths on CPU), each trained on
   element clips with the labels of its level (event, set or element);
2. the joint model: the three pathways frozen, their globally pooled features concatenated, a shared
   linear layer (+ ReLU, dropout) for the joint representation and three linear classifiers, trained
   with ``L = w_event * L_event + w_set * L_set + w_element * L_element`` (1, 2, 4 in the seed).

Data: FineGym's annotation layout (``finegym_annotation_info*.json``, ``gym*_categories.txt``,
``gym*_train_element*.txt`` / ``gym*_val_element*.txt``; see :func:`actparse.synth.finegym_annotations`),
read by :func:`load_annotations`. An event carrying a ``person`` key (the synthetic set's addition)
is cropped around that ground-truth person track; otherwise the whole frame is used.

The networks are in :mod:`actparse.models.slowonly` and :mod:`actparse.models.gym`
(:class:`~actparse.models.gym.LevelModel`, :class:`~actparse.models.gym.JointModel`).

Public API: :func:`hierarchical_loss`, :func:`train_step`, :class:`Hierarchy`,
:func:`load_annotations`, :func:`crop_clips`, :func:`sample_indices`, :class:`GymSettings`,
:func:`fit_level`, :func:`fit_joint`, :func:`predict_level`, :func:`predict_joint`, checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .models.gym import JointModel, LevelModel
from .models.slowonly import DEPTHS, SlowOnlyConfig
from .models.video_resnet import MEAN
from .train import adamw, read_checkpoint, save_checkpoint as _save, set_lr, warmup_cosine

log = logging.getLogger("actparse.gym")

LEVELS: tuple[str, ...] = ("event", "set", "element")
DEFAULT_LOSS_WEIGHTS = {"event": 1.0, "set": 2.0, "element": 4.0}


# --------------------------------------------------------------------------------------------
# Losses (the networks: actparse.models.slowonly and actparse.models.gym)
# --------------------------------------------------------------------------------------------
def hierarchical_loss(logits: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
                      weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """``sum_l w_l * CE(logits_l, targets_l)`` over the levels in ``targets`` (seed 004: 1, 2, 4)."""
    weights = DEFAULT_LOSS_WEIGHTS if weights is None else weights
    missing = [lvl for lvl in targets if lvl not in logits]
    if missing:
        raise ValueError(f"no logits for level(s) {missing}")
    return sum(float(weights.get(lvl, 1.0)) * F.cross_entropy(logits[lvl], targets[lvl]) for lvl in targets)


def train_step(model: nn.Module, clips, targets, optimizer: torch.optim.Optimizer,
               weights: Mapping[str, float] | None = None) -> float:
    """One optimisation step of a :class:`LevelModel` (``targets`` a tensor) or :class:`JointModel` (a dict)."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    out = model(clips)
    loss = hierarchical_loss(out, targets, weights) if isinstance(out, dict) else F.cross_entropy(out, targets)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


# --------------------------------------------------------------------------------------------
# Annotations (FineGym layout)
# --------------------------------------------------------------------------------------------
@dataclass
class Hierarchy:
    """Class lists of the three levels and the parent of every element / set."""

    elements: list[str]           # index = Clabel
    element_set: list[int]        # set id per element
    element_event: list[str]      # event tag per element
    set_ids: list[int]            # sorted set ids
    set_names: dict[int, str]
    events: list[str]             # event tags, first-seen order of the categories file

    def classes(self, level: str) -> list[str]:
        if level == "element":
            return list(self.elements)
        if level == "set":
            return [self.set_names.get(s, str(s)) for s in self.set_ids]
        if level == "event":
            return list(self.events)
        raise ValueError(f"unknown level {level!r}; levels: {LEVELS}")

    def labels_of(self, clabel: int) -> dict[str, int]:
        """Class index at every level of element ``clabel``."""
        return {"element": int(clabel), "set": self.set_ids.index(self.element_set[clabel]),
                "event": self.events.index(self.element_event[clabel])}

    def parents(self) -> dict:
        """{child level: (parent level, {child label name: parent label name})} for hierarchical_accuracy."""
        el, st, ev = self.classes("element"), self.classes("set"), self.classes("event")
        e2s = {el[i]: st[self.set_ids.index(self.element_set[i])] for i in range(len(el))}
        s2e = {}
        for i in range(len(el)):
            s2e[e2s[el[i]]] = self.element_event[i]
        return {"element": ("set", e2s), "set": ("event", s2e)}


@dataclass
class ElementClip:
    clip: str                  # <video>_<event id>_<segment id>
    video: str
    person: int | None         # ground-truth track to crop around (None: whole frame)
    start: float               # seconds, in the video
    end: float
    label: int                 # Clabel
    split: str                 # train | test


_CAT = re.compile(r"Clabel:\s*(\d+);\s*set:\s*(\d+);\s*Glabel:\s*(\d+);\s*\((\w+)\)\s*(.*)$")


def _find(folder: Path, patterns: Sequence[str], what: str) -> Path:
    for pat in patterns:
        hits = sorted(folder.glob(pat))
        if hits:
            return hits[-1]
    raise FileNotFoundError(f"{folder}: no {what} ({' or '.join(patterns)}) found")


def load_hierarchy(folder: str | os.PathLike) -> Hierarchy:
    """Parse ``gym*_categories.txt`` (and ``gym*_set_categories.txt`` for set names, optional)."""
    folder = Path(folder)
    path = _find(folder, ["gym*_categories.txt"], "FineGym categories file")
    path = next((p for p in sorted(folder.glob("gym*_categories.txt")) if "set_" not in p.name), path)
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        m = _CAT.match(line.strip())
        if not m:
            raise ValueError(f"{path}:{n}: not a FineGym category line: {line!r}")
        rows.append((int(m.group(1)), int(m.group(2)), m.group(4), m.group(5).strip()))
    rows.sort()
    if [r[0] for r in rows] != list(range(len(rows))):
        raise ValueError(f"{path}: Clabels must be 0..{len(rows) - 1} without gaps")
    events: list[str] = []
    for r in rows:
        if r[2] not in events:
            events.append(r[2])
    set_names = {}
    sp = next(iter(sorted(folder.glob("gym*_set_categories.txt"))), None)
    if sp is not None:
        for line in sp.read_text().splitlines():
            m = re.match(r"set:\s*(\d+);\s*\((\w+)\)\s*(.*)$", line.strip())
            if m:
                set_names[int(m.group(1))] = m.group(3).strip()
    return Hierarchy([r[3] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                     sorted({r[1] for r in rows}), set_names, events)


def load_annotations(folder: str | os.PathLike, fps: Mapping[str, float]) -> tuple[Hierarchy, list[ElementClip]]:
    """Hierarchy + element clips of both splits from a FineGym-layout folder.

    ``fps`` maps video names to frame rates (only used to check that the clips lie in the video).
    Element ids are ``<video>_E_<...>_A_<...>``; a clip whose video is not in ``fps`` but whose
    ``<video>_<event id>`` is (FineGym's per-event videos) gets times relative to the event.
    """
    folder = Path(folder)
    hier = load_hierarchy(folder)
    info_path = _find(folder, ["finegym_annotation_info*.json"], "FineGym annotation json")
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{info_path}: not valid JSON: {exc}") from None
    clips = []
    for split, patterns in (("train", ["gym*_train_element*.txt"]), ("test", ["gym*_val_element*.txt"])):
        try:
            lp = _find(folder, patterns, f"{split} element list")
        except FileNotFoundError:
            continue
        for n, line in enumerate(lp.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or "_E_" not in parts[0] or "_A_" not in parts[0]:
                raise ValueError(f"{lp}:{n}: expected '<video>_E_..._A_... <label>', got {line!r}")
            cid, lab = parts[0], int(parts[1])
            if not 0 <= lab < len(hier.elements):
                raise ValueError(f"{lp}:{n}: label {lab} outside 0..{len(hier.elements) - 1}")
            head, seg = cid.rsplit("_A_", 1)
            video, ev = head.split("_E_", 1)
            ev, seg = "E_" + ev, "A_" + seg
            try:
                event = info[video][ev]
                stages = event["segments"][seg]["timestamps"]  # one [start, end] per stage (1-3)
                seg_ts = (stages[0][0], stages[-1][1])
                ev_ts = event["timestamps"][0]
            except (KeyError, IndexError, TypeError):
                raise ValueError(f"{lp}:{n}: clip {cid} not in {info_path.name}") from None
            person = event.get("person")
            if video in fps:
                start, end = float(ev_ts[0]) + float(seg_ts[0]), float(ev_ts[0]) + float(seg_ts[1])
            elif f"{video}_{ev}" in fps:
                video, start, end = f"{video}_{ev}", float(seg_ts[0]), float(seg_ts[1])
            else:
                raise ValueError(f"{lp}:{n}: video of clip {cid} is not in the data set")
            clips.append(ElementClip(cid, video, None if person is None else int(person), start, end, lab, split))
    if not clips:
        raise ValueError(f"{folder}: no element clips listed")
    return hier, clips


# --------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------
def _crop_resize(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Crop ``box`` (may extend past the image: padded with the mean grey) and resize to size x size."""
    import cv2

    x1, y1, x2, y2 = [float(v) for v in box]
    sx = size / max(x2 - x1, 1e-6)
    sy = size / max(y2 - y1, 1e-6)
    m = np.array([[sx, 0, -x1 * sx], [0, sy, -y1 * sy]], np.float32)
    fill = tuple(int(round(c * 255)) for c in MEAN)
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def clip_windows(n_frames: int, frame_hw: tuple[int, int], fps: float, clips: Sequence[ElementClip], gt_video,
                 margin: float = 1.2) -> list[tuple[int, int, np.ndarray]]:
    """(first frame, last frame, crop box) of each element clip of a video of ``n_frames`` frames of
    ``frame_hw`` (h, w) pixels (see :func:`crop_clips`)."""
    from .boxes import expand, to_aspect

    out = []
    n = n_frames
    for c in clips:
        s = int(np.clip(math.floor(c.start * fps + 1e-6), 0, n - 1))
        e = int(np.clip(math.ceil(c.end * fps - 1e-6) - 1, s, n - 1))
        if c.person is not None and gt_video is not None:
            g = gt_video[(gt_video["person"] == c.person) & (gt_video["frame"] >= s) & (gt_video["frame"] <= e)]
            if len(g):
                b = np.stack(g["box"].to_numpy()).astype(np.float64)
                box = np.array([b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()])
                out.append((s, e, to_aspect(expand(box, margin), 1.0)[0]))
                continue
            log.warning("clip %s: person %s has no ground-truth box; using the whole frame", c.clip, c.person)
        h, w = frame_hw
        out.append((s, e, np.array([0, 0, w, h], float)))
    return out


def crop_clips(video: np.ndarray, fps: float, clips: Sequence[ElementClip], gt_video, size: int,
               margin: float = 1.2) -> list[np.ndarray]:
    """Frames of each element clip as uint8 (n, size, size, 3).

    With a person: the union of its ground-truth boxes over the clip, grown ``margin`` times and made
    square, cropped from every frame; frames where the person is missing use the nearest box's
    union all the same. Without a person: the whole frame (squeezed to square).
    """
    return [np.stack([_crop_resize(f, box, size) for f in video[s:e + 1]])
            for s, e, box in clip_windows(len(video), video.shape[1:3], fps, clips, gt_video, margin)]


class ElementFrames:
    """The frames of one element clip, cropped and resized as :func:`crop_clips` does, read on demand.

    ``len()`` and ``frames[index_array]`` behave like the (n, size, size, 3) array :func:`crop_clips`
    would return, but only the frames indexed are decoded (from a :class:`actparse.video.LazyVideo`).
    """

    def __init__(self, video, start: int, end: int, box: np.ndarray, size: int):
        self.video, self.start, self.end, self.box, self.size = video, int(start), int(end), box, int(size)
        self.shape = (self.end - self.start + 1, self.size, self.size, 3)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= len(self))):
            raise IndexError(f"{self.video.path}: element frames are indexed by an array of 0..{len(self) - 1}")
        return np.stack([_crop_resize(f, self.box, self.size) for f in self.video[self.start + idx]])


def sample_indices(n: int, num_frames: int, interval: int, rng: np.random.Generator | None) -> np.ndarray:
    """``num_frames`` indices every ``interval`` frames: random start (``rng``) or centred (None)."""
    span = (num_frames - 1) * interval + 1
    slack = max(n - span, 0)
    start = int(rng.integers(0, slack + 1)) if rng is not None else slack // 2
    return np.clip(start + np.arange(num_frames) * interval, 0, n - 1)


def to_clip(frames: np.ndarray, crop: int, rng: np.random.Generator | None, color_aug: bool = False,
            norm: str = "kinetics") -> torch.Tensor:
    """uint8 (T, S, S, 3) -> normalised (3, T, crop, crop): random crop when ``rng``, else centre.

    ``color_aug`` (with ``rng``): a random channel permutation (half of the clips), per-channel gain and
    brightness, so that the colours of a figure or a background cannot identify a training clip.
    ``norm``: input mean / std by name (:data:`actparse.clips.NORMS`; ``kinetics`` = MEAN / STD)."""
    from .clips import norm_stats, to_tensor

    S = frames.shape[1]
    if rng is not None:
        y, x = (int(rng.integers(0, S - crop + 1)) for _ in range(2))
    else:
        y = x = (S - crop) // 2
    out = frames[:, y:y + crop, x:x + crop]
    if rng is not None and color_aug:
        if rng.random() < 0.5:
            out = out[..., rng.permutation(3)]
        out = np.clip(out.astype(np.float32) * rng.uniform(0.7, 1.3, size=3) + rng.uniform(-25, 25), 0, 255).astype(np.uint8)
    return to_tensor(out, *norm_stats(norm))


# --------------------------------------------------------------------------------------------
# Training / inference
# --------------------------------------------------------------------------------------------
@dataclass
class GymSettings:
    """Training settings: params section ``gym`` (:func:`settings_from_params`); no defaults here."""

    num_frames: dict  # {level: T}
    interval: int
    crop: int  # network input (random crop of the stored size when training)
    epochs: int
    views_per_clip: int  # random temporal views of each clip per epoch
    batch_size: int
    lr: float  # AdamW, cosine decay with 1-epoch warm-up
    weight_decay: float
    dropout: float
    color_aug: bool  # training: channel permutation + gain / brightness jitter
    joint_epochs: int
    joint_views: int  # cached frozen-pathway features per train clip for the joint stage
    joint_hidden: int
    joint_lr: float
    loss_weights: dict  # {level: weight}
    input_norm: str  # input mean / std by name (actparse.clips.NORMS): the loaded weights' own

    def __post_init__(self):
        self.num_frames = dict(self.num_frames)
        self.loss_weights = dict(self.loss_weights)

    def to_dict(self) -> dict:
        return asdict(self)


def _batch(frames: Sequence[np.ndarray], idx, num_frames: int, s: GymSettings, rng) -> torch.Tensor:
    return torch.stack([to_clip(frames[i][sample_indices(len(frames[i]), num_frames, s.interval, rng)], s.crop, rng,
                                s.color_aug, s.input_norm) for i in idx])


def fit_level(model: LevelModel, frames: Sequence[np.ndarray], labels: np.ndarray, num_frames: int,
              s: GymSettings, seed: int = 0, device: str = "cpu", desc: str = "gym",
              val: tuple[Sequence[np.ndarray], np.ndarray] | None = None) -> dict:
    """Train one pathway with cross-entropy on its level's labels.

    ``val`` (frames, labels of this level; the element clips held out by ``gym.val_fraction``): after
    every epoch the top-1 of :func:`predict_level` on them goes into ``history["val_acc"]``. It only
    watches (:func:`actparse.train.monitoring`): the weights are those of a training without it."""
    from .stage import Progress
    from .train import monitoring

    n = len(frames)
    if n == 0:
        raise ValueError("no training clips")
    rng = np.random.default_rng(seed)
    model.to(device)
    opt = adamw(model, s.lr, s.weight_decay)
    per_epoch = n * s.views_per_clip
    iters = math.ceil(per_epoch / s.batch_size)
    total = iters * s.epochs
    y_all = torch.as_tensor(labels, dtype=torch.long)
    hist = {"loss": [], "train_acc": []}
    watch = val is not None and len(val[0]) > 0
    if watch:
        hist["val_acc"] = []
    step = 0
    bar = Progress(s.epochs, f"epochs ({desc})", "gym_train")
    for epoch in range(s.epochs):
        order = np.concatenate([rng.permutation(n) for _ in range(s.views_per_clip)])
        tot, hits = 0.0, 0
        for it in range(iters):
            idx = order[it * s.batch_size:(it + 1) * s.batch_size]
            set_lr(opt, s.lr * warmup_cosine(step, total, iters))
            x = _batch(frames, idx, num_frames, s, rng).to(device)
            y = y_all[idx].to(device)
            model.train()
            opt.zero_grad(set_to_none=True)
            out = model(x)
            loss = F.cross_entropy(out, y)
            if not torch.isfinite(loss):
                raise ValueError(f"{desc}: loss became {float(loss)} in epoch {epoch}; lower gym.lr")
            loss.backward()
            opt.step()
            step += 1
            tot += float(loss.detach()) * len(idx)
            hits += int((out.argmax(1) == y).sum())
        hist["loss"].append(tot / len(order))
        hist["train_acc"].append(hits / len(order))
        shown = {}
        if watch:
            with monitoring(model):
                probs = predict_level(model, val[0], num_frames, s, device)
            hist["val_acc"].append(_top1(probs, val[1]))
            shown = {"val_acc": round(hist["val_acc"][-1], 4)}
        bar.update(loss=round(tot / len(order), 4), train_acc=round(hits / len(order), 4), **shown)
    bar.close()
    model.eval()
    return hist


@torch.no_grad()
def pathway_features(pathways: Sequence[LevelModel], frames: Sequence[np.ndarray], num_frames: Sequence[int],
                     s: GymSettings, rng: np.random.Generator | None, device: str = "cpu") -> torch.Tensor:
    """Concatenated pooled features (n, sum C) of one temporal view of every clip (random view if ``rng``)."""
    out = []
    for p in pathways:
        p.eval().to(device)
    for i in range(0, len(frames), s.batch_size):
        idx = list(range(i, min(len(frames), i + s.batch_size)))
        state = None if rng is None else rng.bit_generator.state
        feats = []
        for p, T in zip(pathways, num_frames):
            if state is not None:  # the same temporal view / crop for every pathway
                rng.bit_generator.state = state
            feats.append(p.features(_batch(frames, idx, T, s, rng).to(device)).float().cpu())
        out.append(torch.cat(feats, dim=1))
    return torch.cat(out)


def fit_joint(model: JointModel, feats: torch.Tensor, targets: Mapping[str, np.ndarray], s: GymSettings,
              seed: int = 0, val: tuple[torch.Tensor, Mapping[str, np.ndarray]] | None = None) -> dict:
    """Train the fusion layer and the three classifiers on cached frozen-pathway features.

    ``val`` (features of the centred view of each held-out clip, :func:`pathway_features` with no
    ``rng``, and their labels per level): after every epoch the top-1 of each head
    (:func:`predict_joint`) goes into ``history["val_acc"]`` as {level: top-1}; it only watches."""
    from .stage import Progress
    from .train import monitoring

    g = torch.Generator().manual_seed(int(seed))
    opt = adamw(model, s.joint_lr, s.weight_decay)
    tg = {lvl: torch.as_tensor(np.asarray(v), dtype=torch.long) for lvl, v in targets.items()}
    n = len(feats)
    iters = math.ceil(n / s.batch_size)
    total = iters * s.joint_epochs
    hist = {"loss": []}
    watch = val is not None and len(val[0]) > 0
    if watch:
        hist["val_acc"] = []
    bar = Progress(s.joint_epochs, "epochs (gym joint)", "gym_train")
    step = 0
    for _ in range(s.joint_epochs):
        order = torch.randperm(n, generator=g)
        tot = 0.0
        for it in range(iters):
            j = order[it * s.batch_size:(it + 1) * s.batch_size]
            set_lr(opt, s.joint_lr * warmup_cosine(step, total, iters))
            model.train()
            opt.zero_grad(set_to_none=True)
            loss = hierarchical_loss(model.fuse(feats[j]), {k: v[j] for k, v in tg.items()}, s.loss_weights)
            loss.backward()
            opt.step()
            step += 1
            tot += float(loss.detach()) * len(j)
        hist["loss"].append(tot / n)
        shown = {}
        if watch:
            with monitoring(model):
                probs = predict_joint(model, val[0])
            hist["val_acc"].append({lvl: _top1(probs[lvl], val[1][lvl]) for lvl in val[1]})
            shown = {f"val_{lvl}_acc": round(a, 4) for lvl, a in hist["val_acc"][-1].items()}
        bar.update(loss=round(tot / n, 4), **shown)
    bar.close()
    model.eval()
    return hist


def _top1(probs: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose highest probability is at the label."""
    labels = np.asarray(labels)
    return float((np.asarray(probs).argmax(1) == labels).mean()) if len(labels) else float("nan")


@torch.no_grad()
def predict_level(model: LevelModel, frames: Sequence[np.ndarray], num_frames: int, s: GymSettings,
                  device: str = "cpu") -> np.ndarray:
    """Softmax probabilities (n, classes) of the centred view of every clip."""
    model.eval().to(device)
    out = []
    for i in range(0, len(frames), s.batch_size):
        idx = list(range(i, min(len(frames), i + s.batch_size)))
        out.append(model(_batch(frames, idx, num_frames, s, None).to(device)).float().softmax(1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.classifier.out_features), np.float32)


@torch.no_grad()
def predict_joint(model: JointModel, feats: torch.Tensor) -> dict[str, np.ndarray]:
    model.eval()
    return {lvl: v.float().softmax(1).numpy() for lvl, v in model.fuse(feats).items()}


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def save_checkpoint(obj: dict, path: str | os.PathLike) -> Path:
    return _save(obj, path)


def _rebuild_level(ck: dict) -> LevelModel:
    m = LevelModel(SlowOnlyConfig(**ck["backbone"]), len(ck["classes"]), ck.get("dropout", 0.5))
    m.load_state_dict(ck["state"], strict=True)
    return m


def load_level(path: str | os.PathLike, device: str = "cpu") -> tuple[LevelModel, dict]:
    m, ck = read_checkpoint(path, "FineGym pathway", "gym_train", _rebuild_level)
    return m.to(device).eval(), ck


def load_joint(path: str | os.PathLike, pathways: Sequence[LevelModel], device: str = "cpu") -> tuple[JointModel, dict]:
    def rebuild(ck: dict) -> JointModel:
        dims = [p.classifier.in_features for p in pathways]
        m = JointModel(pathways, dims, {k: len(v) for k, v in ck["classes"].items()}, ck["hidden"], ck.get("dropout", 0.5))
        m.load_state_dict(ck["state"], strict=True)
        return m

    m, ck = read_checkpoint(path, "FineGym joint", "gym_train", rebuild)
    return m.to(device).eval(), ck


# --------------------------------------------------------------------------------------------
# params.yaml section ``gym`` and data loading shared by the gym stages
# --------------------------------------------------------------------------------------------
def config_from_params(params: dict) -> SlowOnlyConfig:
    from .params import ParamError, get

    sd = get(params, "gym.stage_depths", (list, type(None)))
    try:
        return SlowOnlyConfig(depth=get(params, "gym.depth", int, choices=tuple(DEPTHS)),
                              stage_depths=None if sd is None else tuple(sd),
                              stem_dim=get(params, "gym.stem_dim", int, min_value=2))
    except ValueError as exc:
        if isinstance(exc, ParamError):
            raise
        raise ParamError.of(params, f"section 'gym': {exc}") from None


def _level_dict(params: dict, key: str, typ) -> dict:
    from .params import ParamError, get

    val = get(params, key, (dict, int, float))
    if not isinstance(val, dict):
        val = {lvl: val for lvl in LEVELS}
    bad = sorted(set(val) - set(LEVELS)) + sorted(set(LEVELS) - set(val))
    if bad:
        raise ParamError.of(params, f"parameter {key!r} needs exactly the levels "
                         f"{list(LEVELS)}, got {sorted(val)}")
    try:
        return {lvl: typ(val[lvl]) for lvl in LEVELS}
    except (TypeError, ValueError):
        raise ParamError.of(params, f"parameter {key!r} must map levels to numbers, got {val!r}") from None


def settings_from_params(params: dict) -> GymSettings:
    from .clips import NORMS
    from .params import ParamError, get

    s = GymSettings(
        num_frames=_level_dict(params, "gym.num_frames", int),
        interval=get(params, "gym.interval", int, min_value=1),
        crop=get(params, "gym.crop", int, min_value=16),
        epochs=get(params, "gym.epochs", int, min_value=0),
        views_per_clip=get(params, "gym.views_per_clip", int, min_value=1),
        batch_size=get(params, "gym.batch_size", int, min_value=1),
        lr=get(params, "gym.lr", float, min_value=0.0),
        weight_decay=get(params, "gym.weight_decay", float, min_value=0.0),
        dropout=get(params, "gym.dropout", float, min_value=0.0, max_value=0.95),
        color_aug=get(params, "gym.color_aug", bool),
        joint_epochs=get(params, "gym.joint_epochs", int, min_value=0),
        joint_views=get(params, "gym.joint_views", int, min_value=1),
        joint_hidden=get(params, "gym.joint_hidden", int, min_value=1),
        joint_lr=get(params, "gym.joint_lr", float, min_value=0.0),
        loss_weights=_level_dict(params, "gym.loss_weights", float),
        input_norm=get(params, "gym.input_norm", str, choices=tuple(NORMS)),
    )
    if min(s.num_frames.values()) < 1:
        raise ParamError.of(params, "gym.num_frames must be >= 1 per level")
    size = get(params, "gym.size", int, min_value=16)
    if s.crop > size:
        raise ParamError.of(params, f"gym.crop ({s.crop}) must be <= gym.size ({size})")
    return s


def load_split(params: dict, root, split: str):
    """(hierarchy, clips of ``split``, their frames (:class:`ElementFrames`, read on demand), skip rows)."""
    import pandas as pd
    from .stage import progress

    from .dataset import gt_persons_path, load_videos, video_path
    from .params import get
    from .paths import data_root
    from .schemas import read_df
    from .video import LazyVideo, VideoError, decode_backend

    droot = data_root(params, root)
    folder = droot / "annotations" / "finegym"
    videos = load_videos(droot).to_pandas()
    fps = {r.video: float(r.fps or 25.0) for r in videos.itertuples(index=False)}
    hier, clips = load_annotations(folder, fps)
    clips = [c for c in clips if c.split == split]
    size = get(params, "gym.size", int, min_value=16)
    margin = get(params, "gym.margin", float, min_value=1.0)
    gtp = gt_persons_path(droot)
    gt = read_df(gtp, "gt_persons", columns=["video", "frame", "person", "box"]) if gtp.exists() else \
        pd.DataFrame({"video": [], "frame": [], "person": [], "box": []})
    gt_by = {v: g for v, g in gt.groupby("video", sort=False)}
    row_of = {r.video: r for r in videos.itertuples(index=False)}
    by_video: dict = {}
    for i, c in enumerate(clips):
        by_video.setdefault(c.video, []).append(i)
    frames: list = [None] * len(clips)
    skips = []
    for v, idx in progress(list(by_video.items()), "gym", f"videos ({split} clips)"):
        path = video_path(droot, row_of[v].path)
        try:
            video = LazyVideo(path, backend=decode_backend(params))  # frames decoded when a clip needs them
        except VideoError as exc:
            skips.append({"video": v, "stage": f"gym_{split}", "error": str(exc)})
            continue
        wins = clip_windows(len(video), video.shape[1:3], fps[v], [clips[i] for i in idx], gt_by.get(v), margin)
        for i, (s, e, box) in zip(idx, wins):
            frames[i] = ElementFrames(video, s, e, box, size)
    keep = [i for i in range(len(clips)) if frames[i] is not None]
    return hier, [clips[i] for i in keep], [frames[i] for i in keep], skips
