"""Kinetics-TPS "Part State Correctness" and the conditioned-accuracy area, exact and fast.

Reproduces ``eval_detection.py`` of the public Andy1621/Kinetics-TPS-evaluation repository (the
DeeperAction 2021 Kinetics-TPS track), including its quirks, each behind a documented option whose
default is the official behaviour (:class:`TPSOptions`). Inputs are the official JSON files loaded
as dicts:

* ``gt_part`` / ``pred_part``: {video: {"img_00001.json": {"humans": [{"box": [x1, y1, x2, y2],
  "parts": {part name: {"box": ..., "verb": ...}}}]}}} (frames every 5th: img_00001, img_00006, ...);
* ``gt_vid`` / ``pred_vid``: {video: action class}.

What the official code does, and therefore what this does by default:

* Frames are those of the ground truth. A frame without ground-truth humans is dropped from the
  video's frame count; a frame missing from the prediction counts as 0 (it stays in the count); a
  predicted frame with humans but no ground-truth part is dropped too. A video with no counted
  frame scores PSC 1.0.
* Humans are matched per frame by the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``
  on ``1 - IoU``, padded with zero-IoU dummies to square) and a match counts when IoU > 0.5. The IoU
  is ``bbox_iou``: "+1 pixel" widths and **-1** for boxes that do not overlap (so a non-overlapping
  pair costs 2, a dummy 1), computed in float32 on ``np.float32`` boxes. The matrix handed to the
  solver is built exactly as the official one (float32 when square, float64 once padded), so ties
  are broken the same way.
* A matched human's part is correct when the predicted part of the same name has IoU >= 0.3
  (``>=``, although the README says ``>``) and the same state. The official code wraps the
  prediction, ``pred_part_verbs = [pred_part_verbs]``, so the part's whole ``verb`` value is compared
  with the ground truth's (a list against a list) and its ``box`` is used as ONE box; N_p is always
  1 (``wrap_proposals=True``). ``wrap_proposals=False`` implements the README instead: ``box`` /
  ``verb`` are lists of up to 5 proposals and the credit is 1/N_p.
* The frame score is the mean over every ground-truth part of the frame (unmatched humans' parts
  count 0); the video PSC is the mean over counted frames.
* Conditioned accuracy at threshold t counts videos with PSC ``>= t`` (README: ``>``) and the right
  class; the area sums ``acc(t) / 10000`` for t = 1/10000 ... 9999/10000 (``cal_area`` skips t = 0),
  added in the official order; the leaderboard rounds it to 6 decimals.
* ``check_limits``: the official asserts (at most 10 humans per frame; ``len(verb) <= 5``, which
  for a string verb is its character count) raise ValueError here.
* ``bbox_iou`` reads ``box[0:4]``, so a box ``[x1, y1, x2, y2, score]`` scores as its first four
  numbers (a frame's human boxes must then be of one length, as ``np.float32`` of them requires).
  A file that departs from the layout is a ValueError naming it and the first place that departs
  (:func:`layout_problem`).

Floating-point sums run in the official order (``np.bincount`` and ``np.cumsum`` add sequentially),
so every number is identical to the official loop's, not merely close.

How: on the dicts, :func:`part_state_correctness` lets Python touch only what the official loop
reads, in bulk (C-level ``map`` / comprehensions, no per-part bytecode beyond a join): the frame lists,
the humans of the frames both files have, and, for matched humans, the parts whose name the
prediction also has; boxes become arrays once, then frame bookkeeping, human matching (frames with
one box on a side or no pair above the threshold need no solver; frames up to 5 x 5 are solved for
all assignments at once and only ties go to ``linear_sum_assignment`` with the official matrix),
IoUs, state tests and sums are array operations. Reading every part's dict, box and state out of
the loaded JSON objects is then most of the time, and bounds the speed-up on dict inputs (a few x
over the official loop); on arrays (:func:`prepare` flattens the two files once into
:class:`PartFrames`, or :func:`inputs_from_tables` builds them from Parquet-side tables without any
JSON) :func:`psc_from_inputs` is 15-20x faster than the official loop. The README proposal semantics
(``wrap_proposals=False``) walk the dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain, permutations, repeat
from operator import eq, is_not, itemgetter

import numpy as np
from scipy.optimize import linear_sum_assignment

from .tps_arrays import OTHER, PartFrames, TPSInputs, run_starts

OFFICIAL_STEPS = 10000


@dataclass(frozen=True)
class TPSOptions:
    """Switches between the official behaviour (defaults) and the README's description."""

    human_iou: float = 0.5
    part_iou: float = 0.3
    plus_one_iou: bool = True  # bbox_iou: +1 pixel sizes, -1.0 for no overlap (False: continuous IoU, 0)
    wrap_proposals: bool = True  # the `[pred_part_verbs]` quirk: one box, whole-verb compare, N_p = 1
    part_iou_inclusive: bool = True  # part match `iou >= part_iou` (README: `>`)
    psc_inclusive: bool = True  # conditioned accuracy `psc >= t` (README: `>`)
    skip_t0: bool = True  # cal_area starts at t = 1/steps
    steps: int = OFFICIAL_STEPS
    check_limits: bool = True  # official asserts -> ValueError
    missing_video: str = "error"  # a GT video absent from a prediction file: "error" (official) | "zero"

    def __post_init__(self):
        if self.missing_video not in ("error", "zero"):
            raise ValueError(f"missing_video must be 'error' or 'zero', got {self.missing_video!r}")


@dataclass
class TPSResult:
    score: float  # area rounded to 6 decimals (leaderboard number)
    area: float
    videos: list = field(default_factory=list)
    psc: np.ndarray = field(default_factory=lambda: np.zeros(0))
    correct: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    thresholds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    accuracy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    route: str = "dicts"  # how the part results were read: "dicts" (loaded JSON) or "bytes" (tps_scan)

    def as_dict(self) -> dict:
        return {"tps_score": self.score, "tps_area": float(self.area),
                "psc_mean": float(np.mean(self.psc)) if len(self.psc) else 0.0,
                "video_acc": float(np.mean(self.correct)) if len(self.correct) else 0.0,
                "acc_at_psc": {f"{t:g}": float(self.accuracy[int(round(t * (len(self.thresholds))))])
                               for t in (0.0, 0.25, 0.5, 0.75) if len(self.thresholds)},
                "n_videos": len(self.videos)}


