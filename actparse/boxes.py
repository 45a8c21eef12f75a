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


def refine_box(box, keypoints, thr: float = 0.3, margin: float = 0.03, image_size=None) -> np.ndarray:
    """Grow boxes until every keypoint with score > ``thr`` lies inside (seed 001 sec. 1.2).

    box: (4,) or (N, 4); keypoints: (K, 3) / (N, K, 3) or flat (N, 3K) as x, y, score;
    margin: extra room around the keypoints, as a fraction of the box's longer side;
    image_size: (width, height) or (N, 2); the growth stops at the image border.
    The result contains the input box (never shrinks); boxes without confident keypoints are unchanged.
    """
    b = np.asarray(box, np.float64)
    single = b.ndim == 1
    b = b.reshape(-1, 4)
    kp = np.asarray(keypoints, np.float64).reshape(len(b), -1, 3)
    conf = kp[..., 2] > thr
    m = margin * np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    big = np.inf
    lo_x = np.where(conf, kp[..., 0], big).min(1) - m
    lo_y = np.where(conf, kp[..., 1], big).min(1) - m
    hi_x = np.where(conf, kp[..., 0], -big).max(1) + m
    hi_y = np.where(conf, kp[..., 1], -big).max(1) + m
    if image_size is not None:
        size = np.broadcast_to(np.asarray(image_size, np.float64).reshape(-1, 2), (len(b), 2))
        lo_x, lo_y = np.maximum(lo_x, 0.0), np.maximum(lo_y, 0.0)
        hi_x, hi_y = np.minimum(hi_x, size[:, 0]), np.minimum(hi_y, size[:, 1])
    out = np.stack([np.minimum(b[:, 0], lo_x), np.minimum(b[:, 1], lo_y),
                    np.maximum(b[:, 2], hi_x), np.maximum(b[:, 3], hi_y)], 1)
    return out[0] if single else out
