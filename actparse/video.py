"""Video reading (decord) and JPEG coding shared by the stages."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class VideoError(RuntimeError):
    """A video cannot be opened or decoded; the message names the file."""


@dataclass
class VideoInfo:
    path: str
    n_frames: int
    fps: float
    width: int
    height: int


def open_video(path: str | os.PathLike, num_threads: int = 1):
    """Open ``path`` with decord; raise :class:`VideoError` naming the file on any failure."""
    path = str(path)
    if not Path(path).exists():
        raise VideoError(f"{path}: no such video file")
    if Path(path).stat().st_size == 0:
        raise VideoError(f"{path}: empty file")
    import decord

    try:
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
    except Exception as exc:  # decord raises DECORDError / RuntimeError variants
        raise VideoError(f"{path}: cannot open video: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if len(vr) == 0:
        raise VideoError(f"{path}: video has no frames")
    return vr


def video_info(path: str | os.PathLike) -> VideoInfo:
    vr = open_video(path)
    h, w = vr[0].shape[:2]
    return VideoInfo(str(path), len(vr), float(vr.get_avg_fps()), int(w), int(h))


def read_frames(path: str | os.PathLike, indices, vr=None) -> np.ndarray:
    """Decode frames ``indices`` of a video as uint8 RGB, shape (T, H, W, 3)."""
    vr = vr if vr is not None else open_video(path)
    idx = np.clip(np.asarray(indices, dtype=np.int64), 0, len(vr) - 1)
    try:
        return vr.get_batch(list(idx)).asnumpy()
    except Exception as exc:
        raise VideoError(f"{path}: cannot decode frames {idx.min()}..{idx.max()}: {exc}") from None


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> uint8 RGB (H, W, 3)."""
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("corrupt JPEG data")
    return np.ascontiguousarray(img[..., ::-1])


def resize_short_side(rgb: np.ndarray, short_side: int | None) -> tuple[np.ndarray, float]:
    """Resize so the shorter side is ``short_side`` (no-op when None/0); returns (image, scale)."""
    import cv2

    if not short_side:
        return rgb, 1.0
    h, w = rgb.shape[:2]
    s = short_side / min(h, w)
    if abs(s - 1.0) < 1e-6:
        return rgb, 1.0
    out = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return out, s
