"""The other seed systems' ablations (seeds 003, 004, 000) as DVC experiments, one table each.

``actparse ablate --system 003|004|000`` runs a grid's rows as ``dvc exp run`` experiments (every
switch of the grid set explicitly, ``--seeds`` for several training seeds), keeps each experiment's
metrics file in ``metrics/ablation_<system>.json`` and prints the table in the shape of the seed's
paper table:

* 003 (MultiSports): Linear vs PCCA head, each before (phase 1) and after decoupled learning, and
  PCCA at a second input scale; frame-mAP@0.5 and video-mAP (x100), and the decoupled gain on the
  tail half of the classes. Train split long-tailed (``synth.long_tail: 10``) and actions that only
  their context tells apart (``synth.context: true``: a prop beside the person) as in docs/seeds.md.
* 004 (FineGym): single pathway per level vs the joint model (1:2:4 loss), top-1 and mean-class
  accuracy per level.
* 000 (part states): part crops, + action info, + RoI pooling, + multi-head attention, and the
  most-frequent-state prior, part-state top-1.

Each grid varies the system's own training seed (``<section>.seed``: the default pipeline it reads
is not retrained), reproduces only its own last stage and what that depends on, and keeps each
experiment's per-video records (``video_counts.parquet`` of gym_evaluate / partattn_predict,
stad_evaluate's ``frame_records/``) in ``metrics/ablation_records/``. :class:`Intervals` turns them
into 95% bootstrap intervals over test videos and training seeds (bias-corrected percentile), for
every cell and, paired, for every direction: "holds" / "reverses" only when the interval excludes
zero, else "ties". Runs without records fall back to the t-interval over seeds (two or more seeds)
or "(one run, no interval)". :func:`summary` gives the table's numbers for
``metrics/ablation_<system>_table.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class GridRow:
    """One experiment of a grid (the same interface as ``actparse.ablation.Row``)."""
    name: str
    changes: dict

    @property
    def label(self) -> str:
        return self.name

    def settings(self) -> dict:
        return dict(self.changes)


@dataclass(frozen=True)
class Line:
    """One line of the table: a row's metrics file read at ``prefix`` (e.g. "phase1.")."""
    label: str
    row: str
    prefix: str = ""
    paper: str = ""


@dataclass(frozen=True)
class Check:
    text: str
    before: tuple[str, str]  # (row, metric path)
    after: tuple[str, str]


@dataclass(frozen=True)
class Grid:
    system: str
    title: str
    metrics_file: str
    rows: tuple[GridRow, ...]
    columns: tuple[tuple[str, str], ...]  # (metric path under the line's prefix, header)
    lines: tuple[Line, ...]
    checks: tuple[Check, ...] = field(default_factory=tuple)
    scale: float = 1.0  # multiply values by this for the table
    section: str = ""  # the system's params section: its own training seed is <section>.seed
    records: str | None = None  # its evaluation's per-video records (video_counts.parquet, or 003's frame records)
    targets: tuple[str, ...] = ()  # the stages an experiment reproduces (and what they depend on)

    @property
    def store(self) -> str:
        return f"metrics/ablation_{self.system}.json"

    @property
    def summary(self) -> str:
        """The table's numbers (means, spreads, intervals, directions): a DVC metrics file."""
        return f"metrics/ablation_{self.system}_table.json"

    @property
    def seed_key(self) -> str:
        return f"{self.section}.seed" if self.section else "seed"


