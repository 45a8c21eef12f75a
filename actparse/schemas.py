"""Every Parquet artifact of the pipeline, its pyarrow schema, and validated atomic I/O.

Each artifact is named here once; stages call :func:`write_table` / :func:`read_table` (or the
streaming :class:`ParquetStreamWriter`) with that name, so a table whose columns or types drift
from the schema fails loudly, naming the file and the column, instead of flowing downstream.
Writes go to a temporary file beside the target (``.<name>.<pid>.<random>.tmp``) and are renamed into
place, so an interrupted stage never leaves a half-written artifact under its final name; the
temporary files a killed writer left behind are removed by the next write of that artifact
(:mod:`actparse.atomic`, which also writes the JSON and checkpoint files).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import WriteError, one_line, tmp_beside, write_atomically, write_error  # noqa: F401 (WriteError: what writes raise)
from .constants import NUM_KEYPOINTS, NUM_PARTS


class SchemaError(ValueError):
    """An artifact does not match its declared schema."""


def _box() -> pa.DataType:
    return pa.list_(pa.float32(), 4)


KEY_VIDEO = pa.field("video", pa.string(), nullable=False)
KEY_FRAME = pa.field("frame", pa.int32(), nullable=False)
KEY_PERSON = pa.field("person", pa.int32(), nullable=False)

SCHEMAS: dict[str, pa.Schema] = {
    # synth / user data set: one row per video.
    "videos": pa.schema([
        KEY_VIDEO,
        pa.field("path", pa.string(), nullable=False),  # relative to the data root
        pa.field("split", pa.string(), nullable=False),  # train | test
        pa.field("action", pa.string()),  # null when unlabelled
        pa.field("n_frames", pa.int32()),
        pa.field("fps", pa.float32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
    ]),
    # Ground truth: one row per person per annotated frame (the synthetic set: every frame).
    # A null ``keypoints`` means "no keypoint ground truth" (Kinetics-TPS, MultiSports imports); null
    # ``part_*`` means "no part annotation" (MultiSports). Not-visible parts are part_visible False.
    "gt_persons": pa.schema([
        KEY_VIDEO, KEY_FRAME, KEY_PERSON,
        pa.field("box", _box(), nullable=False),  # x1 y1 x2 y2, pixels
        pa.field("keypoints", pa.list_(pa.float32(), NUM_KEYPOINTS * 3)),  # x y visible; null: none annotated
        pa.field("part_boxes", pa.list_(pa.float32(), NUM_PARTS * 4)),  # null: parts not annotated
        pa.field("part_visible", pa.list_(pa.bool_(), NUM_PARTS)),
        pa.field("part_states", pa.list_(pa.string(), NUM_PARTS)),
        pa.field("action", pa.string(), nullable=False),  # what this person does in this frame
    ]),
    # decode: sampled frames, one row group per video.
    "frames": pa.schema([
        KEY_VIDEO, KEY_FRAME,
        pa.field("pts", pa.float32()),
        pa.field("width", pa.int32(), nullable=False),  # of the stored (resized) image
        pa.field("height", pa.int32(), nullable=False),
        pa.field("scale", pa.float32(), nullable=False),  # stored / original size
        pa.field("jpeg", pa.binary(), nullable=False),
    ]),
    # Videos a stage could not process, with the reason.
    "skips": pa.schema([
        KEY_VIDEO,
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
    ]),
    # detect_persons: boxes in original-video pixels.
    "persons": pa.schema([
        KEY_VIDEO, KEY_FRAME, KEY_PERSON,
        pa.field("box", _box(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ]),
    # keypoints: HRNet output per person box, plus the keypoint-refined box.
    "keypoints": pa.schema([
        KEY_VIDEO, KEY_FRAME, KEY_PERSON,
        pa.field("det_box", _box(), nullable=False),
        pa.field("box", _box(), nullable=False),  # refined (== det_box when refinement is off)
        pa.field("score", pa.float32(), nullable=False),
        pa.field("keypoints", pa.list_(pa.float32(), NUM_KEYPOINTS * 3), nullable=False),  # x y score
    ]),
    # detect_parts: top-1 box per part per person.
    "parts": pa.schema([
        KEY_VIDEO, KEY_FRAME, KEY_PERSON,
        pa.field("part", pa.string(), nullable=False),
        pa.field("box", _box(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ]),
    # part_labels: seed 001 section 1.3 labels, one row per video per group (+ "action").
    "part_labels": pa.schema([
        KEY_VIDEO,
        pa.field("split", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),  # "action" or a part group
        pa.field("label", pa.string(), nullable=False),
        pa.field("state", pa.string()),  # most frequent state (null for "action")
    ]),
    # csn: video-level predictions per task, per model and for the ensemble.
    "video_predictions": pa.schema([
        KEY_VIDEO,
        pa.field("task", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),  # ip | ir | ensemble
        pa.field("label", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("probs", pa.list_(pa.float32()), nullable=False),
    ]),
    # part_states: a state per detected part per frame.
    "part_states": pa.schema([
        KEY_VIDEO, KEY_FRAME, KEY_PERSON,
        pa.field("part", pa.string(), nullable=False),
        pa.field("box", _box(), nullable=False),
        pa.field("state", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ]),
    # link_tubes: one row per tube per frame.
    "tubes": pa.schema([
        KEY_VIDEO,
        pa.field("tube", pa.int32(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("tube_score", pa.float32(), nullable=False),
        KEY_FRAME,
        pa.field("box", _box(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ]),
    # Per-frame action detections (person box x action score), the input of tube linking and
    # frame-mAP; not a DAG artifact (link_tubes derives them), the Parquet side of the official
    # MultiSports frame_detections.pkl.
    "action_detections": pa.schema([
        KEY_VIDEO, KEY_FRAME, KEY_PERSON,
        pa.field("label", pa.string(), nullable=False),
        pa.field("box", _box(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ]),
    # FineGym element clips of an imported data set (actparse.importers.finegym): FineGym's splits are
    # per element, and times here are seconds in the data set's video (event start + element offset).
    "gym_elements": pa.schema([
        pa.field("clip", pa.string(), nullable=False),  # <video>_E_..._A_... as in the element lists
        KEY_VIDEO,
        pa.field("event_id", pa.string(), nullable=False),  # E_...
        pa.field("segment_id", pa.string(), nullable=False),  # A_...
        pa.field("split", pa.string(), nullable=False),  # train | test (FineGym's val list)
        pa.field("start", pa.float32(), nullable=False),  # seconds in the video
        pa.field("end", pa.float32(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),  # Clabel
        pa.field("element", pa.string()),  # element name (null when no categories line names it)
        pa.field("set", pa.int32()),
        pa.field("event", pa.string()),  # VT | FX | BB | UB (the synthetic set: its own events)
    ]),
    # gym_evaluate (seed 004): class probabilities of each FineGym element clip, per level and model.
    "clip_predictions": pa.schema([
        pa.field("clip", pa.string(), nullable=False),  # <video>_E_..._A_... element id
        KEY_VIDEO,
        pa.field("level", pa.string(), nullable=False),  # event | set | element
        pa.field("model", pa.string(), nullable=False),  # event | set | element (single pathway) | joint
        pa.field("truth", pa.string()),  # ground-truth class (null when unlabelled)
        pa.field("label", pa.string(), nullable=False),  # predicted class
        pa.field("score", pa.float32(), nullable=False),
        pa.field("probs", pa.list_(pa.float32()), nullable=False),
    ]),
    # evaluate: per-video records of the default evaluation, for bootstrap intervals over videos
    # (actparse.metrics.bootstrap). Every kept detection with its match at the evaluation IoU...
    "eval_detections": pa.schema([
        pa.field("metric", pa.string(), nullable=False),  # person_ap50 | part_ap50
        pa.field("cls", pa.string(), nullable=False),  # "0" (person) or the part name
        KEY_VIDEO,
        pa.field("score", pa.float64(), nullable=False),
        pa.field("tp", pa.bool_(), nullable=False),
    ]),
    # ... the ground-truth boxes per video and class ...
    "eval_ground_truth": pa.schema([
        pa.field("metric", pa.string(), nullable=False),
        pa.field("cls", pa.string(), nullable=False),
        KEY_VIDEO,
        pa.field("n", pa.int64(), nullable=False),
    ]),
    # ... and one row per test video (null where a metric is not computed).
    "eval_videos": pa.schema([
        KEY_VIDEO,
        pa.field("action_correct", pa.bool_(), nullable=False),  # ensemble top-1 right
        pa.field("tps_psc", pa.float64()),  # Kinetics-TPS part-state correctness
        pa.field("tps_correct", pa.bool_()),  # class right, as the TPS score counts it
        pa.field("state_matched", pa.int64(), nullable=False),  # parts matched to ground truth
        pa.field("state_correct", pa.int64(), nullable=False),  # ... with the right state
    ]),
    # gym_evaluate / partattn_predict: per-video counts behind the seed systems' accuracies, for
    # bootstrap intervals over videos (actparse.metrics.bootstrap.count_replicates). One row per
    # (video, scored key, ground-truth class): top-1 = sum(hits) / sum(n) over a key's rows, mean-class
    # = the mean over classes of their own sum(hits) / sum(n).
    "video_counts": pa.schema([
        KEY_VIDEO,
        pa.field("key", pa.string(), nullable=False),  # e.g. "model", "prior" (seed 000), "joint.element" (004)
        pa.field("cls", pa.string(), nullable=False),  # ground-truth class (004) or part group (000)
        pa.field("hits", pa.int64(), nullable=False),  # right predictions
        pa.field("n", pa.int64(), nullable=False),  # scored items (clips, visible ground-truth parts)
    ]),
}


def schema(name: str) -> pa.Schema:
    try:
        return SCHEMAS[name]
    except KeyError:
        raise KeyError(f"unknown artifact schema {name!r}; known: {sorted(SCHEMAS)}") from None


def validate(table: pa.Table, name: str, path: str | os.PathLike | None = None) -> pa.Table:
    """Check ``table`` against schema ``name``; return it cast to the exact schema.

    Missing columns, extra columns, uncastable types, nulls in non-null fields and fixed-size
    lists of the wrong length all raise :class:`SchemaError` naming the file and column.
    """
    where = f"{path}: " if path else ""
    want = schema(name)
    have = set(table.column_names)
    missing = [f.name for f in want if f.name not in have]
    if missing:
        raise SchemaError(f"{where}artifact {name!r} is missing column(s) {missing}")
    extra = sorted(have - set(want.names))
    if extra:
        raise SchemaError(f"{where}artifact {name!r} has unexpected column(s) {extra}")
    cols = []
    for field in want:
        col = table.column(field.name)
        if not col.type.equals(field.type):
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise SchemaError(
                    f"{where}column {field.name!r} of artifact {name!r} has type {col.type}, "
                    f"expected {field.type}: {exc}") from None
        if not field.nullable and col.null_count:
            raise SchemaError(f"{where}column {field.name!r} of artifact {name!r} has {col.null_count} null(s)")
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=want)


def from_rows(rows: Iterable[Mapping], name: str) -> pa.Table:
    """Build a validated table from an iterable of dicts."""
    rows = list(rows)
    want = schema(name)
    if not rows:
        return want.empty_table()
    return validate(pa.Table.from_pylist(rows), name)


def from_columns(columns: Mapping[str, object], name: str) -> pa.Table:
    """Build a validated table from a dict of columns (lists or arrays)."""
    want = schema(name)
    arrays = {}
    for field in want:
        if field.name not in columns:
            raise SchemaError(f"artifact {name!r}: column {field.name!r} not given")
        arrays[field.name] = pa.array(_plain(columns[field.name]), type=field.type)
    extra = set(columns) - set(want.names)
    if extra:
        raise SchemaError(f"artifact {name!r} has unexpected column(s) {sorted(extra)}")
    return validate(pa.table(arrays), name)


def _plain(values):
    import numpy as np

    if isinstance(values, np.ndarray) and values.ndim == 2:
        return list(values)
    return values


def write_table(table: pa.Table, path: str | os.PathLike, name: str, row_group_size: int | None = None) -> Path:
    """Validate ``table`` as artifact ``name`` and write it atomically to ``path``."""
    path = Path(path)
    table = validate(table, name, path)
    return write_atomically(path, lambda tmp: pq.write_table(table, tmp, row_group_size=row_group_size,
                                                             compression="zstd"))


def read_table(path: str | os.PathLike, name: str, columns: list[str] | None = None,
               filters=None) -> pa.Table:
    """Read artifact ``name`` from ``path`` and validate it against its schema."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: artifact {name!r} not found (has its stage run?)")
    try:
        table = pq.read_table(path, filters=filters)
    except (pa.ArrowException, OSError) as exc:  # a corrupt file: pyarrow raises OSError for some
        raise SchemaError(f"{path}: cannot read artifact {name!r}: {one_line(exc)}") from None
    table = validate(table, name, path)
    return table.select(columns) if columns else table


