"""Video clip sampling and transforms for the CSN action models (our own; numpy + torch only).

A clip is ``T`` frames taken every ``tau`` frames (``T x tau``, seed 001: 32 x 2). Training takes
one random clip per video per epoch; testing takes ``N`` clips spread uniformly over the video
(seed 001: 7) and averages their softmax scores. Frames are resized so the short side is
``short_side`` (a random size in ``train_short_side`` when training), cropped to ``crop`` (h, w)
(random when training, centre when testing), optionally flipped and colour-jittered (training),
normalised with the mean/std of the weights (``ClipSpec.input_norm``, :data:`NORMS`; default the
published CSN (VMZ) models') and returned as a float tensor of
shape ``(C, T, H, W)``. Optionally the static scene is removed (:func:`remove_background`): the
per-pixel temporal mean / median of the clip is subtracted, or frame differences are taken.

The clip functions take any frame source indexed like a ``(N, H, W, 3)`` uint8 array: a whole
video decoded into memory by :func:`load_video`, or an :class:`actparse.video.LazyVideo` that
decodes only the frames a clip asks for (what the training stages use, so memory does not grow with
the number of videos; docs/memory.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from .video import open_video, read_frames, resize_short_side

# Mean / std (RGB, [0, 1] scale) that the VMZ ip-CSN / ir-CSN weights were trained with.
CSN_MEAN: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)
CSN_STD: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)

# Input normalisations by name (RGB mean, std on the [0, 1] scale; x = (pixel / 255 - mean) / std).
# Pick the one the loaded weights were trained with (docs/recipes.md):
#   vmz      VMZ's ip-/ir-CSN (IG-65M, Sports-1M) and mmaction2's converted CSN checkpoints
#            (mmaction2 writes it on the 0-255 scale: mean 110.2008, 100.63983, 95.99475,
#            std 58.14765, 56.46975, 55.332195)
#   kinetics pytorchvideo hub models (csn_r101, slowfast_r101, slow_r50) and PySlowFast checkpoints
#   imagenet torchvision / ImageNet statistics; mmaction2 0.x SlowOnly / SlowFast / CSN fine-tuning
#            configs (0-255 scale: mean 123.675, 116.28, 103.53, std 58.395, 57.12, 57.375)
NORMS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "vmz": (CSN_MEAN, CSN_STD),
    "kinetics": ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def norm_stats(name: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) of the input normalisation ``name`` (:data:`NORMS`)."""
    if name not in NORMS:
        raise ValueError(f"unknown input normalisation {name!r}; choose from {list(NORMS)}")
    return NORMS[name]

DECODE_CHUNK = 64


def clip_span(num_frames: int, interval: int) -> int:
    """Frames a ``T x tau`` clip covers, first to last inclusive."""
    if num_frames < 1 or interval < 1:
        raise ValueError(f"clip needs num_frames >= 1 and interval >= 1, got {num_frames}x{interval}")
    return (num_frames - 1) * interval + 1


def clip_indices(n_frames: int, num_frames: int, interval: int, start: int) -> np.ndarray:
    """Frame indices of the clip starting at ``start``; indices past the end repeat the last frame."""
    if n_frames < 1:
        raise ValueError("cannot sample a clip from a video with no frames")
    idx = start + np.arange(num_frames, dtype=np.int64) * interval
    return np.clip(idx, 0, n_frames - 1)


