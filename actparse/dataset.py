"""The data set a pipeline run works on: the synthetic set, or a user's folder of videos.

A data root holds ``videos.parquet`` (schema "videos") and the files it names, plus, for training
and scoring, ``gt_persons.parquet`` and official-format annotations under ``annotations/``. A folder
with videos but no ``videos.parquet`` is indexed on the fly (every video in the test split, no label).
Video names become parts of file names (YOLO training images, per-video tables), so a name that could
reach outside a folder is refused where the table is read (:func:`check_video_name`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from .schemas import read_table, validate

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
BOX_SOURCES = ("refined", "detected", "gt")  # where the person boxes of the seed systems come from


def unsafe_name(name) -> str | None:
    """Why ``name`` cannot be used as (part of) a file name, or None when it can.

    A name may hold ``/`` between parts (MultiSports names are ``<sport>/<video>``); each part must be
    a plain name: not empty, not ``.`` or ``..``. Code that makes a file name from a video name
    flattens the ``/`` (see the YOLO training stages)."""
    if not isinstance(name, str) or not name.strip():
        return "it is empty"
    if "\x00" in name:
        return "it contains a NUL character"
    if "\\" in name:
        return "it contains a backslash"
    if name.startswith("/"):
        return "it is an absolute path"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "it has an empty, '.' or '..' path part"
    return None


def check_video_name(name, where: str | Path) -> str:
    """``name`` if it is safe as a file name, else ValueError naming ``where`` (the table) and the name."""
    reason = unsafe_name(name)
    if reason is not None:
        raise ValueError(f"{where}: unsafe video name {name!r}: {reason}; video names are used in file names, "
                         f"so they must be non-empty, relative, free of '\\' and NUL, and no part of "
                         f"them may be '.' or '..'")
    return name


def load_videos(data_root: str | Path) -> pa.Table:
    """The ``videos`` table of a data root (validated), indexing a bare folder if needed."""
    data_root = Path(data_root)
    index = data_root / "videos.parquet"
    if index.exists():
        table = read_table(index, "videos")
    else:
        if not data_root.is_dir():
            raise FileNotFoundError(f"{data_root}: data root not found (set data.root in params.yaml)")
        files = sorted(p for p in data_root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{data_root}: no videos.parquet and no video files "
                                    f"({', '.join(VIDEO_SUFFIXES)}) found")
        rows = [{"video": p.stem, "path": str(p.relative_to(data_root)), "split": "test", "action": None,
                 "n_frames": None, "fps": None, "width": None, "height": None} for p in files]
        table = validate(pa.Table.from_pylist(rows), "videos", index)
    names = table.column("video").to_pylist()
    for name in names:
        check_video_name(name, index if index.exists() else data_root)
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{index}: duplicate video names {dup[:5]}")
    return table


def video_path(data_root: str | Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else Path(data_root) / p


def split_of(videos: pa.Table) -> dict[str, str]:
    return dict(zip(videos.column("video").to_pylist(), videos.column("split").to_pylist()))


def gt_persons_path(data_root: str | Path) -> Path:
    return Path(data_root) / "gt_persons.parquet"


def gt_has(gt_path: str | Path, column: str) -> bool:
    """Whether ``gt_persons.parquet`` at ``gt_path`` exists and has ``column`` on at least one row.

    The official data sets leave what they do not annotate null (Kinetics-TPS and MultiSports have no
    ``keypoints``, MultiSports no ``part_boxes``); stages that need that ground truth ask here first."""
    gt_path = Path(gt_path)
    if not gt_path.exists():
        return False
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    col = pq.read_table(gt_path, columns=[column]).column(column)
    return len(col) > 0 and pc.sum(pc.invert(pc.is_null(col))).as_py() > 0


def gt_has_keypoints(gt_path: str | Path) -> bool:
    """Whether the GT persons at ``gt_path`` have keypoint ground truth (see :func:`gt_has`)."""
    return gt_has(gt_path, "keypoints")


def gt_has_parts(gt_path: str | Path) -> bool:
    """Whether the GT persons at ``gt_path`` have part ground truth (see :func:`gt_has`)."""
    return gt_has(gt_path, "part_boxes")


def load_person_boxes(source: str, root, data_root, videos: Sequence[str], stride: int,
                      min_score: float = 0.0):
    """Person boxes (original pixels) on the key frames of ``videos``: DataFrame video, frame,
    person, box, score. ``source``: "refined" (refined_persons.parquet, its refined ``box``),
    "detected" (persons.parquet) or "gt" (ground truth on every ``stride``-th frame, score 1)."""
    import pandas as pd

    from .paths import Paths
    from .schemas import read_df

    if source not in BOX_SOURCES:
        raise ValueError(f"person box source must be one of {BOX_SOURCES}, got {source!r}")
    want = set(videos)
    if source == "gt":
        df = read_df(gt_persons_path(data_root), "gt_persons", columns=["video", "frame", "person", "box"])
        df = df[df["video"].isin(want) & (df["frame"] % stride == 0)].copy()
        df["score"] = np.float32(1.0)
    else:
        p = Paths(root)
        path, name = (p.refined, "keypoints") if source == "refined" else (p.persons, "persons")
        df = read_df(path, name, columns=["video", "frame", "person", "box", "score"])
        df = df[df["video"].isin(want) & (df["score"] >= min_score)].copy()
    return df.sort_values(["video", "frame", "person"]).reset_index(drop=True) if len(df) else \
        pd.DataFrame({"video": [], "frame": [], "person": [], "box": [], "score": []})