# ----------------------------------------------------------------------------------- geometry
def human_iou_matrix32(gt: np.ndarray, pred: np.ndarray, plus_one: bool = True) -> np.ndarray:
    """Official ``bbox_iou`` on float32 boxes, for aligned pairs (``gt[k]``, ``pred[k]``)."""
    one, fill = (np.float32(1), np.float32(-1.0)) if plus_one else (np.float32(0), np.float32(0.0))
    return _aligned_iou(gt, pred, one, fill).astype(np.float32)


def part_iou64(gt: np.ndarray, pred: np.ndarray, plus_one: bool = True) -> np.ndarray:
    """Official ``bbox_iou`` on JSON numbers (Python floats = float64), aligned pairs."""
    return _aligned_iou(gt, pred, *((1.0, -1.0) if plus_one else (0.0, 0.0)))


def _aligned_iou(gt: np.ndarray, pred: np.ndarray, one, fill) -> np.ndarray:
    """``bbox_iou`` of aligned pairs with ``one`` added to widths and heights (the official +1) and
    ``fill`` where the boxes do not overlap; ``one`` and ``fill`` carry the arithmetic's type (NumPy
    float32 scalars for the float32 variant, Python floats for float64), as the official code has it."""
    xa = np.maximum(gt[:, 0], pred[:, 0])
    ya = np.maximum(gt[:, 1], pred[:, 1])
    xb = np.minimum(gt[:, 2], pred[:, 2])
    yb = np.minimum(gt[:, 3], pred[:, 3])
    iw = xb - xa + one
    ih = yb - ya + one
    inter = iw * ih
    aa = (gt[:, 2] - gt[:, 0] + one) * (gt[:, 3] - gt[:, 1] + one)
    ab = (pred[:, 2] - pred[:, 0] + one) * (pred[:, 3] - pred[:, 1] + one)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / (aa + ab - inter)
    return np.where((iw <= 0) | (ih <= 0), fill, iou)


def _boxes(items, dtype, what: str, whole: bool = False, frame_counts=None) -> np.ndarray:
    """A list of boxes as an (n, 4) array of their first four numbers (values as ``np.asarray`` would
    give). The official ``bbox_iou`` reads ``box[0:4]`` only, so ``[x1, y1, x2, y2, score]`` scores
    as ``[x1, y1, x2, y2]``. ``whole``: every number of a longer box must be a number and, with
    ``frame_counts`` (boxes per frame, in order), the boxes of one frame must have one length, as
    the official ``np.float32`` of a frame's human boxes requires."""
    n = len(items)
    if n == 0:
        return np.zeros((0, 4), dtype)
    try:
        lens = set(map(len, items))
        if lens == {4}:
            flat = np.fromiter(chain.from_iterable(items), np.float64, count=4 * n)
        elif min(lens) >= 4:
            if whole:
                _whole_boxes(items, frame_counts)
            flat = np.fromiter(chain.from_iterable(map(itemgetter(slice(0, 4)), items)), np.float64, count=4 * n)
        else:
            raise ValueError(f"a box of {min(lens)} numbers")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what}: every box must start with 4 numbers [x1, y1, x2, y2] (further numbers, a "
                         f"score say, are ignored as the official code ignores them) ({exc})") from None
    return flat.reshape(n, 4).astype(dtype, copy=False)


def _whole_boxes(items, frame_counts=None) -> None:
    """Raise where the official ``np.float32(boxes of a frame)`` fails: a box that is not all
    numbers, or boxes of different lengths in one frame."""
    lens = np.fromiter(map(len, items), np.int64, count=len(items))
    for b in (b for b, k in zip(items, lens) if k != 4):
        np.fromiter(b, np.float64, count=len(b))
    if frame_counts is not None:
        counts = np.asarray(frame_counts, np.int64)
        f = np.flatnonzero(counts > 0)
        st = run_starts(counts)[f]
        lo, hi = np.minimum.reduceat(lens, st), np.maximum.reduceat(lens, st)
        if (lo != hi).any():
            k = int(np.argmax(lo != hi))
            raise ValueError(f"boxes of {int(lo[k])} and {int(hi[k])} numbers in one frame (the official "
                             f"code cannot stack them)")


# ----------------------------------------------------------------------------------- matching
def _match_frame_exact(iou: np.ndarray, thr: float) -> list[tuple[int, int]]:
    """The official ``match_bboxes`` on one frame's float32 IoU matrix (n_gt x n_pred)."""
    n_true, n_pred = iou.shape
    m = iou
    if n_pred > n_true:
        m = np.concatenate((m, np.full((n_pred - n_true, n_pred), 0.0)), axis=0)
    if n_true > n_pred:
        m = np.concatenate((m, np.full((n_true, n_true - n_pred), 0.0)), axis=1)
    rows, cols = linear_sum_assignment(1 - m)
    keep = cols < n_pred
    r, c = rows[keep], cols[keep]
    vals = m[r, c]
    ok = (vals > thr) & (vals >= thr)  # match_bboxes, then eval_human_TPS's `human_iou >= thr`
    return list(zip(r[ok].tolist(), c[ok].tolist()))


_BRUTE_MAX = 5
_PERMS = {m: np.array(list(permutations(range(m))), np.int64) for m in range(2, _BRUTE_MAX + 1)}


def _assign_small(iou, pair_start, gs, gc, ps, pc, frames, thr):
    """Official Hungarian result for many small frames at once, by enumerating every assignment of
    the padded square matrix (at most 5! = 120). Frames whose optimum is not unique (by more than
    1e-9) are returned as ``unsure`` and left to the solver, whose tie-breaking then decides."""
    out_g, out_p, unsure = [], [], []
    m_of = np.maximum(gc[frames], pc[frames])
    for m in np.unique(m_of):
        fr = frames[m_of == m]
        n_f = len(fr)
        ng, npd = gc[fr], pc[fr]
        r = np.arange(m)
        valid = (r[None, :, None] < ng[:, None, None]) & (r[None, None, :] < npd[:, None, None])
        k = np.where(valid, r[None, :, None] * npd[:, None, None] + r[None, None, :], 0)
        vals32 = np.where(valid, iou[pair_start[fr][:, None, None] + k], np.float32(0))  # (F, m, m)
        square = (ng == npd)[:, None, None]
        # official cost: float32 `1 - M` when square, float64 `1 - M` once padded with zeros
        cost = np.where(square, (np.float32(1) - vals32).astype(np.float64), 1.0 - vals32.astype(np.float64))
        perms = _PERMS[int(m)]
        tot = cost[:, r[None, :], perms].sum(axis=2)  # (F, m!)
        best = np.argmin(tot, axis=1)
        srt = np.sort(tot, axis=1)
        sure = (srt[:, 1] - srt[:, 0]) > 1e-9
        unsure.append(fr[~sure])
        cols = perms[best]  # (F, m): column of each row
        rows = np.broadcast_to(r, cols.shape)
        keep = sure[:, None] & (rows < ng[:, None]) & (cols < npd[:, None])
        v = vals32[np.arange(n_f)[:, None], rows, cols]
        # the matched IoU is compared in the matrix dtype: float32 when square, float64 when padded
        passed = np.where(square[:, :, 0], (v > np.float32(thr)) & (v >= np.float32(thr)),
                          (v.astype(np.float64) > thr) & (v.astype(np.float64) >= thr))
        keep &= passed
        fi, ri = np.nonzero(keep)
        out_g.append(gs[fr][fi] + ri)
        out_p.append(ps[fr][fi] + cols[fi, ri])
    return (np.concatenate(out_g).astype(np.int64), np.concatenate(out_p).astype(np.int64),
            np.concatenate(unsure) if unsure else np.zeros(0, np.int64))


