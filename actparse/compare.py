"""Compare two revisions of the pipeline: params, metrics and every Parquet artifact.

    actparse compare main my-branch                    # terminal tables
    actparse compare main my-branch --html compare.html  # + a self-contained HTML report with plots
    python -m actparse.compare HEAD~1 workspace --top 5

A revision is anything git understands (branch, tag, commit) or ``workspace`` (the files on disk).
Params and metrics come from ``dvc params diff`` / ``dvc metrics diff`` (DVC's Python API). Each
Parquet artifact is read at each revision through DVC (the dvc.lock of that revision and the DVC cache,
so run ``dvc repro`` and commit on both branches first) and compared by key: the columns among
video, frame, person, part, task, model, tube, stage that the table has. Reported per artifact: row
counts, rows added / removed / changed, per-column summary shifts (means of numbers and of list
entries, the mean absolute change on matched rows, the share of matched rows whose label changed), and
over all artifacts the videos whose rows changed most.
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


def _outs_at(fs) -> list[str]:
    """Parquet files among the outputs listed in dvc.yaml at a revision (files or inside folders)."""
    import yaml

    try:
        doc = yaml.safe_load(fs.read_text("/dvc.yaml")) or {}
    except FileNotFoundError:
        return []
    found = []
    for spec in (doc.get("stages") or {}).values():
        for entry in (spec or {}).get("outs") or []:
            out = entry if isinstance(entry, str) else next(iter(entry))
            out = "/" + str(out).strip("/")
            if "${" in out:
                continue
            if out.endswith(".parquet"):
                found.append(out)
            elif fs.isdir(out):
                found += [p for p in fs.find(out, detail=False) if str(p).endswith(".parquet")]
    return sorted({str(p).lstrip("/") for p in found})


def artifacts_at(root: str | Path, rev: str) -> tuple[object, list[str]]:
    """(a DVC filesystem of ``root`` at ``rev``, the Parquet artifacts it tracks)."""
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(str(root), rev=_rev(rev))
    return fs, _outs_at(fs)


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


# ------------------------------------------------------------------------------------ driver
def compare(root: str | Path, rev_a: str, rev_b: str, top: int = 10) -> Comparison:
    """Everything the report shows, for revisions ``rev_a`` (old) and ``rev_b`` (new) of ``root``."""
    root = Path(root)
    params, metrics, errors = params_and_metrics(root, rev_a, rev_b)
    fs_a, arts_a = artifacts_at(root, rev_a)
    fs_b, arts_b = artifacts_at(root, rev_b)
    diffs, not_built = [], []
    for path in sorted(set(arts_a) | set(arts_b)):
        frames, problems = [], []
        for fs, arts, rev in ((fs_a, arts_a, rev_a), (fs_b, arts_b, rev_b)):
            if path not in arts:
                frames.append(None)
                continue
            try:
                frames.append(read_parquet(fs, path))
            except Exception as exc:  # noqa: BLE001 - a missing cache entry is reported, not fatal
                problems.append(f"{path} at {rev}: cannot read ({type(exc).__name__}: {exc}); "
                                f"run `dvc repro` and commit at that revision, or `dvc pull`")
                frames.append(None)
        if frames[0] is None and frames[1] is None:
            not_built.append(path)  # e.g. its stage never ran on either branch
            continue
        errors += problems
        diffs.append(diff_tables(frames[0], frames[1], path))
    return Comparison(rev_a, rev_b, params, metrics, diffs, top_videos(diffs, top), errors, not_built)


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


def render_html(cmp: Comparison) -> str:
    """A self-contained HTML page (inline CSS, plots as data: URIs, nothing fetched)."""
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>actparse compare {esc(cmp.rev_a)} vs {esc(cmp.rev_b)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}"
             "th{background:#f0f0f0}.none{color:#888}.err{color:#b00}img{max-width:100%}</style></head><body>",
             f"<h1>actparse compare</h1><p>A = <b>{esc(cmp.rev_a)}</b> &nbsp; B = <b>{esc(cmp.rev_b)}</b></p>"]
    for title, headers, rows in _sections(cmp):
        parts.append(f"<h2>{esc(title)}</h2>")
        if not rows:
            parts.append("<p class='none'>(none)</p>")
            continue
        parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>")
        for r in rows:
            parts.append("<tr>" + "".join(f"<td>{esc(_fmt(c))}</td>" for c in r) + "</tr>")
        parts.append("</table>")
    if cmp.not_built:
        parts.append("<p class='none'>Not built at either revision: " + esc(", ".join(cmp.not_built)) + "</p>")
    if cmp.errors:
        parts.append("<h2>Problems</h2><ul>" + "".join(f"<li class='err'>{esc(e)}</li>" for e in cmp.errors) + "</ul>")
    plots = _plots(cmp)
    if plots:
        parts.append("<h2>Plots</h2>")
        for title, uri in plots:
            parts.append(f"<h3>{esc(title)}</h3><img alt='{esc(title)}' src='{uri}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


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
        from .atomic import write_text  # atomic write like every artifact

        out = Path(args.html)
        write_text(out, render_html(cmp), encoding="utf-8")
        print(f"HTML report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
