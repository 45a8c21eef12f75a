"""Training curves: the per-epoch history each training stage records in its model's
``train_info.json``, as small CSV files under ``plots/train/`` that dvc.yaml declares as DVC plots.

One file per trained network, always with the same columns (a model that was not trained here, i.e.
given by the user, or a seed system that is switched off, gets a file with the header only; a ``val_``
column is empty where the configuration holds out no validation videos, e.g. ``csn.val_fraction: 0``):

    person_detector.csv, part_detector.csv   epoch, box_loss, cls_loss, dfl_loss, val_map50
                                              (ultralytics' train losses; val AP@0.5 on the held-out train videos)
    pose.csv                                  epoch, loss, val_pck                 (HRNet heatmap MSE; PCK@0.2 on the held-out videos)
    csn_ip.csv, csn_ir.csv                    epoch, loss, action_acc, val_action_acc
                                              (train loss, train top-1 of the action head; top-1 on csn.val_fraction's videos)
    stad.csv                                  epoch, loss, phase, val_top1
                                              (phase 1, then phase 2 continuing the count; action top-1 of the
                                              persons of stad.val_fraction's videos)
    gym_event.csv, gym_set.csv, gym_element.csv   epoch, loss, train_acc, val_acc
                                              (the pathway's top-1 on gym.val_fraction's clips)
    gym_joint.csv                             epoch, loss, val_event_acc, val_set_acc, val_element_acc
                                              (the joint model's heads on the same clips)
    partattn.csv                              epoch, loss, val_acc
                                              (part-state accuracy on partattn.val_fraction's videos)

Nothing here is timed: the files are the same for the same training, so a fresh clone that
reproduces the models reproduces the curves.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

#: file stem -> (model folder under artifacts/models, columns after ``epoch``)
CURVES: dict[str, tuple[str, tuple[str, ...]]] = {
    "person_detector": ("person_detector", ("box_loss", "cls_loss", "dfl_loss", "val_map50")),
    "pose": ("pose", ("loss", "val_pck")),
    "part_detector": ("part_detector", ("box_loss", "cls_loss", "dfl_loss", "val_map50")),
    "csn_ip": ("csn", ("loss", "action_acc", "val_action_acc")),
    "csn_ir": ("csn", ("loss", "action_acc", "val_action_acc")),
    "stad": ("stad", ("loss", "phase", "val_top1")),
    "gym_event": ("gym", ("loss", "train_acc", "val_acc")),
    "gym_set": ("gym", ("loss", "train_acc", "val_acc")),
    "gym_element": ("gym", ("loss", "train_acc", "val_acc")),
    "gym_joint": ("gym", ("loss", "val_event_acc", "val_set_acc", "val_element_acc")),
    "partattn": ("partattn", ("loss", "val_acc")),
}

#: the model folders whose train_info.json the curves come from
MODELS: tuple[str, ...] = tuple(dict.fromkeys(m for m, _ in CURVES.values()))


def _num(x, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"{where}: not a number ({x!r})")
    return float(x)


def _series(info: dict, key: str, where: str) -> list[float]:
    vals = info.get(key)
    if vals is None:
        return []
    if not isinstance(vals, list):
        raise ValueError(f"{where}: {key!r} is not a list of per-epoch values")
    return [_num(v, f"{where}: {key}[{i}]") for i, v in enumerate(vals)]


def _frame(columns: tuple[str, ...], data: dict[str, list]) -> pd.DataFrame:
    n = len(next(iter(data.values()))) if data else 0
    if any(len(v) != n for v in data.values()):
        lens = {k: len(v) for k, v in data.items()}
        raise ValueError(f"per-epoch lists of different lengths: {lens}")
    df = pd.DataFrame({"epoch": list(range(1, n + 1)), **{c: data.get(c, []) for c in columns}}) if n else \
        pd.DataFrame({c: [] for c in ("epoch",) + columns})
    return df


def curve(stem: str, info: dict, where: str = "train_info.json") -> pd.DataFrame:
    """The curve ``stem`` (a key of :data:`CURVES`) from its model's ``train_info.json`` contents."""
    _, columns = CURVES[stem]
    if not isinstance(info, dict):
        raise ValueError(f"{where}: not a JSON object")
    data: dict[str, list] = {}
    if info.get("enabled") is False or info.get("trained") is False or "skipped" in info and not info.get("history"):
        return _frame(columns, {})
    if stem in ("person_detector", "part_detector"):
        hist = info.get("history") or {}
        if not isinstance(hist, dict):
            raise ValueError(f"{where}: 'history' is not an object of per-epoch lists")
        data = {c: _series(hist, c, where) for c in columns} if hist else {}
    elif stem == "pose":
        data = {"loss": _series(info, "loss", where), "val_pck": _series(info, "val_pck", where)}
    elif stem.startswith("csn_"):
        var = (info.get("variants") or {}).get(stem[4:])
        if var:
            data = {"loss": _series(var, "loss", where), "action_acc": _task_acc(var, "train_acc", where),
                    "val_action_acc": _task_acc(var, "val_acc", where)}
    elif stem == "stad":
        p1, p2 = _series(info, "phase1_loss", where), _series(info, "phase2_loss", where)
        v1, v2 = _series(info, "phase1_val_top1", where), _series(info, "phase2_val_top1", where)
        val = (v1 or [math.nan] * len(p1)) + (v2 or [math.nan] * len(p2)) if v1 or v2 else []
        data = {"loss": p1 + p2, "phase": [1] * len(p1) + [2] * len(p2), "val_top1": val}
    elif stem == "gym_joint":
        hist = (info.get("history") or {}).get("joint")
        if hist:
            data = {"loss": _series(hist, "loss", where),
                    **{f"val_{lvl}_acc": _task_acc(hist, "val_acc", where, lvl) for lvl in ("event", "set", "element")}}
    elif stem.startswith("gym_"):
        hist = (info.get("history") or {}).get(stem[4:])
        if hist:
            data = {c: _series(hist, c, where) for c in columns}
    elif stem == "partattn":
        data = {"loss": _series(info, "loss", where), "val_acc": _series(info, "val_acc", where)}
    return _frame(columns, _pad_val(data))