_STAD = {"stad.enabled": True, "synth.long_tail": 10, "synth.context": True}
_PA = {"partattn.enabled": True}
GRIDS: dict[str, Grid] = {g.system: g for g in (
    Grid("003", "Seed 003 (MultiSports): head and decoupled learning, frame-mAP / video-mAP x100", "metrics/stad.json",
         (GridRow("stad-linear", {**_STAD, "stad.head": "linear", "stad.short_side": 64}),
          GridRow("stad-pcca", {**_STAD, "stad.head": "pcca", "stad.short_side": 64}),
          GridRow("stad-pcca-96", {**_STAD, "stad.head": "pcca", "stad.short_side": 96})),
         (("frame_map@0.5", "frame-mAP@0.5"), ("video_map@0.2", "video-mAP@0.2"), ("video_map@0.5", "video-mAP@0.5"),
          ("video_map@0.10:0.90", "video-mAP@0.10:0.90")),
         (Line("Linear, phase 1", "stad-linear", "phase1."), Line("Linear + decoupled", "stad-linear"),
          Line("PCCA, phase 1", "stad-pcca", "phase1."), Line("PCCA + decoupled", "stad-pcca"),
          Line("PCCA + decoupled, short side 96", "stad-pcca-96")),
         (Check("PCCA beats the Linear head in frame-mAP (003: +10.45)", ("stad-linear", "frame_map@0.5"),
                ("stad-pcca", "frame_map@0.5")),
          Check("decoupled learning raises the tail classes' frame-AP (003)", ("stad-pcca", "zero"),
                ("stad-pcca", "decoupled_gain.tail_classes")),
          Check("a larger input scale raises frame-mAP (003: multi-scale)", ("stad-pcca", "frame_map@0.5"),
                ("stad-pcca-96", "frame_map@0.5"))),
         section="stad", records="artifacts/stad/frame_records", targets=("stad_evaluate",)),
    Grid("004", "Seed 004 (FineGym): single pathways vs the joint model, top-1 / mean-class x100", "metrics/gym.json",
         (GridRow("gym-joint", {"gym.enabled": True}),),
         (("event.top1", "event top-1"), ("event.mean_class", "event mean-class"), ("set.top1", "set top-1"),
          ("set.mean_class", "set mean-class"), ("element.top1", "element top-1"),
          ("element.mean_class", "element mean-class")),
         (Line("single pathway per level", "gym-joint", "single."), Line("joint (1:2:4 loss)", "gym-joint", "joint.")),
         (Check("joint beats single pathways in element top-1 (004 Table 2)", ("gym-joint", "single.element.top1"),
                ("gym-joint", "joint.element.top1")),
          Check("joint beats single pathways in element mean-class (004 Table 2)",
                ("gym-joint", "single.element.mean_class"), ("gym-joint", "joint.element.mean_class")),
          Check("joint beats single pathways in set top-1", ("gym-joint", "single.set.top1"),
                ("gym-joint", "joint.set.top1")),
          Check("joint beats single pathways in event top-1", ("gym-joint", "single.event.top1"),
                ("gym-joint", "joint.event.top1"))),
         section="gym", records="artifacts/gym/video_counts.parquet", targets=("gym_evaluate",)),
    Grid("000", "Seed 000 (part states): components added one at a time, part-state top-1 x100", "metrics/partattn.json",
         (GridRow("partattn-crops", {**_PA, "partattn.roi_mode": "crop", "partattn.use_action": False,
                                     "partattn.use_attention": False}),
          GridRow("partattn-action", {**_PA, "partattn.roi_mode": "crop", "partattn.use_action": True,
                                      "partattn.use_attention": False}),
          GridRow("partattn-roi", {**_PA, "partattn.roi_mode": "align", "partattn.use_action": True,
                                   "partattn.use_attention": False}),
          GridRow("partattn-attention", {**_PA, "partattn.roi_mode": "align", "partattn.use_action": True,
                                         "partattn.use_attention": True})),
         (("top1", "part-state top-1"),),
         (Line("part crops", "partattn-crops", "model.", "72.4"), Line("+ action info", "partattn-action", "model.", "73.6"),
          Line("+ RoI pooling", "partattn-roi", "model.", "74.2"),
          Line("+ multi-head attention", "partattn-attention", "model.", "74.9"),
          Line("prior: most frequent train state per (action, part)", "partattn-attention", "prior.")),
         (Check("action info helps (000)", ("partattn-crops", "model.top1"), ("partattn-action", "model.top1")),
          Check("RoI pooling helps (000)", ("partattn-action", "model.top1"), ("partattn-roi", "model.top1")),
          Check("multi-head attention helps (000)", ("partattn-roi", "model.top1"), ("partattn-attention", "model.top1")),
          Check("the full model beats the prior", ("partattn-attention", "prior.top1"),
                ("partattn-attention", "model.top1"))),
         section="partattn", records="artifacts/partattn/video_counts.parquet", targets=("partattn_predict",)),
)}


