"""Numeric building blocks that reproduce numpy's own rounding, so vectorised metrics are bit-exact.

The official evaluation scripts compute means with ``np.mean`` on small slices (one call per
tube pair, per tube, ...). ``np.mean`` sums with numpy's *pairwise* summation, whose rounding
differs from a running sum and from ``np.add.reduceat``. :func:`segment_sums` reproduces the exact
pairwise algorithm of numpy's ``add.reduce`` (blocks of 8 partial sums up to 128 elements, halving
above) for many segments of any lengths at once (one array step per block of 8 and per level of
the tree, over every segment that long), so a vectorised metric returns the same floating-point
numbers as the loop it replaces.
"""

from __future__ import annotations

import numpy as np

_BLOCK = 128  # numpy's PW_BLOCKSIZE


def _pairwise_rows(x: np.ndarray) -> np.ndarray:
    """Row sums of a 2-D array, each equal to ``np.add.reduce(row)`` bit for bit."""
    m, n = x.shape
    if n < 8:
        res = np.zeros(m, dtype=x.dtype)
        for i in range(n):
            res = res + x[:, i]
        return res
    if n <= _BLOCK:
        r = x[:, :8].copy()
        stop = n - (n % 8)
        for i in range(8, stop, 8):
            r += x[:, i:i + 8]
        res = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7]))
        for i in range(stop, n):
            res = res + x[:, i]
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise_rows(x[:, :n2]) + _pairwise_rows(x[:, n2:])


