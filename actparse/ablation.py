"""Seed 001's ablations as DVC experiments, and the Table-1-shaped table of their metrics.

Seed 001 Table 1 adds one idea per submission, cumulatively. Each row here is one
``dvc exp run -n <name> -S key=value ...`` that sets *every* ablation switch explicitly, so rows do
not depend on the order they run in or on what the workspace held before; DVC's run cache reuses
any stage whose deps and params match an earlier run (e.g. the part detector shared by rows 4-6).

Rows (cumulative, as seed 001 Table 1; the last one is params.yaml's default):

1. baseline: single ip-CSN for everything, unpainted part crops, detector boxes as they are,
   part states = the most frequent train state per (predicted action, part) (001 "submission 1");
2. + the ip+ir CSN ensemble for the video action (001 submission 2; BN freezing is the other half
   of that row, see below);
3. + pose-guided painting of part crops (001 §1.2, submission 3);
4. + keypoint box refinement (submission 4);
5. + video-level part-label conversion (001 §1.3, submission 5);
6. + the CSN ensemble for part-state parsing too (submission 6) = the default.

Extra rows change one thing of the default: 1 or 7 test clips per video (001 uses 7), and frozen
BN. ``csn.freeze_bn: auto`` freezes BN exactly when pretrained CSN weights are loaded (001 froze
BN while fine-tuning IG-65M / Sports-1M weights); the CPU default trains from scratch, where BN
statistics have nothing to keep, so "frozen BN" is its own row rather than part of row 2.

``actparse ablate`` runs the rows (``--dry-run`` prints the commands), collects each row's
``metrics/metrics.json`` into ``metrics/ablation.json`` and prints the table; ``--readme FILE`` also
writes it into a markdown file (docs/results.md) between the ``<!-- ablation:start -->`` /
``<!-- ablation:end -->`` markers; ``--table-only`` rebuilds the table from ``metrics/ablation.json``.
Every row runs on the grid's own synthetic test split (``--test-videos``, default 200: one video is
0.5 points), seed by seed (``--seeds``), keeps the evaluate stage's per-video records for the
bootstrap intervals, and the table's numbers go to ``metrics/ablation_001_table.json`` (a DVC
metrics file).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from actparse.metrics import bootstrap as BS

# The switches every row sets (key -> default value in params.yaml).
SWITCHES = ("csn.ensemble_weights.action.ir", "csn.ensemble_weights.default.ir", "parts.paint",
            "keypoints.refine", "part_labels.mode", "csn.test_clips", "csn.freeze_bn")
DEFAULT = {"csn.ensemble_weights.action.ir": 1.0, "csn.ensemble_weights.default.ir": 1.0, "parts.paint": True,
           "keypoints.refine": True, "part_labels.mode": "video_label", "csn.test_clips": 3, "csn.freeze_bn": "auto"}

COLUMNS = (("video_acc", "video acc"), ("part_ap50", "part AP50"), ("part_state_acc", "part-state acc"),
           ("tps_score", "TPS score"))
START, END = "<!-- ablation:start -->", "<!-- ablation:end -->"
SUMMARY = "metrics/ablation_001_table.json"  # the table's numbers, a DVC metrics file (dvc.yaml `metrics:`)


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    changes: dict = field(default_factory=dict)  # switches that differ from DEFAULT
    paper: str = ""  # seed 001's number for the same row (test score, %), where it has one

    def settings(self) -> dict:
        out = dict(DEFAULT)
        out.update(self.changes)
        return out


_BASE = {"csn.ensemble_weights.action.ir": 0.0, "csn.ensemble_weights.default.ir": 0.0, "parts.paint": False,
         "keypoints.refine": False, "part_labels.mode": "baseline"}
ROWS: tuple[Row, ...] = (
    Row("ablate-1-baseline", "1 baseline: ip-CSN, unpainted parts, raw boxes, most-frequent states", dict(_BASE),
        "45.11"),
    Row("ablate-2-ensemble", "2 + ip+ir CSN ensemble (action)", {**_BASE, "csn.ensemble_weights.action.ir": 1.0},
        "50.22"),
    Row("ablate-3-paint", "3 + pose-guided part painting",
        {**_BASE, "csn.ensemble_weights.action.ir": 1.0, "parts.paint": True}, "58.31"),
    Row("ablate-4-refine", "4 + keypoint box refinement",
        {"csn.ensemble_weights.default.ir": 0.0, "part_labels.mode": "baseline"}, "58.66"),
    Row("ablate-5-partlabels", "5 + video-level part labels", {"csn.ensemble_weights.default.ir": 0.0}, "61.10"),
    Row("ablate-6-default", "6 + CSN ensemble for part states (default)", {}, "61.37"),
    Row("ablate-clips-1", "default with 1 test clip", {"csn.test_clips": 1}),
    Row("ablate-clips-7", "default with 7 test clips (001)", {"csn.test_clips": 7}),
    Row("ablate-frozen-bn", "default with BN frozen (from scratch)", {"csn.freeze_bn": True}),
    Row("ablate-unpainted", "default with unpainted parts (001 Table 4)", {"parts.paint": False}),
)


def read_records(folder: Path) -> BS.Records:
    """The evaluate stage's per-video records (artifacts/eval_records/) for bootstrap intervals."""
    from actparse.schemas import read_df

    return BS.Records(read_df(folder / "detections.parquet", "eval_detections"),
                      read_df(folder / "ground_truth.parquet", "eval_ground_truth"),
                      read_df(folder / "videos.parquet", "eval_videos"))


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def exp_name(row: Row, seed: int | None = None) -> str:
    """The experiment of one row (and training seed: ``<row>-seed<k>``; None = params.yaml's seed)."""
    return row.name if seed is None else f"{row.name}-seed{seed}"