def uniform_clip_starts(n_frames: int, num_frames: int, interval: int, num_clips: int) -> np.ndarray:
    """Start frames of ``num_clips`` clips spread evenly over the video (test-time sampling).

    With one clip it is the centre clip; with several the first starts at frame 0 and the last
    ends at the last frame. A video shorter than one clip gives start 0 for every clip.
    """
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    slack = max(n_frames - clip_span(num_frames, interval), 0)
    if num_clips == 1:
        return np.array([slack // 2], dtype=np.int64)
    return np.round(np.linspace(0, slack, num_clips)).astype(np.int64)


def random_clip_start(n_frames: int, num_frames: int, interval: int, rng: np.random.Generator) -> int:
    """A uniformly random start frame such that the clip fits in the video (0 if it cannot)."""
    slack = max(n_frames - clip_span(num_frames, interval), 0)
    return int(rng.integers(0, slack + 1))


def load_video(path: str | os.PathLike, short_side: int = 0, backend: str = "decord") -> np.ndarray:
    """Decode every frame of a video as uint8 RGB ``(N, H, W, 3)``, short side resized to ``short_side``
    (``backend``: ``decode.backend``).

    Raises :class:`actparse.video.VideoError` naming the file when it cannot be decoded.
    """
    vr = open_video(path, backend=backend)
    n = len(vr)
    out = None
    for s in range(0, n, DECODE_CHUNK):
        batch = read_frames(path, np.arange(s, min(n, s + DECODE_CHUNK)), vr=vr)
        if short_side:
            batch = np.stack([resize_short_side(f, short_side)[0] for f in batch])
        if out is None:
            out = np.empty((n,) + batch.shape[1:], dtype=np.uint8)
        out[s:s + len(batch)] = batch
    return out


def _pad_to(frames: np.ndarray, h: int, w: int) -> np.ndarray:
    """Pad ``(T, H, W, C)`` frames (bottom/right, mean grey) so they are at least ``h`` x ``w``."""
    ph, pw = max(h - frames.shape[1], 0), max(w - frames.shape[2], 0)
    if ph == 0 and pw == 0:
        return frames
    fill = np.asarray(np.round(np.array(CSN_MEAN) * 255), dtype=np.uint8)
    out = np.empty((frames.shape[0], frames.shape[1] + ph, frames.shape[2] + pw, frames.shape[3]), np.uint8)
    out[:] = fill
    out[:, :frames.shape[1], :frames.shape[2]] = frames
    return out


def center_crop(frames: np.ndarray, size) -> np.ndarray:
    """Centre crop of ``(T, H, W, C)`` frames to ``size`` (int or (h, w)); smaller frames are padded."""
    h, w = (size, size) if isinstance(size, int) else size
    frames = _pad_to(frames, h, w)
    y = (frames.shape[1] - h) // 2
    x = (frames.shape[2] - w) // 2
    return frames[:, y:y + h, x:x + w]


def random_crop(frames: np.ndarray, size, rng: np.random.Generator) -> np.ndarray:
    """Random crop to ``size`` (int or (h, w)), the same window for every frame of the clip."""
    h, w = (size, size) if isinstance(size, int) else size
    frames = _pad_to(frames, h, w)
    y = int(rng.integers(0, frames.shape[1] - h + 1))
    x = int(rng.integers(0, frames.shape[2] - w + 1))
    return frames[:, y:y + h, x:x + w]


def hflip(frames: np.ndarray) -> np.ndarray:
    return frames[:, :, ::-1]


def resize_clip(frames: np.ndarray, short_side: int) -> np.ndarray:
    """Resize every frame so its short side is ``short_side`` (no-op when it already is, or 0)."""
    if not short_side or min(frames.shape[1:3]) == short_side:
        return frames
    return np.stack([resize_short_side(f, short_side)[0] for f in frames])


def to_tensor(frames: np.ndarray, mean=CSN_MEAN, std=CSN_STD) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> normalised float32 ``(3, T, H, W)``."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32)
    s = torch.tensor(std, dtype=torch.float32)
    x = (x - m) / s
    return x.permute(3, 0, 1, 2).contiguous()


BACKGROUND_MODES = ("none", "clip_mean", "clip_median", "frame_diff")


def remove_background(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Suppress the static scene of a normalised ``(C, T, H, W)`` clip.

    ``clip_mean`` / ``clip_median``: subtract the per-pixel temporal mean / median of the clip, so
    only what moves (and how) remains; ``frame_diff``: differences of consecutive frames (the
    first frame's is zero); ``none``: unchanged.
    """
    if mode == "none":
        return x
    if mode == "clip_mean":
        return x - x.mean(dim=1, keepdim=True)
    if mode == "clip_median":
        return x - x.median(dim=1, keepdim=True).values
    if mode == "frame_diff":
        return torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)
    raise ValueError(f"unknown background mode {mode!r}; choose from {list(BACKGROUND_MODES)}")


@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut from a decoded video.

    Test clips: resize to ``short_side``, centre crop ``crop`` (h, w). Training clips: resize to a
    random short side in ``train_short_side`` (scale jitter), random crop ``crop``, random flip.
    """

    num_frames: int = 8                           # T
    interval: int = 2                             # tau
    short_side: int = 96
    crop: tuple[int, int] = (96, 96)              # (h, w)
    train_short_side: tuple[int, int] = (96, 96)  # (min, max) short side when training
    flip: bool = True
    color_jitter: float = 0.0                     # training: brightness/contrast/saturation +- this
    grayscale_prob: float = 0.0                   # training: chance a clip is turned grey
    background: str = "none"                      # none | clip_mean | clip_median | frame_diff
    train_interval: tuple[int, int] | None = None  # training: random tau in [min, max] (None: interval)
    reverse_prob: float = 0.0                     # training: chance a clip is played backwards
    input_norm: str = "vmz"                       # mean / std of to_tensor (NORMS): the loaded weights' own

    def __post_init__(self):
        crop = (self.crop, self.crop) if isinstance(self.crop, int) else tuple(int(c) for c in self.crop)
        jitter = tuple(int(c) for c in self.train_short_side)
        object.__setattr__(self, "crop", crop)
        object.__setattr__(self, "train_short_side", jitter)
        if self.train_interval is not None:
            taus = tuple(int(t) for t in self.train_interval)
            if len(taus) != 2 or taus[0] < 1 or taus[0] > taus[1]:
                raise ValueError(f"train_interval must be [min, max] with 1 <= min <= max, got {self.train_interval}")
            object.__setattr__(self, "train_interval", taus)
        if len(crop) != 2 or min(crop) < 8:
            raise ValueError(f"crop must be an int or [h, w] >= 8, got {self.crop}")
        if len(jitter) != 2 or jitter[0] > jitter[1] or jitter[0] < 8:
            raise ValueError(f"train_short_side must be [min, max] with 8 <= min <= max, got {list(jitter)}")
        if self.background not in BACKGROUND_MODES:
            raise ValueError(f"background must be one of {list(BACKGROUND_MODES)}, got {self.background!r}")
        norm_stats(self.input_norm)
        clip_span(self.num_frames, self.interval)

    @property
    def train_intervals(self) -> tuple[int, int]:
        """(min, max) interval of training clips (``interval`` itself unless ``train_interval`` is set)."""
        return self.train_interval or (self.interval, self.interval)

    @property
    def span(self) -> int:
        return clip_span(self.num_frames, self.interval)

    @property
    def cache_short_side(self) -> int:
        """Short side at which whole videos are kept in memory (the largest any clip needs)."""
        return max(self.short_side, self.train_short_side[1])


def train_clip(video: np.ndarray, spec: ClipSpec, rng: np.random.Generator) -> torch.Tensor:
    """One random training clip: random start (and interval, direction), scale jitter, crop, flip, colours."""
    lo_tau, hi_tau = spec.train_intervals
    tau = int(rng.integers(lo_tau, hi_tau + 1))
    start = random_clip_start(len(video), spec.num_frames, tau, rng)
    idx = clip_indices(len(video), spec.num_frames, tau, start)
    if spec.reverse_prob > 0 and rng.random() < spec.reverse_prob:
        idx = idx[::-1]
    frames = video[idx]
    lo, hi = spec.train_short_side
    frames = resize_clip(frames, int(rng.integers(lo, hi + 1)))
    frames = random_crop(frames, spec.crop, rng)
    if spec.flip and rng.random() < 0.5:
        frames = hflip(frames)
    if spec.color_jitter > 0 or spec.grayscale_prob > 0:
        frames = jitter_colors(frames, spec.color_jitter, spec.grayscale_prob, rng)
    return remove_background(to_tensor(frames, *norm_stats(spec.input_norm)), spec.background)


def jitter_colors(frames: np.ndarray, strength: float, grayscale_prob: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast and saturation (factors in [1-s, 1+s]), random order of the RGB
    channels and occasional greyscale, the same for every frame of the clip (uint8 in and out)."""
    x = frames.astype(np.float32)
    if strength > 0:
        lo, hi = max(0.0, 1 - strength), 1 + strength
        grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
        x = grey[..., None] + (x - grey[..., None]) * rng.uniform(lo, hi)  # saturation
        x = x.mean() + (x - x.mean()) * rng.uniform(lo, hi)  # contrast
        x = x * rng.uniform(lo, hi)  # brightness
        x = x[..., rng.permutation(3)]
    if grayscale_prob > 0 and rng.random() < grayscale_prob:
        x = np.repeat((x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None], 3, axis=-1)
    return np.clip(x, 0, 255).astype(np.uint8)


def test_clips(video: np.ndarray, spec: ClipSpec, num_clips: int) -> torch.Tensor:
    """``num_clips`` uniformly spaced, centre-cropped clips, stacked ``(N, C, T, H, W)``."""
    starts = uniform_clip_starts(len(video), spec.num_frames, spec.interval, num_clips)
    clips = []
    for start in starts:
        frames = video[clip_indices(len(video), spec.num_frames, spec.interval, int(start))]
        clip = to_tensor(center_crop(resize_clip(frames, spec.short_side), spec.crop), *norm_stats(spec.input_norm))
        clips.append(remove_background(clip, spec.background))
    return torch.stack(clips)
