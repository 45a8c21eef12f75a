"""MultiSports frame-mAP and video-mAP, bit-exact with the official evaluation code, vectorised.

Reproduces ``evaluate_multisports.py`` of the public MCG-NJU/MultiSports repository (the code its
README names as *the* evaluation code, "PR area the same as PASCAL VOC"; ``variant="multisports"``,
the default) and, with ``variant="act"``, the ACT-derived code it was modified from (the
challenge server's ``evaluate.py`` and MOC-Detector's ``ACT.py``: trapezoidal PR area with a
leading (1, 0) point, "+1 pixel" boxes and frame counts, and a matched ground truth deleted from
the pool so a duplicate may still match another one). ``variant="moc"`` is ``act`` as MOC-Detector's
``ACT.py`` averages it: over every label, a label without ground truth counting AP 0 (the
challenge's ``evaluate.py`` skips such a label, as the MultiSports code does; ``ACT.py`` divides
0 by 0 when such a label has detections, and here its AP is 0 then too).

Inputs are the official files, loaded:

* ground truth: the ``multisports_GT.pkl`` dict (``labels``, ``test_videos`` (list of lists; the
  first split is scored, as ``GT['test_videos'][0]``), ``gttubes`` {video: {label index: [array
  (n, 5): frame (1-based), x1, y1, x2, y2]}}, ``nframes``, ``resolution``);
* frame detections: array (N, 8) of ``video index, frame (1-based), label index, score, x1, y1,
  x2, y2`` (``frame_detections.pkl``; a list of (8,) arrays is stacked);
* video detections: {label index: [(video, tube score, array (n, 6): frame, x1, y1, x2, y2,
  box score)]} (``video_detections.pkl``).

Official behaviours kept (each is what the official loop does, not a choice made here):

* classes in ``OFFICIAL_EXCLUDED_LABELS`` are not scored; classes with no ground truth in the test
  videos are skipped (not counted as 0); the mAP is the plain mean of the per-class APs x 100;
* detections are ranked with ``np.argsort(-scores)`` on the same array (so ties fall the same way);
* each detection is compared with the ground truth of its (video, frame) / video only, takes the
  arg-max IoU box (first one on ties), and is a true positive iff that IoU >= thr and that box was
  not already taken (``multisports``: a duplicate of a taken box is a false positive even if another
  box would have matched; ``act``: taken boxes are removed first);
* video IoU = mean per-frame IoU over the temporal intersection x temporal IoU; the MultiSports
  code measures frame spans as ``last - first`` (no +1: a one-frame overlap has temporal IoU 0, two
  one-frame tubes on the same frame give 0/0 = nan, which never matches); ``act`` uses ``+1``
  (``temporal_plus_one=True`` applies that fix to the MultiSports variant);
* tube frames must increase; a tube may skip frames, but where a ground-truth and a detected tube
  overlap in time both must hold the same frames (the official IoU slices the two tubes by position
  from the first to the last shared frame and fails otherwise; here that is a ValueError naming
  the video). A gap outside the overlap is scored as the official code scores it.
* a test video missing from ``gttubes`` stops the official code (KeyError); here it is a
  ValueError naming the video (:func:`check_ground_truth`).
* Comparisons and means run in the dtype of the official arrays (float32 tubes stay float32; a
  Python float threshold is compared as NumPy 2 does), so the numbers are identical, not close.

The official ``iou3dt`` calls ``int()`` on a one-element array, which NumPy >= 2.4 refuses; the
numbers here are those the official code gives under a NumPy where it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import attrgetter, itemgetter

import numpy as np

from ._exact import greedy_first_claim, pr_ap_segments, segment_means

OFFICIAL_EXCLUDED_LABELS: tuple[str, ...] = (
    "aerobic kick jump", "aerobic off axis jump", "aerobic butterfly jump", "aerobic balance turn",
    "basketball save", "basketball jump ball",
)
VARIANTS = ("multisports", "act", "moc")


@dataclass
class APResult:
    """mAP (x100, as printed by the official code), per-class AP (x100) and PR arrays per class."""

    map: float
    ap: dict = field(default_factory=dict)
    pr: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"map": _num(self.map), "ap": {k: _num(v) for k, v in self.ap.items()}}


def _num(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x


def test_videos(gt: dict) -> list:
    """The scored video list: ``gt['test_videos'][0]`` (a flat list of names is accepted too)."""
    tv = gt.get("test_videos")
    if tv is None:
        raise ValueError("ground truth has no 'test_videos'")
    tv = list(tv)
    if tv and isinstance(tv[0], (list, tuple, np.ndarray)):
        return list(tv[0])
    return tv


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def _kind(x) -> str:
    return type(x).__name__


def _is_seq(x) -> bool:
    return isinstance(x, (list, tuple, np.ndarray))


def check_ground_truth(gt, name: str = "ground truth", tubes: bool = True) -> None:
    """Raise ValueError, naming ``name`` and the place, where a ground-truth dict departs from what
    the official code reads: ``labels`` (a list), ``test_videos``, ``gttubes`` holding every test
    video (the official code stops with KeyError on a missing one) as {label index: [tube (n, 5+)
    numeric array: frame, x1, y1, x2, y2]}. ``tubes=False`` leaves the tubes themselves to the
    scoring functions (which check each one as they read it)."""
    if not isinstance(gt, dict):
        raise ValueError(f"{name}: not a MultiSports ground-truth dict (got a {_kind(gt)})")
    for key in ("labels", "test_videos", "gttubes"):
        if key not in gt:
            raise ValueError(f"{name}: no {key!r} (a MultiSports ground truth has 'labels', 'test_videos' "
                             f"and 'gttubes')")
    if not _is_seq(gt["labels"]):
        raise ValueError(f"{name}: 'labels' is a {_kind(gt['labels'])}, not a list of label names")
    tv = gt["test_videos"]
    if not _is_seq(tv) or (len(tv) and not (_is_seq(tv[0]) or isinstance(tv[0], str))):
        raise ValueError(f"{name}: 'test_videos' must be a list of video lists (the first is scored)")
    gttubes = gt["gttubes"]
    if not isinstance(gttubes, dict):
        raise ValueError(f"{name}: 'gttubes' is a {_kind(gttubes)}, not a dict video -> {{label index: tubes}}")
    lists = []
    for v in test_videos(gt):
        if v not in gttubes:
            raise ValueError(f"{name}: test video {v!r} is not in 'gttubes' (the official code stops with KeyError)")
        by_label = gttubes[v]
        if not isinstance(by_label, dict):
            raise ValueError(f"{name}: gttubes[{v!r}] is a {_kind(by_label)}, not a dict label index -> tubes")
        for il, tl in by_label.items():
            if not _is_seq(tl):
                raise ValueError(f"{name}: gttubes[{v!r}][{il!r}] is a {_kind(tl)}, not a list of tubes")
            lists.append((v, il, tl))
    if not tubes:
        return
    every = list(chain.from_iterable(t for _, _, t in lists))
    try:  # usually every tube is a 2-D numeric array: checked in bulk
        kinds = set(map(_ndim_dtype, every))
        if all(nd == 2 and dt.kind in "biuf" for nd, dt in kinds) and min(map(itemgetter(1), map(_shape, every)),
                                                                           default=5) >= 5:
            return
    except AttributeError:  # not all arrays
        pass
    for v, il, tl in lists:
        for k, t in enumerate(tl):
            if isinstance(t, (list, tuple, np.ndarray)) and len(t) == 0:
                continue  # no rows: nothing to read
            try:
                a = t if isinstance(t, np.ndarray) else np.asarray(t)
            except ValueError:
                a = np.zeros(0, object)
            if a.ndim != 2 or a.shape[1] < 5 or a.dtype.kind not in "biuf":
                raise ValueError(f"{name}: gttubes[{v!r}][{il!r}][{k}] is not an (n, 5) numeric array of "
                                 f"frame, x1, y1, x2, y2 (shape {a.shape}, dtype {a.dtype})")


_ndim_dtype = attrgetter("ndim", "dtype")
_shape = attrgetter("shape")


def as_frame_detections(dets, name: str = "frame detections") -> np.ndarray:
    """Official frame detections as an (N, 8) array (a list of (8,) arrays is stacked)."""
    if isinstance(dets, np.ndarray) and dets.ndim == 2:
        arr = dets
    else:
        try:
            dets = list(dets)
            arr = np.stack([np.asarray(d) for d in dets]) if dets else np.zeros((0, 8), np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: not an (N, 8) array or a list of (8,) rows ({exc})") from None
    if arr.ndim != 2 or arr.shape[1] != 8:
        raise ValueError(f"{name}: frame detections must have shape (N, 8), got {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name}: frame detections must be numbers, got dtype {arr.dtype}")
    return arr


def as_video_detections(dets, name: str = "video detections") -> dict:
    """Official video detections ``{label index: [(video, score, tube)]}`` checked, keys as ints
    (the tubes themselves are checked where they are scored)."""
    if not isinstance(dets, dict):
        raise ValueError(f"{name}: not a dict label index -> [(video, score, tube)] (got a {_kind(dets)})")
    out = {}
    for key, entries in dets.items():
        try:
            il = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: key {key!r} is not a label index") from None
        if not isinstance(entries, (list, tuple)):
            raise ValueError(f"{name}: label {il}: a {_kind(entries)}, not a list of (video, score, tube)")
        bad = next((i for i, e in enumerate(entries) if not (isinstance(e, (list, tuple)) and len(e) == 3)), None)
        if bad is None:
            scores = [e[1] for e in entries]
            bad = next((i for i, x in enumerate(scores) if isinstance(x, bool) or
                        not isinstance(x, (int, float, np.integer, np.floating))), None)
        if bad is not None:
            raise ValueError(f"{name}: label {il} detection {bad}: not (video, score, tube) with a numeric score")
        out[il] = entries
    return out


# ----------------------------------------------------------------------------------------- IoU
def _iou_pairs(gtb: np.ndarray, detb: np.ndarray, plus_one: bool) -> np.ndarray:
    """IoU of aligned box pairs; exactly the official ``iou2d`` arithmetic (b1 = gt, b2 = det)."""
    if plus_one:  # ACT_utils.overlap2d / area2d
        xmin = np.maximum(gtb[..., 0], detb[..., 0])
        ymin = np.maximum(gtb[..., 1], detb[..., 1])
        xmax = np.minimum(gtb[..., 2] + 1, detb[..., 2] + 1)
        ymax = np.minimum(gtb[..., 3] + 1, detb[..., 3] + 1)
        ov = np.maximum(0, xmax - xmin) * np.maximum(0, ymax - ymin)
        a1 = (gtb[..., 2] - gtb[..., 0] + 1) * (gtb[..., 3] - gtb[..., 1] + 1)
        a2 = (detb[..., 2] - detb[..., 0] + 1) * (detb[..., 3] - detb[..., 1] + 1)
    else:  # evaluate_multisports.overlap2d_voc / area2d_voc
        xmin = np.maximum(gtb[..., 0], detb[..., 0])
        ymin = np.maximum(gtb[..., 1], detb[..., 1])
        xmax = np.minimum(gtb[..., 2], detb[..., 2])
        ymax = np.minimum(gtb[..., 3], detb[..., 3])
        ov = np.maximum(0, xmax - xmin) * np.maximum(0, ymax - ymin)
        a1 = (gtb[..., 2] - gtb[..., 0]) * (gtb[..., 3] - gtb[..., 1])
        a2 = (detb[..., 2] - detb[..., 0]) * (detb[..., 3] - detb[..., 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return ov / (a1 + a2 - ov)


def _iou_cols(g: list, d: list, plus_one: bool) -> np.ndarray:
    """:func:`_iou_pairs` on boxes given as four contiguous coordinate columns (same arithmetic)."""
    g0, g1, g2, g3 = g
    d0, d1, d2, d3 = d
    if plus_one:
        xmin = np.maximum(g0, d0)
        ymin = np.maximum(g1, d1)
        xmax = np.minimum(g2 + 1, d2 + 1)
        ymax = np.minimum(g3 + 1, d3 + 1)
        w = np.subtract(xmax, xmin, out=xmax)
        h = np.subtract(ymax, ymin, out=ymax)
        ov = np.maximum(0, w, out=w)
        ov *= np.maximum(0, h, out=h)
        a1 = (g2 - g0 + 1) * (g3 - g1 + 1)
        a2 = (d2 - d0 + 1) * (d3 - d1 + 1)
    else:
        xmin = np.maximum(g0, d0)
        ymin = np.maximum(g1, d1)
        xmax = np.minimum(g2, d2)
        ymax = np.minimum(g3, d3)
        w = np.subtract(xmax, xmin, out=xmax)
        h = np.subtract(ymax, ymin, out=ymax)
        ov = np.maximum(0, w, out=w)
        ov *= np.maximum(0, h, out=h)
        a1 = (g2 - g0) * (g3 - g1)
        a2 = (d2 - d0) * (d3 - d1)
    a1 += a2
    a1 -= ov
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.divide(ov, a1, out=a1)


_CHUNK = 1 << 15  # frames per block of tube-pair IoUs


def _ge(values: np.ndarray, thr: float) -> np.ndarray:
    """``value >= thr`` as NumPy 2 evaluates it for a scalar of ``values.dtype`` and a Python float."""
    return values >= values.dtype.type(thr)


# --------------------------------------------------------------------------------- frame-mAP
@dataclass
class _FrameGT:
    labels: np.ndarray  # per box
    keys: np.ndarray  # (iv, frame) encoded
    boxes: np.ndarray  # float64, like the official tolist() -> np.array


def _flatten_frame_gt(gt: dict, vlist: list) -> _FrameGT:
    labels, keys, boxes = [], [], []
    gttubes = gt["gttubes"]
    label_of = {i: i for i in range(len(gt["labels"]))}  # finds a key exactly when `ilabel in tubes` would
    for iv, v in enumerate(vlist):
        for ilabel, tubes in gttubes[v].items():
            il = label_of.get(ilabel)
            if il is None:
                continue  # the official loop never reads it
            for k, tube in enumerate(tubes):
                if isinstance(tube, (list, tuple, np.ndarray)) and len(tube) == 0:
                    continue
                tube = _as_tube(tube, empty=True)
                if tube.ndim != 2:
                    raise ValueError(f"ground truth: gttubes[{v!r}][{ilabel!r}][{k}] is not an (n, 5) numeric array "
                                     f"of frame, x1, y1, x2, y2")
                if len(tube) == 0:
                    continue
                labels.append(np.full(len(tube), il, np.int64))
                keys.append(iv * (1 << 32) + tube[:, 0].astype(np.int64))
                boxes.append(np.asarray(tube[:, 1:5], dtype=np.float64))
    if not labels:
        return _FrameGT(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)))
    labels, keys, boxes = np.concatenate(labels), np.concatenate(keys), np.concatenate(boxes)
    order = np.lexsort((keys, labels))  # stable: keeps tube-then-row order inside a key
    return _FrameGT(labels[order], keys[order], boxes[order])


def frame_ap(gt: dict, dets, thr: float = 0.5, variant: str = "multisports",
             excluded_labels=OFFICIAL_EXCLUDED_LABELS, records: dict | None = None) -> APResult:
    """Frame-mAP at IoU ``thr`` (official ``frameAP``; MultiSports reports F@0.5), all classes at once.

    ``records`` (variant "multisports" only), when given, receives the per-video records behind a
    bootstrap over videos (actparse.metrics.bootstrap.voc_ap_replicates): ``records["detections"]``
    (cls, video, score, tp: every scored detection, each class's rows in the official rank order) and
    ``records["ground_truth"]`` (cls, video, n: ground-truth boxes per class and video)."""
    _check_variant(variant)
    check_ground_truth(gt, tubes=False)
    act = variant in ("act", "moc")
    dets = as_frame_detections(dets)
    vlist = test_videos(gt)
    fgt = _flatten_frame_gt(gt, vlist)
    res = APResult(map=float("nan"))
    gt_count = np.bincount(fgt.labels, minlength=len(gt["labels"])) if len(fgt.labels) else np.zeros(len(gt["labels"]), int)
    scored = [il for il, label in enumerate(gt["labels"]) if label not in excluded_labels and il < len(gt_count)
              and gt_count[il] > 0]
    if not scored:
        if variant == "moc":
            res.map = _moc_mean(res, gt["labels"], excluded_labels, {}, _frame_label_counts(dets))
        return res
    lab_col = dets[:, 2]
    lab_int = np.where(lab_col == np.floor(lab_col), lab_col, -1).astype(np.int64)  # `dets[:, 2] == ilabel`
    d_by_lab = np.argsort(lab_int, kind="stable")
    lab_sorted = lab_int[d_by_lab]
    rank_parts, order_parts, idx_parts, lab_n = [], [], [], []
    base = 0
    for il in scored:
        a, b = np.searchsorted(lab_sorted, il, "left"), np.searchsorted(lab_sorted, il, "right")
        rows = d_by_lab[a:b]  # = np.flatnonzero(dets[:, 2] == il), in file order
        order = np.argsort(-dets[rows, 3])  # the official ranking call, ties included
        rank = np.empty(len(rows), np.int64)
        rank[order] = np.arange(len(rows))
        rank_parts.append(rank + base)
        order_parts.append(order + base)
        idx_parts.append(rows)
        lab_n.append(len(rows))
        base += len(rows)
    idx = np.concatenate(idx_parts)
    rank = np.concatenate(rank_parts)
    order = np.concatenate(order_parts)
    d = dets[idx]
    nd = len(d)
    d_lab = np.repeat(np.asarray(scored, np.int64), lab_n)
    nv = max(len(vlist), 1)
    gk = (fgt.labels * nv + (fgt.keys >> 32)) * (1 << 32) + (fgt.keys & 0xFFFFFFFF)
    ukeys, ustart, ucount = np.unique(gk, return_index=True, return_counts=True)  # gk is sorted
    iv = d[:, 0].astype(np.int64)
    fr = d[:, 1].astype(np.int64)
    dk = np.where((iv >= 0) & (iv < nv) & (fr >= 0), (d_lab * nv + iv) * (1 << 32) + fr, -1)
    pos = np.searchsorted(ukeys, dk)
    pos_c = np.minimum(pos, max(len(ukeys) - 1, 0))
    has = (pos < len(ukeys)) & (ukeys[pos_c] == dk) if len(ukeys) else np.zeros(nd, bool)
    start = np.where(has, ustart[pos_c], 0)
    count = np.where(has, ucount[pos_c], 0)
    dbox = d[:, 4:8].astype(np.result_type(d.dtype, np.float64))
    target = np.full(nd, -1, np.int64)
    rows_full = {}
    for c in np.unique(count[has]):
        sel = np.flatnonzero(has & (count == c))
        gidx = start[sel, None] + np.arange(c)
        ious = _iou_pairs(fgt.boxes[gidx], dbox[sel, None, :], plus_one=act)
        amax = np.argmax(ious, axis=1)
        best = ious[np.arange(len(sel)), amax]
        ok = _ge(best, thr)
        target[sel[ok]] = gidx[np.arange(len(sel)), amax][ok]
        if act:
            for j, i in enumerate(sel):
                rows_full[i] = (gidx[j], ious[j])
    tp = _act_resolve(rank, target, rows_full, start, thr) if act else greedy_first_claim(rank, target)
    if records is not None:
        if act:
            raise ValueError("frame_ap: per-video records are kept for the multisports variant only")
        _keep_frame_records(records, gt, vlist, fgt, scored, d, d_lab, order, tp)
    ap, prs = pr_ap_segments(tp[order], np.asarray(lab_n), gt_count[scored], act=act)
    aps = list(ap.astype(np.float32) if act else ap)
    for k, il in enumerate(scored):
        label = gt["labels"][il]
        res.pr[label] = prs[k]
        res.ap[label] = aps[k] * 100
    if variant == "moc":
        res.map = _moc_mean(res, gt["labels"], excluded_labels, dict(zip(scored, aps)), _frame_label_counts(dets))
    else:
        res.map = np.mean(100 * np.array(aps))
    return res


def _keep_frame_records(records: dict, gt: dict, vlist: list, fgt: "_FrameGT", scored: list, d: np.ndarray,
                        d_lab: np.ndarray, order: np.ndarray, tp: np.ndarray) -> None:
    """frame_ap's matches as per-video records (see ``frame_ap``); a detection on a video outside the
    scored list keeps video "" (it is a false positive in every draw)."""
    import pandas as pd

    names = [str(gt["labels"][il]) for il in range(len(gt["labels"]))]
    iv = d[order, 0].astype(np.int64)
    ok = (iv >= 0) & (iv < len(vlist)) & (d[order, 0] == np.floor(d[order, 0]))
    vids = np.asarray([str(v) for v in vlist] + [""], object)
    records["detections"] = pd.DataFrame({
        "cls": [names[il] for il in d_lab[order]], "video": vids[np.where(ok, iv, len(vlist))],
        "score": d[order, 3].astype(np.float64), "tp": np.asarray(tp[order], bool)})
    keep = np.isin(fgt.labels, scored)
    lab, vi = fgt.labels[keep], (fgt.keys[keep] >> 32).astype(np.int64)
    pairs, n = np.unique(np.stack([lab, vi], 1), axis=0, return_counts=True) if keep.any() else (np.zeros((0, 2), int), [])
    records["ground_truth"] = pd.DataFrame({"cls": [names[il] for il in pairs[:, 0]],
                                            "video": [str(vlist[i]) for i in pairs[:, 1]],
                                            "n": np.asarray(n, np.int64)})


def _frame_label_counts(dets: np.ndarray) -> dict:
    lab = dets[:, 2]
    ok = lab == np.floor(lab)
    vals, counts = np.unique(lab[ok].astype(np.int64), return_counts=True)
    return dict(zip(vals.tolist(), counts.tolist()))


def _moc_mean(res: "APResult", labels, excluded_labels, ap_of: dict, n_dets: dict):
    """MOC-Detector ``ACT.py``'s mean over every (not excluded) label, in label order: a label
    without ground truth has AP 0 (its PR rows: the leading (1, 0), then (0, 0) per detection, where
    ``ACT.py`` divides 0 by 0); fills ``res.ap`` / ``res.pr`` for those labels."""
    aps = []
    for il, label in enumerate(labels):
        if label in excluded_labels:
            continue
        if il not in ap_of:
            pr = np.zeros((n_dets.get(il, 0) + 1, 2), np.float32)
            pr[0, 0] = 1.0
            res.pr[label] = pr
            res.ap[label] = np.float32(0) * 100
        aps.append(ap_of.get(il, np.float32(0)))
    return np.mean(100 * np.array(aps, np.float32)) if aps else float("nan")


def _act_resolve(rank: np.ndarray, target: np.ndarray, rows: dict, group: np.ndarray, thr: float) -> np.ndarray:
    """ACT matching (a matched ground truth is deleted): first-claim where no box is claimed twice,
    the sequential official loop inside the groups (frames / videos) where some box is."""
    tp = greedy_first_claim(rank, target)
    cand = target >= 0
    if not cand.any():
        return tp
    vals, counts = np.unique(target[cand], return_counts=True)
    nan_rows = [i for i, (_, r) in rows.items() if np.isnan(r).any()]
    contested = set(group[np.isin(target, vals[counts > 1])].tolist()) | {int(group[i]) for i in nan_rows}
    if not contested:
        return tp
    members: dict[int, list[int]] = {}
    for i in rows:
        g = int(group[i])
        if g in contested:
            members.setdefault(g, []).append(i)
    for g, idx in members.items():
        idx.sort(key=lambda i: rank[i])
        taken: set[int] = set()
        for i in idx:
            gids, ious = rows[i]
            keep = np.array([int(x) not in taken for x in gids])
            tp[i] = False
            if not keep.any():
                continue
            rem = ious[keep]
            a = int(np.argmax(rem))
            if rem[a] >= rem.dtype.type(thr):
                tp[i] = True
                taken.add(int(gids[keep][a]))
    return tp


# --------------------------------------------------------------------------------- video-mAP
@dataclass
class _Tubes:
    """Many tubes in one array: rows (frame, x1, y1, x2, y2), tube t = rows[start[t]:start[t]+len[t]]."""

    rows: np.ndarray
    start: np.ndarray
    length: np.ndarray
    first: np.ndarray  # first frame, tube dtype
    last: np.ndarray
    _cols: dict = field(default_factory=dict, repr=False)
    names: object = None  # names[t]: how errors call tube t
    gapped: np.ndarray | None = None  # tube skips frames (None: found from the rows when needed)

    def gaps(self) -> np.ndarray:
        if self.gapped is None:
            step = np.diff(self.rows[:, 0])
            inner = np.ones(len(step), bool)
            inner[self.start[1:] - 1] = False
            gap_rows = np.flatnonzero(inner & (step != 1))
            self.gapped = np.zeros(len(self.start), bool)
            self.gapped[np.searchsorted(self.start, gap_rows, side="right") - 1] = True
        return self.gapped

    def name(self, t: int) -> str:
        return self.names[t] if self.names is not None else f"tube {t}"

    def columns(self, dtype) -> list:
        """x1, y1, x2, y2 as arrays of ``dtype`` (views when the dtype is the rows' own)."""
        key = np.dtype(dtype)
        if key not in self._cols:
            self._cols[key] = [self.rows[:, k] if self.rows.dtype == key else self.rows[:, k].astype(key)
                               for k in range(1, 5)]
        return self._cols[key]


_shape_dtype = attrgetter("shape", "dtype")


def _join_rows(arrays: list) -> tuple[np.ndarray, np.ndarray]:
    """(``np.concatenate(arrays)``, the arrays' lengths). 2-D arrays of one dtype and width are
    joined as raw bytes, which costs less per array (thousands of short tubes)."""
    lengths = np.fromiter(map(len, arrays), np.int64, count=len(arrays))
    try:
        kinds = set(map(_shape_dtype, arrays))
    except (AttributeError, TypeError):
        kinds = None
    if kinds and all(len(shape) == 2 for shape, _ in kinds):
        widths = {shape[1] for shape, _ in kinds}
        dtypes = {dt for _, dt in kinds}
        if len(widths) == 1 and len(dtypes) == 1:
            try:
                raw = b"".join(arrays)
            except (TypeError, BufferError, ValueError):  # not C-contiguous
                raw = None
            if raw is not None:
                return np.frombuffer(raw, dtypes.pop()).reshape(-1, widths.pop()), lengths
    return np.concatenate(arrays), lengths


def _as_tube(t, empty: bool = False) -> np.ndarray:
    """``t`` as an (n, 5+) numeric array (n >= 1 unless ``empty``), or a 1-D array where it is not one."""
    try:
        a = np.asarray(t)
    except ValueError:  # ragged
        return np.zeros(0, object)
    ok = a.ndim == 2 and a.shape[1] >= 5 and (empty or len(a)) and a.dtype.kind in "biuf"
    return a if ok else np.zeros(0, object)


def _stack_tubes(tubes: list, names) -> _Tubes:
    """Stack tubes (each an (n >= 1, 5+) numeric array, frames increasing); ``names[i]`` labels tube i
    in errors."""
    if not tubes:
        return _Tubes(np.zeros((0, 5)), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    try:  # usually every tube is an (n, 5) or every one an (n, 6) array: one copy
        rows, lengths = _join_rows(tubes)
        if rows.ndim != 2 or rows.shape[1] < 5 or (lengths == 0).any() or rows.dtype.kind not in "biuf":
            raise ValueError
        rows = rows[:, :5]
    except (ValueError, TypeError, IndexError):
        arrs = list(map(_as_tube, tubes))
        bad = next((i for i, a in enumerate(arrs) if a.ndim != 2), None)
        if bad is not None:
            raise ValueError(f"{names[bad]}: a tube must be an (n>=1, 5+) numeric array (frame, x1, y1, x2, y2), "
                             f"got {_describe(tubes[bad])}") from None
        lengths = np.fromiter(map(len, arrs), np.int64, count=len(arrs))
        rows = np.concatenate([a[:, :5] for a in arrs])
    start = np.cumsum(lengths) - lengths
    step = np.diff(rows[:, 0])
    inner = np.ones(len(step), bool)
    inner[start[1:] - 1] = False
    wrong = np.flatnonzero(inner & ~(step > 0))
    if len(wrong):
        t = int(np.searchsorted(start, wrong[0], side="right") - 1)
        raise ValueError(f"{names[t]}: tube frames must increase, got {np.asarray(tubes[t])[:5, 0].tolist()}...")
    gapped = np.zeros(len(start), bool)
    gap_rows = np.flatnonzero(inner & (step != 1))
    gapped[np.searchsorted(start, gap_rows, side="right") - 1] = True
    return _Tubes(rows, start, lengths, rows[start, 0], rows[start + lengths - 1, 0], names=names, gapped=gapped)


def _describe(x) -> str:
    if isinstance(x, np.ndarray):
        return f"shape {x.shape}, dtype {x.dtype}"
    return f"a {type(x).__name__}" + (f" {x[:20]!r}" if isinstance(x, str) else "")


class _Names:
    """Lazy error labels: ``prefix`` + repr of the i-th name (of ``names[index[i]]`` given an index)."""

    def __init__(self, prefix: str, names: list, index=None):
        self.prefix, self.names, self.index = prefix, names, index

    def __getitem__(self, i):
        return f"{self.prefix} {self.names[i if self.index is None else int(self.index[i])]!r}"


def tube_iou_pairs(gt: _Tubes, gi: np.ndarray, det: _Tubes, di: np.ndarray, variant: str = "multisports",
                   temporal_plus_one: bool | None = None):
    """Spatio-temporal IoU of tube pairs (official ``iou3dt``) for index arrays ``gi`` x ``di``.

    Returns (iou as float64 holding the official value, overlap flag). Where the tubes do not
    overlap in time the official code returns the Python float 0.0 (flag False); elsewhere a NumPy
    scalar of the tubes' dtype, which matters for threshold comparisons. ``temporal_plus_one``
    (default: the variant's; MultiSports code False, ACT True) counts frame spans as ``last - first
    + 1``; True fixes the MultiSports quirk that a one-frame temporal overlap scores 0.
    """
    act = variant in ("act", "moc")
    t_one = act if temporal_plus_one is None else bool(temporal_plus_one)
    dtype = np.result_type(gt.rows.dtype, det.rows.dtype)
    gf, gl = gt.first[gi].astype(dtype), gt.last[gi].astype(dtype)
    df, dl = det.first[di].astype(dtype), det.last[di].astype(dtype)
    tmin = np.maximum(gf, df)
    tmax = np.minimum(gl, dl)
    ovl = ~(tmax < tmin)
    out = np.zeros(len(gi), np.float64)
    if not ovl.any():
        return out, ovl
    p = np.flatnonzero(ovl)
    n = (tmax[p] - tmin[p]).astype(np.int64) + 1  # rows of the overlap
    g0 = gt.start[gi[p]] + (tmin[p] - gf[p]).astype(np.int64)  # first overlapping row of each pair
    d0 = det.start[di[p]] + (tmin[p] - df[p]).astype(np.int64)
    odd = np.flatnonzero(gt.gaps()[gi[p]] | det.gaps()[di[p]])
    if len(odd):  # a tube that skips frames: its rows are found by frame, as the official slicing does
        _gapped_rows(gt, gi[p], det, di[p], tmin[p], tmax[p], odd, g0, d0, n)
    starts = np.cumsum(n) - n
    total = int(n.sum())
    gcols, dcols = gt.columns(dtype), det.columns(dtype)
    # per-frame IoUs in chunks of whole pairs, about _CHUNK frames each, so that the gathered
    # coordinates and the temporaries stay in cache
    cuts = np.unique(np.r_[0, np.searchsorted(starts, np.arange(_CHUNK, total, _CHUNK)), len(p)])
    parts = []
    for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        nn = n[a:b]
        rel = starts[a:b] - starts[a]
        ar = np.arange(int(rel[-1] + nn[-1]))
        gidx = np.repeat(g0[a:b] - rel, nn) + ar
        didx = np.repeat(d0[a:b] - rel, nn) + ar
        parts.append(_iou_cols([c[gidx] for c in gcols], [c[didx] for c in dcols], plus_one=act))
    per_frame = np.concatenate(parts)
    mean = segment_means(per_frame, starts, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        if t_one:
            inter = tmax[p] - tmin[p] + 1
            union = np.maximum(gl[p], dl[p]) - np.minimum(gf[p], df[p]) + 1
        else:
            inter = tmax[p] - tmin[p]
            union = np.maximum(gl[p], dl[p]) - np.minimum(gf[p], df[p])
        out[p] = mean * (inter / union)
    return out, ovl


def _gapped_rows(gt: _Tubes, gi, det: _Tubes, di, tmin, tmax, pairs, g0, d0, n) -> None:
    """First rows (``g0``, ``d0``) and row counts (``n``) of the temporal overlap of ``pairs`` where a
    tube skips frames, found as the official ``iou3dt`` finds them: from the row of frame ``tmin`` to
    the row of frame ``tmax`` in each tube. Where the official code fails (a tube lacks one of those
    frames, or the two slices differ in length or frames) raise ValueError naming the tubes."""
    for q in pairs.tolist():
        g, d = int(gi[q]), int(di[q])
        gfr = gt.rows[gt.start[g]:gt.start[g] + gt.length[g], 0]
        dfr = det.rows[det.start[d]:det.start[d] + det.length[d], 0]
        ga, gb = np.flatnonzero(gfr == tmin[q]), np.flatnonzero(gfr == tmax[q])
        da, db = np.flatnonzero(dfr == tmin[q]), np.flatnonzero(dfr == tmax[q])
        if not (len(ga) == len(gb) == len(da) == len(db) == 1) or gb[0] - ga[0] != db[0] - da[0] \
                or (gfr[ga[0]:gb[0] + 1] != dfr[da[0]:db[0] + 1]).any():
            raise ValueError(f"{gt.name(g)} and {det.name(d)}: inside their temporal overlap (frames {tmin[q]:g} "
                             f"to {tmax[q]:g}) the two tubes do not hold the same frames (the official IoU "
                             f"slices both by position there and fails)")
        g0[q], d0[q], n[q] = gt.start[g] + ga[0], det.start[d] + da[0], gb[0] - ga[0] + 1


def _video_ge(iou: np.ndarray, ovl: np.ndarray, thr: float, dtype) -> np.ndarray:
    """Official ``ious[amax] >= thr``: NumPy scalar (tube dtype) or Python 0.0 where no overlap."""
    t = np.dtype(dtype).type(thr)
    return np.where(ovl, iou.astype(dtype) >= t, iou >= thr)


def video_ap(gt: dict, dets: dict, thresholds=(0.5,), variant: str = "multisports",
             excluded_labels=OFFICIAL_EXCLUDED_LABELS, missing_label: str = "error",
             temporal_plus_one: bool | None = None) -> dict:
    """Video-mAP for each threshold (official ``videoAP``): {thr: APResult}.

    All classes at once: the tube IoU of every (detection, same-video same-class ground truth) pair
    is computed in one pass and reused for every threshold. ``missing_label``: "error" (the official
    code raises KeyError when ``dets`` lacks a scored label) or "empty" (no detections).
    ``temporal_plus_one``: see :func:`tube_iou_pairs` (None = the official behaviour of ``variant``).
    """
    _check_variant(variant)
    check_ground_truth(gt, tubes=False)
    act = variant in ("act", "moc")
    thresholds = list(thresholds)
    vlist = test_videos(gt)
    out = {t: APResult(map=float("nan")) for t in thresholds}
    # scored classes, their ground truth (official gt[v] list order) and detections (official order)
    names = gt["labels"]
    scored = [label not in excluded_labels for label in names]
    for ilabel, label in enumerate(names):
        if scored[ilabel] and ilabel not in dets and missing_label == "error":
            raise ValueError(f"video detections have no entry for label index {ilabel} ({label!r})")
    # one pass over the videos; `label_of.get(key)` finds a key exactly when the official
    # `ilabel in tubes` would
    label_of = {i: i for i in range(len(names))}
    g_lab, g_vid, g_n, gtubes = [], [], [], []
    gttubes = gt["gttubes"]
    for iv, v in enumerate(vlist):
        for key, tubes in gttubes[v].items():
            il = label_of.get(key)
            if il is None or not scored[il] or not len(tubes):
                continue
            g_lab.append(il)
            g_vid.append(iv)
            g_n.append(len(tubes))
            gtubes.extend(tubes)
    if not gtubes:
        if variant == "moc":
            for thr in thresholds:
                out[thr].map = _moc_mean(out[thr], names, excluded_labels, {}, _video_label_counts(dets))
        return out
    g_lab, g_vid = np.repeat(g_lab, g_n).astype(np.int64), np.repeat(g_vid, g_n).astype(np.int64)
    g_order = np.argsort(g_lab * (1 << 32) + g_vid, kind="stable")  # by class, then video, then list order
    gt_count = np.bincount(g_lab, minlength=len(names))
    lab_ids = np.flatnonzero(gt_count)  # scored classes with ground truth, in label order
    labels = [names[i] for i in lab_ids]
    gt_num = gt_count[lab_ids]
    li_of = np.full(len(names), -1, np.int64)
    li_of[lab_ids] = np.arange(len(lab_ids))
    d_vid, d_tube, d_names, rank_parts, order_parts, d_count = [], [], [], [], [], []
    vindex = {v: i for i, v in enumerate(vlist)}
    base = 0
    for ilabel in lab_ids.tolist():
        detections = dets[ilabel] if ilabel in dets else ()
        vn, sc, tb = zip(*detections) if len(detections) else ((), (), ())  # each detection: (video, score, tube)
        scores = np.array(sc)
        order = np.argsort(-scores)  # the official ranking call, ties included
        rank = np.empty(len(sc), np.int64)
        rank[order] = np.arange(len(sc))
        rank_parts.append(rank + base)
        order_parts.append(order + base)
        base += len(sc)
        d_count.append(len(sc))
        d_vid += map(vindex.get, vn, repeat(-1))
        d_tube += tb
        d_names += vn
    d_lab = np.repeat(np.arange(len(lab_ids)), d_count)
    nd = len(d_lab)
    rank = np.concatenate(rank_parts)
    order = np.concatenate(order_parts)
    d_vid = np.asarray(d_vid, np.int64)
    G = _stack_tubes(gtubes, _Names("ground truth of", vlist, g_vid))
    gk = li_of[g_lab] * (1 << 32) + g_vid
    ukeys, ustart, ucount = np.unique(gk[g_order], return_index=True, return_counts=True)
    dk = d_lab * (1 << 32) + d_vid
    pos = np.searchsorted(ukeys, dk)
    pos_c = np.minimum(pos, len(ukeys) - 1)
    has = (d_vid >= 0) & (pos < len(ukeys)) & (ukeys[pos_c] == dk)
    sel = np.flatnonzero(has)
    counts = ucount[pos_c[sel]]
    D = _stack_tubes([d_tube[i] for i in sel.tolist()], _Names("detection of", d_names, sel)) if len(sel) else None
    dtype = np.result_type(G.rows.dtype, D.rows.dtype) if D is not None else G.rows.dtype
    pstart = np.cumsum(counts) - counts
    gi = g_order[np.repeat(ustart[pos_c[sel]], counts) + (np.arange(counts.sum()) - np.repeat(pstart, counts))] \
        if len(sel) else np.zeros(0, np.int64)
    di = np.repeat(np.arange(len(sel)), counts)
    iou, ovl = (tube_iou_pairs(G, gi, D, di, variant, temporal_plus_one) if len(sel)
                else (np.zeros(0), np.zeros(0, bool)))
    lab_n = np.asarray(d_count, np.int64)
    groups = [(c, np.flatnonzero(counts == c)) for c in np.unique(counts)]
    for thr in thresholds:
        target = np.full(nd, -1, np.int64)
        rows = {}
        for c, s_ in groups:
            pidx = pstart[s_, None] + np.arange(c)
            amax = np.argmax(iou[pidx], axis=1)
            pbest = pidx[np.arange(len(s_)), amax]
            ok = _video_ge(iou[pbest], ovl[pbest], thr, dtype)
            target[sel[s_[ok]]] = gi[pbest[ok]]
            if act:
                for j, k in enumerate(s_):
                    rows[int(sel[k])] = (gi[pidx[j]], iou[pidx[j]], ovl[pidx[j]])
        if act:
            tp = _act_resolve_video(rank, target, rows, d_names, thr, dtype)
        else:
            tp = greedy_first_claim(rank, target)
        ap, prs = pr_ap_segments(tp[order], lab_n, np.asarray(gt_num), act=act)
        aps = list(ap.astype(np.float32) if act else ap)
        for li, label in enumerate(labels):
            out[thr].pr[label] = prs[li]
            out[thr].ap[label] = aps[li] * 100
        if variant == "moc":
            out[thr].map = _moc_mean(out[thr], names, excluded_labels, dict(zip(lab_ids.tolist(), aps)),
                                     _video_label_counts(dets))
        else:
            out[thr].map = np.mean(100 * np.array(aps))
    return out


def _video_label_counts(dets: dict) -> dict:
    return {il: len(d) for il, d in dets.items()}


def _act_resolve_video(rank, target, rows, dv, thr, dtype):
    tp = greedy_first_claim(rank, target)
    cand = target >= 0
    if not cand.any():
        return tp
    vals, counts = np.unique(target[cand], return_counts=True)
    contested_t = set(vals[counts > 1].tolist())
    nan_v = {dv[i] for i, (_, r, _o) in rows.items() if np.isnan(r).any()}
    contested_v = {dv[i] for i in np.flatnonzero(cand) if int(target[i]) in contested_t} | nan_v
    if not contested_v:
        return tp
    by_v: dict = {}
    for i in rows:
        if dv[i] in contested_v:
            by_v.setdefault(dv[i], []).append(i)
    t = np.dtype(dtype).type(thr)
    for v, idx in by_v.items():
        idx.sort(key=lambda i: rank[i])
        taken: set[int] = set()
        for i in idx:
            gids, ious, ovl = rows[i]
            keep = np.array([int(x) not in taken for x in gids])
            tp[i] = False
            if not keep.any():
                continue
            a = int(np.argmax(ious[keep]))
            val, o = ious[keep][a], ovl[keep][a]
            if (np.asarray(val).astype(dtype) >= t) if o else (val >= thr):
                tp[i] = True
                taken.add(int(gids[keep][a]))
    return tp


def video_ap_ranges(gt: dict, dets: dict, variant: str = "multisports",
                    excluded_labels=OFFICIAL_EXCLUDED_LABELS, missing_label: str = "error",
                    temporal_plus_one: bool | None = None) -> dict:
    """The official averaged video-mAPs: "0.05:0.45", "0.10:0.90", "0.50:0.95" (``videoAP_all``).

    Thresholds are built with the official expressions (``0.1 + 0.1 * i`` ...) and summed in the
    official order, so the averages are the official floats.
    """
    high = [0.5 + 0.05 * i for i in range(10)]
    low = [0.05 + 0.05 * i for i in range(9)]
    allt = [0.1 + 0.1 * i for i in range(9)]
    res = video_ap(gt, dets, sorted(set(high + low + allt)), variant, excluded_labels, missing_label,
                   temporal_plus_one)

    def avg(ths, n):
        s = 0
        for t in ths:
            s += res[t].map
        return s / n

    return {"0.05:0.45": avg(low, 9.0), "0.10:0.90": avg(allt, 9.0), "0.50:0.95": avg(high, 10.0)}


def evaluate(gt: dict, frame_dets=None, video_dets=None, variant: str = "multisports",
             excluded_labels=OFFICIAL_EXCLUDED_LABELS, missing_label: str = "error",
             temporal_plus_one: bool | None = None) -> dict:
    """All MultiSports numbers the challenge reports, as a plain dict (x100, like the official print)."""
    out: dict = {}
    if frame_dets is not None:
        out["frame_map@0.5"] = _num(frame_ap(gt, frame_dets, 0.5, variant, excluded_labels).map)
    if video_dets is not None:
        res = video_ap(gt, video_dets, [0.2, 0.5], variant, excluded_labels, missing_label, temporal_plus_one)
        out["video_map@0.2"] = _num(res[0.2].map)
        out["video_map@0.5"] = _num(res[0.5].map)
        rng = video_ap_ranges(gt, video_dets, variant, excluded_labels, missing_label, temporal_plus_one)
        out.update({f"video_map@{k}": _num(v) for k, v in rng.items()})
    return out
