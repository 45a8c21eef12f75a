"""Seed 001 section 1.3: frame-level part states -> video-level part labels, and back.

Each video gets, per part group (head, hand, arm, hip, leg, foot), the label
``<action>_<group>_<state>`` where ``<state>`` is the most frequent frame-level state of that
group's parts over all persons on the Kinetics-TPS frames (every 5th frame) of the video; plus the
task ``action`` whose label is the video action. Seed 001 submission 1 ("most-frequent-state
baseline") instead predicts, per (action, part), the state most frequent over the training split.

Counting rules: only visible parts are counted (the official ground truth annotates visible parts);
a group with no visible part on any sampled frame falls back to all its entries; ties go to the
alphabetically first state, so labels are deterministic.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping

import numpy as np
import pandas as pd

from .constants import GROUP_OF_PART, GROUPS, PART_GROUPS, PARTS, TPS_SAMPLING

ACTION_TASK = "action"
TASKS: tuple[str, ...] = (ACTION_TASK,) + GROUPS
_PART_GROUP_INDEX = np.array([GROUPS.index(GROUP_OF_PART[p]) for p in PARTS])


def make_label(action: str, group: str, state: str) -> str:
    """``punching``, ``hand``, ``punch`` -> ``punching_hand_punch``."""
    return f"{action}_{group}_{state}"


def split_label(label: str, group: str) -> tuple[str, str]:
    """Inverse of :func:`make_label` for a known group: -> (action, state).

    Splits at the last ``_<group>_`` so actions and states may contain underscores.
    """
    sep = f"_{group}_"
    i = label.rfind(sep)
    if i <= 0 or i + len(sep) >= len(label):
        raise ValueError(f"part label {label!r} is not of the form <action>_{group}_<state>")
    return label[:i], label[i + len(sep):]


def most_frequent(counts: Mapping[str, int], default: str = "none") -> str:
    """The state with the highest count; ties -> alphabetically first; empty -> ``default``."""
    if not counts:
        return default
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def _sampled(gt: pd.DataFrame, sampling: int) -> pd.DataFrame:
    return gt[gt["frame"].to_numpy() % sampling == 0]


def _state_matrix(gt: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(rows, 10) arrays of states (object) and visibility (bool) from a gt_persons frame."""
    if len(gt) == 0:
        return np.empty((0, len(PARTS)), dtype=object), np.empty((0, len(PARTS)), dtype=bool)
    states = np.stack([np.asarray(s, dtype=object) for s in gt["part_states"]])
    visible = np.stack([np.asarray(v, dtype=bool) for v in gt["part_visible"]])
    if states.shape[1] != len(PARTS) or visible.shape != states.shape:
        raise ValueError(f"gt_persons part_states/part_visible must have {len(PARTS)} entries per row, "
                         f"got {states.shape[1:]} / {visible.shape[1:]}")
    return states, visible


def group_states(gt_video: pd.DataFrame, sampling: int = TPS_SAMPLING) -> dict[str, str]:
    """Most frequent state per part group over the sampled frames of one video's GT rows."""
    states, visible = _state_matrix(_sampled(gt_video, sampling))
    out = {}
    for g, group in enumerate(GROUPS):
        cols = _PART_GROUP_INDEX == g
        s, v = states[:, cols], visible[:, cols]
        chosen = s[v] if v.any() else s.ravel()
        out[group] = most_frequent(Counter(chosen.tolist()))
    return out


def video_labels(action: str, gt_video: pd.DataFrame, sampling: int = TPS_SAMPLING) -> dict[str, tuple[str, str | None]]:
    """{task: (label, state)} for one video: ``action`` -> (action, None), group -> (label, state)."""
    out: dict[str, tuple[str, str | None]] = {ACTION_TASK: (action, None)}
    for group, state in group_states(gt_video, sampling).items():
        out[group] = (make_label(action, group, state), state)
    return out


def baseline_states(gt: pd.DataFrame, video_action: Mapping[str, str],
                    sampling: int = TPS_SAMPLING) -> dict[str, dict[str, str]]:
    """Seed 001 submission 1: {action: {part: most frequent state}} over the given videos' GT rows.

    ``video_action`` maps each video to use (e.g. the train split) to its action; other rows are
    ignored. Counting is per part (visible entries; all entries if a part is never visible).
    """
    gt = _sampled(gt[gt["video"].isin(list(video_action))], sampling)
    out: dict[str, dict[str, str]] = {}
    for action in sorted(set(video_action.values())):
        vids = [v for v, a in video_action.items() if a == action]
        states, visible = _state_matrix(gt[gt["video"].isin(vids)])
        per_part = {}
        for j, part in enumerate(PARTS):
            s, v = states[:, j], visible[:, j]
            chosen = s[v] if v.any() else s
            per_part[part] = most_frequent(Counter(chosen.tolist()))
        out[action] = per_part
    return out


