"""Compare two revisions of the pipeline: params, metrics, plots, models and every Parquet artifact.

    actparse compare main my-branch                    # terminal tables
    actparse compare main my-branch --html compare.html  # + a self-contained HTML report with figures
    python -m actparse.compare HEAD~1 workspace --top 5

A revision is anything git understands (branch, tag, commit) or ``workspace`` (the files on disk).
Params and metrics come from ``dvc params diff`` / ``dvc metrics diff`` (DVC's Python API); the
pipeline's plots from the top-level ``plots:`` of dvc.yaml at each revision (A dashed, B solid); the
models from the output hashes in each revision's dvc.lock, with their training curves. Each Parquet
artifact is read at each revision through DVC (that revision's dvc.lock and the local DVC cache) and
compared by key: the columns among video, frame, person, part, task, model, tube, stage that the table
has. Reported per artifact: row counts, rows added / removed / changed, per-column summary shifts
(means of numbers and of list entries, the mean absolute change on matched rows, the share of matched
rows whose label changed); over all artifacts the videos whose rows changed most, and on a frame of
each of the first three the boxes that differ, A next to B. Outputs of a revision that are not in the
local DVC cache are listed under "Problems" with what to run to get them; the rest is still compared.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

KEY_COLUMNS = ("video", "frame", "person", "part", "task", "model", "tube", "stage")
WORKSPACE = "workspace"
FLOAT_TOL = 1e-6


# ------------------------------------------------------------------------------------ data classes
@dataclass
class ColumnShift:
    column: str
    kind: str  # number | list | label | bytes
    mean_a: float | None = None
    mean_b: float | None = None
    mean_abs_change: float | None = None  # over matched rows (numbers / lists)
    changed_share: float | None = None  # share of matched rows whose value differs
    tv_distance: float | None = None  # labels: total variation between the value distributions

    @property
    def delta(self) -> float | None:
        if self.mean_a is None or self.mean_b is None:
            return None
        return self.mean_b - self.mean_a


@dataclass
class ArtifactDiff:
    path: str
    key: list[str]
    rows_a: int | None  # None: the artifact does not exist at that revision
    rows_b: int | None
    added: int = 0
    removed: int = 0
    changed: int = 0
    unchanged: int = 0
    columns: list[ColumnShift] = field(default_factory=list)
    per_video: dict[str, int] = field(default_factory=dict)  # video -> added+removed+changed rows
    rows_per_video: dict[str, int] = field(default_factory=dict)  # video -> max(rows at a, rows at b)
    note: str = ""
    samples: dict[str, tuple] = field(default_factory=dict, repr=False)  # column -> (values A, values B)
    # key columns (as strings) + "how" (added/removed/changed) of the rows that differ, for tables keyed
    # by video and frame (the example frames of the report)
    differing: pd.DataFrame | None = field(default=None, repr=False)


@dataclass
class Comparison:
    rev_a: str
    rev_b: str
    params: list[dict]
    metrics: list[dict]
    artifacts: list[ArtifactDiff]
    top_videos: list[dict]
    errors: list[str] = field(default_factory=list)
    not_built: list[str] = field(default_factory=list)  # outputs in dvc.yaml readable at neither revision
    missing: dict[str, list[str]] = field(default_factory=dict)  # revision -> outputs not in the local cache
    plots: list[PlotPair] = field(default_factory=list)  # the `plots:` of dvc.yaml, data at A and at B
    models: list[ModelChange] = field(default_factory=list)  # model folders in dvc.lock, by out hash
    examples: list[Example] = field(default_factory=list)  # changed rows drawn on frames


@dataclass
class PlotPair:
    """One plot of dvc.yaml's top-level `plots:` with its data at A and at B (None: not there)."""
    id: str
    title: str
    template: str
    x: str
    series: list[tuple[str, str]]  # (file, y column)
    data_a: dict[str, pd.DataFrame | None] = field(default_factory=dict, repr=False)  # file -> table
    data_b: dict[str, pd.DataFrame | None] = field(default_factory=dict, repr=False)


@dataclass
class ModelChange:
    path: str  # e.g. artifacts/models/pose
    stage: str
    hash_a: str | None
    hash_b: str | None
    curves: list[PlotPair] = field(default_factory=list)  # training curves at A and at B
    note: str = ""

    @property
    def status(self) -> str:
        if self.hash_a is None or self.hash_b is None:
            return "only at " + ("B" if self.hash_a is None else "A")
        return "changed" if self.hash_a != self.hash_b else "same"


@dataclass
class Example:
    """Rows of one frame of a most-changed video, at A and at B, to draw as boxes on the frame."""
    video: str
    frame: int
    artifact: str
    image: dict[str, tuple[str, bytes | None, int, int, float]]  # rev -> (mime, bytes, width, height, scale)
    boxes: dict[str, list[dict]]  # rev -> [{box (original pixels), label, how}]
    note: str = ""


# ------------------------------------------------------------------------------------ DVC access
def _rev(rev: str) -> str | None:
    return None if rev in (WORKSPACE, "", None) else rev


def _flatten_diff(diff: dict) -> list[dict]:
    rows = []
    for fname, entries in sorted((diff or {}).items()):
        for key, change in sorted(entries.items()):
            rows.append({"file": fname, "key": key, "old": change.get("old"), "new": change.get("new"),
                         "diff": change.get("diff")})
    return rows