def match_humans(gt_boxes: np.ndarray, pred_boxes: np.ndarray, frame_gt: np.ndarray, frame_pred: np.ndarray,
                 thr: float = 0.5, plus_one: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Official per-frame human matching for many frames at once.

    ``gt_boxes`` (float32, grouped by frame: ``frame_gt[f]`` = (start, count)), same for predictions.
    Returns matched (gt index, pred index) arrays. Frames whose solution is forced (one box on a
    side with a unique best IoU, or no pair above the threshold) are solved without the solver;
    the others call it with the official matrix, so the result is the official one.
    """
    gs, gc = frame_gt[:, 0], frame_gt[:, 1]
    ps, pc = frame_pred[:, 0], frame_pred[:, 1]
    npair = gc * pc
    tot = int(npair.sum())
    if tot == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    f_of = np.repeat(np.arange(len(gc)), npair)
    k = np.arange(tot) - np.repeat(np.cumsum(npair) - npair, npair)
    pcf = pc[f_of]
    gi = gs[f_of] + k // pcf
    pj = ps[f_of] + k % pcf
    iou = human_iou_matrix32(gt_boxes[gi], pred_boxes[pj], plus_one)
    t32 = np.float32(thr)
    # a pair can only be a match if it passes in float32 (square matrix) or float64 (padded)
    possible = (iou > t32) | (iou.astype(np.float64) > thr)
    frame_possible = np.bincount(f_of[possible], minlength=len(gc)) > 0
    out_g, out_p = [], []
    pair_start = np.cumsum(npair) - npair
    # 1 x 1 frames: the matrix is square float32
    one = frame_possible & (gc == 1) & (pc == 1)
    if one.any():
        f = np.flatnonzero(one)
        v = iou[pair_start[f]]
        ok = (v > t32) & (v >= t32)
        out_g.append(gs[f][ok])
        out_p.append(ps[f][ok])
    rest = np.flatnonzero(frame_possible & ~one)
    m_of = np.maximum(gc[rest], pc[rest])
    small = rest[(m_of <= _BRUTE_MAX) & (gc[rest] > 1) & (pc[rest] > 1)]
    if len(small):
        g_ok, p_ok, unsure = _assign_small(iou, pair_start, gs, gc, ps, pc, small, thr)
        out_g.append(g_ok)
        out_p.append(p_ok)
        rest = np.setdiff1d(rest, np.setdiff1d(small, unsure))
    line = rest[(gc[rest] == 1) | (pc[rest] == 1)]
    if len(line):
        # one box on a side: the matrix is padded (float64) and the solver must take the best IoU
        # of the row (column) when that maximum is unique; ties (and NaN) go to the solver
        n = npair[line]
        seg = np.cumsum(n) - n
        pos = np.arange(int(n.sum()))
        vals = iou[np.repeat(pair_start[line] - seg, n) + pos]
        mx = np.maximum.reduceat(vals, seg)
        is_max = vals == np.repeat(mx, n)
        unique = np.add.reduceat(is_max.astype(np.int64), seg) == 1
        a = np.minimum.reduceat(np.where(is_max, pos, len(pos)), seg) - seg
        v = mx.astype(np.float64)
        ok = unique & (v > thr) & (v >= thr)
        row1 = gc[line] == 1
        out_g.append(np.where(row1, gs[line], gs[line] + a)[ok])
        out_p.append(np.where(row1, ps[line] + a, ps[line])[ok])
        rest = np.setdiff1d(rest, line[unique])
    for f in rest:
        s, n = pair_start[f], npair[f]
        m = iou[s:s + n].reshape(gc[f], pc[f])
        for i, j in _match_frame_exact(m, thr):
            out_g.append(np.array([gs[f] + i]))
            out_p.append(np.array([ps[f] + j]))
    if not out_g:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_g).astype(np.int64), np.concatenate(out_p).astype(np.int64)


# ----------------------------------------------------------------------------------- PSC
@dataclass
class Vocab:
    """Ids of part names and of part states, shared by a ground truth and a prediction.

    States are compared as the official code compares them (Python ``==`` on the JSON values): a
    string and a one-element list are different states, two equal lists the same one. Strings get
    ids >= 0, one-string lists ids < 0, anything else ids from ``OTHER`` up."""

    names: dict = field(default_factory=dict)
    verbs: dict = field(default_factory=dict)
    verbs_list1: dict = field(default_factory=dict)
    verbs_other: dict = field(default_factory=dict)

    @staticmethod
    def _ids(table: dict, keys: list) -> np.ndarray:
        for k in dict.fromkeys(keys):
            if k not in table:
                table[k] = len(table)
        return np.fromiter(map(table.__getitem__, keys), np.int64, count=len(keys))

    def name_ids(self, names: list) -> np.ndarray:
        return self._ids(self.names, names)

    def verb_ids(self, verbs: list) -> np.ndarray:
        kinds = set(map(type, verbs))
        if kinds <= {str}:
            return self._ids(self.verbs, verbs)
        if kinds == {list} and set(map(len, verbs)) == {1}:
            inner = list(map(itemgetter(0), verbs))
            if set(map(type, inner)) == {str}:
                return -1 - self._ids(self.verbs_list1, inner)
        out = np.empty(len(verbs), np.int64)
        for i, v in enumerate(verbs):
            if v.__class__ is str:
                out[i] = self._ids(self.verbs, [v])[0]
            elif v.__class__ is list and len(v) == 1 and v[0].__class__ is str:
                out[i] = -1 - self._ids(self.verbs_list1, [v[0]])[0]
            else:
                out[i] = OTHER + self._ids(self.verbs_other, [_canon(v)])[0]
        return out


def _canon(v):
    if isinstance(v, list):
        try:
            t = tuple(v)
            hash(t)
            return t
        except TypeError:
            return ("repr", repr(v))
    try:
        hash(v)
        return v
    except TypeError:
        return ("repr", repr(v))


def flatten_frames(frames: list, vocab: Vocab, what: str = "part result") -> PartFrames:
    """Flatten frame dicts ``{"humans": [...]}`` into :class:`PartFrames` (one pass per field)."""
    try:
        hl = [fr["humans"] for fr in frames]
        humans = [h for x in hl for h in x]
        hboxes = list(map(itemgetter("box"), humans))
        pdicts = list(map(itemgetter("parts"), humans))
        names = [n for d in pdicts for n in d]
        parts = [p for d in pdicts for p in d.values()]
        pboxes = list(map(itemgetter("box"), parts))
        verbs = list(map(itemgetter("verb"), parts))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{what}: not in the official layout (frame -> humans -> box / parts -> box / verb): "
                         f"missing {exc}") from None
    nh = np.fromiter(map(len, hl), np.int64, count=len(hl))
    npart = np.fromiter(map(len, pdicts), np.int64, count=len(pdicts))
    try:
        pbox = _boxes(pboxes, np.float64, what)
        ok = np.ones(len(pboxes), bool)
    except ValueError:  # some part boxes are not one flat box: keep them apart, fail only if used
        ok = np.array([isinstance(b, (list, tuple)) and len(b) >= 4 and
                       all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in b[:4]) for b in pboxes], bool)
        pbox = np.full((len(pboxes), 4), np.nan)
        if ok.any():
            pbox[ok] = _boxes([b for b, k in zip(pboxes, ok) if k], np.float64, what)
    try:
        vlen = np.fromiter(map(len, verbs), np.int64, count=len(verbs))
    except TypeError:
        vlen = np.array([len(v) if hasattr(v, "__len__") else -1 for v in verbs], np.int64)
    return PartFrames(run_starts(nh), nh, _boxes(hboxes, np.float32, f"{what} human"), run_starts(npart), npart,
                      vocab.name_ids(names), pbox, ok, vocab.verb_ids(verbs), vlen)


def prepare(gt_part: dict, pred_part: dict, videos=None, missing_video: str = "error") -> TPSInputs:
    """Flatten the two official part-result dicts (the frames the official loop reads)."""
    vids = list(gt_part) if videos is None else list(videos)
    check_part_result(gt_part, "ground truth", vids)
    check_part_result(pred_part, "prediction", vids)
    g_frames, g_video, p_frames, p_of = [], [], [], []
    for vi, vid in enumerate(vids):
        if vid not in gt_part:
            raise ValueError(f"ground truth has no part annotations for video {vid!r}")
        pframes = pred_part.get(vid)
        if pframes is None:
            # the official loop looks the video up at its first frame with a ground-truth human
            if missing_video == "error" and any(len(fr["humans"]) for fr in gt_part[vid].values()):
                raise ValueError(f"prediction has no part results for video {vid!r} "
                                 f"(the official code stops with KeyError)")
            pframes = {}
        for fname, fr in gt_part[vid].items():
            g_frames.append(fr)
            g_video.append(vi)
            pf = pframes.get(fname)
            if pf is None:
                p_of.append(-1)
            else:
                p_of.append(len(p_frames))
                p_frames.append(pf)
    vocab = Vocab()
    G = flatten_frames(g_frames, vocab, "ground truth")
    P = flatten_frames(p_frames, vocab, "prediction")
    return TPSInputs(vids, np.asarray(g_video, np.int64), np.asarray(p_of, np.int64), G, P, len(vocab.names))


def _frames_from_tables(keys: pd.DataFrame, persons, parts, vocab: Vocab, verb_as_list: bool) -> PartFrames:
    """PartFrames of the frames ``keys`` (video, frame, in order) from a persons table (video, frame,
    person, box) and a part-state table (video, frame, person, part, box, state)."""
    import pandas as pd

    persons = persons.to_pandas() if hasattr(persons, "to_pandas") and not isinstance(persons, pd.DataFrame) else persons
    parts = parts.to_pandas() if hasattr(parts, "to_pandas") and not isinstance(parts, pd.DataFrame) else parts
    k = keys.reset_index(drop=True).assign(_f=np.arange(len(keys)))
    h = persons.merge(k, on=["video", "frame"], how="inner").sort_values(["_f", "person"], kind="stable")
    nh = np.bincount(h["_f"].to_numpy(), minlength=len(k)).astype(np.int64)
    h = h.reset_index(drop=True).assign(_h=np.arange(len(h)))
    q = parts.merge(h[["video", "frame", "person", "_h"]], on=["video", "frame", "person"], how="inner")
    q = q.sort_values(["_h"], kind="stable")
    npart = np.bincount(q["_h"].to_numpy(), minlength=len(h)).astype(np.int64)
    states = q["state"].astype(str).tolist()
    verbs = [[x] for x in states] if verb_as_list else states
    hbox = np.stack(h["box"].to_numpy()).astype(np.float32) if len(h) else np.zeros((0, 4), np.float32)
    pbox = np.stack(q["box"].to_numpy()).astype(np.float64) if len(q) else np.zeros((0, 4))
    vlen = np.ones(len(q), np.int64) if verb_as_list else np.fromiter(map(len, states), np.int64, count=len(states))
    return PartFrames(run_starts(nh), nh, hbox, run_starts(npart), npart, vocab.name_ids(q["part"].tolist()), pbox,
                      np.ones(len(q), bool), vocab.verb_ids(verbs), vlen)


def inputs_from_tables(gt_persons, gt_parts, pred_persons, pred_parts, gt_frames, pred_frames=None,
                       verb_as_list: bool = True) -> TPSInputs:
    """:class:`TPSInputs` straight from tables (no JSON): ``*_persons`` (video, frame, person, box),
    ``*_parts`` (video, frame, person, part, box, state); ``gt_frames``: the ground truth's frames
    (video, frame) in official order (frames with no person included); ``pred_frames``: the frames
    the prediction covers (default: those with a predicted person). Boxes are taken as the JSON
    files would hold them (float32 values widened), so the score equals that of the written files."""
    import pandas as pd

    gt_frames = pd.DataFrame(gt_frames, columns=["video", "frame"]) if not isinstance(gt_frames, pd.DataFrame) else gt_frames
    videos = list(dict.fromkeys(gt_frames["video"]))
    vi = {v: i for i, v in enumerate(videos)}
    pp = pred_persons.to_pandas() if hasattr(pred_persons, "to_pandas") and not isinstance(pred_persons, pd.DataFrame) else pred_persons
    if pred_frames is None:
        pred_frames = pp[["video", "frame"]].drop_duplicates()
    pred_frames = pd.DataFrame(pred_frames, columns=["video", "frame"]) if not isinstance(pred_frames, pd.DataFrame) else pred_frames
    pk = gt_frames.merge(pred_frames.drop_duplicates(), on=["video", "frame"], how="inner")
    pk = pk.reset_index(drop=True)
    pos = pd.Series(np.arange(len(pk)), index=pd.MultiIndex.from_frame(pk[["video", "frame"]]))
    pred_of = pos.reindex(pd.MultiIndex.from_frame(gt_frames[["video", "frame"]])).fillna(-1).to_numpy().astype(np.int64)
    vocab = Vocab()
    G = _frames_from_tables(gt_frames, gt_persons, gt_parts, vocab, verb_as_list)
    P = _frames_from_tables(pk, pp, pred_parts, vocab, verb_as_list)
    return TPSInputs(videos, gt_frames["video"].map(vi).to_numpy().astype(np.int64), pred_of, G, P, len(vocab.names))


def part_state_correctness(gt_part: dict, pred_part: dict, options: TPSOptions | None = None,
                           videos=None, names=("ground truth", "prediction")) -> np.ndarray:
    """Official per-video PSC (``eval_video_TPS``) for ``videos`` (default: every GT video).
    ``names`` (of the ground truth and the prediction, file paths say) label layout errors."""
    o = options or TPSOptions()
    check_part_result(gt_part, names[0], videos)
    check_part_result(pred_part, names[1], list(gt_part) if videos is None else videos)
    try:
        if not o.wrap_proposals:
            return _psc_dicts(gt_part, pred_part, o, videos, names)
        return _psc_wrapped_dicts(gt_part, pred_part, o, videos, names)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        # a layout the fast walk did not expect: find and name the first place that departs from it
        vids = list(gt_part) if videos is None else list(videos)
        raise ValueError(layout_problem(gt_part, names[0], vids) or layout_problem(pred_part, names[1], vids)
                         or f"{names[0]} / {names[1]}: part results not in the official layout (video -> "
                            f"frame -> humans -> box / parts -> box / verb): {exc!r}") from None


def _type_name(x) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(x), "a number" if isinstance(x, (int, float)) else type(x).__name__)


def check_part_result(part, name: str = "part results", videos=None) -> None:
    """A part-result dict maps video -> {frame: ...} (for ``videos``, default all; the official code
    reads no other): raise ValueError naming ``name`` otherwise."""
    if not isinstance(part, dict):
        raise ValueError(f"{name}: not a part-result object mapping video -> frames (the top level is "
                         f"{_type_name(part)})")
    for vid in (part if videos is None else [v for v in videos if v in part]):
        frames = part[vid]
        if not isinstance(frames, dict):
            raise ValueError(f"{name}: video {vid!r} is {_type_name(frames)}, not an object mapping "
                             f"frame -> {{'humans': [...]}}")


def check_video_classes(vid_result, name: str = "video classes") -> None:
    """A video-class dict maps video -> class: raise ValueError naming ``name`` otherwise."""
    if not isinstance(vid_result, dict):
        raise ValueError(f"{name}: not an object mapping video -> action class (the top level is "
                         f"{_type_name(vid_result)})")


def layout_problem(part: dict, name: str, videos=None) -> str | None:
    """The first place where part results (of ``videos``) depart from the official layout
    ``{video: {frame: {"humans": [{"box": [...], "parts": {name: {"box": [...], "verb": ...}}}]}}}``,
    as a message naming ``name`` and the place; None when there is none."""
    problem = _layout_problem(part, name, videos)
    return None if problem is None else f"{problem} (not in the official layout)"


def _layout_problem(part: dict, name: str, videos=None) -> str | None:
    if not isinstance(part, dict):
        return f"{name}: not a part-result object (the top level is {_type_name(part)})"
    for vid in (part if videos is None else [v for v in videos if v in part]):
        frames = part[vid]
        where = f"{name}: video {vid!r}"
        if not isinstance(frames, dict):
            return f"{where} is {_type_name(frames)}, not an object of frames"
        for fname, fr in frames.items():
            w = f"{where} frame {fname!r}"
            if not isinstance(fr, dict) or "humans" not in fr:
                return f"{w} has no 'humans'"
            humans = fr["humans"]
            if not isinstance(humans, list):
                return f"{w}: 'humans' is {_type_name(humans)}, not a list"
            for i, h in enumerate(humans):
                wh = f"{w} human {i}"
                if not isinstance(h, dict):
                    return f"{wh} is {_type_name(h)}, not an object"
                for key in ("box", "parts"):
                    if key not in h:
                        return f"{wh} has no {key!r}"
                if not isinstance(h["box"], list):
                    return f"{wh}: 'box' is {_type_name(h['box'])}, not a list of numbers"
                if not isinstance(h["parts"], dict):
                    return f"{wh}: 'parts' is {_type_name(h['parts'])}, not an object"
                for pname, pp in h["parts"].items():
                    if not isinstance(pp, dict):
                        return f"{wh} part {pname!r} is {_type_name(pp)}, not an object"
                    for key in ("box", "verb"):
                        if key not in pp:
                            return f"{wh} part {pname!r} has no {key!r}"
    return None


_get_humans, _get_parts = itemgetter("humans"), itemgetter("parts")
_get_box, _get_verb = itemgetter("box"), itemgetter("verb")


def _human_boxes(humans: list, what: str, frame_counts=None) -> np.ndarray:
    """The humans' boxes as float32, the values the official ``np.float32([h["box"] for h in humans])`` holds."""
    return _boxes(list(map(_get_box, humans)), np.float32, what, whole=True, frame_counts=frame_counts)


def _psc_wrapped_dicts(gt_part: dict, pred_part: dict, o: TPSOptions, videos=None,
                       names=("ground truth", "prediction")) -> np.ndarray:
    """Per-video PSC straight from the dicts (official proposal wrapping).

    Python touches only what the official loop reads, in bulk: the frame lists, the humans of the
    frames both files have, and, for matched humans only, the parts whose name the prediction also
    has (joined by a dict look-up, states compared with ``==`` as the official code does). Boxes,
    matching, IoUs and the sums are array operations, as in :func:`psc_from_inputs`.
    """
    vids = list(gt_part) if videos is None else list(videos)
    n_v = len(vids)
    ghl, pfl, nfr = [], [], []  # per ground-truth frame: its humans, the predicted frame (or None)
    # a layout error here (KeyError, TypeError...) is named by part_state_correctness
    for vid in vids:
        gframes = gt_part.get(vid)
        if gframes is None:
            raise ValueError(f"{names[0]} has no part annotations for video {vid!r}")
        pframes = pred_part.get(vid)
        if pframes is None:
            # the official loop looks the video up at its first frame with a ground-truth human
            if o.missing_video == "error" and any(map(len, map(_get_humans, gframes.values()))):
                raise ValueError(f"{names[1]} has no part results for video {vid!r} "
                                 f"(the official code stops with KeyError)")
            pframes = {}
        nfr.append(len(gframes))
        ghl.extend(map(_get_humans, gframes.values()))
        pfl.extend(map(pframes.get, gframes))
    f_video = np.repeat(np.arange(n_v), nfr)
    gnh = np.fromiter(map(len, ghl), np.int64, count=len(ghl))
    present = np.fromiter(map(is_not, pfl, repeat(None)), bool, count=len(pfl))
    cand = np.flatnonzero((gnh > 0) & present)  # frames the official loop matches
    cl = cand.tolist()
    gsel = [ghl[i] for i in cl]
    phl = list(map(_get_humans, [pfl[i] for i in cl]))
    gh = list(chain.from_iterable(gsel))
    ph = list(chain.from_iterable(phl))
    g_np = np.fromiter(map(len, map(_get_parts, gh)), np.int64, count=len(gh))
    c_gnh = gnh[cand]
    c_pnh = np.fromiter(map(len, phl), np.int64, count=len(phl))
    frame_of_h = np.repeat(np.arange(len(cand)), c_gnh)
    f_nparts = np.bincount(frame_of_h, weights=g_np, minlength=len(cand)).astype(np.int64)
    no_parts = f_nparts == 0  # dropped from the frame count (a frame the prediction lacks stays)
    total_frames = (np.asarray(nfr, np.int64) - np.bincount(f_video[gnh == 0], minlength=n_v)
                    - np.bincount(f_video[cand[no_parts]], minlength=n_v))
    ev = np.flatnonzero(~no_parts)  # evaluated frames (indices into cand), official order
    if o.check_limits and (c_pnh[ev] > 10).any():
        f = ev[np.argmax(c_pnh[ev] > 10)]
        raise ValueError(f"{names[1]}: {vids[f_video[cand[f]]]}: can only predict 10 human proposals on each "
                         f"frame (got {int(c_pnh[f])})")
    gb = _human_boxes(gh, f"{names[0]}: human", c_gnh)
    pb = _human_boxes(ph, f"{names[1]}: human", c_pnh)
    mg, mp = match_humans(gb, pb, np.c_[run_starts(c_gnh)[ev], c_gnh[ev]], np.c_[run_starts(c_pnh)[ev], c_pnh[ev]],
                          o.human_iou, o.plus_one_iou)
    human_sum = np.zeros(len(gh))
    if len(mg):
        gpd = [gh[i]["parts"] for i in mg.tolist()]
        ppd = [ph[j]["parts"] for j in mp.tolist()]
        # the parts of matched humans that the prediction names too (the official `name in p["parts"]`)
        gl = [gp for gd, pd in zip(gpd, ppd) for name, gp in gd.items() if name in pd]
        pl = [pd[name] for gd, pd in zip(gpd, ppd) for name in gd if name in pd]
        owner = np.repeat(mg, [len(gd.keys() & pd.keys()) for gd, pd in zip(gpd, ppd)])
        pverbs = list(map(_get_verb, pl)) if o.check_limits else map(_get_verb, pl)
        same = np.fromiter(map(eq, map(_get_verb, gl), pverbs), bool, count=len(gl))
        gbox_l = list(map(_get_box, gl))
        pbox_l = list(map(_get_box, pl))
        if o.check_limits and gl:
            try:
                vlen = np.fromiter(map(len, pverbs), np.int64, count=len(pverbs))
            except TypeError:
                vlen = np.array([len(v) if hasattr(v, "__len__") else -1 for v in pverbs], np.int64)
            if (vlen > 5).any():
                raise ValueError(f"{names[1]}: can only predict 5 proposals on each part (len(verb) = "
                                 f"{int(vlen[vlen > 5][0])}; the official check counts the characters of a "
                                 f"string verb)")
        gbox = _boxes(gbox_l, np.float64, f"{names[0]}: part")
        try:
            pbox = _boxes(pbox_l, np.float64, f"{names[1]}: part")
        except ValueError:
            raise ValueError(f"{names[1]}: with the official proposal wrapping, a part's 'box' must be ONE "
                             "[x1, y1, x2, y2] (the official bbox_iou fails otherwise); set "
                             "wrap_proposals=False for lists of proposals") from None
        iou = part_iou64(gbox, pbox, o.plus_one_iou)
        ok = same & (iou >= o.part_iou if o.part_iou_inclusive else iou > o.part_iou)
        human_sum = np.bincount(owner[ok], minlength=len(gh)).astype(np.float64)
    frame_sum = np.bincount(frame_of_h, weights=human_sum, minlength=len(cand))
    frame_avg = 1.0 * frame_sum[ev] / f_nparts[ev]
    video_sum = np.bincount(f_video[cand[ev]], weights=frame_avg, minlength=n_v)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total_frames == 0, 1.0, 1.0 * video_sum / np.maximum(total_frames, 1))


