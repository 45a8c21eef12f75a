"""Video reading (decord) and JPEG coding shared by the stages."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .params import (DECODE_BUDGET_ENV, READER_CACHE_ENV, READER_CACHE_SIZE, InputError,  # noqa: F401
                     decode_budget_bytes, reader_cache_size)


class VideoError(InputError):
    """A video cannot be opened or decoded; the message names the file (a RuntimeError)."""


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


# --------------------------------------------------------------------------------------------
# On-demand frame access (training data that does not fit in memory)
# --------------------------------------------------------------------------------------------
class ReaderCache:
    """A bounded, thread-safe LRU of open decord readers, keyed by path.

    Opening a reader parses the container and builds its frame index, so readers are reused across
    clips of the same video; at most ``size`` stay open (default: :func:`reader_cache_size`). Each
    reader has its own lock (a decord reader is not safe to use from two threads at once); a reader
    dropped from the cache while a thread still reads from it is simply closed when that read is done.
    """

    def __init__(self, size: int | None = None):
        import threading
        from collections import OrderedDict

        size = reader_cache_size() if size is None else size
        if size < 1:
            raise ValueError(f"reader cache size must be >= 1, got {size}")
        self.size = int(size)
        self._lock = threading.Lock()
        self._readers: "OrderedDict[str, tuple]" = OrderedDict()
        self.opened = 0  # readers opened so far (for tests and benchmarks)

    def __len__(self) -> int:
        return len(self._readers)

    def clear(self) -> None:
        with self._lock:
            self._readers.clear()

    def _entry(self, path: str) -> tuple:
        import threading

        with self._lock:
            entry = self._readers.get(path)
            if entry is not None:
                self._readers.move_to_end(path)
                return entry
        vr = open_video(path)  # outside the cache lock: opening is slow and may fail
        with self._lock:
            entry = self._readers.get(path)
            if entry is None:
                entry = (vr, threading.Lock())
                self._readers[path] = entry
                self.opened += 1
                while len(self._readers) > self.size:
                    self._readers.popitem(last=False)
            self._readers.move_to_end(path)
            return entry

    def num_frames(self, path: str | os.PathLike) -> int:
        vr, lock = self._entry(str(path))
        with lock:
            return len(vr)

    def read(self, path: str | os.PathLike, indices) -> np.ndarray:
        """Frames ``indices`` (any order, repeats allowed) as uint8 RGB (T, H, W, 3).

        Each distinct frame is decoded once, in increasing order, then put in the order asked for.
        """
        path = str(path)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        uniq, inverse = np.unique(idx, return_inverse=True)
        vr, lock = self._entry(path)
        with lock:
            frames = read_frames(path, uniq, vr=vr)
        return frames[inverse.reshape(-1)]


_READERS: ReaderCache | None = None


def default_reader_cache() -> ReaderCache:
    """The process-wide cache :class:`LazyVideo` uses by default (made on first use, sized by
    :func:`reader_cache_size`; each worker process has its own)."""
    global _READERS
    if _READERS is None:
        _READERS = ReaderCache()
    return _READERS


class LazyVideo:
    """A video whose frames are decoded when indexed, short side resized to ``short_side``.

    Stands in for the ``(N, H, W, 3)`` uint8 array that decoding the whole video would give:
    ``len(v)``, ``v.shape``, ``v[i]`` (one frame), ``v[a:b]`` and ``v[index_array]`` give the same
    frames as that array would, but only the frames asked for are decoded (readers come from a
    bounded :class:`ReaderCache`), so memory does not grow with the number or length of videos.
    Opening checks the file and decodes its first and last frames; a later decoding failure raises
    :class:`VideoError` naming the file. Pickles as its path (for worker processes).
    """

    def __init__(self, path: str | os.PathLike, short_side: int = 0, cache: ReaderCache | None = None):
        self.path = str(path)
        self.short_side = int(short_side or 0)
        self._cache = cache
        n = self.cache.num_frames(self.path)
        first = self._decode(np.array([0, n - 1]))[0]
        self.shape = (n,) + first.shape
        self.dtype = np.dtype(np.uint8)

    @property
    def cache(self) -> ReaderCache:
        return self._cache if self._cache is not None else default_reader_cache()

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyVideo({self.path!r}, short_side={self.short_side}, shape={self.shape})"

    def __getstate__(self):
        return {"path": self.path, "short_side": self.short_side, "shape": self.shape}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._cache = None
        self.dtype = np.dtype(np.uint8)

    def _decode(self, idx: np.ndarray) -> np.ndarray:
        frames = self.cache.read(self.path, idx)
        if self.short_side:
            frames = np.stack([resize_short_side(f, self.short_side)[0] for f in frames])
        return frames

    def __getitem__(self, key) -> np.ndarray:
        n = len(self)
        if isinstance(key, slice):
            return self._decode(np.arange(n)[key]) if len(range(*key.indices(n))) else \
                np.empty((0,) + self.shape[1:], np.uint8)
        scalar = np.ndim(key) == 0
        idx = np.asarray(key).reshape(-1)
        if idx.dtype == bool or not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"{self.path}: frames are indexed by int, slice or int array, got {type(key).__name__}")
        idx = np.where(idx < 0, idx + n, idx).astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"{self.path}: frame index out of range 0..{n - 1}")
        if idx.size == 0:
            return np.empty((0,) + self.shape[1:], np.uint8)
        out = self._decode(idx)
        return out[0] if scalar else out


def decoded_bytes(records, short_side: int = 0) -> int | None:
    """Bytes of every frame of the videos ``records`` (rows of ``videos.parquet``: n_frames, width,
    height) decoded as uint8 RGB with the short side resized to ``short_side`` (0: as stored); None
    when a row does not say its size (a bare folder of videos)."""
    total = 0
    for r in records:
        n, w, h = r.get("n_frames"), r.get("width"), r.get("height")
        if any(x is None or x != x or x <= 0 for x in (n, w, h)):  # missing, NaN (pandas null) or unset
            return None
        if short_side:
            f = short_side / min(w, h)
            w, h = max(1, round(w * f)), max(1, round(h * f))
        total += int(n) * int(w) * int(h) * 3
    return total


def hold_in_memory(records, short_side: int = 0) -> tuple[bool, int | None]:
    """(whether the decoded frames of ``records`` fit in ``$ACTPARSE_DECODE_BUDGET_MB``, their bytes)."""
    size = decoded_bytes(records, short_side)
    return (size is not None and size <= decode_budget_bytes()), size