def exp_command(row: Row, seed: int | None = None, extra: dict | None = None, seed_key: str = "seed",
                targets=()) -> list[str]:
    """``dvc exp run`` of one row: every switch, the training seed (param ``seed_key``: the top-level
    ``seed``, or a seed system's own ``<system>.seed``), ``extra`` settings shared by all rows (e.g.
    ``{"synth.n_test": 200}``: a larger test split for the whole grid), and the stages to reproduce
    (``targets``: none = the whole DAG)."""
    cmd = ["dvc", "exp", "run", "--name", exp_name(row, seed)]
    for k, v in row.settings().items():
        cmd += ["-S", f"{k}={_value(v)}"]
    if seed is not None:
        cmd += ["-S", f"{seed_key}={seed}"]
    for k, v in (extra or {}).items():
        cmd += ["-S", f"{k}={_value(v)}"]
    return cmd + list(targets)


RECORDS = Path("metrics") / "ablation_records"  # per experiment: the evaluate stage's per-video records


def run_rows(rows, root: Path, *, seeds=(None,), extra: dict | None = None, dry_run: bool = False,
             out=None, metrics_file: str = "metrics/metrics.json", store: str = "metrics/ablation.json",
             records: str = "artifacts/eval_records", seed_key: str = "seed", targets=()) -> dict:
    """Run each row (once per training seed) as a DVC experiment; returns {experiment: record}.

    Each experiment's metrics go into ``store`` (metrics/ablation.json) and its per-video records
    (``records``: the evaluate stage's folder, or a seed system's ``video_counts.parquet``) into
    metrics/ablation_records/<experiment>/ (what the bootstrap intervals are computed from). Progress
    and an estimate of the time left are printed after every experiment. The workspace is restored after."""
    out = out or sys.stdout
    results: dict = {}
    store = root / store
    if store.exists():
        results = json.loads(store.read_text())
    jobs = [(row, seed) for seed in seeds for row in rows]  # seed by seed: a stopped grid leaves whole seeds
    t_start = time.time()
    try:
        for i, (row, seed) in enumerate(jobs, 1):
            name = exp_name(row, seed)
            cmd = exp_command(row, seed, extra, seed_key, targets)
            print(f"[{i}/{len(jobs)}] $ " + shlex.join(cmd), file=out, flush=True)
            if dry_run:
                continue
            t0 = time.time()
            proc = subprocess.run(cmd, cwd=root)
            if proc.returncode != 0:
                raise RuntimeError(f"experiment {name} failed (exit {proc.returncode}): {shlex.join(cmd)}")
            metrics = json.loads((root / metrics_file).read_text())
            rec_dir = root / RECORDS / name
            src = root / records
            kept = _keep_records(src, rec_dir)
            results[name] = {"row": row.name, "seed": seed, "label": row.label,
                             "settings": {**row.settings(), **(extra or {}),
                                          **({seed_key: seed} if seed is not None else {})},
                             "seconds": round(time.time() - t0, 1), "metrics": metrics,
                             "records": (RECORDS / name).as_posix() if kept else None}
            _atomic_write(store, json.dumps(results, indent=2) + "\n")
            spent = time.time() - t_start
            print(f"[{i}/{len(jobs)}] {name} done in {time.time() - t0:.0f} s; about "
                  f"{spent / i * (len(jobs) - i) / 60:.0f} min left", file=out, flush=True)
    finally:
        if not dry_run:
            _restore(root)
    return results