def psc_from_inputs(inp: TPSInputs, options: TPSOptions | None = None) -> np.ndarray:
    """Per-video PSC from arrays: frame bookkeeping, Hungarian human matching
    (:func:`match_humans`), the part join by (matched human, part name), IoU and state tests, and
    the sums in the official order. Official proposal wrapping only (``wrap_proposals=True``)."""
    o = options or TPSOptions()
    if not o.wrap_proposals:
        raise ValueError("psc_from_inputs implements the official proposal wrapping only")
    vids, G, P = inp.videos, inp.gt, inp.pred
    g_video, p_of = inp.frame_video, inp.pred_of
    n_v = len(vids)
    n_f = len(g_video)
    frame_of_h = np.repeat(np.arange(n_f), G.frame_nh)
    f_nparts = np.bincount(frame_of_h, weights=G.human_np, minlength=n_f).astype(np.int64)
    no_humans = G.frame_nh == 0
    present = p_of >= 0
    no_parts = ~no_humans & present & (f_nparts == 0)
    total_frames = np.bincount(g_video, minlength=n_v) - np.bincount(g_video[no_humans | no_parts], minlength=n_v)
    ev = np.flatnonzero(~no_humans & present & ~no_parts)  # evaluated frames, official order
    pf = p_of[ev]
    if o.check_limits and len(ev) and (P.frame_nh[pf] > 10).any():
        f = ev[np.argmax(P.frame_nh[pf] > 10)]
        raise ValueError(f"{vids[g_video[f]]}: can only predict 10 human proposals on each frame "
                         f"(got {int(P.frame_nh[p_of[f]])})")
    mg, mp = match_humans(G.human_box, P.human_box, np.c_[G.frame_h0[ev], G.frame_nh[ev]],
                          np.c_[P.frame_h0[pf], P.frame_nh[pf]], o.human_iou, o.plus_one_iou)
    human_sum = np.zeros(len(G.human_np))
    if len(mg):
        order = np.argsort(mg, kind="stable")
        mg, mp = mg[order], mp[order]
        cnt = G.human_np[mg]
        gpi = np.repeat(G.human_p0[mg], cnt) + (np.arange(cnt.sum()) - np.repeat(run_starts(cnt), cnt))
        owner = np.repeat(mp, cnt)
        nn = max(inp.n_names, 1)
        pkeys = np.repeat(np.arange(len(P.human_np)), P.human_np) * nn + P.part_name
        psort = np.argsort(pkeys, kind="stable")
        want = owner * nn + G.part_name[gpi]
        pos = np.searchsorted(pkeys[psort], want)
        pos_c = np.minimum(pos, max(len(pkeys) - 1, 0))
        found = (pos < len(pkeys)) & (pkeys[psort][pos_c] == want) if len(pkeys) else np.zeros(len(want), bool)
        gq, pq = gpi[found], psort[pos_c[found]]
        if o.check_limits and (P.part_verb_len[pq] > 5).any():
            bad = int(P.part_verb_len[pq][P.part_verb_len[pq] > 5][0])
            raise ValueError(f"can only predict 5 proposals on each part (len(verb) = {bad}; the official "
                             f"check counts the characters of a string verb)")
        if not P.part_box_ok[pq].all():
            raise ValueError("predicted part: with the official proposal wrapping, a part's 'box' must be ONE "
                             "[x1, y1, x2, y2] (the official bbox_iou fails otherwise); set "
                             "wrap_proposals=False for lists of proposals")
        iou = part_iou64(G.part_box[gq], P.part_box[pq], o.plus_one_iou)
        ok = (G.part_verb[gq] == P.part_verb[pq]) & (iou >= o.part_iou if o.part_iou_inclusive else iou > o.part_iou)
        g_of_part = np.repeat(mg, cnt)[found]
        human_sum = np.bincount(g_of_part[ok], minlength=len(G.human_np)).astype(np.float64)
    frame_sum = np.bincount(frame_of_h, weights=human_sum, minlength=n_f)
    with np.errstate(invalid="ignore", divide="ignore"):
        frame_avg = 1.0 * frame_sum[ev] / f_nparts[ev]
    video_sum = np.bincount(g_video[ev], weights=frame_avg, minlength=n_v)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total_frames == 0, 1.0, 1.0 * video_sum / np.maximum(total_frames, 1))


