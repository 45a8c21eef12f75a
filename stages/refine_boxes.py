"""Refine each detected person box with its keypoints (seed 001, section 1.2).

Reads:  artifacts/keypoints.parquet (schema "keypoints"), and the frame size of each video from
        <data.root>/videos.parquet (falling back to artifacts/frames.parquet when it is missing there).
Writes: artifacts/refined_persons.parquet (schema "keypoints", same rows; ``box`` = the detected box
        grown until every keypoint with confidence > keypoints.refine_thr lies inside, plus a margin of
        keypoints.refine_margin x the box's longer side; never shrunk, never past the frame border).
Params: keypoints.refine (false: box = det_box), keypoints.refine_thr, keypoints.refine_margin.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

from actparse.stage import stage_main
from actparse.dataset import load_videos
from actparse.params import get
from actparse.paths import Paths, data_root
from actparse.boxes import refine_box
from actparse.schemas import iter_row_groups, read_table, write_table

log = logging.getLogger("actparse.refine_boxes")


def frame_sizes(params: dict, root: Path, videos: set[str]) -> dict[str, tuple[float, float]]:
    """(width, height) in original-video pixels for each of ``videos``."""
    sizes: dict[str, tuple[float, float]] = {}
    try:
        table = load_videos(data_root(params, root))
        for rec in table.select(["video", "width", "height"]).to_pylist():
            if rec["video"] in videos and rec["width"] and rec["height"]:
                sizes[rec["video"]] = (float(rec["width"]), float(rec["height"]))
    except FileNotFoundError:
        pass
    missing = videos - set(sizes)
    if missing:
        frames = Paths(root).frames
        for t in iter_row_groups(frames, "frames"):
            if t.num_rows == 0:
                continue
            v = t.column("video")[0].as_py()
            if v in missing:
                s = float(t.column("scale")[0].as_py()) or 1.0
                sizes[v] = (t.column("width")[0].as_py() / s, t.column("height")[0].as_py() / s)
                missing.discard(v)
        if missing:
            raise ValueError(f"{frames}: no frame size for video(s) {sorted(missing)[:5]} "
                             f"(not in videos.parquet with width/height either)")
    return sizes


def refine_table(table: pa.Table, sizes: dict | None, thr: float, margin: float, enabled: bool = True) -> pa.Table:
    """``table`` (schema "keypoints") with ``box`` recomputed from ``det_box`` and the keypoints."""
    n = table.num_rows
    det = np.asarray(table.column("det_box").combine_chunks().flatten(), np.float64).reshape(n, 4)
    if enabled and n:
        kp = np.asarray(table.column("keypoints").combine_chunks().flatten(), np.float64).reshape(n, -1, 3)
        videos = table.column("video").to_pylist()
        size = np.array([sizes[v] for v in videos], np.float64)
        boxes = refine_box(det, kp, thr, margin, size)
    else:
        boxes = det
    col = pa.FixedSizeListArray.from_arrays(pa.array(boxes.astype(np.float32).ravel()), 4)
    return table.set_column(table.schema.get_field_index("box"), "box", col)


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    enabled = get(params, "keypoints.refine", bool)
    thr = get(params, "keypoints.refine_thr", float, min_value=0.0)
    margin = get(params, "keypoints.refine_margin", float, min_value=0.0)
    table = read_table(paths.keypoints, "keypoints")
    sizes = frame_sizes(params, root, set(table.column("video").to_pylist())) if enabled and table.num_rows else {}
    out = refine_table(table, sizes, thr, margin, enabled)
    write_table(out, paths.refined, "keypoints")
    if table.num_rows:
        det = np.asarray(table.column("det_box").combine_chunks().flatten()).reshape(-1, 4)
        box = np.asarray(out.column("box").combine_chunks().flatten()).reshape(-1, 4)
        grown = np.any(np.abs(box - det) > 1e-3, axis=1)
        log.info("refined %d boxes (%d grown, %s)", len(box), int(grown.sum()), "on" if enabled else "off")


def main(argv=None) -> int:
    return stage_main("refine_boxes", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
