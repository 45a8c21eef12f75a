"""MOC tube linking for frame-level detections, vectorised over boxes, groups and frames.

Reproduces ``BuildTubes`` of the public MCG-NJU/MOC-Detector (``src/ACT_utils/ACT_build.py`` with
``nms_tubelets`` / ``iou2d`` of ``ACT_utils.py``, and the ``nms3dt`` its ``videoAP`` applies), with
the "minimal modifications for frame-level predictions" of seed 003 (the MultiSports winners):
tubelets of length K = 1, i.e. one box per detection frame. Per (video, label), frame by frame:

1. the frame's boxes get MOC's soft NMS (``nms_tubelets``: a kept box lowers the score of each
   later box overlapping it by IoU > ``nms_iou`` (0.6) to ``score * (1 - IoU)``), then the
   ``top_k`` (10) best are kept;
2. current tubes are sorted by mean box score; each, in that order, takes the best-scoring
   remaining box with IoU >= ``link_iou`` (0.5) with its last box;
3. a tube with no box ends once ``k`` (1) detection steps have passed since its last box (MOC's
   ``offset >= K``); leftover boxes start new tubes;
4. tubes with mean score < ``min_score`` (0.005) or spanning < ``min_length`` (15) frames are
   dropped; ``nms3dt`` at ``tube_nms_iou`` (0.3) removes overlapping tubes (MOC applies it before
   its video-AP; 0 switches it off).

Boxes use MOC's "+1 pixel" IoU. The frame-level adaptation: detections exist on a grid of frames
(every ``stride``-th frame); steps count grid frames, and a tube's boxes between grid frames are
linearly interpolated (``interpolate``) so the tube covers consecutive frames as the official
video-AP requires. On a stride-1 grid the tubes are exactly MOC's K = 1 tubes.

Vectorisation: all (video, label) groups advance in lock-step, one grid step at a time; NMS,
IoUs and the greedy assignment are array operations over every group at once. Where the official
code's outcome depends on how ``np.argsort`` breaks exact score ties (or on float32 means too close
to order by a float64 running mean), that group falls back to the official per-group procedure for
that step, so the output is the official one, tube for tube.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics._exact import segment_means


@dataclass(frozen=True)
class LinkParams:
    """MOC's linking thresholds (defaults = the official values)."""

    nms_iou: float = 0.6  # nms_tubelets(ltubelets, 0.6, top_k=10)
    top_k: int = 10
    link_iou: float = 0.5  # valid = ious >= 0.5
    min_score: float = 0.005  # tubes with mean score < 0.005 are dropped
    min_length: int = 15  # tubes spanning < 15 frames are dropped
    k: int = 1  # tubelet length K: an unmatched tube ends when >= k steps passed since its last box
    tube_nms_iou: float = 0.3  # nms3dt(tubes, 0.3) of MOC's videoAP; 0 = off
    interpolate: bool = True  # fill frames between grid frames (stride > 1)


@dataclass
class Tubes:
    """Linked tubes: tube ``t`` belongs to ``group[t]``; its rows are ``frames/boxes/scores`` in
    ``[start[t], start[t] + length[t])`` (consecutive frames), its score ``score[t]``."""

    group: np.ndarray
    score: np.ndarray
    start: np.ndarray
    length: np.ndarray
    frames: np.ndarray
    boxes: np.ndarray
    box_scores: np.ndarray

    def __len__(self) -> int:
        return len(self.group)

    def rows(self, t: int) -> np.ndarray:
        """Tube ``t`` as the official (n, 6) array: frame, x1, y1, x2, y2, box score."""
        s, n = self.start[t], self.length[t]
        out = np.zeros((n, 6), dtype=self.boxes.dtype)
        out[:, 0] = self.frames[s:s + n]
        out[:, 1:5] = self.boxes[s:s + n]
        out[:, 5] = self.box_scores[s:s + n]
        return out