def read_df(path: str | os.PathLike, name: str, columns: list[str] | None = None, filters=None):
    """:func:`read_table` as a pandas DataFrame (list columns become numpy arrays)."""
    return read_table(path, name, columns, filters).to_pandas()


class ParquetStreamWriter:
    """Append validated batches to a Parquet artifact; renamed into place on :meth:`close`.

    Each :meth:`write` call becomes one row group, so a stage can stream one video at a time
    without holding the whole artifact in memory. On an exception inside ``with`` the temporary
    file is removed and the previous artifact (if any) stays untouched.
    """

    def __init__(self, path: str | os.PathLike, name: str):
        self.path = Path(path)
        self.name = name
        self._tmp = tmp_beside(self.path)
        try:
            self._writer = pq.ParquetWriter(self._tmp, schema(name), compression="zstd")
        except OSError as exc:
            self._tmp.unlink(missing_ok=True)
            raise write_error(self.path, exc) from exc
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        table = validate(table, self.name, self.path)
        if table.num_rows:
            try:
                self._writer.write_table(table)
            except OSError as exc:
                raise write_error(self.path, exc) from exc
            self.rows += table.num_rows

    def close(self) -> Path:
        try:
            self._writer.close()
            os.replace(self._tmp, self.path)
        except OSError as exc:  # the temporary file goes, the previous artifact stays
            self._tmp.unlink(missing_ok=True)
            raise write_error(self.path, exc) from exc
        return self.path

    def abort(self) -> None:
        try:
            self._writer.close()
        except OSError:
            pass  # closing flushes; on a full disk that fails too, and the file goes anyway
        finally:
            if self._tmp.exists():
                self._tmp.unlink()

    def __enter__(self) -> "ParquetStreamWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def iter_row_groups(path: str | os.PathLike, name: str, row_groups: Iterable[int] | None = None):
    """Yield each row group of an artifact (or those numbered ``row_groups``) as a validated table
    (streaming read)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: artifact {name!r} not found (has its stage run?)")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise SchemaError(f"{path}: cannot read artifact {name!r}: {one_line(exc)}") from None
    for i in (range(pf.num_row_groups) if row_groups is None else row_groups):
        try:
            group = pf.read_row_group(i)
        except (pa.ArrowException, OSError) as exc:
            raise SchemaError(f"{path}: cannot read row group {i} of artifact {name!r}: {one_line(exc)}") from None
        yield validate(group, name, path)