def _task_acc(var: dict, key: str, where: str, task: str = "action") -> list[float]:
    """One head's per-epoch accuracy (the action head's by default) from a list of {task: accuracy}
    (NaN where absent)."""
    acc = var.get(key) or []
    if not isinstance(acc, list):
        raise ValueError(f"{where}: {key!r} is not a list of per-epoch values")
    return [_num(a.get(task, math.nan) if isinstance(a, dict) else math.nan, f"{where}: {key}[{i}]")
            for i, a in enumerate(acc)]


def _pad_val(data: dict[str, list]) -> dict[str, list]:
    """Absent per-epoch columns (no validation videos, no train accuracy) as NaN, one per epoch."""
    n = max((len(v) for v in data.values()), default=0)
    return {k: (v if v else [math.nan] * n) for k, v in data.items()}


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a curve atomically (temporary file beside it, renamed into place)."""
    from .atomic import write_atomically

    return write_atomically(path, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6g"))


def read_train_info(model_dir: Path) -> dict | None:
    """A model folder's train_info.json, or None when the folder has none."""
    import json

    path = Path(model_dir) / "train_info.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def write_curves(models_dir: str | Path, out_dir: str | Path) -> dict[str, int]:
    """Every curve of :data:`CURVES` from ``models_dir/<model>/train_info.json`` to ``out_dir/<stem>.csv``;
    returns {stem: epochs}."""
    models_dir, out_dir = Path(models_dir), Path(out_dir)
    infos = {m: read_train_info(models_dir / m) for m in MODELS}
    done = {}
    for stem, (model, _) in CURVES.items():
        info = infos[model]
        where = str(models_dir / model / "train_info.json")
        df = curve(stem, info if info is not None else {"enabled": False}, where)
        write_csv(df, out_dir / f"{stem}.csv")
        done[stem] = len(df)
    return done