# ------------------------------------------------------------------------------ soft NMS
def _nms_official(boxes: np.ndarray, scores: np.ndarray, thr: float, top_k: int):
    """``nms_tubelets`` (K = 1) on one frame's boxes in input order: (kept input positions, new scores)."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)[::-1]
    weight = np.zeros_like(scores) + 1
    while order.size > 0:
        i = order[0]
        rest = order[1:]
        w = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        ious = 0 + inter / (area[rest] + area[i] - inter)
        sup = np.where(ious > thr)[0]
        weight[rest[sup]] = 1 - ious[sup]
        order = rest[np.where(ious <= thr)[0]]
    new = scores * weight
    keep = np.argsort(new)[::-1][:top_k]
    return keep, new[keep]


def _soft_nms_sets(boxes: np.ndarray, scores: np.ndarray, idx: np.ndarray, thr: float, top_k: int):
    """Soft NMS of many frame sets at once. ``idx`` (m, N): input indices per set (-1 = padding),
    in input order. Returns kept (m, K) input indices (-1 pad) and their new scores."""
    m, n = idx.shape
    dtype = scores.dtype
    valid = idx >= 0
    sc = np.where(valid, scores[np.maximum(idx, 0)], 0).astype(dtype)
    key = np.where(valid, -sc.astype(np.float64), np.inf)
    srt = np.argsort(key, axis=1, kind="stable")
    sidx = np.take_along_axis(idx, srt, 1)
    ssc = np.take_along_axis(sc, srt, 1)
    sval = sidx >= 0
    ties = ((ssc[:, 1:] == ssc[:, :-1]) & sval[:, 1:] & sval[:, :-1]).any(1)
    b = boxes[np.maximum(sidx, 0)].astype(dtype, copy=False)  # (m, n, 4)
    x1, y1, x2, y2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    w = np.maximum(0, np.minimum(x2[:, :, None], x2[:, None, :]) - np.maximum(x1[:, :, None], x1[:, None, :]) + 1)
    h = np.maximum(0, np.minimum(y2[:, :, None], y2[:, None, :]) - np.maximum(y1[:, :, None], y1[:, None, :]) + 1)
    inter = w * h
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / ((area[:, None, :] + area[:, :, None]) - inter)  # [p, q]: (a_q + a_p) - inter
    alive = sval.copy()
    weight = np.ones((m, n), dtype=dtype)
    for p in range(n - 1):
        piv = alive[:, p]
        if not piv.any():
            continue
        row = iou[:, p, p + 1:]
        later = alive[:, p + 1:] & piv[:, None]
        sup = later & (row > thr)
        weight[:, p + 1:] = np.where(sup, 1 - row, weight[:, p + 1:])
        alive[:, p + 1:] = alive[:, p + 1:] & ~(piv[:, None] & ~(row <= thr))
    new = ssc * weight
    key2 = np.where(sval, -new.astype(np.float64), np.inf)
    srt2 = np.argsort(key2, axis=1, kind="stable")
    kidx = np.take_along_axis(sidx, srt2, 1)[:, :top_k]
    knew = np.take_along_axis(new, srt2, 1)[:, :top_k]
    kval = kidx >= 0
    ties |= ((knew[:, 1:] == knew[:, :-1]) & kval[:, 1:] & kval[:, :-1]).any(1)
    nn = np.take_along_axis(new, srt2, 1)
    vv = np.take_along_axis(sval, srt2, 1)
    if n > top_k:  # a tie across the top_k cut also changes which boxes are kept
        ties |= ((nn[:, top_k] == nn[:, top_k - 1]) & vv[:, top_k]) if top_k > 0 else False
    for r in np.flatnonzero(ties):  # exact official procedure for sets with tied scores
        ii = idx[r][idx[r] >= 0]
        keep, newsc = _nms_official(boxes[ii].astype(dtype, copy=False), scores[ii].astype(dtype), thr, top_k)
        kidx[r] = -1
        kidx[r, :len(keep)] = ii[keep]
        knew[r, :len(keep)] = newsc
    knew = np.where(kidx >= 0, knew, 0).astype(dtype)
    return kidx, knew


def _iou_link(det: np.ndarray, last: np.ndarray) -> np.ndarray:
    """MOC ``iou2d(ltubelets[:, :4], last_box)`` broadcast: det (..., 4) vs tube last box (..., 4)."""
    xmin = np.maximum(det[..., 0], last[..., 0])
    ymin = np.maximum(det[..., 1], last[..., 1])
    xmax = np.minimum(det[..., 2] + 1, last[..., 2] + 1)
    ymax = np.minimum(det[..., 3] + 1, last[..., 3] + 1)
    ov = np.maximum(0, xmax - xmin) * np.maximum(0, ymax - ymin)
    a1 = (det[..., 2] - det[..., 0] + 1) * (det[..., 3] - det[..., 1] + 1)
    a2 = (last[..., 2] - last[..., 0] + 1) * (last[..., 3] - last[..., 1] + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ov / (a1 + a2 - ov)


# ------------------------------------------------------------------------------ linking
def link_groups(group: np.ndarray, step: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                grids: list, params: LinkParams | None = None) -> Tubes:
    """Link detections into tubes, every group (one video x one label) at once.

    ``group[i]`` / ``step[i]``: detection i's group and its index in that group's grid;
    ``grids[g]``: the grid frame numbers of group g (ascending; a step with no detection still
    counts, as in MOC where every frame has a detection file). Scores keep their dtype (float32
    like MOC's network outputs; float64 works too). Returns :class:`Tubes` in the official order
    (per group: tubes in the order ``BuildTubes`` lists them), before ``nms3dt``.
    """
    p = params or LinkParams()
    group = np.asarray(group, np.int64)
    step = np.asarray(step, np.int64)
    scores = np.asarray(scores)
    if scores.dtype.kind != "f":
        scores = scores.astype(np.float32)
    dtype = scores.dtype
    boxes = np.asarray(boxes).astype(dtype, copy=False).reshape(-1, 4)
    n_groups = len(grids)
    nsteps = np.array([len(g) for g in grids], np.int64)
    if len(group) and ((step < 0).any() or (step >= nsteps[group]).any()):
        raise ValueError("a detection's step is outside its group's grid")
    order = np.lexsort((np.arange(len(group)), step, group))
    gs, ss = group[order], step[order]
    if len(order):
        brk = np.flatnonzero(np.r_[True, (gs[1:] != gs[:-1]) | (ss[1:] != ss[:-1])])
    else:
        brk = np.zeros(0, np.int64)
    set_g, set_s = gs[brk], ss[brk]
    set_n = np.diff(np.r_[brk, len(order)])
    by_step = np.argsort(set_s, kind="stable")
    step_bounds = np.searchsorted(set_s[by_step], np.arange((nsteps.max() if n_groups else 0) + 1))
    tol = 1e-5 if dtype == np.float32 else 1e-12

    # active tube state
    a_id = np.zeros(0, np.int64)
    a_group = np.zeros(0, np.int64)
    a_pos = np.zeros(0, np.int64)
    a_last = np.zeros(0, np.int64)
    a_box = np.zeros((0, 4), dtype)
    a_sum = np.zeros(0, np.float64)
    a_cnt = np.zeros(0, np.int64)
    next_id = 0
    fin_id, fin_k1, fin_k2 = [], [], []
    rec_t, rec_s, rec_d, rec_sc = [], [], [], []

    def exact_means(ids: np.ndarray) -> np.ndarray:
        t = np.concatenate(rec_t) if rec_t else np.zeros(0, np.int64)
        sc = np.concatenate(rec_sc) if rec_sc else np.zeros(0, dtype)
        sel = np.isin(t, ids)
        t, sc = t[sel], sc[sel]
        o = np.argsort(t, kind="stable")
        t, sc = t[o], sc[o]
        u, st, cnt = np.unique(t, return_index=True, return_counts=True)
        means = segment_means(sc, st, cnt)
        return means[np.searchsorted(u, ids)]

    n_steps_total = int(nsteps.max()) if n_groups else 0
    for s in range(n_steps_total):
        sets = by_step[step_bounds[s]:step_bounds[s + 1]]
        m = len(sets)
        set_row = np.full(n_groups, -1, np.int64)
        if m:
            nmax = int(set_n[sets].max())
            base = brk[sets]
            cols = np.arange(nmax)
            idx = np.where(cols < set_n[sets][:, None], order[np.minimum(base[:, None] + cols, len(order) - 1)], -1)
            kidx, knew = _soft_nms_sets(boxes, scores, idx, p.nms_iou, p.top_k)
            set_row[set_g[sets]] = np.arange(m)
            avail = kidx >= 0
            kbox = boxes[np.maximum(kidx, 0)]
        # tubes processed this step: groups whose grid has step s
        proc = np.flatnonzero(nsteps[a_group] > s) if len(a_id) else np.zeros(0, np.int64)
        if len(proc):
            mean = a_sum[proc] / a_cnt[proc]
            grp = a_group[proc]
            o = np.lexsort((a_pos[proc], -mean, grp))
            proc, mean, grp = proc[o], mean[o], grp[o]
            gstart = np.flatnonzero(np.r_[True, grp[1:] != grp[:-1]])
            gcount = np.diff(np.r_[gstart, len(proc)])
            rank = np.arange(len(proc)) - np.repeat(gstart, gcount)
            near = np.zeros(len(proc), bool)
            if len(proc) > 1:
                same = grp[1:] == grp[:-1]
                d = np.abs(mean[1:] - mean[:-1]) <= tol * np.maximum(np.abs(mean[1:]), np.abs(mean[:-1]))
                near[1:] |= same & d
                near[:-1] |= same & d
            if near.any():
                for g in np.unique(grp[near]):
                    sel = np.flatnonzero(grp == g)
                    members = proc[sel]
                    cur = members[np.argsort(a_pos[members], kind="stable")]  # CURRENT_TUBES order
                    avg = exact_means(a_id[cur]).astype(dtype)
                    new_order = np.argsort(-np.array(avg))
                    proc[sel] = cur[new_order]
                    rank[sel] = np.arange(len(sel))
            matched_det = np.full(len(proc), -1, np.int64)
            if m:
                srow = set_row[a_group[proc]]
                has = srow >= 0
                if has.any():
                    hp = np.flatnonzero(has)
                    iou = _iou_link(kbox[srow[hp]], a_box[proc[hp]][:, None, :])  # (h, K)
                    for r in range(int(rank[hp].max()) + 1):
                        rr = hp[rank[hp] == r]
                        if not len(rr):
                            continue
                        sr = srow[rr]
                        ok = (iou[np.searchsorted(hp, rr)] >= p.link_iou) & avail[sr]
                        filled = np.where(ok, knew[sr], -np.inf)
                        choice = np.argmax(filled, axis=1)
                        anyok = ok.any(1)
                        rr, sr, choice = rr[anyok], sr[anyok], choice[anyok]
                        matched_det[rr] = choice
                        avail[sr, choice] = False
            mt = matched_det >= 0
            if mt.any():
                tp = proc[mt]
                sr = set_row[a_group[tp]]
                ch = matched_det[mt]
                di = kidx[sr, ch]
                sc = knew[sr, ch]
                a_box[tp] = boxes[di]
                a_last[tp] = s
                a_sum[tp] += sc
                a_cnt[tp] += 1
                rec_t.append(a_id[tp])
                rec_s.append(np.full(len(tp), s))
                rec_d.append(di)
                rec_sc.append(sc)
            a_pos[proc] = rank
            done = ~mt & ((s - a_last[proc]) >= p.k)
            if done.any():
                dp = proc[done]
                fin_id.append(a_id[dp])
                fin_k1.append(np.full(len(dp), s))
                fin_k2.append(-rank[done])
                keep = np.ones(len(a_id), bool)
                keep[dp] = False
                a_id, a_group, a_pos, a_last = a_id[keep], a_group[keep], a_pos[keep], a_last[keep]
                a_box, a_sum, a_cnt = a_box[keep], a_sum[keep], a_cnt[keep]
        if m:
            rows, cols = np.nonzero(avail)  # row-major: per set, boxes in order
            if len(rows):
                g = set_g[sets][rows]
                ntub = np.bincount(a_group, minlength=n_groups)[g] if len(a_group) else np.zeros(len(g), np.int64)
                first = np.r_[True, rows[1:] != rows[:-1]]
                within = np.arange(len(rows)) - np.maximum.accumulate(np.where(first, np.arange(len(rows)), 0))
                ids = np.arange(next_id, next_id + len(rows))
                next_id += len(rows)
                di = kidx[rows, cols]
                sc = knew[rows, cols]
                a_id = np.r_[a_id, ids]
                a_group = np.r_[a_group, g]
                a_pos = np.r_[a_pos, ntub + within + (1 << 40)]
                a_last = np.r_[a_last, np.full(len(rows), s)]
                a_box = np.concatenate([a_box, boxes[di]])
                a_sum = np.r_[a_sum, sc.astype(np.float64)]
                a_cnt = np.r_[a_cnt, np.ones(len(rows), np.int64)]
                rec_t.append(ids)
                rec_s.append(np.full(len(rows), s))
                rec_d.append(di)
                rec_sc.append(sc)
    if len(a_id):
        fin_id.append(a_id)
        fin_k1.append(np.full(len(a_id), np.iinfo(np.int64).max))
        fin_k2.append(a_pos)
    return _assemble(fin_id, fin_k1, fin_k2, rec_t, rec_s, rec_d, rec_sc, boxes, grids, dtype, p, group)


def _assemble(fin_id, fin_k1, fin_k2, rec_t, rec_s, rec_d, rec_sc, boxes, grids, dtype, p, det_group):
    empty = Tubes(np.zeros(0, np.int64), np.zeros(0, dtype), np.zeros(0, np.int64), np.zeros(0, np.int64),
                  np.zeros(0, np.int64), np.zeros((0, 4), dtype), np.zeros(0, dtype))
    if not fin_id:
        return empty
    fid, k1, k2 = np.concatenate(fin_id), np.concatenate(fin_k1), np.concatenate(fin_k2)
    t, st, di, sc = (np.concatenate(x) for x in (rec_t, rec_s, rec_d, rec_sc))
    o = np.lexsort((st, t))
    t, st, di, sc = t[o], st[o], di[o], sc[o]
    ut, ustart, ucnt = np.unique(t, return_index=True, return_counts=True)
    tube_group = det_group[di[ustart]]
    tscore = segment_means(sc, ustart, ucnt)  # np.mean of the tube's box scores
    pos_of = np.searchsorted(ut, fid)
    grp_f = tube_group[pos_of]
    fo = np.lexsort((k2, k1, grp_f))
    fid, pos_of, grp_f = fid[fo], pos_of[fo], grp_f[fo]
    frames_of = [np.asarray(g, np.int64) for g in grids]
    first_frame = np.array([frames_of[g][st[ustart[i]]] for i, g in zip(pos_of, grp_f)], np.int64) if len(fid) else np.zeros(0, np.int64)
    last_frame = np.array([frames_of[g][st[ustart[i] + ucnt[i] - 1]] for i, g in zip(pos_of, grp_f)], np.int64) if len(fid) else np.zeros(0, np.int64)
    sc_f = tscore[pos_of]
    keep = ~(sc_f < dtype.type(p.min_score)) & ~(last_frame + 1 - first_frame < p.min_length)
    pos_of, grp_f, first_frame, last_frame, sc_f = pos_of[keep], grp_f[keep], first_frame[keep], last_frame[keep], sc_f[keep]
    if not len(pos_of):
        return empty
    # rows: detection frames, then interpolation between them
    out_frames, out_boxes, out_scores, starts, lengths = [], [], [], [], []
    total = 0
    for i, g, f0, f1 in zip(pos_of, grp_f, first_frame, last_frame):
        a, n = ustart[i], ucnt[i]
        fr = frames_of[g][st[a:a + n]]
        bx = boxes[di[a:a + n]]
        bs = sc[a:a + n]
        if p.interpolate and n > 1 and (fr[-1] - fr[0] + 1) != n:
            allf = np.arange(fr[0], fr[-1] + 1)
            bx = np.stack([np.interp(allf, fr, bx[:, c]) for c in range(4)], 1).astype(dtype)
            bs = np.interp(allf, fr, bs).astype(dtype)
            isdet = np.isin(allf, fr)
            bx[isdet] = boxes[di[a:a + n]]
            bs[isdet] = sc[a:a + n]
            fr = allf
        out_frames.append(fr)
        out_boxes.append(bx)
        out_scores.append(bs)
        starts.append(total)
        lengths.append(len(fr))
        total += len(fr)
    return Tubes(grp_f.astype(np.int64), sc_f.astype(dtype), np.array(starts, np.int64), np.array(lengths, np.int64),
                 np.concatenate(out_frames), np.concatenate(out_boxes).astype(dtype), np.concatenate(out_scores).astype(dtype))


# ------------------------------------------------------------------------------ nms3dt
def tube_nms(tubes: Tubes, overlap: float = 0.3) -> Tubes:
    """MOC ``nms3dt`` per group (ACT ``iou3dt``, +1 pixels and frames); keeps the official pick order."""
    from .metrics.multisports import _Tubes, tube_iou_pairs

    if len(tubes) == 0 or not overlap:
        return tubes
    T = _Tubes(np.concatenate([tubes.frames[:, None].astype(tubes.boxes.dtype), tubes.boxes], 1),
               tubes.start, tubes.length, tubes.frames[tubes.start].astype(tubes.boxes.dtype),
               tubes.frames[tubes.start + tubes.length - 1].astype(tubes.boxes.dtype))
    order = np.argsort(tubes.group, kind="stable")
    gb = np.flatnonzero(np.r_[True, tubes.group[order][1:] != tubes.group[order][:-1]])
    ge = np.r_[gb[1:], len(order)]
    # all pairs inside each group
    ii, jj = [], []
    for a, b in zip(gb, ge):
        mem = order[a:b]
        if len(mem) > 1:
            x, y = np.triu_indices(len(mem), 1)
            ii.append(mem[x])
            jj.append(mem[y])
    pair_iou = {}
    if ii:
        ii, jj = np.concatenate(ii), np.concatenate(jj)
        val, ovl = tube_iou_pairs(T, ii, T, jj, variant="act")
        for a, b, v, o in zip(ii.tolist(), jj.tolist(), val.tolist(), ovl.tolist()):
            pair_iou[(a, b)] = pair_iou[(b, a)] = (v, o)
    dtype = tubes.boxes.dtype
    t32 = dtype.type(overlap)
    kept = []
    for a, b in zip(gb, ge):
        mem = order[a:b]
        I = np.argsort([tubes.score[t] for t in mem])
        while I.size > 0:
            i = I[-1]
            kept.append(mem[i])
            rest = I[:-1]
            vals = [pair_iou[(mem[r], mem[i])] for r in rest]
            all_ovl = all(o for _, o in vals)
            if all_ovl:  # np.array of NumPy scalars: compared in the tubes' dtype
                keep = np.array([np.asarray(v).astype(dtype) <= t32 for v, _ in vals], bool)
            else:  # a Python 0.0 among them makes a float64 array
                keep = np.array([v <= overlap for v, _ in vals], bool)
            I = rest[keep] if len(rest) else rest
    kept = np.asarray(kept, np.int64)
    return select(tubes, kept)


def select(tubes: Tubes, idx: np.ndarray) -> Tubes:
    """The tubes ``idx`` (in that order)."""
    idx = np.asarray(idx, np.int64)
    lengths = tubes.length[idx]
    rows = np.concatenate([np.arange(tubes.start[t], tubes.start[t] + tubes.length[t]) for t in idx]) \
        if len(idx) else np.zeros(0, np.int64)
    return Tubes(tubes.group[idx], tubes.score[idx], np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
                 if len(idx) else np.zeros(0, np.int64), lengths, tubes.frames[rows], tubes.boxes[rows],
                 tubes.box_scores[rows])


def link(group, step, boxes, scores, grids, params: LinkParams | None = None) -> Tubes:
    """:func:`link_groups` then :func:`tube_nms` (when ``params.tube_nms_iou`` > 0)."""
    p = params or LinkParams()
    tubes = link_groups(group, step, boxes, scores, grids, p)
    return tube_nms(tubes, p.tube_nms_iou) if p.tube_nms_iou else tubes


# ------------------------------------------------------------------------------ front ends
def link_moc_layout(vdets: dict, n_labels: int | None = None, params: LinkParams | None = None,
                    frames: dict | None = None) -> dict:
    """Link detections in MOC's per-frame layout, ``{video: {frame (1-based): {label: (N, 5) array
    x1, y1, x2, y2, score}}}`` (label 0-based), into the official MultiSports ``video_detections``
    layout ``{label: [(video, score, tube (n, 6))]}``. ``frames[video]`` gives the grid (default:
    the frames present in ``vdets[video]``)."""
    check_moc_layout(vdets)
    groups, grids, g_of = [], [], {}
    arrs, a_group, a_step = [], [], []
    for v, per_frame in vdets.items():
        grid = sorted(int(f) for f in (frames[v] if frames and v in frames else per_frame.keys()))
        pos = {f: i for i, f in enumerate(grid)}
        for f in sorted(per_frame, key=int):
            st = pos[int(f)]
            for lab, arr in per_frame[f].items():
                if len(arr) == 0:
                    continue
                key = (v, int(lab))
                g = g_of.get(key)
                if g is None:
                    g = g_of[key] = len(groups)
                    groups.append(key)
                    grids.append(grid)
                arrs.append(arr)
                a_group.append(g)
                a_step.append(st)
    labels_seen = {lab for _, lab in groups}
    n_labels = n_labels if n_labels is not None else (max(labels_seen) + 1 if labels_seen else 0)
    out = {lab: [] for lab in range(n_labels)}
    if not groups:
        return out
    bad = [i for i, a in enumerate(arrs) if getattr(a, "ndim", 0) != 2 or a.shape[1] != 5]
    if bad:
        v, lab = groups[a_group[bad[0]]]
        raise ValueError(f"{v} label {lab}: detections must be (N, 5) arrays, got {np.shape(arrs[bad[0]])}")
    counts = np.fromiter(map(len, arrs), np.int64, count=len(arrs))
    allv = np.concatenate(arrs)
    tubes = link(np.repeat(np.asarray(a_group, np.int64), counts), np.repeat(np.asarray(a_step, np.int64), counts),
                 allv[:, :4], allv[:, 4], grids, params)
    for t in range(len(tubes)):
        v, lab = groups[tubes.group[t]]
        out.setdefault(lab, []).append((v, tubes.score[t], tubes.rows(t)))
    return out


def check_moc_layout(vdets, name: str = "MOC detections") -> None:
    """Raise ValueError, naming ``name`` and the place, where ``vdets`` is not MOC's per-frame layout
    ``{video: {frame: {label: (N, 5) numeric array}}}`` (frames and labels integers)."""
    if not isinstance(vdets, dict):
        raise ValueError(f"{name}: not a dict video -> {{frame: {{label: (N, 5) array}}}} (got a {type(vdets).__name__})")
    for v, per_frame in vdets.items():
        if not isinstance(per_frame, dict):
            raise ValueError(f"{name}: video {v!r} maps to a {type(per_frame).__name__}, not a dict frame -> "
                             f"{{label: (N, 5) array}}")
        for f, by_label in per_frame.items():
            where = f"{name}: video {v!r} frame {f!r}"
            if isinstance(f, bool) or not isinstance(f, (int, np.integer)) and not (isinstance(f, str) and f.isdigit()):
                raise ValueError(f"{where}: a frame must be an integer")
            if not isinstance(by_label, dict):
                raise ValueError(f"{where} maps to a {type(by_label).__name__}, not a dict label -> (N, 5) array")
            for lab, arr in by_label.items():
                if isinstance(lab, bool) or not isinstance(lab, (int, np.integer)):
                    raise ValueError(f"{where}: label {lab!r} is not a label index")
                if isinstance(arr, (list, tuple)) and len(arr) == 0:
                    continue
                if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf" or (
                        len(arr) and (arr.ndim != 2 or arr.shape[1] != 5)):
                    raise ValueError(f"{where} label {lab}: detections must be an (N, 5) numeric array x1, y1, x2, "
                                     f"y2, score, got {_describe(arr)}")


def _describe(x) -> str:
    if isinstance(x, np.ndarray):
        return f"an array of shape {x.shape}, dtype {x.dtype}"
    return f"a {type(x).__name__}"


# ------------------------------------------------------------------------------ pipeline tables
def action_detections(persons, video_predictions, classes: list, top_k_classes: int = 1,
                      min_person_score: float = 0.0, model: str = "ensemble", task: str = "action"):
    """Per-frame action detections ("action_detections" table) from person boxes and video-level
    action probabilities: each person box (score >= ``min_person_score``) x each of the video's
    ``top_k_classes`` most probable classes, score = person score x class probability (float32).

    ``persons``: a "persons" or "keypoints" table (the latter's refined ``box`` is used);
    ``video_predictions``: rows of ``model`` / ``task`` carry ``probs`` ordered as ``classes``.
    Videos without such a prediction get no detections.
    """
    import pyarrow as pa

    from .schemas import from_columns, schema

    p = persons.to_pandas() if isinstance(persons, pa.Table) else persons
    vp = video_predictions.to_pandas() if isinstance(video_predictions, pa.Table) else video_predictions
    vp = vp[(vp["model"] == model) & (vp["task"] == task)]
    probs = {}
    for v, pr in zip(vp["video"], vp["probs"]):
        pr = np.asarray(pr, np.float32)
        if len(pr) != len(classes):
            raise ValueError(f"video_predictions: {v}: {len(pr)} probabilities for {len(classes)} classes")
        probs[v] = pr
    p = p[p["score"] >= min_person_score]
    p = p[p["video"].isin(set(probs))].sort_values(["video", "frame", "person"], kind="stable")
    if not len(p) or top_k_classes < 1:
        return schema("action_detections").empty_table()
    k = min(top_k_classes, len(classes))
    vids = p["video"].to_numpy()
    uv, inv = np.unique(vids, return_inverse=True)
    P = np.stack([probs[v] for v in uv])  # (V, C)
    top = np.argsort(-P, axis=1, kind="stable")[:, :k]  # (V, k)
    n = len(p)
    rep_rows = np.repeat(np.arange(n), k)
    cls = top[inv].reshape(-1)
    pscore = p["score"].to_numpy().astype(np.float32)[rep_rows]
    cprob = P[inv[rep_rows], cls]
    boxes = np.stack(p["box"].to_numpy()).astype(np.float32)[rep_rows]
    cols = {"video": vids[rep_rows], "frame": p["frame"].to_numpy()[rep_rows],
            "person": p["person"].to_numpy()[rep_rows], "label": np.asarray(classes, object)[cls],
            "box": boxes, "score": (pscore * cprob).astype(np.float32)}
    return from_columns(cols, "action_detections")


def infer_stride(frames) -> int:
    """The decoding stride of a set of 0-based frame indices (their gcd; 1 if undetermined)."""
    f = np.unique(np.asarray(frames, np.int64))
    g = int(np.gcd.reduce(f)) if len(f) else 0
    return g if g > 0 else 1


def link_table(dets, params: LinkParams | None = None, stride: int | None = None, labels: list | None = None):
    """Link an "action_detections" table into a "tubes" table.

    The grid of each video is frames 0, ``stride``, 2 ``stride``, ... up to its last detection
    (``stride`` default: inferred from the frames). Tube ids count per video, in the order of
    ``labels`` (default: sorted names) and then MOC's order.
    """
    import pyarrow as pa

    from .schemas import from_columns, schema

    p = params or LinkParams()
    d = dets.to_pandas() if isinstance(dets, pa.Table) else dets
    if not len(d):
        return schema("tubes").empty_table()
    d = d.sort_values(["video", "frame", "person"], kind="stable")
    stride = stride or infer_stride(d["frame"])
    frames = d["frame"].to_numpy().astype(np.int64)
    if (frames % stride).any():
        bad = int(frames[frames % stride != 0][0])
        raise ValueError(f"action detections: frame {bad} is not on the decoding grid (stride {stride})")
    labels = list(labels) if labels is not None else sorted(d["label"].unique())
    li = {lab: i for i, lab in enumerate(labels)}
    d = d[d["label"].isin(li)]
    videos = sorted(d["video"].unique())
    vi = {v: i for i, v in enumerate(videos)}
    gid = d["video"].map(vi).to_numpy() * len(labels) + d["label"].map(li).to_numpy()
    ug, ginv = np.unique(gid, return_inverse=True)
    last = {v: int(m) for v, m in d.groupby("video")["frame"].max().items()}
    grids = [np.arange(0, last[videos[g // len(labels)]] + 1, stride) + 1 for g in ug]
    tubes = link(ginv, d["frame"].to_numpy() // stride, np.stack(d["box"].to_numpy()).astype(np.float32),
                 d["score"].to_numpy().astype(np.float32), grids, p)
    if not len(tubes):
        return schema("tubes").empty_table()
    g_of = ug[tubes.group]
    order = np.lexsort((np.arange(len(tubes)), g_of // len(labels)))
    counter: dict = {}
    tube_id = np.zeros(len(tubes), np.int64)
    for t in order:
        v = int(g_of[t] // len(labels))
        tube_id[t] = counter.get(v, 0)
        counter[v] = tube_id[t] + 1
    sel = select(tubes, order)
    n = sel.length
    rep = np.repeat(np.arange(len(order)), n)
    cols = {"video": np.asarray(videos, object)[(g_of[order] // len(labels))[rep]],
            "tube": tube_id[order][rep], "label": np.asarray(labels, object)[(g_of[order] % len(labels))[rep]],
            "tube_score": sel.score[rep].astype(np.float32), "frame": sel.frames - 1,
            "box": sel.boxes.astype(np.float32), "score": sel.box_scores.astype(np.float32)}
    return from_columns(cols, "tubes")


# ------------------------------------------------------------------------------ stage helpers
def params_from(params: dict) -> LinkParams:
    """The ``link`` section of params.yaml as :class:`LinkParams`, each key type- and range-checked."""
    from .params import get

    return LinkParams(
        nms_iou=get(params, "link.nms_iou", float, min_value=0.0, max_value=1.0),
        top_k=get(params, "link.top_k", int, min_value=1),
        link_iou=get(params, "link.link_iou", float, min_value=0.0, max_value=1.0),
        min_score=get(params, "link.min_score", float, min_value=0.0),
        min_length=get(params, "link.min_length", int, min_value=1),
        k=get(params, "link.k", int, min_value=1),
        tube_nms_iou=get(params, "link.tube_nms_iou", float, min_value=0.0, max_value=1.0),
        interpolate=get(params, "link.interpolate", bool),
    )


def load_action_classes(part_labels_dir) -> list[str]:
    """``classes.json["action"]`` written by the part_labels stage."""
    import json
    from pathlib import Path

    path = Path(part_labels_dir) / "classes.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: class lists not found (has part_labels run?)")
    try:
        classes = json.loads(path.read_text())["action"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: no 'action' class list: {exc}") from None
    if not isinstance(classes, list) or not classes:
        raise ValueError(f"{path}: 'action' must be a non-empty list of class names")
    return [str(c) for c in classes]


def frame_detections_from_artifacts(params: dict, root) -> tuple:
    """(action_detections table, action classes) from refined persons x ensemble action probabilities,
    with ``link.top_k_classes`` and ``link.min_person_score``; shared by link_tubes and evaluate."""
    from .params import get
    from .paths import Paths
    from .schemas import read_table

    paths = Paths(root)
    top_k = get(params, "link.top_k_classes", int, min_value=1)
    min_score = get(params, "link.min_person_score", float, min_value=0.0)
    classes = load_action_classes(paths.part_labels)
    persons = read_table(paths.refined, "keypoints", columns=["video", "frame", "person", "box", "score"])
    preds = read_table(paths.video_predictions, "video_predictions")
    return action_detections(persons, preds, classes, top_k, min_score), classes
