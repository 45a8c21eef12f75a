"""Paired bootstrap confidence intervals over videos, and the direction rule built on them.

A metric of the default evaluation is a function of per-video records: each test video contributes
its detections (score, true-positive flag, for person AP and each part's AP), its number of ground
truth boxes, whether its action was predicted right, its Kinetics-TPS part-state correctness (PSC)
and its matched / correctly-stated parts. A bootstrap replicate draws the test videos with
replacement and recomputes every metric on the drawn set (a video drawn twice counts twice);
"paired" means the two systems being compared are scored on the same draws, so the interval of
their difference leaves out the spread that comes from which videos happen to be in the test set
for both.

Replicates are computed from weights (how often each video was drawn) rather than by copying
rows. For AP this equals scoring the data set with the drawn videos copied (a test checks it):
detections are ranked once by score, and a video drawn k times adds k to the cumulative true and
false positive counts at each of its detections.

The direction rule (``verdict``): a difference "holds" when its 95% interval lies above zero,
"reverses" when it lies below, and "ties" when the interval contains zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .detection import REC_THRS, match_detections
from .tps import OFFICIAL_STEPS

# Metrics that have records, in the order tables show them.
METRICS = ("person_ap50", "part_ap50", "part_state_acc", "video_acc", "tps_score")
AP_METRICS = ("person_ap50", "part_ap50")

DET_COLUMNS = ("metric", "cls", "video", "score", "tp")
GT_COLUMNS = ("metric", "cls", "video", "n")
VIDEO_COLUMNS = ("video", "action_correct", "tps_psc", "tps_correct", "state_matched", "state_correct")


@dataclass
class Records:
    """Per-video records of one evaluation (``stages.evaluate`` writes them as three tables)."""

    detections: pd.DataFrame  # metric, cls, video, score, tp: every kept detection and its match
    ground_truth: pd.DataFrame  # metric, cls, video, n: ground-truth boxes per video and class
    videos: pd.DataFrame  # one row per test video: action_correct, tps_psc, tps_correct, state_*

    def __post_init__(self):
        for name, cols in (("detections", DET_COLUMNS), ("ground_truth", GT_COLUMNS), ("videos", VIDEO_COLUMNS)):
            missing = [c for c in cols if c not in getattr(self, name).columns]
            if missing:
                raise ValueError(f"bootstrap records: table {name!r} lacks columns {missing}")
        if self.videos["video"].duplicated().any():
            dup = self.videos.loc[self.videos["video"].duplicated(), "video"].iloc[0]
            raise ValueError(f"bootstrap records: video {dup!r} appears twice in the per-video table")

    @property
    def video_names(self) -> list[str]:
        return sorted(self.videos["video"])


# ------------------------------------------------------------------------------------------ records
def ap_records(metric: str, gt_video, gt_img, gt_cls, gt_boxes, det_video, det_img, det_cls, det_boxes, det_scores,
               iou_thr: float = 0.5, max_dets: int | None = 100, classes=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Detections with their true-positive flags, and ground-truth counts, per video and class.

    The same matching as ``detection_ap`` (COCO greedy by score, at most ``max_dets`` per image and
    class); ``*_img`` are image ids unique across videos, ``*_video`` the video of each row."""
    gt_cls, det_cls = np.asarray(gt_cls), np.asarray(det_cls)
    gt_video, det_video = np.asarray(gt_video, object), np.asarray(det_video, object)
    gt_img, det_img = np.asarray(gt_img, np.int64), np.asarray(det_img, np.int64)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    det_scores = np.asarray(det_scores, np.float64)
    if classes is None:
        classes = sorted(set(gt_cls.tolist()) | set(det_cls.tolist()))
    dets, gts = [], []
    for c in classes:
        gs, ds = gt_cls == c, det_cls == c
        if not gs.any():
            continue  # detection_ap leaves a class without ground truth out of the mean
        vids, counts = np.unique(gt_video[gs], return_counts=True)
        gts.append(pd.DataFrame({"metric": metric, "cls": str(c), "video": vids, "n": counts.astype(np.int64)}))
        if not ds.any():
            continue
        tp, kept, _ = match_detections(gt_img[gs], gt_boxes[gs], det_img[ds], det_boxes[ds], det_scores[ds],
                                       iou_thr, max_dets)
        dets.append(pd.DataFrame({"metric": metric, "cls": str(c), "video": det_video[ds][kept],
                                  "score": det_scores[ds][kept], "tp": np.asarray(tp[kept], bool)}))
    empty_d = pd.DataFrame({"metric": pd.Series(dtype=str), "cls": pd.Series(dtype=str), "video": pd.Series(dtype=str),
                            "score": pd.Series(dtype=np.float64), "tp": pd.Series(dtype=bool)})
    empty_g = pd.DataFrame({"metric": pd.Series(dtype=str), "cls": pd.Series(dtype=str), "video": pd.Series(dtype=str),
                            "n": pd.Series(dtype=np.int64)})
    return (pd.concat(dets, ignore_index=True) if dets else empty_d,
            pd.concat(gts, ignore_index=True) if gts else empty_g)


