"""Detection AP at one IoU threshold, COCO style (persons, parts), vectorised.

Follows pycocotools' ``COCOeval`` for one IoU threshold, area "all", ``maxDets`` boxes per image:
per image and class the detections are ranked by score (stable), at most ``max_dets`` kept; each
takes the still-unmatched ground truth of highest IoU >= thr (the last one on ties, as
``evaluateImg`` does); detections of all images are then ranked by score (stable, image order
breaking ties), precision is made non-increasing, and AP is the mean of the precision at the 101
recall points 0, 0.01, ..., 1 (0 past the last recall). IoU is continuous (no "+1"). A class with
no ground truth has no AP (left out of the mean). Matching is vectorised; only images where two
detections want the same ground truth run the sequential rule.
"""

from __future__ import annotations

import numpy as np

REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Continuous IoU of aligned boxes (broadcasting)."""
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    aa = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    ab = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = aa + ab - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match_detections(gt_img, gt_boxes, det_img, det_boxes, det_scores, iou_thr: float = 0.5,
                     max_dets: int | None = 100):
    """COCO-style greedy matching of one class. Returns (tp bool per detection, kept bool per
    detection (inside the per-image ``max_dets``), matched gt index or -1)."""
    gt_img = np.asarray(gt_img, np.int64)
    det_img = np.asarray(det_img, np.int64)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    det_scores = np.asarray(det_scores, np.float64)
    nd = len(det_img)
    order = np.lexsort((np.arange(nd), -det_scores, det_img))  # per image: score desc, stable
    rank = np.empty(nd, np.int64)
    rank[order] = np.arange(nd)
    first = np.searchsorted(det_img[order], det_img[order], side="left")
    within = np.arange(nd) - first
    kept = np.zeros(nd, bool)
    kept[order] = within < (max_dets if max_dets else nd + 1)
    g_order = np.argsort(gt_img, kind="stable")
    g_sorted = gt_img[g_order]
    start = np.searchsorted(g_sorted, det_img, side="left")
    count = np.searchsorted(g_sorted, det_img, side="right") - start
    target = np.full(nd, -1, np.int64)
    rows = {}
    for c in np.unique(count[kept & (count > 0)]):
        sel = np.flatnonzero(kept & (count == c))
        gidx = g_order[start[sel, None] + np.arange(c)]
        ious = _iou(gt_boxes[gidx], det_boxes[sel, None, :])
        ok = ious >= min(iou_thr, 1 - 1e-10)
        best = np.where(ok, ious, -1.0)
        last = c - 1 - np.argmax(best[:, ::-1], axis=1)  # last maximum
        has = ok.any(1)
        target[sel[has]] = gidx[np.arange(len(sel)), last][has]
        for j, i in enumerate(sel):
            rows[i] = (gidx[j], ious[j])
    from ._exact import greedy_first_claim

    tp = greedy_first_claim(rank, target)
    matched = np.where(tp, target, -1)
    cand = target >= 0
    if cand.any():
        vals, cnt = np.unique(target[cand], return_counts=True)
        contested = set(det_img[np.isin(target, vals[cnt > 1])].tolist())
        for img in contested:
            idx = sorted((i for i in rows if det_img[i] == img), key=lambda i: rank[i])
            taken: set[int] = set()
            for i in idx:
                gids, ious = rows[i]
                best, m = min(iou_thr, 1 - 1e-10), -1
                for g, v in zip(gids.tolist(), ious.tolist()):
                    if g in taken or v < best:
                        continue
                    best, m = v, g
                tp[i] = m >= 0
                matched[i] = m
                if m >= 0:
                    taken.add(m)
    return tp & kept, kept, np.where(kept, matched, -1)


def average_precision(tp: np.ndarray, scores: np.ndarray, det_img: np.ndarray, n_gt: int):
    """COCO 101-point AP from per-detection true-positive flags (kept detections only).

    Returns (ap, precision at REC_THRS, raw recall, raw precision)."""
    if n_gt == 0:
        return float("nan"), np.full(len(REC_THRS), np.nan), np.zeros(0), np.zeros(0)
    o = np.lexsort((np.arange(len(scores)), det_img))  # image order, then stable by score
    o = o[np.argsort(-np.asarray(scores, np.float64)[o], kind="mergesort")]
    t = np.asarray(tp, bool)[o]
    tps = np.cumsum(t).astype(np.float64)
    fps = np.cumsum(~t).astype(np.float64)
    rc = tps / n_gt
    pr = tps / (fps + tps + np.spacing(1))
    env = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr
    q = np.zeros(len(REC_THRS))
    inds = np.searchsorted(rc, REC_THRS, side="left")
    valid = inds < len(env)
    q[valid] = env[inds[valid]]
    return float(np.mean(q)), q, rc, pr


def detection_ap(gt_img, gt_cls, gt_boxes, det_img, det_cls, det_boxes, det_scores, iou_thr: float = 0.5,
                 max_dets: int | None = 100, classes=None) -> dict:
    """AP@``iou_thr`` per class and their mean.

    ``*_img``: integer image ids; ``*_cls``: class ids or names. Returns {"map", "ap": {cls: ap},
    "precision": {cls: 101 values}, "n_gt": {cls: n}} (``map`` over classes with ground truth).
    """
    gt_cls = np.asarray(gt_cls)
    det_cls = np.asarray(det_cls)
    det_scores = np.asarray(det_scores, np.float64)
    if classes is None:
        classes = sorted(set(gt_cls.tolist()) | set(det_cls.tolist()))
    out = {"ap": {}, "precision": {}, "n_gt": {}}
    aps = []
    gt_img = np.asarray(gt_img, np.int64)
    det_img = np.asarray(det_img, np.int64)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    for c in classes:
        gs, ds = gt_cls == c, det_cls == c
        n_gt = int(gs.sum())
        out["n_gt"][c] = n_gt
        if n_gt == 0:
            continue
        tp, kept, _ = match_detections(gt_img[gs], gt_boxes[gs], det_img[ds], det_boxes[ds], det_scores[ds],
                                       iou_thr, max_dets)
        ap, q, _, _ = average_precision(tp[kept], det_scores[ds][kept], det_img[ds][kept], n_gt)
        out["ap"][c] = ap
        out["precision"][c] = q
        aps.append(ap)
    out["map"] = float(np.mean(aps)) if aps else float("nan")
    out["recall"] = REC_THRS
    return out
