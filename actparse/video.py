"""Video reading (decord, PyAV or torchcodec: ``decode.backend``) and JPEG coding shared by the stages.

Every backend gives the same thing: frame ``i`` is the ``i``-th frame in presentation order (by the
container's timestamps, as decord indexes them), as uint8 RGB with the stream's display rotation
applied, and its presentation time in seconds as the container stores it (rounded to float32, as
decord returns it). tests/test_decode_backends.py checks that the three give identical frames and
times on H.264, HEVC, VP9, MPEG-4 part 2, rotated, B-frame and variable-frame-rate videos;
docs/stages.md ("Decode backends") has the details and the measured speeds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .params import (DECODE_BUDGET_ENV, READER_CACHE_ENV, READER_CACHE_SIZE, InputError,  # noqa: F401
                     decode_budget_bytes, get, reader_cache_size)

BACKENDS = ("decord", "pyav", "torchcodec")  # decode.backend (actparse.param_models.DECODE_BACKENDS)


class VideoError(InputError):
    """A video cannot be opened or decoded; the message names the file (a RuntimeError)."""


class BackendError(InputError):
    """The decode backend asked for cannot be used here (not installed, no FFmpeg libraries): a problem
    of the installation, not of a video, so it stops the stage (exit 2) instead of skipping videos."""


_INSTALL = {
    "decord": "decord is not installed (it has no wheel for Linux aarch64 or macOS arm64): "
              "`pip install decord`, or set decode.backend: pyav",
    "pyav": "PyAV is not installed: `pip install av`",
    "torchcodec": "torchcodec is not installed: `pip install torchcodec` (the release made for the installed "
                  "torch) and FFmpeg's shared libraries (e.g. `apt install ffmpeg` or `conda install ffmpeg`), "
                  "or set decode.backend: pyav",
}


def decode_backend(params: dict) -> str:
    """``decode.backend`` of ``params``: which library decodes videos (the frames are the same)."""
    return get(params, "decode.backend", str, choices=BACKENDS)


def check_backend(backend: str) -> None:
    """Raise :class:`BackendError` (one line: what to install) when ``backend`` cannot decode here."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown decode backend {backend!r} (expected one of {', '.join(BACKENDS)})")
    try:
        if backend == "decord":
            import decord  # noqa: F401
        elif backend == "pyav":
            import av  # noqa: F401
        else:
            from torchcodec.decoders import VideoDecoder  # noqa: F401
    except ImportError:
        raise BackendError(f"decode.backend: {_INSTALL[backend]}") from None
    if backend == "torchcodec":
        _torchcodec_core()


_TORCHCODEC_LOADED: list = []


def _torchcodec_core() -> None:
    """Check once that torchcodec found FFmpeg's libraries (it looks for them when imported and, when
    none load, fails later, video by video, with a long report)."""
    if _TORCHCODEC_LOADED:
        return
    from torchcodec._core import ops

    if not getattr(ops, "_FFMPEG_AVAILABLE", True):
        raise BackendError("decode.backend: torchcodec cannot load FFmpeg's shared libraries (none of the "
                           "versions it supports is on the library path): install FFmpeg (e.g. `apt install "
                           "ffmpeg` or `conda install ffmpeg`), or set decode.backend: pyav")
    _TORCHCODEC_LOADED.append(True)


def _seconds(t) -> np.ndarray:
    """Times in seconds as float64 holding float32 values (decord's precision), for every backend."""
    return np.asarray(t, dtype=np.float64).astype(np.float32).astype(np.float64)


class _Reader:
    """What every backend's reader offers (see :func:`open_video`)."""

    def __getitem__(self, i: int) -> np.ndarray:
        return self.get_batch([i])[0]


class _DecordReader(_Reader):
    def __init__(self, path: str, num_threads: int):
        import decord

        self._vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)

    def __len__(self) -> int:
        return len(self._vr)

    def get_avg_fps(self) -> float:
        return float(self._vr.get_avg_fps())

    def get_batch(self, indices) -> np.ndarray:
        return self._vr.get_batch([int(i) for i in indices]).asnumpy()

    def timestamps(self, indices) -> np.ndarray:
        try:
            t = np.asarray(self._vr.get_frame_timestamp([int(i) for i in indices]), np.float64)
            return _seconds(t.reshape(len(indices), -1)[:, 0])
        except Exception:  # noqa: BLE001 - decord raises its own error types; the caller falls back
            return np.full(len(indices), np.nan)