def lookup(metrics: dict, path: str):
    """A value at a dotted path of a metrics file ("zero" is the constant 0, for gains); None if absent.
    Keys may themselves hold dots ("frame_map@0.5"): the longest key that matches is taken first."""
    if path == "zero":
        return 0.0
    node, rest = metrics, path
    while rest:
        if not isinstance(node, dict):
            return None
        for key in sorted((k for k in node if rest == k or rest.startswith(k + ".")), key=len, reverse=True):
            node, rest = node[key], rest[len(key) + 1:]
            break
        else:
            return None
    return node if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def runs_of(results: dict, row: str) -> list[dict]:
    return [r["metrics"] for k, r in results.items() if r.get("row", k) == row]


def _values(results: dict, row: str, path: str) -> list[float]:
    return [v for v in (lookup(m, path) for m in runs_of(results, row)) if v is not None]


def seed_interval(diffs: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """t-interval of the mean of per-seed differences (None with fewer than two seeds)."""
    n = len(diffs)
    if n < 2:
        return None
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return mean - half, mean + half


def _num(x, scale: float) -> str:
    return "-" if x is None else f"{scale * x:.1f}"


N_BOOT = 1000  # bootstrap replicates (seeded draws: the tables are reproducible)


class Intervals:
    """Bootstrap intervals over test videos (and training seeds) from the runs' per-video records.

    Every run of a grid is scored on the same test videos; one set of video draws is shared by all
    rows, and the seed draws depend only on the number of runs (runs ordered by seed), so differences
    between rows are paired in both. Records are a ``video_counts`` table (seeds 004, 000: a metric
    path ``<key>.<stat>`` such as ``model.top1`` or ``joint.element.mean_class`` reads key ``<key>``)
    or frame-AP records (seed 003: ``frame_map@0.5``, ``phase1.frame_map@0.5`` and the decoupled gain
    on the tail classes). Values are x100 like the metrics files; None where a run has no records or
    its records cannot give the path."""

    def __init__(self, grid: Grid, results: dict, root: Path):
        from actparse.metrics import bootstrap as BS

        self.BS, self.grid, self.results, self.root = BS, grid, results, Path(root)
        self._counts: dict = {}
        self._memo: dict = {}
        names: set = set()
        for run in results.values():
            rec = self._load(run)
            if rec is not None:
                names |= self._videos_of(rec)
        self.videos = sorted(names)
        self.W = BS.draw_weights(len(self.videos), N_BOOT, seed=0) if self.videos else None

    def _load(self, run: dict):
        """A run's kept records: a ``video_counts`` table, or frame-AP records {"detections",
        "ground_truth"} (seed 003), or None."""
        rel = run.get("records")
        if not rel:
            return None
        if rel not in self._counts:
            from actparse.schemas import read_df

            folder = self.root / rel
            if (folder / "video_counts.parquet").is_file():
                self._counts[rel] = read_df(folder / "video_counts.parquet", "video_counts")
            elif (folder / "detections.parquet").is_file() and (folder / "ground_truth.parquet").is_file():
                self._counts[rel] = {"detections": read_df(folder / "detections.parquet", "eval_detections"),
                                     "ground_truth": read_df(folder / "ground_truth.parquet", "eval_ground_truth")}
            else:
                self._counts[rel] = None
        return self._counts[rel]

    @staticmethod
    def _videos_of(rec) -> set:
        if isinstance(rec, dict):
            return set(rec["ground_truth"]["video"]) | (set(rec["detections"]["video"]) - {""})
        return set(rec["video"])

    def _one(self, run: dict, rec, path: str, W: np.ndarray):
        """One run's replicates of a metric path (fractions), or None where its records can't give it."""
        BS = self.BS
        if path == "zero":
            return np.zeros(len(W))
        if isinstance(rec, dict):  # frame-AP records: "<prefix>frame_map@0.5" or the tail-class gain
            dets, gts = rec["detections"], rec["ground_truth"]

            def voc(metric, classes=None):
                if not (gts["metric"] == metric).any():
                    return None
                return BS.voc_ap_replicates(dets[dets["metric"] == metric], gts[gts["metric"] == metric], W,
                                            self.videos, classes)
            if path == "decoupled_gain.tail_classes":
                ranked = list((run["metrics"].get("per_class_frame_ap") or {}))
                tail = ranked[len(ranked) // 2:]
                a, b = voc("frame_map@0.5", tail), voc("phase1.frame_map@0.5", tail)
                return None if a is None or b is None or not tail else a - b
            return voc(path)
        key, _, stat = path.rpartition(".")
        if stat not in BS.COUNT_STATS or not key or not (rec["key"] == key).any():
            return None
        return BS.count_replicates(rec, key, stat, W, self.videos)

    def runs(self, row: str) -> list[dict]:
        runs = [r for k, r in self.results.items() if r.get("row", k) == row]
        return sorted(runs, key=lambda r: (r.get("seed") is not None, r.get("seed") or 0))

    def replicates(self, row: str, path: str):
        """(point, replicates) of a row's metric averaged over its runs (x100; computed once), or None."""
        if (row, path) not in self._memo:
            self._memo[row, path] = self._replicates(row, path)
        return self._memo[row, path]

    def _replicates(self, row: str, path: str):
        runs = self.runs(row)
        if self.W is None or not runs:
            return None
        recs = [self._load(r) for r in runs]
        if any(r is None for r in recs) and path != "zero":
            return None
        ones = np.ones((1, len(self.videos)))
        points, reps = [], []
        for run, rec in zip(runs, recs):
            p, r = self._one(run, rec, path, ones), self._one(run, rec, path, self.W)
            if p is None or r is None:
                return None
            points.append(p[0])
            reps.append(r)
        return 100 * float(np.mean(points)), 100 * self.BS.over_seeds(reps, N_BOOT)

    def interval(self, row: str, path: str):
        got = self.replicates(row, path)
        return None if got is None else self.BS.bc_interval(got[1], got[0])

    def delta(self, before: tuple[str, str], after: tuple[str, str]):
        a, b = self.replicates(*before), self.replicates(*after)
        if a is None or b is None or len(self.runs(before[0])) != len(self.runs(after[0])):
            return None
        lo, hi = self.BS.bc_interval(b[1] - a[1], b[0] - a[0])
        return b[0] - a[0], lo, hi


def _cell(grid: Grid, results: dict, iv: Intervals, line: Line, path: str) -> dict | None:
    """One cell's numbers (scaled): mean over the runs, their standard deviation (two or more runs)
    and the bootstrap interval (where records give it); None when no run has the value."""
    vals = _values(results, line.row, line.prefix + path)
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    cell = {"mean": grid.scale * mean, "runs": len(vals)}
    if len(vals) > 1:
        cell["sd"] = grid.scale * math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    ci = iv.interval(line.row, line.prefix + path)
    if ci is not None:
        cell["lo"], cell["hi"] = grid.scale * ci[0], grid.scale * ci[1]
    return cell


def table(grid: Grid, results: dict, root: Path = Path("."), iv: "Intervals | None" = None) -> str:
    """The grid's table: per line and column the mean over training seeds (± their standard deviation)
    and, where the runs kept per-video records, the 95% bootstrap interval [lo, hi]."""
    iv = iv or Intervals(grid, results, root)
    head = "| | " + " | ".join(h for _, h in grid.columns) + " | paper |"
    out = [f"**{grid.title}**", "", head, "|" + "---|" * (len(grid.columns) + 2)]
    for line in grid.lines:
        if not runs_of(results, line.row):
            continue
        cells = []
        for path, _ in grid.columns:
            c = _cell(grid, results, iv, line, path)
            text = "-" if c is None else _num(c["mean"], 1.0)
            if c is not None and "sd" in c:
                text += f" ±{c['sd']:.1f}"
            if c is not None and "lo" in c:
                text += f" [{_num(c['lo'], 1.0)}, {_num(c['hi'], 1.0)}]"
            cells.append(text)
        out.append(f"| {line.label} | " + " | ".join(cells) + f" | {line.paper} |")
    return "\n".join(out)


def direction(grid: Grid, check: Check, results: dict, iv: Intervals) -> dict | None:
    """One check: the mean difference, its interval and verdict, and how the interval was made.

    With per-video counts for both rows: the paired bootstrap over test videos and training seeds.
    Otherwise the t-interval over the seeds both rows ran with (two or more), else no interval."""
    from actparse.metrics.bootstrap import verdict

    before = {r.get("seed"): lookup(r["metrics"], check.before[1]) for k, r in results.items()
              if r.get("row", k) == check.before[0]}
    after = {r.get("seed"): lookup(r["metrics"], check.after[1]) for k, r in results.items()
             if r.get("row", k) == check.after[0]}
    seeds = [s for s in after if s in before and before[s] is not None and after[s] is not None]
    if not seeds:
        return None
    diffs = [after[s] - before[s] for s in seeds]
    out = {"check": check.text, "delta": sum(diffs) / len(diffs), "seeds": len(seeds), "lo": None, "hi": None,
           "interval": None, "verdict": None}
    boot = iv.delta(check.before, check.after)
    if boot is not None:
        out.update(delta=boot[0], lo=boot[1], hi=boot[2], interval="bootstrap over videos and seeds")
    else:
        t = seed_interval(diffs)
        if t is not None:
            out.update(lo=t[0], hi=t[1], interval="t over seeds")
    if out["lo"] is not None:
        out["verdict"] = verdict(out["lo"], out["hi"])
    return out


def directions(grid: Grid, results: dict, root: Path = Path("."), iv: "Intervals | None" = None) -> list[str]:
    """Each check as a line: mean difference, its 95% interval and the verdict."""
    iv = iv or Intervals(grid, results, root)
    out = []
    for c in grid.checks:
        d = direction(grid, c, results, iv)
        if d is None:
            continue
        n = f"{d['seeds']} seed{'s' if d['seeds'] > 1 else ''}"
        if d["verdict"] is None:
            out.append(f"- {c.text}: Δ {_num(d['delta'], grid.scale)} (one run, no interval)")
        else:
            out.append(f"- {c.text}: Δ {_num(d['delta'], grid.scale)} [{_num(d['lo'], grid.scale)}, "
                       f"{_num(d['hi'], grid.scale)}] ({d['interval']}, {n}): {d['verdict']}")
    return out


def summary(grid: Grid, results: dict, root: Path = Path("."), iv: "Intervals | None" = None) -> dict:
    """The table as numbers, for metrics/ablation_<system>_table.json (a DVC metrics file)."""
    iv = iv or Intervals(grid, results, root)
    lines: dict = {}
    for line in grid.lines:
        runs = runs_of(results, line.row)
        if not runs:
            continue
        cells = {}
        for path, _ in grid.columns:
            c = _cell(grid, results, iv, line, path)
            if c is not None:
                cells[path] = {k: (v if k == "runs" else round(v, 3)) for k, v in c.items()}
        lines[line.row + ("." + line.prefix.rstrip(".") if line.prefix else "")] = {"label": line.label, **cells}
    checks = {}
    for c in grid.checks:
        d = direction(grid, c, results, iv)
        if d is not None:
            checks[c.text.split(" (")[0]] = {"text": c.text, **{k: (round(grid.scale * v, 3) if isinstance(v, float)
                                                                     else v) for k, v in d.items() if k != "check"}}
    return {"system": grid.system, "lines": lines, "directions": checks}


def render(grid: Grid, results: dict, root: Path = Path("."), iv: "Intervals | None" = None) -> str:
    iv = iv or Intervals(grid, results, root)
    return table(grid, results, root, iv) + "\n\n" + "\n".join(directions(grid, results, root, iv))


def load(root: Path, grid: Grid) -> dict:
    store = Path(root) / grid.store
    return json.loads(store.read_text()) if store.exists() else {}
