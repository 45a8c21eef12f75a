"""The other seed systems' ablations (seeds 003, 004, 000) as DVC experiments, one table each.

``actparse ablate --system 003|004|000`` runs a grid's rows as ``dvc exp run`` experiments (every
switch of the grid set explicitly, ``--seeds`` for several training seeds), keeps each experiment's
metrics file in ``metrics/ablation_<system>.json`` and prints the table in the shape of the seed's
paper table:

* 003 (MultiSports): Linear vs PCCA head, each before (phase 1) and after decoupled learning, and
  PCCA at a second input scale; frame-mAP@0.5 and video-mAP (x100), and the decoupled gain on the
  tail half of the classes. Train split long-tailed (``synth.long_tail: 10``) as in docs/seeds.md.
* 004 (FineGym): single pathway per level vs the joint model (1:2:4 loss), top-1 and mean-class
  accuracy per level.
* 000 (part states): part crops, + action info, + RoI pooling, + multi-head attention, and the
  most-frequent-state prior, part-state top-1.

These systems score clips and tubes, not the per-video records of the default evaluation, so their
intervals come from the training seeds: with two or more seeds a difference shows the mean and a 95%
t-interval over seeds, and "holds" / "reverses" only when that interval excludes zero; one seed
gives "(one run, no interval)".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

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

    @property
    def store(self) -> str:
        return f"metrics/ablation_{self.system}.json"


_STAD = {"stad.enabled": True, "synth.long_tail": 10}
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
                ("stad-pcca-96", "frame_map@0.5")))),
    Grid("004", "Seed 004 (FineGym): single pathways vs the joint model, top-1 / mean-class x100", "metrics/gym.json",
         (GridRow("gym-joint", {"gym.enabled": True}),),
         (("event.top1", "event top-1"), ("event.mean_class", "event mean-class"), ("set.top1", "set top-1"),
          ("set.mean_class", "set mean-class"), ("element.top1", "element top-1"),
          ("element.mean_class", "element mean-class")),
         (Line("single pathway per level", "gym-joint", "single."), Line("joint (1:2:4 loss)", "gym-joint", "joint.")),
         (Check("joint beats single pathways in element top-1 (004 Table 2)", ("gym-joint", "single.element.top1"),
                ("gym-joint", "joint.element.top1")),
          Check("joint beats single pathways in element mean-class (004 Table 2)",
                ("gym-joint", "single.element.mean_class"), ("gym-joint", "joint.element.mean_class")))),
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
                ("partattn-attention", "model.top1")))),
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


def table(grid: Grid, results: dict) -> str:
    head = "| | " + " | ".join(h for _, h in grid.columns) + " | paper |"
    out = [f"**{grid.title}**", "", head, "|" + "---|" * (len(grid.columns) + 2)]
    for line in grid.lines:
        if not runs_of(results, line.row):
            continue
        cells = []
        for path, _ in grid.columns:
            vals = _values(results, line.row, line.prefix + path)
            if not vals:
                cells.append("-")
                continue
            mean = sum(vals) / len(vals)
            cell = _num(mean, grid.scale)
            if len(vals) > 1:
                sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
                cell += f" ±{grid.scale * sd:.1f}"
            cells.append(cell)
        out.append(f"| {line.label} | " + " | ".join(cells) + f" | {line.paper} |")
    return "\n".join(out)


def directions(grid: Grid, results: dict) -> list[str]:
    """Each check: mean difference over the seeds both rows ran with, its t-interval and verdict."""
    from actparse.metrics.bootstrap import verdict

    out = []
    for c in grid.checks:
        before = {r.get("seed"): lookup(r["metrics"], c.before[1]) for k, r in results.items()
                  if r.get("row", k) == c.before[0]}
        after = {r.get("seed"): lookup(r["metrics"], c.after[1]) for k, r in results.items()
                 if r.get("row", k) == c.after[0]}
        seeds = [s for s in after if s in before and before[s] is not None and after[s] is not None]
        if not seeds:
            continue
        diffs = [after[s] - before[s] for s in seeds]
        mean = sum(diffs) / len(diffs)
        iv = seed_interval(diffs)
        if iv is None:
            out.append(f"- {c.text}: Δ {_num(mean, grid.scale)} (one run, no interval)")
        else:
            out.append(f"- {c.text}: Δ {_num(mean, grid.scale)} [{_num(iv[0], grid.scale)}, "
                       f"{_num(iv[1], grid.scale)}] over {len(seeds)} seeds: {verdict(*iv)}")
    return out


def render(grid: Grid, results: dict) -> str:
    return table(grid, results) + "\n\n" + "\n".join(directions(grid, results))


def load(root: Path, grid: Grid) -> dict:
    store = Path(root) / grid.store
    return json.loads(store.read_text()) if store.exists() else {}