def params_and_metrics(root: str | Path, rev_a: str, rev_b: str) -> tuple[list[dict], list[dict], list[str]]:
    """``dvc params diff`` and ``dvc metrics diff`` rows ({file, key, old, new, diff}), plus errors."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        pdiff = repo.params.diff(a_rev=rev_a, b_rev=rev_b)
        mdiff = repo.metrics.diff(a_rev=rev_a, b_rev=rev_b)
    errors = []
    for res in (pdiff, mdiff):
        for rev, err in (res.get("errors") or {}).items():
            items = err.items() if isinstance(err, dict) else [("", err)]
            for fname, e in items:
                what = "not found" if isinstance(e, FileNotFoundError) else f"{type(e).__name__}: {e}"
                errors.append(f"{fname or 'params/metrics'} at {rev}: {what}")
    return _flatten_diff(pdiff.get("diff")), _flatten_diff(mdiff.get("diff")), errors


def _out_paths(fs) -> list[str]:
    """The outputs listed in the stages of dvc.yaml at a revision (paths without a leading /)."""
    import yaml

    try:
        doc = yaml.safe_load(fs.read_text("/dvc.yaml")) or {}
    except FileNotFoundError:
        return []
    outs = []
    for spec in (doc.get("stages") or {}).values():
        for entry in (spec or {}).get("outs") or []:
            out = entry if isinstance(entry, str) else next(iter(entry))
            if "${" not in str(out):
                outs.append(str(out).strip("/"))
    return outs


def _outs_at(fs) -> tuple[list[str], list[str]]:
    """(Parquet files among the outputs in dvc.yaml at a revision, files or inside folders;
    the output folders whose listing is not in the local DVC cache)."""
    found, missing = [], []
    for out in _out_paths(fs):
        if out.endswith(".parquet"):
            found.append(out)
            continue
        try:
            if fs.isdir("/" + out):
                found += [str(p).lstrip("/") for p in fs.find("/" + out, detail=False) if str(p).endswith(".parquet")]
        except Exception:  # noqa: BLE001 - DataIndexDirError & co: the folder's listing is not cached
            missing.append(out)
    return sorted(set(found)), missing


def artifacts_at(root: str | Path, rev: str) -> tuple[object, list[str], list[str]]:
    """(a DVC filesystem of ``root`` at ``rev``, the Parquet artifacts it tracks, the output folders
    that cannot be listed because they are not in the local DVC cache)."""
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(str(root), rev=_rev(rev))
    found, missing = _outs_at(fs)
    return fs, found, missing


def _under(path: str, outs: list[str]) -> bool:
    return any(path == o or path.startswith(o.rstrip("/") + "/") for o in outs)


def how_to_get(rev: str) -> str:
    """What to run to get a revision's DVC outputs into the local cache."""
    if _rev(rev) is None:
        return "run `dvc checkout` (outputs in the cache) or `dvc repro` (rebuild them)"
    return (f"fetch them from your DVC remote (`dvc fetch -a`, or `git checkout {rev} && dvc pull`), or "
            f"rebuild them (`git checkout {rev} && dvc repro`, then commit)")


def read_parquet(fs, path: str) -> pd.DataFrame:
    import pyarrow.parquet as pq

    with fs.open("/" + path, "rb") as fh:
        return pq.read_table(fh).to_pandas()


# ------------------------------------------------------------------------------------ table diffs
def _kind(series: pd.Series) -> str:
    nonnull = series.dropna()
    if nonnull.empty:
        return "label"
    first = nonnull.iloc[0]
    if isinstance(first, (bytes, bytearray)):
        return "bytes"
    if isinstance(first, (list, tuple, np.ndarray)):
        try:
            np.asarray(first, dtype=float)
            return "list"
        except (TypeError, ValueError):
            return "label"
    if pd.api.types.is_bool_dtype(series) or isinstance(first, (bool, np.bool_)):
        return "number"
    if pd.api.types.is_numeric_dtype(series):
        return "number"
    return "label"


def _as_matrix(series: pd.Series) -> np.ndarray | None:
    """A list column as (n, k) floats; None when the rows have different lengths."""
    vals = [np.asarray(v, dtype=float).ravel() if v is not None else None for v in series]
    lens = {len(v) for v in vals if v is not None}
    if len(lens) != 1:
        return None
    k = lens.pop()
    return np.stack([v if v is not None else np.full(k, np.nan) for v in vals]) if vals else np.zeros((0, k))


def _is_null(v) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    return isinstance(v, (float, np.floating)) and bool(np.isnan(v))


def _hashable(series: pd.Series, kind: str) -> pd.Series:
    """Comparable values (object dtype): lists as rounded tuples, bytes hashed, every kind of null as None."""
    def conv(v):
        if not isinstance(v, (list, tuple, np.ndarray, bytes, bytearray)) and _is_null(v):
            return None
        if kind == "list":
            return tuple(np.round(np.asarray(v, dtype=float).ravel(), 6))
        if kind == "bytes":
            return hash(bytes(v))
        if isinstance(v, (list, tuple, np.ndarray)):
            return tuple(x.item() if isinstance(x, np.generic) else x for x in v)
        return v.item() if isinstance(v, np.generic) else v

    return pd.Series([conv(v) for v in series], index=series.index, dtype=object)


def _values_differ(a: pd.Series, b: pd.Series, kind: str) -> np.ndarray:
    if kind == "number":
        x = pd.to_numeric(a, errors="coerce").to_numpy(dtype=float)
        y = pd.to_numeric(b, errors="coerce").to_numpy(dtype=float)
        both_nan = np.isnan(x) & np.isnan(y)
        close = np.isclose(x, y, rtol=FLOAT_TOL, atol=FLOAT_TOL)
        return ~(close | both_nan)
    ha, hb = _hashable(a, kind), _hashable(b, kind)
    return np.array([not ((u is None and v is None) or (u is not None and v is not None and u == v))
                     for u, v in zip(ha, hb)], dtype=bool)


