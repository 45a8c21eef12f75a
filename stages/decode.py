"""Decode every video of the data set into sampled JPEG frames.

Reads:  <data.root>/videos.parquet and the videos it names (decord).
Writes: artifacts/frames.parquet  (schema "frames": video, frame, pts, width, height, scale, jpeg),
        one row group per video, streamed so memory does not grow with the number of videos;
        artifacts/skips/decode.parquet  (schema "skips": videos that could not be decoded, and why).
Params: decode.stride (keep frames 0, stride, 2*stride, ...; 5 = the Kinetics-TPS sampling),
        decode.short_side (resize so the short side is this; 0 keeps the size),
        decode.jpeg_quality, data.root.
A corrupt, empty or missing video is recorded as a skip and the run goes on; if every video fails the
stage exits with an error.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from actparse.cli import stage_main
from actparse.dataset import load_videos, video_path
from actparse.params import get
from actparse.paths import Paths, data_root
from actparse.schemas import ParquetStreamWriter, from_rows, write_table
from actparse.video import VideoError, encode_jpeg, open_video, read_frames, resize_short_side

log = logging.getLogger("actparse.decode")
CHUNK = 32  # frames decoded at once


def decode_video(path: Path, video: str, stride: int, short_side: int, quality: int) -> pa.Table:
    """Sampled frames of one video as a "frames" table; raises VideoError naming the file."""
    vr = open_video(path)
    n = len(vr)
    fps = float(vr.get_avg_fps()) or 25.0
    indices = np.arange(0, n, stride)
    rows = []
    for start in range(0, len(indices), CHUNK):
        idx = indices[start:start + CHUNK]
        batch = read_frames(path, idx, vr=vr)
        for i, rgb in zip(idx, batch):
            img, s = resize_short_side(rgb, short_side)
            rows.append({"video": video, "frame": int(i), "pts": float(i) / fps,
                         "width": img.shape[1], "height": img.shape[0], "scale": float(s),
                         "jpeg": encode_jpeg(img, quality)})
    return from_rows(rows, "frames")


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    stride = get(params, "decode.stride", int, min_value=1)
    short_side = get(params, "decode.short_side", int, default=0, min_value=0)
    quality = get(params, "decode.jpeg_quality", int, default=90, min_value=1, max_value=100)
    droot = data_root(params, root)
    videos = load_videos(droot)
    skips = []
    with ParquetStreamWriter(paths.frames, "frames") as writer:
        for rec in tqdm(videos.to_pylist(), desc="decode", unit="video", disable=None):
            path = video_path(droot, rec["path"])
            try:
                table = decode_video(path, rec["video"], stride, short_side, quality)
            except (VideoError, ValueError) as exc:
                log.warning("skip %s: %s", rec["video"], exc)
                skips.append({"video": rec["video"], "stage": "decode", "error": str(exc)})
                continue
            writer.write(table)
        if len(skips) == len(videos):
            raise ValueError(f"decode: none of the {len(videos)} videos under {droot} could be decoded; "
                             f"first error: {skips[0]['error'] if skips else 'no videos'}")
    write_table(from_rows(skips, "skips"), paths.skips / "decode.parquet", "skips")
    log.info("decoded %d videos (%d frames), %d skipped", len(videos) - len(skips), writer.rows, len(skips))


def main(argv=None) -> int:
    return stage_main("decode", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