# -------------------------------------------------------------------------------------- replicates
def draw_weights(n_videos: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n_videos) counts: how often each video is drawn in each replicate (multinomial)."""
    if n_videos < 1:
        raise ValueError("bootstrap: no videos to draw from")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_videos, np.full(n_videos, 1.0 / n_videos), size=n_boot).astype(np.float64)


def _weighted_ap(score: np.ndarray, tp: np.ndarray, w_det: np.ndarray, n_gt: np.ndarray) -> np.ndarray:
    """COCO 101-point AP for each row of ``w_det`` (replicates x detections, detections in rank order)."""
    out = np.full(len(n_gt), np.nan)
    if len(score) == 0:
        out[n_gt > 0] = 0.0
        return out
    tps = np.cumsum(w_det * tp, axis=1)
    fps = np.cumsum(w_det * ~tp, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rc = tps / n_gt[:, None]
    pr = tps / (fps + tps + np.spacing(1))
    env = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    for b in np.nonzero(n_gt > 0)[0]:
        inds = np.searchsorted(rc[b], REC_THRS, side="left")
        valid = inds < env.shape[1]
        q = np.zeros(len(REC_THRS))
        q[valid] = env[b, inds[valid]]
        out[b] = q.mean()
    return out


def _ap_metric(rec: Records, metric: str, index: dict, W: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Mean AP over the classes with ground truth, for each replicate (row of W)."""
    gts = rec.ground_truth[rec.ground_truth["metric"] == metric]
    dets = rec.detections[rec.detections["metric"] == metric]
    if not len(gts):
        return np.full(len(W), np.nan)
    per_class = []
    for cls, g in gts.groupby("cls", sort=True):
        n_gt = W[:, g["video"].map(index).to_numpy()] @ g["n"].to_numpy(np.float64)
        d = dets[dets["cls"] == cls]
        # rank order as average_precision: by score, stable, ties by (image order ~ video order, row)
        o = np.lexsort((np.arange(len(d)), d["video"].map(index).to_numpy()))
        o = o[np.argsort(-d["score"].to_numpy(np.float64)[o], kind="mergesort")]
        score = d["score"].to_numpy(np.float64)[o]
        tp = d["tp"].to_numpy(bool)[o]
        cols = d["video"].map(index).to_numpy()[o]
        ap = np.empty(len(W))
        for s in range(0, len(W), chunk):
            ap[s:s + chunk] = _weighted_ap(score, tp, W[s:s + chunk][:, cols], n_gt[s:s + chunk])
        per_class.append(ap)
    return np.nanmean(np.vstack(per_class), axis=0) if per_class else np.full(len(W), np.nan)