class _PyAVReader(_Reader):
    """Frames by presentation-order index over PyAV, as decord indexes them.

    Opening demuxes the stream once (no decoding) to list every packet's timestamp and keyframe flag;
    frame ``i`` is the packet with the ``i``-th smallest timestamp. Reading decodes forward and seeks
    (to the last keyframe at or before the frame) only when going back or when a keyframe lies
    between the decoder's position and the frame asked for.
    """

    def __init__(self, path: str, num_threads: int):
        import av

        self.path, self.num_threads = path, num_threads
        with av.open(path) as c:
            if not c.streams.video:
                raise ValueError("no video stream")
            st = c.streams.video[0]
            self._tb = st.time_base
            self._fps = float(st.average_rate or st.guessed_rate or 0)
            ts, keys = [], []
            for pkt in c.demux(st):
                t = pkt.pts if pkt.pts is not None else pkt.dts
                if t is None or pkt.size == 0:  # the demuxer's final empty packet
                    continue
                ts.append(int(t))
                keys.append(bool(pkt.is_keyframe))
        order = np.argsort(np.asarray(ts, np.int64), kind="stable")
        self._pts = np.asarray(ts, np.int64)[order]
        self._rank = {int(t): i for i, t in enumerate(self._pts)}
        key_idx = np.flatnonzero(np.asarray(keys, bool)[order]) if len(ts) else np.zeros(0, np.int64)
        self._keys = key_idx if len(key_idx) and key_idx[0] == 0 else np.concatenate([[0], key_idx])
        self._container = None
        self._frames = None
        self._pos = -1  # index of the frame the decoder gave last

    def __len__(self) -> int:
        return len(self._pts)

    def __del__(self):
        if getattr(self, "_container", None) is not None:
            self._container.close()

    def get_avg_fps(self) -> float:
        return self._fps

    def timestamps(self, indices) -> np.ndarray:
        return _seconds(self._pts[np.asarray(indices, np.int64)] * float(self._tb))

    def _key_before(self, i: int) -> int:
        return int(self._keys[np.searchsorted(self._keys, i, side="right") - 1])

    def _restart(self, key: int) -> None:
        import av

        if self._container is None:
            self._container = av.open(self.path)
            self._container.streams.video[0].codec_context.thread_count = self.num_threads
        st = self._container.streams.video[0]
        if key == 0:
            self._container.seek(0, backward=True, any_frame=False)  # the start of the file
        else:
            self._container.seek(int(self._pts[key]), stream=st, backward=True, any_frame=False)
        self._frames = self._container.decode(st)
        self._pos = key - 1

    def _frame(self, i: int) -> np.ndarray:
        for key in dict.fromkeys([self._key_before(i), 0]):  # fall back to the start of the file
            if self._frames is None or i <= self._pos or key > self._pos + 1:
                self._restart(key)
            for frame in self._frames:
                k = self._rank.get(frame.pts)
                if k is None:
                    continue
                self._pos = k
                if k == i:
                    rgb = frame.to_ndarray(format="rgb24")
                    # the display rotation, applied as decord applies it
                    turns = int(round((getattr(frame, "rotation", 0) or 0) / 90)) % 4
                    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb
                if k > i:
                    break
            self._frames = None  # the decoder passed or ended before frame i: try from the start
        raise ValueError(f"frame {i} not found in the decoded stream")

    def get_batch(self, indices) -> np.ndarray:
        idx = np.asarray(indices, np.int64).reshape(-1)
        uniq, inverse = np.unique(idx, return_inverse=True)
        frames = [self._frame(int(i)) for i in uniq]
        return np.stack(frames)[inverse.reshape(-1)]


class _TorchCodecReader(_Reader):
    def __init__(self, path: str, num_threads: int):
        from torchcodec.decoders import VideoDecoder

        self._dec = VideoDecoder(path, seek_mode="exact", dimension_order="NHWC", num_ffmpeg_threads=num_threads)
        self._n = len(self._dec)
        self._path, self._fps = path, None
        self._times: dict[int, float] = {}

    def __len__(self) -> int:
        return self._n

    def get_avg_fps(self) -> float:
        if self._fps is None:  # the stream's average rate as FFmpeg's demuxer gives it (decord's and PyAV's
            try:               # value; torchcodec's own differs on VFR and WebM files), read by PyAV
                import av

                with av.open(self._path) as c:
                    st = c.streams.video[0]
                    self._fps = float(st.average_rate or st.guessed_rate or 0)
            except Exception:  # noqa: BLE001 - no PyAV: torchcodec's estimate
                m = self._dec.metadata
                self._fps = float(m.average_fps_from_header or m.average_fps or 0)
        return self._fps

    def get_batch(self, indices) -> np.ndarray:
        idx = [int(i) for i in indices]
        batch = self._dec.get_frames_at(idx)
        self._times.update(zip(idx, batch.pts_seconds.tolist()))
        return batch.data.numpy()

    def timestamps(self, indices) -> np.ndarray:
        idx = [int(i) for i in indices]
        missing = [i for i in dict.fromkeys(idx) if i not in self._times]
        if missing:  # torchcodec reports a frame's time when it decodes it
            self.get_batch(missing)
        return _seconds([self._times[i] for i in idx])


_READERS_BY_NAME = {"decord": _DecordReader, "pyav": _PyAVReader, "torchcodec": _TorchCodecReader}


@dataclass
class VideoInfo:
    path: str
    n_frames: int
    fps: float
    width: int
    height: int


