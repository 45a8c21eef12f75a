"""Video classification metrics: top-1, mean-class accuracy (FineGym, seed 004), confusion matrix.

FineGym reports, at each level of its hierarchy (event -> set -> element), the top-1 accuracy
over all test clips and the mean class accuracy: the accuracy of each class present in the
ground truth, averaged over those classes (the ``mean_class_accuracy`` of the reference
implementations; classes only predicted, never true, do not enter the mean).
"""

from __future__ import annotations

import numpy as np


def top1_accuracy(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def mean_class_accuracy(y_true, y_pred) -> float:
    """Mean over the classes present in ``y_true`` of each class's accuracy."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    if len(y_true) == 0:
        return float("nan")
    classes, inv = np.unique(y_true, return_inverse=True)
    hits = np.bincount(inv, weights=(y_true == y_pred).astype(np.float64), minlength=len(classes))
    counts = np.bincount(inv, minlength=len(classes))
    return float(np.mean(hits / counts))


def topk_accuracy(y_true, scores, classes, k: int = 5) -> float:
    """Share of samples whose true class is among the ``k`` best-scored ``classes``."""
    scores = np.asarray(scores, np.float64)
    classes = np.asarray(classes)
    top = classes[np.argsort(-scores, axis=1, kind="stable")[:, :k]]
    return float(np.mean((top == np.asarray(y_true)[:, None]).any(1))) if len(scores) else float("nan")


def confusion_matrix(y_true, y_pred, labels=None) -> tuple[list, np.ndarray]:
    """(labels, counts[true, pred])."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if labels is None:
        labels = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    index = {lab: i for i, lab in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), np.int64)
    for t, p in zip(y_true.tolist(), y_pred.tolist()):
        if t in index and p in index:
            m[index[t], index[p]] += 1
    return list(labels), m


def hierarchical_accuracy(y_true: dict, y_pred: dict, parents: dict | None = None) -> dict:
    """FineGym-style accuracy at every hierarchy level.

    ``y_true`` / ``y_pred``: {level: labels}. ``parents``: {level: (parent level, {label: parent
    label})}; a level missing from ``y_pred`` is derived from its child's predictions through it
    (e.g. set predictions from element predictions). Returns {level: {"top1", "mean_class"}}.
    """
    y_pred = dict(y_pred)
    parents = parents or {}
    changed = True
    while changed:
        changed = False
        for child, (parent, mapping) in parents.items():
            if parent not in y_pred and child in y_pred:
                y_pred[parent] = [mapping.get(x) for x in y_pred[child]]
                changed = True
    out = {}
    for level, truth in y_true.items():
        if level not in y_pred:
            raise ValueError(f"no predictions for hierarchy level {level!r}")
        out[level] = {"top1": top1_accuracy(truth, y_pred[level]),
                      "mean_class": mean_class_accuracy(truth, y_pred[level])}
    return out