def replicate(rec: Records, W: np.ndarray, videos: list[str] | None = None,
              steps: int = OFFICIAL_STEPS) -> dict[str, np.ndarray]:
    """Every metric of ``METRICS`` for each row of W (weights over ``videos``, default the records' own)."""
    videos = list(videos) if videos is not None else rec.video_names
    index = {v: i for i, v in enumerate(videos)}
    W = np.atleast_2d(np.asarray(W, np.float64))
    if W.shape[1] != len(videos):
        raise ValueError(f"bootstrap: {W.shape[1]} weights for {len(videos)} videos")
    v = rec.videos.set_index("video").reindex(videos)
    if v["action_correct"].isna().any():
        missing = [name for name, x in zip(videos, v["action_correct"].isna()) if x][:3]
        raise ValueError(f"bootstrap: no per-video record for videos {missing}")
    total = W.sum(axis=1)
    out: dict[str, np.ndarray] = {}
    for metric in AP_METRICS:
        out[metric] = _ap_metric(rec, metric, index, W)
    matched = v["state_matched"].to_numpy(np.float64)
    correct = v["state_correct"].to_numpy(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["part_state_acc"] = (W @ correct) / (W @ matched)
    out["video_acc"] = (W @ v["action_correct"].to_numpy(np.float64)) / total
    psc = v["tps_psc"].to_numpy(np.float64)
    if np.isnan(psc).all():
        out["tps_score"] = np.full(len(W), np.nan)
    else:
        # the official area: sum over t = k/steps, k = 1..steps-1, of the share of videos with
        # PSC >= t and the right class, times 1/steps; a video adds its count of such t
        t = np.arange(1, steps) / steps
        count = np.searchsorted(t, np.nan_to_num(psc, nan=-1.0), side="right").astype(np.float64)
        ok = v["tps_correct"].fillna(False).to_numpy(bool)
        out["tps_score"] = (W @ (count * ok)) / (steps * total)
    return out


# ---------------------------------------------------------------------------------------- intervals
def percentile_interval(x: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of replicates (NaN replicates left out)."""
    x = x[~np.isnan(x)]
    if not len(x):
        return float("nan"), float("nan")
    a = (1.0 - level) / 2
    lo, hi = np.quantile(x, [a, 1 - a], method="inverted_cdf")
    return float(lo), float(hi)


def bc_interval(x: np.ndarray, point: float, level: float = 0.95) -> tuple[float, float]:
    """Bias-corrected percentile interval (Efron's BC) of replicates ``x`` around the estimate ``point``.

    The percentile interval assumes the replicates centre on the estimate. A mean AP's do not: the
    precision envelope is a running maximum, so resampled curves (noisier) sit higher, and every
    class's bootstrap median lies above its AP. BC measures that shift, z0 = Phi^-1(share of
    replicates below the estimate, ties counted half), and reads the percentiles Phi(2 z0 -+ z) instead
    of the central ones. With no shift (z0 = 0, e.g. a symmetric accuracy) it is the percentile interval."""
    from scipy.stats import norm

    x = np.asarray(x, np.float64)
    x = x[~np.isnan(x)]
    if not len(x) or np.isnan(point):
        return float("nan"), float("nan")
    share = (np.sum(x < point) + 0.5 * np.sum(x == point)) / len(x)
    share = min(max(share, 0.5 / len(x)), 1 - 0.5 / len(x))
    z0, z = norm.ppf(share), norm.ppf(0.5 + level / 2)
    lo, hi = norm.cdf(2 * z0 - z), norm.cdf(2 * z0 + z)
    qlo, qhi = np.quantile(x, [lo, hi], method="inverted_cdf")
    return float(qlo), float(qhi)


def intervals(rec: Records, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, dict]:
    """Each metric's value and its percentile bootstrap interval: {metric: {value, lo, hi}}."""
    videos = rec.video_names
    point = replicate(rec, np.ones((1, len(videos))), videos)
    reps = replicate(rec, draw_weights(len(videos), n_boot, seed), videos)
    out = {}
    for m in METRICS:
        lo, hi = percentile_interval(reps[m], level)
        out[m] = {"value": float(point[m][0]), "lo": lo, "hi": hi}
    return out


def paired(a: Records, b: Records, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, dict]:
    """B minus A on the same bootstrap draws: {metric: {a, b, delta, lo, hi, verdict}}.

    Both must score the same test videos (else a ValueError names the difference)."""
    va, vb = set(a.video_names), set(b.video_names)
    if va != vb:
        only_a, only_b = sorted(va - vb)[:3], sorted(vb - va)[:3]
        raise ValueError(f"paired bootstrap needs the same test videos on both sides: only in A {only_a}, "
                         f"only in B {only_b}")
    videos = sorted(va)
    ones = np.ones((1, len(videos)))
    pa, pb = replicate(a, ones, videos), replicate(b, ones, videos)
    W = draw_weights(len(videos), n_boot, seed)
    ra, rb = replicate(a, W, videos), replicate(b, W, videos)
    out = {}
    for m in METRICS:
        lo, hi = percentile_interval(rb[m] - ra[m], level)
        delta = float(pb[m][0] - pa[m][0])
        out[m] = {"a": float(pa[m][0]), "b": float(pb[m][0]), "delta": delta, "lo": lo, "hi": hi,
                  "verdict": verdict(lo, hi)}
    return out


def verdict(lo: float, hi: float) -> str:
    """'holds' when the interval of (after - before) lies above zero, 'reverses' below, else 'ties'."""
    if np.isnan(lo) or np.isnan(hi):
        return "n/a"
    if lo > 0:
        return "holds"
    if hi < 0:
        return "reverses"
    return "ties"


# ----------------------------------------------------------------------------- per-video count tables
COUNT_STATS = ("top1", "mean_class")
COUNT_COLUMNS = ("video", "key", "cls", "hits", "n")


def count_replicates(counts: pd.DataFrame, key: str, stat: str, W: np.ndarray, videos: list[str]) -> np.ndarray:
    """Replicates of an accuracy from a per-video count table (schema ``video_counts``).

    ``top1`` = sum of the drawn videos' hits / sum of their scored items over every class of ``key``;
    ``mean_class`` = the mean over classes (those with a drawn item) of each class's own ratio, as
    :func:`actparse.metrics.classification.mean_class_accuracy`. ``W`` is (n_boot, len(videos)) draw
    counts (one row of ones gives the value on the test set itself); a video absent from the table
    scores nothing (no items). Fractions, not x100."""
    missing = [c for c in COUNT_COLUMNS if c not in counts.columns]
    if missing:
        raise ValueError(f"bootstrap counts: table lacks columns {missing}")
    if stat not in COUNT_STATS:
        raise ValueError(f"bootstrap counts: unknown statistic {stat!r}; known: {list(COUNT_STATS)}")
    sub = counts[counts["key"] == key]
    if sub.empty:
        raise ValueError(f"bootstrap counts: no rows for key {key!r}; known: {sorted(set(counts['key']))}")
    vindex = {v: i for i, v in enumerate(videos)}
    unknown = sorted(set(sub["video"]) - set(vindex))
    if unknown:
        raise ValueError(f"bootstrap counts: videos {unknown[:3]} are not among the drawn test videos")
    classes, ci = np.unique(sub["cls"].to_numpy(str), return_inverse=True)
    vi = np.array([vindex[v] for v in sub["video"]], dtype=np.int64)
    H = np.zeros((len(videos), len(classes)))
    N = np.zeros((len(videos), len(classes)))
    np.add.at(H, (vi, ci), sub["hits"].to_numpy(np.float64))
    np.add.at(N, (vi, ci), sub["n"].to_numpy(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        if stat == "top1":
            return (W @ H.sum(1)) / (W @ N.sum(1))
        per_class = (W @ H) / (W @ N)  # NaN where a class has no drawn item
        seen = ~np.isnan(per_class)
        return np.where(seen.any(1), np.nansum(per_class, 1) / np.maximum(seen.sum(1), 1), np.nan)


def counts_of(video, key, cls, correct) -> pd.DataFrame:
    """A ``video_counts`` table from one row per scored item (video, key, ground-truth class, right?)."""
    df = pd.DataFrame({"video": list(video), "key": list(key), "cls": [str(c) for c in cls],
                       "hits": np.asarray(correct, dtype=np.int64), "n": 1})
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype=("int64" if c in ("hits", "n") else "object")) for c in COUNT_COLUMNS})
    return df.groupby(["video", "key", "cls"], sort=True, as_index=False)[["hits", "n"]].sum()


def over_seeds(per_seed: list[np.ndarray], n_boot: int, seed: int = 1) -> np.ndarray:
    """Replicates of the mean over training seeds: each replicate also draws the seeds with replacement.

    ``per_seed``: one array of video-bootstrap replicates per training run (all on the same video draws,
    runs in a fixed order, e.g. by seed). The seed draws depend only on the number of runs, so two rows
    trained with the same seeds get the same draws and their difference stays paired in both the videos
    and the seeds. One run: its replicates as they are."""
    reps = np.stack([np.asarray(r, np.float64) for r in per_seed])  # (n_seeds, n_boot)
    if len(reps) == 1:
        return reps[0]
    S = draw_weights(len(reps), n_boot, seed)  # (n_boot, n_seeds)
    with np.errstate(invalid="ignore"):
        return np.einsum("bk,kb->b", S, reps) / S.sum(1)


# ------------------------------------------------------------------------- frame-mAP (VOC AP) records
def voc_ap_replicates(detections: pd.DataFrame, ground_truth: pd.DataFrame, W: np.ndarray,
                      videos: list[str], classes=None) -> np.ndarray:
    """Replicates of a frame-mAP (official MultiSports ``frameAP``: VOC AP, the precision envelope summed
    where recall changes) from ``frame_ap(..., records=...)``'s records, x1 (AP in [0, 1]).

    Each class's detections are kept in the official rank order, so a replicate weights them in place:
    a drawn video's true positive raises recall by its draw count / the drawn ground truth, and the
    precision at a rank is (weighted true positives) / (weighted detections) so far. This equals scoring
    the copied videos (a test checks it). Classes with no drawn ground truth are left out of the mean;
    a detection on video "" (outside the test list) counts once in every replicate. ``classes``: the
    mean over these classes only (e.g. the tail half), default all classes with ground truth."""
    W = np.atleast_2d(np.asarray(W, np.float64))
    index = {v: i for i, v in enumerate(videos)}
    Wx = np.concatenate([W, np.ones((len(W), 1))], axis=1)  # column -1: video ""
    index[""] = W.shape[1]

    def cols(vs):
        try:
            return np.array([index[v] for v in vs], np.int64)
        except KeyError as e:
            raise ValueError(f"bootstrap frame AP: video {e.args[0]!r} is not among the drawn test videos") from None

    per_class = []
    if classes is not None:
        ground_truth = ground_truth[ground_truth["cls"].isin([str(c) for c in classes])]
    for cls, g in ground_truth.groupby("cls", sort=True):
        n_gt = Wx[:, cols(g["video"])] @ g["n"].to_numpy(np.float64)
        d = detections[detections["cls"] == cls]
        if not len(d):
            per_class.append(np.where(n_gt > 0, 0.0, np.nan))
            continue
        w = Wx[:, cols(d["video"])]
        tp = d["tp"].to_numpy(bool)
        tps = np.cumsum(w * tp, axis=1)
        seen = np.cumsum(w, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            prec = np.where(seen > 0, tps / seen, 0.0)
            env = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]
            ap = (w * tp * env).sum(1) / n_gt
        per_class.append(np.where(n_gt > 0, ap, np.nan))
    if not per_class:
        return np.full(len(W), np.nan)
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(np.vstack(per_class), axis=0)