def _mean(series: pd.Series, kind: str) -> float | None:
    if series.empty:
        return None
    if kind == "number":
        v = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
        return float(np.nanmean(v)) if np.isfinite(v).any() else None
    if kind == "list":
        m = _as_matrix(series)
        return float(np.nanmean(m)) if m is not None and m.size and np.isfinite(m).any() else None
    return None


def _tv_distance(a: pd.Series, b: pd.Series) -> float | None:
    ha, hb = _hashable(a, "label"), _hashable(b, "label")
    if ha.empty or hb.empty:
        return None
    pa_ = ha.map(lambda v: "<null>" if v is None else str(v)).value_counts(normalize=True)
    pb_ = hb.map(lambda v: "<null>" if v is None else str(v)).value_counts(normalize=True)
    return float(0.5 * pa_.subtract(pb_, fill_value=0).abs().sum())


def _with_dup_index(df: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    df = df.copy()
    df["_dup"] = df.groupby(key, sort=False, dropna=False).cumcount() if key else np.arange(len(df))
    return df


def diff_tables(a: pd.DataFrame | None, b: pd.DataFrame | None, path: str = "") -> ArtifactDiff:
    """Row-level and column-level differences of two versions of one table (either may be None)."""
    if a is None and b is None:
        raise ValueError(f"{path}: no version to compare")
    ref = a if a is not None else b
    res = ArtifactDiff(path=path, key=[], rows_a=None if a is None else len(a), rows_b=None if b is None else len(b))
    if a is None or b is None:
        res.note = "only at " + ("B" if a is None else "A")
        res.added = len(b) if a is None else 0
        res.removed = len(a) if b is None else 0
        if "video" in ref.columns:
            counts = ref["video"].astype(str).value_counts()
            res.per_video = counts.to_dict()
            res.rows_per_video = counts.to_dict()
        return res
    key = [c for c in KEY_COLUMNS if c in a.columns and c in b.columns]
    res.key = key
    common = [c for c in a.columns if c in b.columns and c not in key]
    only = sorted(set(a.columns) ^ set(b.columns))
    if only:
        res.note = f"columns only at one revision: {only}"
    ka = _with_dup_index(a, key)
    kb = _with_dup_index(b, key)
    full_key = key + ["_dup"]
    for df in (ka, kb):
        for c in key:  # plain Python strings: arrow-backed columns cannot be merged when empty
            df[c] = pd.Series([str(v) for v in df[c]], index=df.index, dtype=object)
    merged = ka[full_key + common].merge(kb[full_key + common], on=full_key, how="outer",
                                         suffixes=("__a", "__b"), indicator=True)
    left = merged["_merge"] == "left_only"
    right = merged["_merge"] == "right_only"
    both = merged[merged["_merge"] == "both"]
    res.removed, res.added = int(left.sum()), int(right.sum())
    changed = np.zeros(len(both), dtype=bool)
    for c in common:
        kind = _kind(pd.concat([a[c], b[c]], ignore_index=True))
        ca, cb = both[f"{c}__a"], both[f"{c}__b"]
        differ = _values_differ(ca, cb, kind) if len(both) else np.zeros(0, bool)
        changed |= differ
        shift = ColumnShift(column=c, kind=kind, mean_a=_mean(a[c], kind), mean_b=_mean(b[c], kind),
                            changed_share=float(differ.mean()) if len(differ) else None)
        if kind == "number" and len(both):
            x = pd.to_numeric(ca, errors="coerce").to_numpy(dtype=float)
            y = pd.to_numeric(cb, errors="coerce").to_numpy(dtype=float)
            d = np.abs(y - x)
            shift.mean_abs_change = float(np.nanmean(d)) if np.isfinite(d).any() else None
        elif kind == "list" and len(both):
            ma, mb = _as_matrix(ca), _as_matrix(cb)
            if ma is not None and mb is not None and ma.shape == mb.shape and ma.size:
                d = np.abs(mb - ma)
                shift.mean_abs_change = float(np.nanmean(d)) if np.isfinite(d).any() else None
        elif kind == "label":
            shift.tv_distance = _tv_distance(a[c], b[c])
        res.columns.append(shift)
    res.changed = int(changed.sum())
    res.unchanged = int(len(both) - changed.sum())
    if "video" in key and "frame" in key:
        res.differing = pd.concat([merged.loc[left, key].assign(how="removed"),
                                   merged.loc[right, key].assign(how="added"),
                                   both.loc[changed, key].assign(how="changed")], ignore_index=True)
    for c in common:
        if _kind(a[c]) == "number" and not pd.api.types.is_bool_dtype(a[c]):
            res.samples[c] = (pd.to_numeric(a[c], errors="coerce"), pd.to_numeric(b[c], errors="coerce"))
    if "video" in key:
        per = pd.concat([merged.loc[left, "video"], merged.loc[right, "video"],
                         both.loc[changed, "video"] if len(both) else pd.Series(dtype=str)])
        res.per_video = per.value_counts().astype(int).to_dict()
        na = a["video"].astype(str).value_counts()
        nb = b["video"].astype(str).value_counts()
        res.rows_per_video = na.combine(nb, max, fill_value=0).astype(int).to_dict()
    return res


def top_videos(diffs: list[ArtifactDiff], n: int = 10) -> list[dict]:
    """Videos ranked by rows added+removed+changed over all artifacts (ties: by changed share)."""
    total: dict[str, int] = {}
    rows: dict[str, int] = {}
    where: dict[str, dict[str, int]] = {}
    for d in diffs:
        for v, k in d.per_video.items():
            total[v] = total.get(v, 0) + int(k)
            where.setdefault(v, {})[d.path] = int(k)
        for v, k in d.rows_per_video.items():
            rows[v] = rows.get(v, 0) + int(k)
    ranked = sorted(total, key=lambda v: (-total[v], -total[v] / max(1, rows.get(v, 1)), v))
    out = []
    for v in ranked[:n]:
        if total[v] == 0:
            break
        art = max(where[v], key=where[v].get)
        out.append({"video": v, "changed_rows": total[v], "rows": rows.get(v, 0),
                    "share": total[v] / max(1, rows.get(v, 0)), "most_in": art})
    return out


# ------------------------------------------------------------------------------------ plots, models, frames
def _yaml_at(fs, path: str) -> dict:
    import yaml

    try:
        doc = yaml.safe_load(fs.read_text("/" + path))
    except FileNotFoundError:
        return {}
    return doc if isinstance(doc, dict) else {}


def plot_defs(doc: dict) -> list[dict]:
    """The top-level ``plots:`` of a dvc.yaml as [{id, title, template, x, series: [(file, y)]}]."""
    out = []
    for entry in doc.get("plots") or []:
        pid, props = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
        props = props or {}
        y = props.get("y")
        if isinstance(y, dict):
            series = [(f, c) for f, cols in y.items() for c in (cols if isinstance(cols, list) else [cols])]
        elif y is not None:
            series = [(pid, c) for c in (y if isinstance(y, list) else [y])]
        else:
            continue  # a plot without y (images, DVC's inferred columns): not drawn here
        x = props.get("x", "step")
        if isinstance(x, dict):
            x = next(iter(x.values()))
        out.append({"id": str(pid), "title": str(props.get("title") or pid),
                    "template": str(props.get("template") or "linear"), "x": str(x), "series": series})
    return out


def _read_csv(fs, path: str) -> pd.DataFrame | None:
    """A plot file (CSV, TSV or JSON list) at a revision; None when it is not there or unreadable."""
    try:
        with fs.open("/" + path, "rb") as fh:
            raw = fh.read()
    except Exception:  # noqa: BLE001 - not at this revision, or not in the cache
        return None
    try:
        if path.endswith(".json"):
            import json

            return pd.DataFrame(json.loads(raw))
        return pd.read_csv(io.BytesIO(raw), sep="\t" if path.endswith(".tsv") else ",")
    except (ValueError, pd.errors.ParserError):
        return None


def plots_at(fs_a, fs_b) -> list[PlotPair]:
    """Every plot of B's dvc.yaml (and A's that B lacks), with its files read at both revisions."""
    defs = {d["id"]: d for d in plot_defs(_yaml_at(fs_a, "dvc.yaml"))}
    defs.update({d["id"]: d for d in plot_defs(_yaml_at(fs_b, "dvc.yaml"))})
    out = []
    for d in defs.values():
        files = list(dict.fromkeys(f for f, _ in d["series"]))
        out.append(PlotPair(d["id"], d["title"], d["template"], d["x"], d["series"],
                            {f: _read_csv(fs_a, f) for f in files}, {f: _read_csv(fs_b, f) for f in files}))
    return out


def _lock_outs(fs) -> dict[str, tuple[str, str]]:
    """{out path: (stage, hash)} from dvc.lock at a revision."""
    outs = {}
    for stage, spec in (_yaml_at(fs, "dvc.lock").get("stages") or {}).items():
        for o in (spec or {}).get("outs") or []:
            if isinstance(o, dict) and "path" in o:
                outs[str(o["path"]).strip("/")] = (stage, str(o.get("md5") or o.get("hash") or ""))
    return outs


def _curve_from_info(fs, model_path: str, stem: str) -> pd.DataFrame | None:
    """A training curve from a model's train_info.json through DVC (a revision from before the
    training_curves stage); None when it is not in the cache."""
    import json

    from .curves import curve

    try:
        with fs.open(f"/{model_path}/train_info.json", "rb") as fh:
            df = curve(stem, json.loads(fh.read()), f"{model_path}/train_info.json")
    except Exception:  # noqa: BLE001
        return None
    return df if len(df) else None


def models_at(fs_a, fs_b) -> list[ModelChange]:
    """The model folders of both dvc.lock files (outputs under a ``models/`` folder), compared by hash,
    with the training curves of each (plots/train/<curve>.csv, else its train_info.json)."""
    from .curves import CURVES

    la, lb = _lock_outs(fs_a), _lock_outs(fs_b)
    out = []
    for path in sorted(set(la) | set(lb)):
        if "/models/" not in f"/{path}" or path.endswith(".parquet"):
            continue
        stage = (lb.get(path) or la.get(path))[0]
        m = ModelChange(path, stage, la.get(path, (None, None))[1], lb.get(path, (None, None))[1])
        name = path.rstrip("/").rsplit("/", 1)[-1]
        for stem, (model, cols) in CURVES.items():
            if model != name:
                continue
            f = f"plots/train/{stem}.csv"
            da = _read_csv(fs_a, f)
            db = _read_csv(fs_b, f)
            da = da if da is not None and len(da) else _curve_from_info(fs_a, path, stem)
            db = db if db is not None and len(db) else _curve_from_info(fs_b, path, stem)
            if da is None and db is None:
                continue
            m.curves.append(PlotPair(stem, f"{stem}: per epoch", "linear", "epoch", [(f, c) for c in cols
                                                                                     if c != "phase"],
                                     {f: da}, {f: db}))
        if not m.curves:
            m.note = "no training curve at either revision"
        out.append(m)
    return out


def _frame_image(fs, frames_path: str, video: str, frame: int):
    """(mime, JPEG bytes, width, height, scale) of one decoded frame, or None when not readable."""
    import pyarrow.parquet as pq

    try:
        with fs.open("/" + frames_path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            for i in range(pf.num_row_groups):  # one row group per video
                vids = pf.read_row_group(i, columns=["video"]).column("video").to_pylist()
                if video not in vids:
                    continue
                t = pf.read_row_group(i).to_pandas()
                row = t[(t["video"] == video) & (t["frame"].astype(int) == int(frame))]
                if len(row):
                    r = row.iloc[0]
                    return ("image/jpeg", bytes(r["jpeg"]), int(r["width"]), int(r["height"]), float(r["scale"]))
    except Exception:  # noqa: BLE001 - not in the cache: boxes are drawn without the frame
        return None
    return None


def _box_label(row: pd.Series) -> str:
    bits = [str(row[c]) for c in ("part", "label") if c in row and isinstance(row[c], str)]
    if "person" in row:
        bits.insert(0, f"p{row['person']}")
    if "tube" in row:
        bits.insert(0, f"t{row['tube']}")
    if "score" in row and row["score"] is not None:
        bits.append(f"{float(row['score']):.2f}")
    return " ".join(bits)


def examples(fs_a, fs_b, rev_a: str, rev_b: str, diffs: list[ArtifactDiff], tables: dict, top: list[dict],
             frames_path: str | None, n_videos: int = 3) -> list[Example]:
    """For each of the ``n_videos`` most-changed videos: the box artifact and frame with the most rows
    that differ, its rows at A and at B (boxes in original-video pixels), and the frame from each
    revision's decoded frames when they are in the cache."""
    out = []
    by_path = {d.path: d for d in diffs}
    for t in top[:n_videos]:
        video = t["video"]
        best = None
        for path, (ta, tb) in tables.items():
            d = by_path.get(path)
            if d is None or d.differing is None:
                continue
            rows = d.differing[d.differing["video"] == video]
            if len(rows) and (best is None or len(rows) > best[1]):
                best = (path, len(rows), rows)
        if best is None:
            continue
        path, _, rows = best
        frame = rows["frame"].value_counts().index[0]
        ta, tb = tables[path]
        key = [c for c in by_path[path].key if c not in ("video", "frame")]
        how = {tuple(str(r[c]) for c in key): r["how"] for _, r in rows[rows["frame"] == frame].iterrows()}
        ex = Example(video=video, frame=int(frame), artifact=path, image={}, boxes={})
        for rev, table, fs in ((rev_a, ta, fs_a), (rev_b, tb, fs_b)):
            sel = table[(table["video"].astype(str) == video) & (table["frame"].astype(str) == str(frame))]
            ex.boxes[rev] = [{"box": [float(v) for v in r["box"]], "label": _box_label(r),
                              "how": how.get(tuple(str(r[c]) for c in key), "same")} for _, r in sel.iterrows()]
            img = _frame_image(fs, frames_path, video, int(frame)) if frames_path else None
            if img is not None:
                ex.image[rev] = img
        if len(ex.image) < 2:
            ex.note = "frames not in the local DVC cache at " + ", ".join(
                r for r in (rev_a, rev_b) if r not in ex.image) + ": boxes drawn without the frame"
        out.append(ex)
    return out


# ------------------------------------------------------------------------------------ driver
def compare(root: str | Path, rev_a: str, rev_b: str, top: int = 10) -> Comparison:
    """Everything the report shows, for revisions ``rev_a`` (old) and ``rev_b`` (new) of ``root``.

    Outputs of a revision that are not in the local DVC cache are listed in ``missing`` (and, with
    what to run to get them, in ``errors``); params, metrics and everything else are still compared."""
    root = Path(root)
    params, metrics, errors = params_and_metrics(root, rev_a, rev_b)
    fs_a, arts_a, miss_a = artifacts_at(root, rev_a)
    fs_b, arts_b, miss_b = artifacts_at(root, rev_b)
    # an output that a revision's dvc.lock does not record was never built there: not a cache miss
    locked = {rev_a: list(_lock_outs(fs_a)), rev_b: list(_lock_outs(fs_b))}
    missing = {rev_a: [m for m in miss_a if _under(m, locked[rev_a])],
               rev_b: [m for m in miss_b if _under(m, locked[rev_b])]}
    diffs, not_built, tables = [], [], {}
    for path in sorted(set(arts_a) | set(arts_b)):
        frames = []
        for fs, arts, rev in ((fs_a, arts_a, rev_a), (fs_b, arts_b, rev_b)):
            if path not in arts:
                frames.append(None)
                continue
            try:
                frames.append(read_parquet(fs, path))
            except Exception as exc:  # noqa: BLE001 - a missing cache entry is reported, not fatal
                frames.append(None)
                if path not in missing[rev] and _under(path, locked[rev]):
                    missing[rev].append(path)
                if not isinstance(exc, (FileNotFoundError, KeyError)) and "not in cache" not in str(exc).lower():
                    errors.append(f"{path} at {rev}: cannot read ({type(exc).__name__}: {exc})")
        uncached = [rev for rev in (rev_a, rev_b) if _under(path, missing.get(rev, []))]
        if frames[0] is None and frames[1] is None:
            if not uncached:
                not_built.append(path)  # e.g. its stage never ran on either branch
            continue
        if uncached:  # one side unknown: neither "added" nor "removed"
            d = ArtifactDiff(path=path, key=[], rows_a=None if frames[0] is None else len(frames[0]),
                             rows_b=None if frames[1] is None else len(frames[1]),
                             note=f"not in the local DVC cache at {' and '.join(uncached)}: not compared")
            diffs.append(d)
            continue
        diffs.append(diff_tables(frames[0], frames[1], path))
        if all(f is not None and {"video", "frame", "box"} <= set(f.columns) for f in frames):
            tables[path] = (frames[0], frames[1])
    for rev, miss in missing.items():
        if miss:
            miss = sorted(miss)
            shown = ", ".join(miss[:10]) + (f" and {len(miss) - 10} more" if len(miss) > 10 else "")
            errors.append(f"at {rev}: {len(miss)} output(s) not in the local DVC cache, so their rows are not "
                          f"compared: {shown}. To get them, {how_to_get(rev)}")
    cmp = Comparison(rev_a, rev_b, params, metrics, diffs, top_videos(diffs, top), errors, not_built)
    cmp.missing = {r: sorted(m) for r, m in missing.items() if m}
    cmp.plots = plots_at(fs_a, fs_b)
    cmp.models = models_at(fs_a, fs_b)
    frames_path = next((p for p in sorted(set(arts_a) | set(arts_b)) if p.rsplit("/", 1)[-1] == "frames.parquet"),
                       None)
    cmp.examples = examples(fs_a, fs_b, rev_a, rev_b, diffs, tables, cmp.top_videos, frames_path)
    return cmp


# ------------------------------------------------------------------------------------ rendering
def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        s = str(v)
        return s if len(s) <= 40 else s[:37] + "..."
    return str(v)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def _sections(cmp: Comparison) -> list[tuple[str, list[str], list[list[Any]]]]:
    secs = [("Params changed", ["file", "key", "A", "B"],
             [[p["file"], p["key"], p["old"], p["new"]] for p in cmp.params]),
            ("Metrics", ["file", "key", "A", "B", "change"],
             [[m["file"], m["key"], m["old"], m["new"], m["diff"]] for m in cmp.metrics]),
            ("Artifacts (rows by key)", ["artifact", "key", "rows A", "rows B", "added", "removed", "changed", "note"],
             [[d.path, ",".join(d.key) or "-", d.rows_a, d.rows_b, d.added, d.removed, d.changed, d.note]
              for d in cmp.artifacts])]
    shifts = []
    for d in cmp.artifacts:
        for c in d.columns:
            moved = (c.changed_share or 0) > 0 or (c.tv_distance or 0) > 0 or \
                (c.delta is not None and abs(c.delta) > FLOAT_TOL)
            if moved:
                shifts.append([d.path, c.column, c.kind, c.mean_a, c.mean_b, c.delta, c.mean_abs_change,
                               c.changed_share, c.tv_distance])
    secs.append(("Column shifts (columns that moved)",
                 ["artifact", "column", "kind", "mean A", "mean B", "delta", "mean |change|", "changed share", "TV dist"],
                 shifts))
    secs.insert(2, ("Models (by output hash in dvc.lock)", ["model", "stage", "hash A", "hash B", "status"],
                    [[m.path, m.stage, (m.hash_a or "-")[:10], (m.hash_b or "-")[:10], m.status] for m in cmp.models]))
    secs.append(("Videos that changed most", ["video", "changed rows", "rows", "share", "mostly in"],
                 [[t["video"], t["changed_rows"], t["rows"], t["share"], t["most_in"]] for t in cmp.top_videos]))
    return secs


def render_text(cmp: Comparison) -> str:
    out = [f"actparse compare: A = {cmp.rev_a}   B = {cmp.rev_b}", ""]
    for title, headers, rows in _sections(cmp):
        out.append(f"== {title} ==")
        out.append(_table(headers, rows) if rows else "(none)")
        out.append("")
    if cmp.not_built:
        out.append("Not built at either revision: " + ", ".join(cmp.not_built))
        out.append("")
    if cmp.errors:
        out.append("== Problems ==")
        out += [f"- {e}" for e in cmp.errors]
    return "\n".join(out).rstrip() + "\n"


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(cmp: Comparison) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    arts = [d for d in cmp.artifacts if d.added or d.removed or d.changed] or cmp.artifacts
    if arts:
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(arts) + 1.2))
        names = [d.path.replace("artifacts/", "") for d in arts]
        y = np.arange(len(arts))
        left = np.zeros(len(arts))
        for label, vals, color in (("changed", [d.changed for d in arts], "#e6a700"),
                                   ("added", [d.added for d in arts], "#2ca02c"),
                                   ("removed", [d.removed for d in arts], "#d62728")):
            ax.barh(y, vals, left=left, label=label, color=color)
            left += np.asarray(vals, dtype=float)
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlabel("rows")
        ax.legend(loc="lower right")
        ax.set_title("Rows that differ, per artifact")
        plots.append(("Rows that differ per artifact", _png(fig)))
    nums = [m for m in cmp.metrics if isinstance(m["old"], (int, float)) and isinstance(m["new"], (int, float))
            and not isinstance(m["old"], bool)][:30]
    if nums:
        rel = [100.0 * (m["new"] - m["old"]) / abs(m["old"]) if m["old"] else 0.0 for m in nums]
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(nums) + 1.2))
        y = np.arange(len(nums))
        ax.barh(y, rel, color=["#2ca02c" if r >= 0 else "#d62728" for r in rel])
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, [f"{m['key']} ({_fmt(m['old'])} -> {_fmt(m['new'])})" for m in nums])
        ax.invert_yaxis()
        ax.set_xlabel(f"change of B ({cmp.rev_b}) relative to A ({cmp.rev_a}), %")
        ax.set_title("Metrics")
        plots.append(("Metrics: relative change", _png(fig)))
    hists = [(d.path, c, s) for d in cmp.artifacts for c, s in d.samples.items()
             if isinstance(s, tuple) and c in ("score", "tube_score") and len(s[0]) and len(s[1])]
    for path, col, (sa, sb) in hists[:6]:
        fig, ax = plt.subplots(figsize=(6, 3))
        lo = float(np.nanmin([sa.min(), sb.min()]))
        hi = float(np.nanmax([sa.max(), sb.max()]))
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 30)
        ax.hist(sa.dropna(), bins=bins, alpha=0.6, label=f"A ({cmp.rev_a})", color="#7f7f7f")
        ax.hist(sb.dropna(), bins=bins, alpha=0.6, label=f"B ({cmp.rev_b})", color="#1f77b4")
        ax.set_title(f"{path}: {col}")
        ax.legend()
        plots.append((f"{path}: distribution of {col}", _png(fig)))
    if cmp.top_videos:
        tv = cmp.top_videos
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(tv) + 1.2))
        ax.barh(np.arange(len(tv)), [t["changed_rows"] for t in tv], color="#9467bd")
        ax.set_yticks(np.arange(len(tv)), [t["video"] for t in tv])
        ax.invert_yaxis()
        ax.set_xlabel("rows added + removed + changed (all artifacts)")
        ax.set_title("Videos that changed most")
        plots.append(("Videos that changed most", _png(fig)))
    return plots


