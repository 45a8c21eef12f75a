"""COCO-style detection AP@0.5 and FineGym-style classification accuracy: hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actparse.metrics.classification import (confusion_matrix, hierarchical_accuracy, mean_class_accuracy,
                                             top1_accuracy, topk_accuracy)
from actparse.metrics.detection import detection_ap, match_detections

A = [0, 0, 10, 10]
B = [20, 0, 30, 10]
FAR = [100, 100, 110, 110]


def ap(gt, dets, **kw):
    gi, gc, gb = zip(*gt) if gt else ((), (), ())
    di, dc, db, ds = zip(*dets) if dets else ((), (), (), ())
    return detection_ap(np.array(gi, int), np.array(gc, object), np.array(gb, float).reshape(-1, 4),
                        np.array(di, int), np.array(dc, object), np.array(db, float).reshape(-1, 4),
                        np.array(ds, float), **kw)


def test_perfect_empty_duplicate_and_missed():
    gt = [(0, "p", A), (0, "p", B), (1, "p", A)]
    assert ap(gt, [(i, c, b, 0.9) for i, c, b in gt])["map"] == 1.0
    assert ap(gt, [])["map"] == 0.0
    # a duplicate of a matched box is a false positive ranked last: precision at every recall stays 1
    assert ap(gt, [(i, c, b, 0.9) for i, c, b in gt] + [(0, "p", A, 0.1)])["map"] == 1.0
    # ranked first, the duplicate costs: P = [1, .5, 2/3, 3/4] at R = [1/3, 1/3, 2/3, 1]
    r = ap(gt, [(0, "p", A, 0.9), (0, "p", A, 0.8), (0, "p", B, 0.7), (1, "p", A, 0.6)])
    q = np.where(np.linspace(0, 1, 101) <= 1 / 3 + 1e-12, 1.0, 0.75)
    assert r["map"] == pytest.approx(q.mean())
    # missed image: recall reaches 2/3 only; 101-point AP = share of recall points <= 2/3 (67 of 101)
    r = ap(gt, [(0, "p", A, 0.9), (0, "p", B, 0.8)])
    assert r["map"] == pytest.approx(67 / 101)


def test_two_classes_by_hand_and_iou_threshold():
    gt = [(0, "a", A), (0, "b", B)]
    half = [0, 0, 10, 5]  # IoU with A = 0.5 exactly: counts at >= 0.5
    r = ap(gt, [(0, "a", half, 0.9), (0, "b", FAR, 0.8), (0, "b", B, 0.7)])
    assert r["ap"]["a"] == pytest.approx(1.0)
    assert r["ap"]["b"] == pytest.approx(0.5)  # P = [0, 1/2] at R = [0, 1] -> 0.5 at every recall point
    assert r["map"] == pytest.approx(0.75)
    assert ap(gt, [(0, "a", half, 0.9)], iou_thr=0.6)["ap"]["a"] == 0.0


def test_greedy_matching_takes_best_unmatched_gt():
    gt_boxes = np.array([A, [2, 0, 12, 10]], float)
    det_boxes = np.array([[1, 0, 11, 10], [1, 0, 11, 10]], float)
    tp, kept, m = match_detections([0, 0], gt_boxes, [0, 0], det_boxes, [0.9, 0.8])
    assert tp.tolist() == [True, True] and sorted(m.tolist()) == [0, 1]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_invariances(seed):
    rng = np.random.default_rng(seed)
    n = 12
    gt = [(int(rng.integers(3)), "c", list(rng.uniform(0, 50, 2)) + [0, 0]) for _ in range(n)]
    gt = [(i, c, [b[0], b[1], b[0] + 10, b[1] + 10]) for i, c, b in gt]
    dets = [(i, c, list(np.asarray(b) + rng.normal(0, 2, 4)), float(rng.random())) for i, c, b in gt if rng.random() < 0.8]
    base = ap(gt, dets)["map"]
    perm = rng.permutation(len(dets))
    assert ap(gt, [dets[i] for i in perm])["map"] == base
    ren = {0: 7, 1: 3, 2: 11}
    assert ap([(ren[i], c, b) for i, c, b in gt], [(ren[i], c, b, s) for i, c, b, s in dets])["map"] == base
    assert ap(gt, dets + [(0, "c", FAR, 0.0), (2, "c", FAR, 0.0)])["map"] == base


def test_classification_by_hand():
    y = ["a", "a", "a", "b"]
    p = ["a", "a", "b", "b"]
    assert top1_accuracy(y, p) == 0.75
    assert mean_class_accuracy(y, p) == pytest.approx((2 / 3 + 1) / 2)
    assert top1_accuracy(y, y) == mean_class_accuracy(y, y) == 1.0
    assert top1_accuracy(y, ["z"] * 4) == mean_class_accuracy(y, ["z"] * 4) == 0.0
    labels, m = confusion_matrix(y, p)
    assert labels == ["a", "b"] and m.tolist() == [[2, 1], [0, 1]]
    assert topk_accuracy(["b", "a"], [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], ["a", "b", "c"], k=2) == 0.5


def test_finegym_hierarchy_levels():
    y_true = {"element": ["e1", "e2", "e3", "e3"], "set": ["s1", "s1", "s2", "s2"], "event": ["E", "E", "E", "E"]}
    y_pred = {"element": ["e1", "e3", "e3", "e2"]}
    parents = {"element": ("set", {"e1": "s1", "e2": "s1", "e3": "s2"}), "set": ("event", {"s1": "E", "s2": "E"})}
    r = hierarchical_accuracy(y_true, y_pred, parents)
    assert r["element"]["top1"] == 0.5
    assert r["element"]["mean_class"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert r["set"]["top1"] == 0.5  # e3 -> s2 for the 2nd clip (wrong), e2 -> s1 for the 4th (wrong)
    assert r["event"] == {"top1": 1.0, "mean_class": 1.0}
    with pytest.raises(ValueError, match="level 'set'"):
        hierarchical_accuracy(y_true, y_pred)
