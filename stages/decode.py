"""Decode every video of the data set into sampled JPEG frames.

Reads:  <data.root>/videos.parquet and the videos it names (decoded by decode.backend).
Writes: artifacts/frames.parquet  (schema "frames": video, frame, pts, width, height, scale, jpeg;
        pts = the frame's presentation time in seconds as the container stores it, so variable-frame-
        rate videos keep their real timing), one row group per video, streamed so memory does not grow with the number of videos;
        artifacts/skips/decode.parquet  (schema "skips": videos that could not be decoded, and why).
Params: decode.stride (keep frames 0, stride, 2*stride, ...; 5 = the Kinetics-TPS sampling),
        decode.short_side (resize so the short side is this; 0 keeps the size),
        decode.jpeg_quality, decode.backend (decord, pyav or torchcodec: which library decodes; the
        frames and times are the same), data.root.
A corrupt, empty or missing video is recorded as a skip and the run goes on; if every video fails the
stage exits with an error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from actparse.dataset import load_videos, video_path
from actparse.params import get
from actparse.paths import Paths, data_root
from actparse.schemas import ParquetStreamWriter, from_rows
from actparse.stage import SkipLedger, stage_log, stage_main
from actparse.video import VideoError, decode_backend, encode_jpeg, open_video, read_frames, resize_short_side

log = stage_log("decode")
CHUNK = 32  # frames decoded at once


def frame_times(vr, indices, t=None) -> np.ndarray:
    """Presentation times (s) of frames ``indices`` (``t``: as the reader gave them): the container's
    timestamps, so a variable-frame-rate video keeps its real timing; index / average fps only when
    it has none."""
    indices = np.asarray(indices, dtype=np.int64)
    t = vr.timestamps(indices) if t is None else np.asarray(t, dtype=np.float64)
    if len(t) and not (np.all(np.isfinite(t)) and np.all(t >= 0)):
        fps = float(vr.get_avg_fps()) or 25.0
        t = indices / fps
    return t


def _encode_chunk(video: str, idx, batch, short_side: int, quality: int) -> list[dict]:
    rows = []
    for i, rgb in zip(idx, batch):
        img, s = resize_short_side(rgb, short_side)
        rows.append({"video": video, "frame": int(i), "pts": None,
                     "width": img.shape[1], "height": img.shape[0], "scale": float(s),
                     "jpeg": encode_jpeg(img, quality)})
    return rows


def decode_video(path: Path, video: str, stride: int, short_side: int, quality: int,
                 backend: str = "decord") -> pa.Table:
    """Sampled frames of one video as a "frames" table; raises VideoError naming the file.

    Chunk ``k`` is resized and JPEG-encoded on a second thread while chunk ``k + 1`` is decoded
    (both release the GIL); at most two decoded chunks wait, and the rows keep frame order."""
    from concurrent.futures import ThreadPoolExecutor

    vr = open_video(path, backend=backend)
    n = len(vr)
    indices = np.arange(0, n, stride)
    times, pending = [], []
    with ThreadPoolExecutor(1, thread_name_prefix="jpeg") as pool:
        for start in range(0, len(indices), CHUNK):
            idx = indices[start:start + CHUNK]
            batch = read_frames(path, idx, vr=vr)
            times.append(vr.timestamps(idx))  # after the frames: torchcodec reports times as it decodes
            if len(pending) >= 2:
                pending[-2].result()  # bound the decoded frames held in memory
            pending.append(pool.submit(_encode_chunk, video, idx, batch, short_side, quality))
        rows = [row for fut in pending for row in fut.result()]
    for row, t in zip(rows, frame_times(vr, indices, np.concatenate(times) if times else None)):
        row["pts"] = float(t)
    return from_rows(rows, "frames")


class Settings:
    """The decode params, read once; :meth:`video` decodes one video (the stage and the flow's tasks)."""

    def __init__(self, params: dict, root: Path):
        self.stride = get(params, "decode.stride", int, min_value=1)
        self.short_side = get(params, "decode.short_side", int, min_value=0)
        self.quality = get(params, "decode.jpeg_quality", int, min_value=1, max_value=100)
        self.backend = decode_backend(params)
        self.droot = data_root(params, root)

    def video(self, video: str, rel: str) -> pa.Table:
        return decode_video(video_path(self.droot, rel), video, self.stride, self.short_side, self.quality,
                            self.backend)


SKIP_ERRORS = (VideoError, ValueError)  # a video failing with these is a recorded skip


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    cfg = Settings(params, root)
    videos = load_videos(cfg.droot)
    if not len(videos):
        raise ValueError(f"{cfg.droot}: the data set lists no videos")
    ledger = SkipLedger("decode", root)
    with ParquetStreamWriter(paths.frames, "frames") as writer:
        for rec in tqdm(videos.to_pylist(), desc="decode", unit="video", disable=None):
            ledger.tried(rec["video"])
            try:
                table = cfg.video(rec["video"], rec["path"])
            except SKIP_ERRORS as exc:
                ledger.skip(rec["video"], exc)
                continue
            writer.write(table)
        ledger.check(cfg.droot)
    ledger.write()
    log.info("decoded %d videos (%d frames), %d skipped", ledger.n_tried - ledger.n_failed, writer.rows,
             ledger.n_failed)


def main(argv=None) -> int:
    return stage_main("decode", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
