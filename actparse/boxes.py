"""Box geometry on numpy arrays. Boxes are ``[x1, y1, x2, y2]`` in pixels, float."""

from __future__ import annotations

import numpy as np


def as_boxes(boxes) -> np.ndarray:
    """Return ``boxes`` as a float64 array of shape (N, 4); raise on a wrong shape."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {arr.shape}")
    return arr


def area(boxes) -> np.ndarray:
    b = as_boxes(boxes)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def iou_matrix(a, b) -> np.ndarray:
    """Pairwise IoU, shape (len(a), len(b)); continuous-coordinate convention (no +1)."""
    a, b = as_boxes(a), as_boxes(b)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area(a)[:, None] + area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(union > 0, inter / union, 0.0)
    return out


def clip(boxes, width: float, height: float) -> np.ndarray:
    b = as_boxes(boxes).copy()
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, width)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, height)
    return b


def scale(boxes, factor: float) -> np.ndarray:
    """Multiply coordinates by ``factor`` (resize between image sizes)."""
    return as_boxes(boxes) * float(factor)


def expand(boxes, ratio: float) -> np.ndarray:
    """Grow each box about its centre so that width and height are multiplied by ``ratio``."""
    b = as_boxes(boxes)
    c = (b[:, :2] + b[:, 2:]) / 2
    half = (b[:, 2:] - b[:, :2]) * ratio / 2
    return np.concatenate([c - half, c + half], axis=1)


def to_aspect(boxes, aspect: float) -> np.ndarray:
    """Grow each box (never shrink) about its centre to width/height == ``aspect``."""
    b = as_boxes(boxes)
    c = (b[:, :2] + b[:, 2:]) / 2
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    w2 = np.maximum(w, h * aspect)
    h2 = np.maximum(h, w / aspect)
    return np.stack([c[:, 0] - w2 / 2, c[:, 1] - h2 / 2, c[:, 0] + w2 / 2, c[:, 1] + h2 / 2], axis=1)


def from_points(points, margin: float = 0.0) -> np.ndarray:
    """Tight box around (K, 2) points, grown by ``margin`` pixels on every side."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(p) == 0:
        raise ValueError("cannot make a box from zero points")
    lo, hi = p.min(0) - margin, p.max(0) + margin
    return np.array([lo[0], lo[1], hi[0], hi[1]])