def open_video(path: str | os.PathLike, num_threads: int = 1, backend: str = "decord"):
    """Open ``path`` with ``backend``; raise :class:`VideoError` naming the file on any failure.

    The reader has ``len()``, ``get_avg_fps()``, ``get_batch(indices)`` (uint8 RGB ``(T, H, W, 3)``)
    and ``timestamps(indices)`` (seconds; NaN where the container has none)."""
    path = str(path)
    check_backend(backend)
    if not Path(path).exists():
        raise VideoError(f"{path}: no such video file")
    if Path(path).stat().st_size == 0:
        raise VideoError(f"{path}: empty file")
    try:
        vr = _READERS_BY_NAME[backend](path, num_threads)
    except Exception as exc:  # every backend raises its own error types
        raise VideoError(f"{path}: cannot open video: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if len(vr) == 0:
        raise VideoError(f"{path}: video has no frames")
    return vr


def installed_backend() -> str:
    """decord where it is installed, else PyAV (the importers' probe: every backend counts the same frames)."""
    try:
        check_backend("decord")
        return "decord"
    except BackendError:
        return "pyav"


def video_info(path: str | os.PathLike, backend: str | None = None) -> VideoInfo:
    """Frames, average fps and displayed size of a video (``backend``: default :func:`installed_backend`)."""
    vr = open_video(path, backend=backend or installed_backend())
    h, w = read_frames(path, [0], vr=vr)[0].shape[:2]
    return VideoInfo(str(path), len(vr), float(vr.get_avg_fps()), int(w), int(h))


def read_frames(path: str | os.PathLike, indices, vr=None, backend: str = "decord") -> np.ndarray:
    """Decode frames ``indices`` of a video as uint8 RGB, shape (T, H, W, 3)."""
    vr = vr if vr is not None else open_video(path, backend=backend)
    idx = np.clip(np.asarray(indices, dtype=np.int64), 0, len(vr) - 1)
    try:
        return vr.get_batch(idx)
    except Exception as exc:
        raise VideoError(f"{path}: cannot decode frames {idx.min()}..{idx.max()}: {exc}") from None


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """uint8 RGB (H, W, 3) -> JPEG bytes (OpenCV's libjpeg, 4:2:0). The BGR copy is made by ``cvtColor``:
    the same bytes as encoding the reversed-channel view, in about half the time at 360p and up
    (benchmarks/results/decode_backends.json)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
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
    """A bounded, thread-safe LRU of open video readers, keyed by (path, backend).

    Opening a reader parses the container and builds its frame index, so readers are reused across
    clips of the same video; at most ``size`` stay open (default: :func:`reader_cache_size`). Each
    reader has its own lock (a reader is not safe to use from two threads at once); a reader
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

    def _entry(self, path: str, backend: str) -> tuple:
        import threading

        key = (path, backend)
        with self._lock:
            entry = self._readers.get(key)
            if entry is not None:
                self._readers.move_to_end(key)
                return entry
        vr = open_video(path, backend=backend)  # outside the cache lock: opening is slow and may fail
        with self._lock:
            entry = self._readers.get(key)
            if entry is None:
                entry = (vr, threading.Lock())
                self._readers[key] = entry
                self.opened += 1
                while len(self._readers) > self.size:
                    self._readers.popitem(last=False)
            self._readers.move_to_end(key)
            return entry

    def num_frames(self, path: str | os.PathLike, backend: str = "decord") -> int:
        vr, lock = self._entry(str(path), backend)
        with lock:
            return len(vr)

    def read(self, path: str | os.PathLike, indices, backend: str = "decord") -> np.ndarray:
        """Frames ``indices`` (any order, repeats allowed) as uint8 RGB (T, H, W, 3).

        Each distinct frame is decoded once, in increasing order, then put in the order asked for.
        """
        path = str(path)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        uniq, inverse = np.unique(idx, return_inverse=True)
        vr, lock = self._entry(path, backend)
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
    :class:`VideoError` naming the file. Pickles as its path and backend (for worker processes).
    """

    def __init__(self, path: str | os.PathLike, short_side: int = 0, cache: ReaderCache | None = None,
                 backend: str = "decord"):
        self.path = str(path)
        self.short_side = int(short_side or 0)
        self.backend = backend
        self._cache = cache
        n = self.cache.num_frames(self.path, backend)
        first = self._decode(np.array([0, n - 1]))[0]
        self.shape = (n,) + first.shape
        self.dtype = np.dtype(np.uint8)

    @property
    def cache(self) -> ReaderCache:
        return self._cache if self._cache is not None else default_reader_cache()

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyVideo({self.path!r}, short_side={self.short_side}, shape={self.shape}, backend={self.backend!r})"

    def __getstate__(self):
        return {"path": self.path, "short_side": self.short_side, "shape": self.shape, "backend": self.backend}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._cache = None
        self.dtype = np.dtype(np.uint8)

    def _decode(self, idx: np.ndarray) -> np.ndarray:
        frames = self.cache.read(self.path, idx, self.backend)
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