def _leaf_sums(values: np.ndarray, s: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``np.add.reduce`` of segments of 1..128 elements (numpy's unrolled pairwise leaf), all at once.

    Below 8 elements numpy adds sequentially onto 0; from 8 on it keeps 8 running partial sums over
    the whole blocks of 8, adds them as ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then adds
    the last ``n % 8`` elements one by one. Each step runs over every segment still that long."""
    dt = values.dtype
    nb = n // 8
    res = np.zeros(len(s), dt)
    blk = np.flatnonzero(nb > 0)
    if len(blk):
        sb, nbb = s[blk], nb[blk]
        eight = np.arange(8)
        r = values[sb[:, None] + eight]
        for b in range(1, int(nbb.max())):
            a = np.flatnonzero(nbb > b)
            r[a] += values[sb[a, None] + (8 * b + eight)]
        res[blk] = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7]))
    rem = n - 8 * nb
    tail = s + 8 * nb
    for i in range(int(rem.max()) if len(rem) else 0):
        a = np.flatnonzero(rem > i)
        res[a] = res[a] + values[tail[a] + i]
    return res


def _pairwise_segments(values: np.ndarray, s: np.ndarray, n: np.ndarray) -> np.ndarray:
    """numpy's pairwise sum of segments (1 <= n <= 8192): above 128 elements split at
    ``n2 = n // 2 - (n // 2) % 8`` and add the two halves' sums; leaves as :func:`_leaf_sums`."""
    res = np.empty(len(s), values.dtype)
    split = n > _BLOCK
    if split.any():
        ss, ns = s[split], n[split]
        n2 = ns // 2
        n2 -= n2 % 8
        res[split] = _pairwise_segments(values, ss, n2) + _pairwise_segments(values, ss + n2, ns - n2)
        leaf = ~split
        res[leaf] = _leaf_sums(values, s[leaf], n[leaf])
    else:
        res[:] = _leaf_sums(values, s, n)
    return res


def segment_sums(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``[np.add.reduce(values[s:s+n]) for s, n in zip(starts, lengths)]``, vectorised and bit-exact.

    All segments are summed together whatever their lengths (a few array operations per block of 8
    and per level of the pairwise tree). Segments longer than 8192 (numpy's buffer size) fall back
    to ``np.add.reduce`` itself.
    """
    values = np.asarray(values)
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.zeros(len(starts), dtype=values.dtype)
    if len(starts) == 0:
        return out
    huge = lengths > 8192
    for i in np.flatnonzero(huge):
        out[i] = np.add.reduce(values[starts[i]:starts[i] + lengths[i]])
    sel = np.flatnonzero((lengths > 0) & ~huge)
    if len(sel):
        out[sel] = _pairwise_segments(values, starts[sel], lengths[sel])
    return out


def segment_means(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``[np.mean(values[s:s+n]) ...]`` bit-exact (the sum divided by n in the values' dtype)."""
    values = np.asarray(values)
    sums = segment_sums(values, starts, lengths)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / np.asarray(lengths).astype(values.dtype)


def voc_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """PASCAL-VOC area under the precision envelope (MultiSports ``pr_to_ap_voc``).

    Precision/recall come from the ranked detections; recall is padded with 0 and 1 and precision
    with 0 at both ends, precision is made non-increasing from the right, and the area sums
    ``(r[i] - r[i-1]) * p[i]`` where recall changes. Same operations as the official function, so
    the same float.
    """
    recall = np.concatenate([[0], np.asarray(recall, dtype=np.float64), [1]])
    precision = np.concatenate([[0], np.asarray(precision, dtype=np.float64), [0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.where(recall[1:] != recall[:-1])[0] + 1
    return np.sum((recall[idx] - recall[idx - 1]) * precision[idx])


def greedy_first_claim(order_key: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Official "is_gt_box_detected" matching, vectorised.

    ``target[i]`` is the ground-truth id detection ``i`` may claim (its arg-max, already known to pass
    the IoU threshold) or -1. Detections are visited in ``order_key`` order (0, 1, ...); a detection
    is a true positive iff it is the first to claim its target. Returns a bool array (by detection).
    """
    tp = np.zeros(len(target), dtype=bool)
    cand = np.flatnonzero(target >= 0)
    if len(cand) == 0:
        return tp
    cand = cand[np.argsort(order_key[cand], kind="stable")]
    _, first = np.unique(target[cand], return_index=True)
    tp[cand[first]] = True
    return tp


def pr_ap_segments(tp_sorted: np.ndarray, seg_len: np.ndarray, n_gt: np.ndarray, act: bool = False) -> tuple:
    """AP of many classes at once from their ranked true-positive flags, bit-exact with the official
    per-class code: ``pr_to_ap_voc`` (``act=False``: float64 precision/recall, envelope, sum where
    recall changes) or ACT's ``pr_to_ap`` (``act=True``: float32 rows with a leading (1, 0), trapezoids).

    ``tp_sorted``: flags of every class's detections in ranked order, classes one after the other
    (``seg_len[c]`` each); ``n_gt[c]``: ground-truth count. Returns (ap per class, list of pr arrays).
    """
    seg_len = np.asarray(seg_len, np.int64)
    n_gt = np.asarray(n_gt, np.float64)
    L = len(seg_len)
    seg = np.repeat(np.arange(L), seg_len)
    start = np.cumsum(seg_len) - seg_len
    csum = np.cumsum(np.asarray(tp_sorted, np.int64))
    base = np.where(start > 0, csum[np.maximum(start - 1, 0)], 0) if len(csum) else np.zeros(L, np.int64)
    tps = csum - np.repeat(base, seg_len)
    n = np.arange(len(seg)) - np.repeat(start, seg_len) + 1
    fps = n - tps
    prec = tps / (tps + fps)
    rec = tps / n_gt[seg]
    if L == 0:
        return np.zeros(0), []
    width = int(seg_len.max()) + 2
    cols = np.arange(width)
    if act:
        P = np.zeros((L, width), np.float32)
        R = np.zeros((L, width), np.float32)
        P[:, 0] = 1.0
        P[seg, n] = prec
        R[seg, n] = rec
        valid = cols[None, :] < (seg_len + 1)[:, None]
        pairs = valid[:, 1:]
        terms = (R[:, 1:] - R[:, :-1]) * (P[:, 1:] + P[:, :-1]) * np.float32(0.5)
        tv = terms[pairs]
        cnt = pairs.sum(1)
        ap = segment_sums(tv, np.cumsum(cnt) - cnt, cnt)
        prs = [np.stack([P[c, :seg_len[c] + 1], R[c, :seg_len[c] + 1]], 1) for c in range(L)]
        return ap, prs
    P = np.full((L, width), -np.inf)
    R = np.full((L, width), np.nan)
    P[:, 0] = 0.0
    R[:, 0] = 0.0
    P[seg, n] = prec
    R[seg, n] = rec
    P[np.arange(L), seg_len + 1] = 0.0
    R[np.arange(L), seg_len + 1] = 1.0
    env = np.maximum.accumulate(P[:, ::-1], axis=1)[:, ::-1]
    inside = cols[None, 1:] <= (seg_len + 1)[:, None]
    changed = inside & (R[:, 1:] != R[:, :-1])
    terms = ((R[:, 1:] - R[:, :-1]) * env[:, 1:])[changed]
    cnt = changed.sum(1)
    ap = segment_sums(terms, np.cumsum(cnt) - cnt, cnt)
    both = np.stack([prec, rec], 1)
    prs = [both[a:a + k] for a, k in zip(start.tolist(), seg_len.tolist())]
    return ap, prs