def _psc_dicts(gt_part: dict, pred_part: dict, options: TPSOptions | None = None,
               videos=None, names=("ground truth", "prediction")) -> np.ndarray:
    """Per-video PSC walking the dicts frame by frame (used for the README proposal semantics)."""
    o = options or TPSOptions()
    vids = list(gt_part) if videos is None else list(videos)
    n_v = len(vids)
    total_frames = np.zeros(n_v, np.int64)
    f_video, f_nparts = [], []  # evaluated frames
    gt_h, pr_h, f_gt, f_pr = [], [], [], []
    for vi, vid in enumerate(vids):
        if vid not in gt_part:
            raise ValueError(f"{names[0]} has no part annotations for video {vid!r}")
        gframes = gt_part[vid]
        pframes = pred_part.get(vid)
        if pframes is None:
            if o.missing_video == "error" and any(len(fr["humans"]) for fr in gframes.values()):
                raise ValueError(f"{names[1]} has no part results for video {vid!r} "
                                 f"(the official code stops with KeyError)")
            pframes = {}
        total = len(gframes)
        for fname, fr in gframes.items():
            gh = fr["humans"]
            if len(gh) == 0:
                total -= 1
                continue
            pf = pframes.get(fname)
            if pf is None:
                continue
            ph = pf["humans"]
            if o.check_limits and len(ph) > 10:
                raise ValueError(f"{vid} {fname}: can only predict 10 human proposals on each frame "
                                 f"(got {len(ph)})")
            nparts = sum(len(h["parts"]) for h in gh)
            if nparts == 0:
                total -= 1
                continue
            f_video.append(vi)
            f_nparts.append(nparts)
            f_gt.append((len(gt_h), len(gh)))
            f_pr.append((len(pr_h), len(ph)))
            gt_h.extend(gh)
            pr_h.extend(ph)
        total_frames[vi] = total
    n_f = len(f_video)
    f_video = np.asarray(f_video, np.int64)
    f_nparts = np.asarray(f_nparts, np.int64)
    frame_of_gt = np.repeat(np.arange(n_f), [c for _, c in f_gt]) if n_f else np.zeros(0, np.int64)
    gtb = _boxes([h["box"] for h in gt_h], np.float32, f"{names[0]}: human")
    prb = _boxes([h["box"] for h in pr_h], np.float32, f"{names[1]}: human")
    mg, mp = match_humans(gtb, prb, np.asarray(f_gt, np.int64).reshape(-1, 2),
                          np.asarray(f_pr, np.int64).reshape(-1, 2), o.human_iou, o.plus_one_iou)
    # parts of matched humans
    human_sum = np.zeros(len(gt_h), np.float64)
    if len(mg):
        credit_h, credit_w = _part_credit_proposals(gt_h, pr_h, sorted(zip(mg.tolist(), mp.tolist())), o)
        human_sum = np.bincount(credit_h, weights=credit_w, minlength=len(gt_h)) if len(credit_h) else human_sum
    frame_sum = np.bincount(frame_of_gt, weights=human_sum, minlength=n_f) if n_f else np.zeros(0)
    frame_avg = 1.0 * frame_sum / f_nparts if n_f else np.zeros(0)
    video_sum = np.bincount(f_video, weights=frame_avg, minlength=n_v) if n_v else np.zeros(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        psc = np.where(total_frames == 0, 1.0, 1.0 * video_sum / np.maximum(total_frames, 1))
    return psc


def _part_credit_proposals(gt_h, pr_h, pairs, o: TPSOptions):
    """README semantics: ``box`` / ``verb`` are lists of up to 5 proposals, credit 1/N_p."""
    iou_h, iou_part, gbox, pbox, iou_w = [], [], [], [], []
    part_id = 0
    for g, p in pairs:
        pparts = pr_h[p]["parts"]
        for name, gp in gt_h[g]["parts"].items():
            part_id += 1
            pp = pparts.get(name)
            if pp is None:
                continue
            pverb = pp["verb"]
            verbs = [pverb] if isinstance(pverb, str) else list(pverb)
            if o.check_limits and len(verbs) > 5:
                raise ValueError(f"part {name!r}: can only predict 5 proposals on each part (got {len(verbs)})")
            boxes = pp["box"]
            if len(boxes) and not isinstance(boxes[0], (list, tuple)):
                boxes = [boxes]
            if len(boxes) != len(verbs):
                raise ValueError(f"part {name!r}: {len(boxes)} boxes but {len(verbs)} verbs")
            gv = gp["verb"]
            gset = set(gv) if isinstance(gv, (list, tuple)) else {gv}
            for b, v in zip(boxes, verbs):
                if v in gset:
                    iou_h.append(g)
                    iou_part.append(part_id)
                    gbox.append(gp["box"])
                    pbox.append(b)
                    iou_w.append(1.0 / len(verbs))
    if not iou_h:
        return np.zeros(0, np.int64), np.zeros(0)
    iou = part_iou64(_boxes(gbox, np.float64, "ground-truth part"), _boxes(pbox, np.float64, "predicted part"),
                     o.plus_one_iou)
    ok = iou >= o.part_iou if o.part_iou_inclusive else iou > o.part_iou
    h = np.asarray(iou_h, np.int64)
    # a part earns 1/N_p once, whichever of its proposals matches first
    pid = np.asarray(iou_part, np.int64)[ok]
    _, first = np.unique(pid, return_index=True)
    return h[ok][first], np.asarray(iou_w)[ok][first]


# ----------------------------------------------------------------------------------- accuracy
def accuracy_curve(psc, correct, steps: int = OFFICIAL_STEPS, inclusive: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Official ``cal_pvacc`` for t = k/steps, k = 0..steps-1: share of videos with PSC >= t and right class."""
    psc = np.asarray(psc, np.float64)
    correct = np.asarray(correct, bool)
    t = np.arange(steps) / steps
    total = len(psc)
    if total == 0:
        raise ValueError("no videos to score")
    ok = np.sort(psc[correct])
    side = "left" if inclusive else "right"
    cor = len(ok) - np.searchsorted(ok, t, side=side)
    return t, cor / total


def curve_area(accuracy: np.ndarray, steps: int = OFFICIAL_STEPS, skip_t0: bool = True) -> float:
    """Official ``cal_area``: sequential sum of ``1.0 / steps * acc(t)`` (t = 0 skipped)."""
    terms = 1.0 / steps * np.asarray(accuracy, np.float64)
    if skip_t0:
        terms = terms[1:]
    if len(terms) == 0:
        return 0
    return float(np.cumsum(terms)[-1])


def _video_correct(gt_vid: dict, pred_vid: dict, o: TPSOptions) -> np.ndarray:
    """Official ``cal_task_acc`` inputs: is each ground-truth video's class predicted right."""
    correct = []
    for v in gt_vid:
        if v not in pred_vid:
            if o.missing_video == "error":
                raise ValueError(f"prediction has no video class for {v!r} (the official code stops with KeyError)")
            correct.append(False)
        else:
            correct.append(gt_vid[v] == pred_vid[v])
    return np.asarray(correct, bool)


def evaluate(gt_vid: dict, gt_part: dict, pred_vid: dict, pred_part: dict,
             options: TPSOptions | None = None, names: tuple | None = None) -> TPSResult:
    """The Kinetics-TPS score from the four official dicts (``cal_task_acc`` + ``cal_area``).
    ``names``: how errors call the four inputs (file paths, say)."""
    o = options or TPSOptions()
    names = names or ("ground-truth video classes", "ground truth", "predicted video classes", "prediction")
    check_video_classes(gt_vid, names[0])
    check_video_classes(pred_vid, names[2])
    vids = list(gt_vid)
    correct = _video_correct(gt_vid, pred_vid, o)
    psc = part_state_correctness(gt_part, pred_part, o, videos=vids, names=(names[1], names[3]))
    return _result(vids, psc, correct, o)


def read_json_file(path) -> object:
    """``json.loads`` of a file, with errors that name the file."""
    import json
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to read (no official file nests more than a "
                         f"few levels)") from None


def evaluate_files(gt_vid, gt_part, pred_vid, pred_part, options: TPSOptions | None = None) -> TPSResult:
    """The Kinetics-TPS score from the four official files (paths; the two video-class files may
    also be given as loaded dicts): the same result as :func:`evaluate` of their ``json.load``.

    The part-result files are read from their bytes into arrays by
    :mod:`actparse.metrics.tps_scan` and scored by :func:`psc_from_inputs`, without building the
    dicts; a file the scanner does not take (see there), or ``wrap_proposals=False``, goes the dict
    route. ``TPSResult.route`` says which one was taken ("bytes" or "dicts")."""
    import os
    from pathlib import Path

    o = options or TPSOptions()
    classes = []
    for obj, what in ((gt_vid, "ground-truth video classes"), (pred_vid, "predicted video classes")):
        if isinstance(obj, (str, os.PathLike)):
            obj, what = read_json_file(obj), f"{obj}: {what}"
        check_video_classes(obj, what)
        classes.append(obj)
    gt_vid, pred_vid = classes
    for p in (gt_part, pred_part):
        if not Path(p).exists():
            raise FileNotFoundError(f"{p}: file not found")
    names = (f"{gt_part}: ground truth", f"{pred_part}: prediction")
    vids = list(gt_vid)
    correct = _video_correct(gt_vid, pred_vid, o)
    inp = None
    if o.wrap_proposals:
        from .tps_scan import inputs_from_bytes

        inp = inputs_from_bytes(Path(gt_part), Path(pred_part), vids, o.missing_video, names)
    if inp is None:
        psc = part_state_correctness(read_json_file(gt_part), read_json_file(pred_part), o, videos=vids, names=names)
        return _result(vids, psc, correct, o, route="dicts")
    return _result(vids, psc_from_inputs(inp, o), correct, o, route="bytes")


def _result(vids: list, psc: np.ndarray, correct: np.ndarray, o: TPSOptions, route: str = "dicts") -> TPSResult:
    t, acc = accuracy_curve(psc, correct, o.steps, o.psc_inclusive)
    area = curve_area(acc, o.steps, o.skip_t0)
    return TPSResult(score=round(area, 6), area=area, videos=vids, psc=psc, correct=correct,
                     thresholds=t, accuracy=acc, route=route)