def class_lists(labels: pd.DataFrame, split: str = "train") -> dict[str, list[str]]:
    """{task: sorted labels seen in ``split``} from a part_labels table, tasks in :data:`TASKS` order."""
    sub = labels[labels["split"] == split]
    out = {}
    for task in TASKS:
        vals = sorted(set(sub.loc[sub["task"] == task, "label"]))
        if vals:
            out[task] = vals
    return out


def read_classes(part_labels_dir) -> dict[str, list[str]]:
    """``classes.json`` of the part_labels stage: {task: [labels]} (the order of every CSN output)."""
    import json
    from pathlib import Path

    path = Path(part_labels_dir) / "classes.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: class lists not found (has part_labels run?)")
    try:
        classes = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(classes, dict) or "action" not in classes or not all(
            isinstance(v, list) and v and all(isinstance(c, str) for c in v) for v in classes.values()):
        raise ValueError(f"{path}: expected {{task: [labels]}} with an 'action' task and non-empty lists")
    return classes


def accuracy(pred: Mapping[str, str], truth: Mapping[str, str]) -> tuple[float, int]:
    """Top-1 accuracy of ``pred`` {video: label} against ``truth`` over the videos of ``truth``."""
    vids = list(truth)
    if not vids:
        return float("nan"), 0
    hits = sum(pred.get(v) == truth[v] for v in vids)
    return hits / len(vids), len(vids)


def gt_parts(gt: pd.DataFrame, sampling: int = TPS_SAMPLING) -> pd.DataFrame:
    """Ground-truth part boxes as a "parts"-schema frame (visible parts on every ``sampling``-th frame).

    ``person`` is the GT track id and ``score`` 1.0: an oracle stand-in for the part detector. Rows
    whose parts are not annotated (null) give none.
    """
    g = _sampled(gt, sampling)
    cols = {"video": [], "frame": [], "person": [], "part": [], "box": [], "score": []}
    for row in g.itertuples(index=False):
        if row.part_boxes is None or row.part_visible is None:  # parts not annotated (MultiSports)
            continue
        boxes = np.asarray(row.part_boxes, dtype=np.float32).reshape(len(PARTS), 4)
        for j, part in enumerate(PARTS):
            if row.part_visible[j]:
                cols["video"].append(row.video)
                cols["frame"].append(int(row.frame))
                cols["person"].append(int(row.person))
                cols["part"].append(part)
                cols["box"].append(boxes[j])
                cols["score"].append(1.0)
    return pd.DataFrame(cols)


def assign_part_states(parts: pd.DataFrame, predictions: pd.DataFrame, mode: str = "video_label",
                       baseline: Mapping[str, Mapping[str, str]] | None = None,
                       model: str = "ensemble") -> tuple[pd.DataFrame, list[str]]:
    """A state and score for every detected part (seed 001's video-level -> frame-level conversion).

    ``video_label``: state = the ``<state>`` of the predicted label of the part's group, score =
    that label's probability x the part box score. ``baseline``: state = ``baseline[predicted
    action][part]``, score = the action probability x the part box score. Returns (frame with the
    "part_states" columns, videos dropped for lack of a prediction).
    """
    if mode not in ("video_label", "baseline"):
        raise ValueError(f"unknown part-state mode {mode!r}; choose video_label or baseline")
    out_cols = ["video", "frame", "person", "part", "box", "state", "score"]
    if len(parts) == 0:
        return pd.DataFrame({c: [] for c in out_cols}), []
    unknown = sorted(set(parts["part"]) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown part name(s) {unknown[:5]}; expected {list(PARTS)}")
    pred = predictions[predictions["model"] == model]
    parts = parts.copy()
    if mode == "video_label":
        parts["task"] = parts["part"].map(GROUP_OF_PART)
        table = {}
        for r in pred.itertuples(index=False):
            if r.task in PART_GROUPS:
                table[(r.video, r.task)] = (split_label(r.label, r.task)[1], float(r.score))
        keys = list(zip(parts["video"], parts["task"]))
    else:
        if baseline is None:
            raise ValueError("mode 'baseline' needs the baseline table (baseline.json)")
        table = {}
        for r in pred[pred["task"] == ACTION_TASK].itertuples(index=False):
            per_part = baseline.get(r.label, {})
            for part in PARTS:
                table[(r.video, part)] = (per_part.get(part, "none"), float(r.score))
        keys = list(zip(parts["video"], parts["part"]))
    found = np.array([k in table for k in keys], dtype=bool)
    dropped = sorted(set(parts.loc[~found, "video"]))
    parts = parts[found]
    keys = [k for k, f in zip(keys, found) if f]
    parts["state"] = [table[k][0] for k in keys]
    parts["score"] = parts["score"].to_numpy(dtype=np.float64) * np.array([table[k][1] for k in keys])
    return parts[out_cols].reset_index(drop=True), dropped