def _keep_records(src: Path, rec_dir: Path) -> bool:
    """Copy an experiment's records (a folder's files, or one file) into ``rec_dir``, atomically."""
    if not (src.is_dir() or src.is_file()):
        return False
    tmp = rec_dir.with_name(rec_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    if src.is_dir():
        shutil.copytree(src, tmp)
    else:
        tmp.mkdir(parents=True)
        shutil.copy2(src, tmp / src.name)
    if rec_dir.exists():
        shutil.rmtree(rec_dir)
    os.replace(tmp, rec_dir)
    return True


def _restore(root: Path) -> None:
    """Back to the committed params / lock / metrics and their outputs (the rows leave theirs behind)."""
    subprocess.run(["git", "checkout", "--", "params.yaml", "dvc.lock"], cwd=root, check=False)
    tracked = subprocess.run(["git", "ls-files", "metrics", "plots"], cwd=root, capture_output=True, text=True).stdout.split()
    keep = [p for p in tracked if not p.startswith("metrics/ablation") and not p.startswith(RECORDS.as_posix() + "/")]
    if keep:
        subprocess.run(["git", "checkout", "--", *keep], cwd=root, check=False)
    subprocess.run(["dvc", "checkout", "--force"], cwd=root, check=False)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fmt(x) -> str:
    return "-" if x is None else f"{100 * float(x):.1f}"


TEST_VIDEOS = 200  # the grids' own synthetic test split (one video = 0.5 points of a per-video accuracy)
N_BOOT = 1000  # bootstrap replicates for every interval of the table (seeded: the table is reproducible)


class _Intervals:
    """Bootstrap replicates of each row's metrics (averaged over its training seeds), on shared draws
    of the test videos so that differences between rows are paired."""

    def __init__(self, results: dict, root: Path):
        self.results, self.root = results, Path(root)
        self._records: dict = {}
        self._rows: dict = {}
        self._W = self._videos = None

    def runs(self, row: str) -> list[dict]:
        """A row's runs, ordered by training seed (so that seed draws pair two rows' runs)."""
        runs = [v for k, v in self.results.items() if v.get("row", k) == row]
        return sorted(runs, key=lambda r: (r.get("seed") is not None, r.get("seed") or 0))

    def _load(self, run: dict):
        rel = run.get("records")
        if not rel:
            return None
        if rel not in self._records:
            folder = self.root / rel
            self._records[rel] = read_records(folder) if (folder / "videos.parquet").exists() else None
        return self._records[rel]

    def replicates(self, row: str) -> tuple[dict, dict] | None:
        """(point, replicates) of every metric for a row (computed once per row), or None."""
        if row not in self._rows:
            self._rows[row] = self._replicates(row)
        return self._rows[row]

    def _replicates(self, row: str) -> tuple[dict, dict] | None:
        """(point, replicates) of every metric for a row, or None when a run of it has no records."""
        recs = [self._load(r) for r in self.runs(row)]
        if not recs or any(r is None or not len(r.videos) for r in recs):
            return None
        videos = recs[0].video_names
        if any(r.video_names != videos for r in recs):
            return None
        if self._videos is None:
            self._videos, self._W = videos, BS.draw_weights(len(videos), N_BOOT, seed=0)
        elif videos != self._videos:
            return None
        ones = np.ones((1, len(videos)))
        points = [BS.replicate(r, ones, videos) for r in recs]
        reps = [BS.replicate(r, self._W, videos) for r in recs]
        point = {m: float(np.mean([p[m][0] for p in points])) for m in BS.METRICS}
        rep = {m: BS.over_seeds([x[m] for x in reps], N_BOOT) for m in BS.METRICS}
        return point, rep

    def interval(self, row: str, key: str):
        got = self.replicates(row) if key in BS.METRICS else None
        return None if got is None else BS.bc_interval(got[1][key], got[0][key], 0.95)

    def delta(self, before: str, after: str, key: str):
        a, b = (self.replicates(before), self.replicates(after)) if key in BS.METRICS else (None, None)
        if a is None or b is None:
            return None
        lo, hi = BS.bc_interval(b[1][key] - a[1][key], b[0][key] - a[0][key], 0.95)
        return b[0][key] - a[0][key], lo, hi


def _mean(runs: list[dict], key: str):
    vals = [r["metrics"].get(key) for r in runs if r["metrics"].get(key) is not None]
    return (float(np.mean(vals)), float(np.std(vals))) if vals else (None, None)


def _cell(mean, sd, n: int, iv) -> str:
    text = _fmt(mean)
    if mean is not None and n > 1:
        text += f" ±{100 * sd:.1f}"
    if iv is not None and mean is not None:
        text += f" [{_fmt(iv[0])}, {_fmt(iv[1])}]"
    return text


def table(results: dict, rows=ROWS, root: Path = Path("."), iv: "_Intervals | None" = None) -> str:
    """Markdown table in the shape of seed 001 Table 1 (numbers in %, delta of TPS score vs the row above).

    A row run with several training seeds shows their mean ± standard deviation; where the per-video
    records are kept, [lo, hi] is the 95% bootstrap interval over test videos (paired for Δ)."""
    iv = iv or _Intervals(results, root)
    head = "| row | " + " | ".join(c for _, c in COLUMNS) + " | Δ TPS | 001 test score |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    prev = None
    for row in rows:
        runs = iv.runs(row.name)
        if not runs:
            continue
        cells = []
        for k, _ in COLUMNS:
            mean, sd = _mean(runs, k)
            cells.append(_cell(mean, sd, len(runs), iv.interval(row.name, k)))
        score = _mean(runs, "tps_score")[0]
        cumulative = row.name[len("ablate-")].isdigit()
        delta = ""
        if cumulative and prev is not None and score is not None:
            d = iv.delta(prev[0], row.name, "tps_score")
            delta = f"{100 * (score - prev[1]):+.1f}"
            if d is not None:
                delta += f" [{100 * d[1]:+.1f}, {100 * d[2]:+.1f}]"
        if cumulative:
            prev = (row.name, score)
        lines.append(f"| {row.label} | " + " | ".join(cells) + f" | {delta} | {row.paper or ''} |")
    return "\n".join(lines)


CHECKS = (
    ("ensemble raises video accuracy (001 Table 3)", "ablate-1-baseline", "ablate-2-ensemble", "video_acc"),
    ("painting raises part AP (001 Table 4)", "ablate-2-ensemble", "ablate-3-paint", "part_ap50"),
    ("painting raises part AP in the default (refined boxes)", "ablate-unpainted", "ablate-6-default", "part_ap50"),
    ("box refinement raises the TPS score (001 Table 1 row 4)", "ablate-3-paint", "ablate-4-refine", "tps_score"),
    ("video-level part labels beat most-frequent states (001 §1.3)", "ablate-4-refine", "ablate-5-partlabels",
     "tps_score"),
    ("ensemble for part states raises the TPS score (001 row 6)", "ablate-5-partlabels", "ablate-6-default",
     "tps_score"),
    ("7 clips beat 1 clip in video accuracy", "ablate-clips-1", "ablate-clips-7", "video_acc"),
    ("frozen BN beats trainable BN in video accuracy (001 Table 3; it fine-tunes pretrained weights)",
     "ablate-6-default", "ablate-frozen-bn", "video_acc"),
)


def directions(results: dict, root: Path = Path("."), iv: "_Intervals | None" = None) -> list[str]:
    """Seed 001's claims checked on these results, one line each.

    With per-video records: the paired 95% bootstrap interval of (after - before) decides, 'holds'
    above zero, 'reverses' below, 'ties' when it contains zero (actparse.metrics.bootstrap.verdict).
    Without them (results from before records were kept): 'holds', 'does NOT hold', or 'ties' when
    equal to the 0.1 % printed, with "(no interval)"."""
    iv = iv or _Intervals(results, root)
    out = []
    for text, before_row, after_row, key in CHECKS:
        before = _mean(iv.runs(before_row), key)[0]
        after = _mean(iv.runs(after_row), key)[0]
        if before is None or after is None:
            continue
        d = iv.delta(before_row, after_row, key)
        if d is not None:
            verdict = BS.verdict(d[1], d[2])
            out.append(f"- {text}: {_fmt(before)} -> {_fmt(after)}, Δ {100 * d[0]:+.1f} "
                       f"[{100 * d[1]:+.1f}, {100 * d[2]:+.1f}]: {verdict}")
            continue
        # equal as printed (0.1 %) is a tie, not a direction
        if _fmt(after) == _fmt(before):
            verdict = "ties"
        else:
            verdict = "holds" if after > before else "does NOT hold"
        out.append(f"- {text}: {_fmt(before)} -> {_fmt(after)}: {verdict} (no interval)")
    return out


def summary(results: dict, root: Path = Path("."), iv: "_Intervals | None" = None) -> dict:
    """The table as numbers (x100), for metrics/ablation_001_table.json (a DVC metrics file): per row
    and metric the mean over training seeds, their standard deviation and the bootstrap interval; per
    direction the paired delta, its interval and verdict (None where the runs kept no records)."""
    iv = iv or _Intervals(results, root)
    rows = {}
    for row in ROWS:
        runs = iv.runs(row.name)
        if not runs:
            continue
        cells = {}
        for k, _ in COLUMNS:
            mean, sd = _mean(runs, k)
            if mean is None:
                continue
            cell = {"mean": round(100 * mean, 3), "runs": len(runs)}
            if len(runs) > 1:
                cell["sd"] = round(100 * sd, 3)
            ci = iv.interval(row.name, k)
            if ci is not None:
                cell["lo"], cell["hi"] = round(100 * ci[0], 3), round(100 * ci[1], 3)
            cells[k] = cell
        rows[row.name] = {"label": row.label, **cells}
    checks = {}
    for text, before_row, after_row, key in CHECKS:
        before, after = _mean(iv.runs(before_row), key)[0], _mean(iv.runs(after_row), key)[0]
        if before is None or after is None:
            continue
        d = iv.delta(before_row, after_row, key)
        checks[text.split(" (")[0]] = ({"text": text, "delta": round(100 * d[0], 3), "lo": round(100 * d[1], 3), "hi": round(100 * d[2], 3),
                         "verdict": BS.verdict(d[1], d[2])} if d is not None else
                        {"text": text, "delta": round(100 * (after - before), 3), "lo": None, "hi": None,
                         "verdict": None})
    return {"system": "001", "lines": rows, "directions": checks}


def render(results: dict, root: Path = Path("."), iv: "_Intervals | None" = None) -> str:
    iv = iv or _Intervals(results, root)
    return table(results, root=root, iv=iv) + "\n\n" + "\n".join(directions(results, root=root, iv=iv))


def write_readme(readme: Path, text: str, system: str = "001") -> None:
    """Write ``text`` between the markers ``<!-- ablation:start/end -->`` (seed 001) or
    ``<!-- ablation-<system>:start/end -->`` of a markdown file."""
    start, end = (START, END) if system == "001" else (f"<!-- ablation-{system}:start -->",
                                                       f"<!-- ablation-{system}:end -->")
    src = readme.read_text()
    if start not in src or end not in src:
        raise ValueError(f"{readme}: no {start} ... {end} markers to write the ablation table between")
    head, rest = src.split(start, 1)
    _, tail = rest.split(end, 1)
    _atomic_write(readme, f"{head}{start}\n{text}\n{end}{tail}")


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="actparse ablate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    from actparse import seed_grids as G

    ap.add_argument("--system", default="001", choices=["001", *G.GRIDS],
                    help="whose ablations: 001 (default, Table 1 rows below), or seed 003 / 004 / 000's grid "
                         "(" + "; ".join(f"{k}: {', '.join(r.name for r in g.rows)}" for k, g in G.GRIDS.items()) + ")")
    ap.add_argument("--rows", nargs="*", help="row names to run (default: all): " + ", ".join(r.name for r in ROWS))
    ap.add_argument("--seeds", nargs="*", type=int, default=None,
                    help="training seeds to run every row with (e.g. --seeds 0 1 2; each is an experiment "
                         "<row>-seed<k>); default: params.yaml's seed, one experiment per row")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for every row, passed to dvc exp run -S (repeatable), e.g. "
                         "--set synth.n_test=200 for a test split where one video is 0.5 points")
    ap.add_argument("--test-videos", type=int, default=TEST_VIDEOS, metavar="N",
                    help=f"the grid's own synthetic test split: synth.n_test=N for every row (default {TEST_VIDEOS}: "
                         "one video is at most 0.5 points; the default run keeps params.yaml's smaller split); "
                         "0 keeps params.yaml's; ignored when --set gives synth.n_test")
    ap.add_argument("--dry-run", action="store_true", help="print the dvc exp commands, run nothing")
    ap.add_argument("--table-only", action="store_true", help="only rebuild the table from metrics/ablation.json")
    ap.add_argument("--readme", type=Path, default=None,
                    help="also write the table into this markdown file, between <!-- ablation:start/end --> "
                         "(seed 001) or <!-- ablation-<system>:start/end --> markers (e.g. docs/seeds.md)")
    ap.add_argument("--root", type=Path, default=Path("."), help="repository root")
    a = ap.parse_args(argv)
    grid = G.GRIDS.get(a.system)
    all_rows = grid.rows if grid else ROWS
    names = {r.name for r in all_rows}
    if a.rows:
        bad = sorted(set(a.rows) - names)
        if bad:
            ap.error(f"unknown rows {bad}; known: {sorted(names)}")
    rows = [r for r in all_rows if not a.rows or r.name in a.rows]
    store = a.root / (grid.store if grid else "metrics/ablation.json")
    if a.table_only:
        if not store.exists():
            ap.error(f"{store} does not exist: run `actparse ablate` first")
        results = json.loads(store.read_text())
    else:
        seeds = tuple(a.seeds) if a.seeds else (None,)
        extra = {}
        for item in a.set:
            key, sep, value = item.partition("=")
            if not sep or not key:
                ap.error(f"--set {item!r}: expected KEY=VALUE")
            extra[key] = value
        if a.test_videos < 0:
            ap.error("--test-videos must be >= 0")
        if a.test_videos and "synth.n_test" not in extra:
            extra["synth.n_test"] = a.test_videos
        kw = {"metrics_file": grid.metrics_file, "store": grid.store, "records": grid.records or "no-records",
              "seed_key": grid.seed_key, "targets": grid.targets} if grid else {}
        results = run_rows(rows, a.root, seeds=seeds, extra=extra, dry_run=a.dry_run, **kw)
        if a.dry_run:
            return 0
    iv = G.Intervals(grid, results, a.root) if grid else _Intervals(results, a.root)  # shared by table and numbers
    text = G.render(grid, results, a.root, iv) if grid else render(results, a.root, iv)
    numbers = G.summary(grid, results, a.root, iv) if grid else summary(results, a.root, iv)
    _atomic_write(a.root / (grid.summary if grid else SUMMARY), json.dumps(numbers, indent=2) + "\n")
    print(text)
    if a.readme:
        write_readme(a.readme, text, a.system)
    return 0


if __name__ == "__main__":
    sys.exit(main())