# ------------------------------------------------------------------------------------ report figures
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _series_values(df: pd.DataFrame | None, x: str, y: str):
    if df is None or x not in df.columns or y not in df.columns or not len(df):
        return None
    xs = pd.to_numeric(df[x], errors="coerce").to_numpy(dtype=float)
    ys = pd.to_numeric(df[y], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(xs) & np.isfinite(ys)
    return (xs[ok], ys[ok]) if ok.any() else None


def plot_pair_figure(pp: PlotPair, rev_a: str, rev_b: str) -> str | None:
    """A PNG data URI: a line plot with A dashed and B solid in the same axes, or (confusion template)
    the two matrices side by side; None when neither revision has data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if pp.template.startswith("confusion"):
        mats = {}
        for rev, data in ((rev_a, pp.data_a), (rev_b, pp.data_b)):
            f, ycol = pp.series[0]
            df = data.get(f)
            if df is not None and pp.x in df.columns and ycol in df.columns and len(df):
                mats[rev] = pd.crosstab(df[ycol].astype(str), df[pp.x].astype(str))
        if not mats:
            return None
        labels = sorted(set().union(*[set(m.index) | set(m.columns) for m in mats.values()]))
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), squeeze=False)
        for ax, rev in zip(axes[0], (rev_a, rev_b)):
            m = mats.get(rev)
            ax.set_title(f"{'A' if rev == rev_a else 'B'} = {rev}")
            if m is None:
                ax.text(0.5, 0.5, "not at this revision", ha="center", va="center")
                ax.set_axis_off()
                continue
            m = m.reindex(index=labels, columns=labels, fill_value=0)
            ax.imshow(m.to_numpy(), cmap="Blues")
            ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
            ax.set_yticks(range(len(labels)), labels, fontsize=7)
            ax.set_xlabel(pp.x)
            ax.set_ylabel(pp.series[0][1])
            for (i, j), v in np.ndenumerate(m.to_numpy()):
                if v:
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=6)
        fig.suptitle(pp.title, fontsize=10)
        return _png(fig)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    drawn = 0
    for k, (f, y) in enumerate(pp.series):
        name = y if len({s[0] for s in pp.series}) == 1 else f"{f.rsplit('/', 1)[-1].rsplit('.', 1)[0]}: {y}"
        for rev, data, style in ((rev_a, pp.data_a, "--"), (rev_b, pp.data_b, "-")):
            v = _series_values(data.get(f), pp.x, y)
            if v is not None:
                ax.plot(v[0], v[1], style, color=COLORS[k % len(COLORS)], lw=1.4,
                        label=f"{name} ({'A' if style == '--' else 'B'})")
                drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel(pp.x)
    ax.set_title(pp.title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def _svg_example(ex: Example, rev: str, which: str) -> str:
    """One revision's rows of an example frame as an inline SVG: the frame (when cached) and a box per
    row; boxes of rows that differ from the other revision are coloured, unchanged ones grey."""
    esc = html.escape
    img = ex.image.get(rev)
    boxes = ex.boxes.get(rev, [])
    if img is not None:
        mime, data, w, h, scale = img
    else:  # no frame: a canvas that holds every box of both revisions
        every = [b["box"] for bs in ex.boxes.values() for b in bs] or [[0, 0, 100, 100]]
        w = int(max(b[2] for b in every) * 1.05) + 1
        h = int(max(b[3] for b in every) * 1.05) + 1
        scale, data = 1.0, None
    colour = {"changed": "#ff9800", "added": "#00c853", "removed": "#ff1744", "same": "#bdbdbd"}
    parts = [f"<svg class='example' data-rev='{esc(rev)}' xmlns='http://www.w3.org/2000/svg' "
             f"viewBox='0 0 {w} {h}' width='{max(w, 320)}' style='background:#222'>"]
    if data is not None:
        uri = f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
        parts.append(f"<image href='{uri}' x='0' y='0' width='{w}' height='{h}'/>")
    for b in boxes:
        x1, y1, x2, y2 = (v * scale for v in b["box"])
        c = colour.get(b["how"], "#bdbdbd")
        sw = max(0.6, w / 300) * (1.6 if b["how"] != "same" else 0.8)
        parts.append(f"<rect class='box {esc(b['how'])}' x='{x1:.1f}' y='{y1:.1f}' width='{max(x2 - x1, 0):.1f}' "
                     f"height='{max(y2 - y1, 0):.1f}' fill='none' stroke='{c}' stroke-width='{sw:.2f}'>"
                     f"<title>{esc(b['label'])} ({esc(b['how'])})</title></rect>")
    parts.append("</svg>")
    n_diff = sum(b["how"] != "same" for b in boxes)
    return (f"<figure><figcaption>{which} = <b>{esc(rev)}</b>: {len(boxes)} rows, {n_diff} differ</figcaption>"
            + "".join(parts) + "</figure>")


def _html_table(headers: list[str], rows: list[list[Any]]) -> str:
    esc = html.escape
    if not rows:
        return "<p class='none'>(none)</p>"
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{esc(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows]
    return "\n".join(out) + "</table>"


def render_html(cmp: Comparison, root: str | Path | None = None) -> str:
    """A self-contained HTML page: inline CSS, figures as data: URIs and inline SVG, no script, nothing
    fetched; one file to send to others."""
    esc = html.escape
    a, b = esc(cmp.rev_a), esc(cmp.rev_b)
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>actparse compare {a} vs {b}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1300px}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}"
             "th{background:#f0f0f0}.none{color:#888}.err{color:#b00}img{max-width:100%}"
             ".plot{display:inline-block;vertical-align:top;margin:0 1em 1em 0;max-width:640px}"
             ".pair{display:flex;gap:1em;flex-wrap:wrap}figure{margin:0}svg.example{max-width:600px;height:auto}"
             ".key span{display:inline-block;padding:0 6px;margin-right:6px;color:#fff;font-size:12px}"
             "</style></head><body>",
             f"<h1>actparse compare</h1><p>A = <b>{a}</b> &nbsp; B = <b>{b}</b> (in every figure: A dashed, "
             f"B solid, same colour per series)</p>"]
    if cmp.errors:
        parts.append("<h2 id='problems'>Problems</h2><ul>" +
                     "".join(f"<li class='err'>{esc(e)}</li>" for e in cmp.errors) + "</ul>")
    sections = _sections(cmp)
    for title, headers, rows in sections[:2]:  # params, metrics
        parts.append(f"<h2>{esc(title)}</h2>" + _html_table(headers, rows))
    parts.append("<h2 id='pipeline-plots'>Pipeline plots (dvc.yaml <code>plots:</code>)</h2>")
    drawn = [(pp, plot_pair_figure(pp, cmp.rev_a, cmp.rev_b)) for pp in cmp.plots]
    if not any(uri for _, uri in drawn):
        parts.append("<p class='none'>(no plot data at either revision)</p>")
    for pp, uri in drawn:
        if uri:
            parts.append(f"<div class='plot' data-plot='{esc(pp.id)}'><img alt='{esc(pp.title)}' src='{uri}'></div>")
    empty = [pp.id for pp, uri in drawn if not uri]
    if empty:
        parts.append("<p class='none'>No data at either revision: " + esc(", ".join(empty)) + "</p>")
    title, headers, rows = sections[2]  # models
    parts.append(f"<h2 id='models'>{esc(title)}</h2>" + _html_table(headers, rows))
    for m in cmp.models:
        if m.status == "same":
            continue
        for pp in m.curves:
            uri = plot_pair_figure(pp, cmp.rev_a, cmp.rev_b)
            if uri:
                parts.append(f"<div class='plot' data-curve='{esc(pp.id)}'><h4>{esc(m.path)} ({esc(m.status)}): "
                             f"{esc(pp.id)}</h4><img alt='{esc(pp.title)}' src='{uri}'></div>")
    for title, headers, rows in sections[3:]:
        parts.append(f"<h2>{esc(title)}</h2>" + _html_table(headers, rows))
    if cmp.examples:
        parts.append("<h2 id='examples'>Rows that differ, on the frames of the most-changed videos</h2>"
                     "<p class='key'><span style='background:#ff9800'>changed</span><span style='background:#00c853'>"
                     "only at this revision (added at B)</span><span style='background:#ff1744'>only at this revision "
                     "(removed at B)</span><span style='background:#9e9e9e'>same at both</span></p>")
        for ex in cmp.examples:
            parts.append(f"<h3>{esc(ex.video)}, frame {ex.frame}: {esc(ex.artifact)}</h3>")
            if ex.note:
                parts.append(f"<p class='none'>{esc(ex.note)}</p>")
            parts.append("<div class='pair'>" + _svg_example(ex, cmp.rev_a, "A") + _svg_example(ex, cmp.rev_b, "B")
                         + "</div>")
    if cmp.not_built:
        parts.append("<p class='none'>Not built at either revision: " + esc(", ".join(cmp.not_built)) + "</p>")
    plots = _plots(cmp)
    if plots:
        parts.append("<h2>Summary plots</h2>")
        for title, uri in plots:
            parts.append(f"<h3>{esc(title)}</h3><img alt='{esc(title)}' src='{uri}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically (temporary file beside it, then renamed) with the mode a new file
    gets under the process umask (0644 under the usual 022), so others can read the report."""
    from .atomic import write_text

    return write_text(path, text, encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="actparse compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev_a", help="old revision (branch, tag, commit or 'workspace')")
    parser.add_argument("rev_b", help="new revision")
    parser.add_argument("--root", default=".", help="the project (a git + DVC repository)")
    parser.add_argument("--html", default=None, help="also write a self-contained HTML report here")
    parser.add_argument("--top", type=int, default=10, help="how many most-changed videos to list")
    args = parser.parse_args(argv)
    try:
        cmp = compare(args.root, args.rev_a, args.rev_b, args.top)
    except Exception as exc:  # noqa: BLE001 - DVC/git errors: one clear line
        print(f"actparse compare: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render_text(cmp))
    if args.html:
        try:
            out = write_report(args.html, render_html(cmp, root=args.root))
        except OSError as exc:
            print(f"actparse compare: error: {exc}", file=sys.stderr)
            return 2
        print(f"HTML report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
