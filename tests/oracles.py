"""Loop-per-box reference implementations, written the way the official evaluation code is written.

These follow the structure of the public official scripts step by step (one Python call per box
pair, dicts of lists, ``np.argmax`` / ``np.delete`` on small arrays): Kinetics-TPS
``eval_detection.py``, MultiSports ``evaluate_multisports.py`` (and the ACT-style ``evaluate.py``),
MOC-Detector ``ACT_build.BuildTubes`` / ``ACT_utils.nms_tubelets`` / ``nms3dt``. They exist to
check that the vectorised library gives identical numbers (the tests' oracles) and to time it against
(benchmarks/bench_metrics.py). The only change from the official code: ``int(np.where(...)[0])``
became ``int(np.where(...)[0][0])``, which NumPy >= 2.4 requires. Not used by the pipeline.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize


# ============================================================================ Kinetics-TPS
def tps_bbox_iou(a, b):
    xA = max(a[0], b[0])
    yA = max(a[1], b[1])
    xB = min(a[2], b[2])
    yB = min(a[3], b[3])
    w = xB - xA + 1
    h = yB - yA + 1
    if w <= 0 or h <= 0:
        return -1.0
    inter = w * h
    areaA = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    areaB = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / float(areaA + areaB - inter)


def tps_match(gt_boxes, pred_boxes, thr):
    n_true = gt_boxes.shape[0]
    n_pred = pred_boxes.shape[0]
    m = np.zeros((n_true, n_pred), dtype=np.float32)
    for i in range(n_true):
        for j in range(n_pred):
            m[i, j] = tps_bbox_iou(gt_boxes[i, :], pred_boxes[j, :])
    if n_pred > n_true:
        m = np.concatenate((m, np.full((n_pred - n_true, n_pred), 0.0)), axis=0)
    if n_true > n_pred:
        m = np.concatenate((m, np.full((n_true, n_true - n_pred), 0.0)), axis=1)
    rows, cols = scipy.optimize.linear_sum_assignment(1 - m)
    sel = cols < n_pred
    r, c = rows[sel], cols[sel]
    ious = m[r, c]
    ok = ious > thr
    return r[ok], c[ok], ious[ok]


def tps_video(vid, gt_part, pred_part, human_thr=0.5, part_thr=0.3):
    total = len(gt_part[vid])
    vsum = 0
    for frame in gt_part[vid].keys():
        counts = 0
        fsum = 0
        gh = gt_part[vid][frame]["humans"]
        if len(gh) == 0:
            total -= 1
            continue
        if frame not in pred_part[vid]:
            continue
        ph = pred_part[vid][frame]["humans"]
        gb = np.float32([h["box"] for h in gh])
        pb = np.float32([h["box"] for h in ph])
        r, c, ious = tps_match(gb, pb, human_thr)
        info = {r[k]: [c[k], ious[k], ph[c[k]]] for k in range(len(r))}
        assert len(ph) <= 10
        for i in range(len(gh)):
            g = gh[i]
            counts += len(g["parts"])
            hsum = 0
            if i in info:
                p, hiou = info[i][2], info[i][1]
                for name in g["parts"].keys():
                    correct = 0
                    num = 0
                    gp = g["parts"][name]
                    if name in p["parts"] and hiou >= human_thr:
                        verbs = [p["parts"][name]["verb"]]
                        boxes = [p["parts"][name]["box"]]
                        num += len(verbs)
                        for j in range(len(boxes)):
                            if tps_bbox_iou(gp["box"], boxes[j]) >= part_thr and gp["verb"] == verbs[j]:
                                correct = 1
                                break
                    hsum += 1.0 * correct / num if num > 0 else 0
            fsum += hsum
        if counts == 0:
            total -= 1
        else:
            vsum += 1.0 * fsum / counts
    return 1.0 if total == 0 else 1.0 * vsum / total


def tps_score(gt_vid, gt_part, pred_vid, pred_part, human_thr=0.5, part_thr=0.3, steps=10000):
    rows = []
    for vid in gt_vid:
        ok = 1 if gt_vid[vid] == pred_vid[vid] else 0
        rows.append([vid, tps_video(vid, gt_part, pred_part, human_thr, part_thr), ok])

    def pvacc(t):
        cor = 0
        for _, p, v in rows:
            if p >= t and v == 1:
                cor += 1
        return cor / len(rows)

    area = 0
    for t in range(steps):
        if t == 0:
            continue
        area += 1.0 / steps * pvacc(t / steps)
    return area, [r[1] for r in rows]


# ============================================================================ MultiSports
EXCLUDED = ("aerobic kick jump", "aerobic off axis jump", "aerobic butterfly jump", "aerobic balance turn",
            "basketball save", "basketball jump ball")


def _area(b, one):
    return (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)


def _overlap(b1, b2, one):
    xmin = np.maximum(b1[:, 0], b2[:, 0])
    ymin = np.maximum(b1[:, 1], b2[:, 1])
    xmax = np.minimum(b1[:, 2] + one, b2[:, 2] + one)
    ymax = np.minimum(b1[:, 3] + one, b2[:, 3] + one)
    return np.maximum(0, xmax - xmin) * np.maximum(0, ymax - ymin)


def ms_iou2d(b1, b2, one=0):
    if b1.ndim == 1:
        b1 = b1[None, :]
    if b2.ndim == 1:
        b2 = b2[None, :]
    ov = _overlap(b1, b2, one)
    return ov / (_area(b1, one) + _area(b2, one) - ov)


def ms_iou3d(b1, b2, one=0):
    assert b1.shape[0] == b2.shape[0]
    assert np.all(b1[:, 0] == b2[:, 0])
    ov = _overlap(b1[:, 1:5], b2[:, 1:5], one)
    return np.mean(ov / (_area(b1[:, 1:5], one) + _area(b2[:, 1:5], one) - ov))


def ms_iou3dt(b1, b2, one=0):
    tmin = max(b1[0, 0], b2[0, 0])
    tmax = min(b1[-1, 0], b2[-1, 0])
    if tmax < tmin:
        return 0.0
    inter = tmax - tmin + one
    union = max(b1[-1, 0], b2[-1, 0]) - min(b1[0, 0], b2[0, 0]) + one
    t1 = b1[int(np.where(b1[:, 0] == tmin)[0][0]): int(np.where(b1[:, 0] == tmax)[0][0]) + 1, :]
    t2 = b2[int(np.where(b2[:, 0] == tmin)[0][0]): int(np.where(b2[:, 0] == tmax)[0][0]) + 1, :]
    return ms_iou3d(t1, t2, one) * (inter / union)


def pr_to_ap_voc(pr):
    precision = pr[:, 0]
    recall = pr[:, 1]
    recall = np.concatenate([[0], recall, [1]])
    precision = np.concatenate([[0], precision, [0]])
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = np.maximum(precision[i], precision[i + 1])
    idx = np.where(recall[1:] != recall[:-1])[0] + 1
    return np.sum((recall[idx] - recall[idx - 1]) * precision[idx])


def pr_to_ap_act(pr):
    return np.sum((pr[1:, 1] - pr[:-1, 1]) * (pr[1:, 0] + pr[:-1, 0]) * 0.5)


def _vlist(GT):
    tv = GT["test_videos"]
    return tv[0] if tv and isinstance(tv[0], (list, tuple)) else tv


def ms_frame_ap(GT, alldets, thr, act=False, moc=False):
    """``moc``: MOC-Detector ACT.py, which keeps a label without ground truth (AP 0; with
    detections it divides 0 by 0, ZeroDivisionError)."""
    vlist = _vlist(GT)
    one = 1 if act else 0
    results = {}
    for ilabel, label in enumerate(GT["labels"]):
        if label in EXCLUDED:
            continue
        detections = alldets[alldets[:, 2] == ilabel, :]
        gt = {}
        for iv, v in enumerate(vlist):
            tubes = GT["gttubes"][v]
            if ilabel not in tubes:
                continue
            for tube in tubes[ilabel]:
                for i in range(tube.shape[0]):
                    k = (iv, int(tube[i, 0]))
                    if k not in gt:
                        gt[k] = []
                    gt[k].append(tube[i, 1:5].tolist())
        for k in gt:
            gt[k] = np.array(gt[k])
        gt_num = sum([g.shape[0] for g in gt.values()])
        if gt_num == 0 and not moc:
            continue
        if act:
            pr = np.empty((detections.shape[0] + 1, 2), dtype=np.float32)
            pr[0, 0], pr[0, 1] = 1.0, 0.0
        else:
            pr = np.empty((detections.shape[0], 2), dtype=np.float64)
        fn = gt_num
        tp = fp = 0
        detected = {}
        for i, j in enumerate(np.argsort(-detections[:, 3])):
            k = (int(detections[j, 0]), int(detections[j, 1]))
            box = detections[j, 4:8]
            pos = False
            if k in gt:
                ious = ms_iou2d(gt[k], box, one)
                amax = np.argmax(ious)
                if ious[amax] >= thr:
                    if act:
                        pos = True
                        gt[k] = np.delete(gt[k], amax, 0)
                        if gt[k].size == 0:
                            del gt[k]
                    else:
                        if k not in detected:
                            detected[k] = np.zeros(gt[k].shape[0], dtype=bool)
                        if not detected[k][amax]:
                            pos = True
                            detected[k][amax] = True
            if pos:
                tp += 1
                fn -= 1
            else:
                fp += 1
            row = i + 1 if act else i
            pr[row, 0] = float(tp) / float(tp + fp)
            pr[row, 1] = float(tp) / float(tp + fn)
        results[label] = pr
    f = pr_to_ap_act if act else pr_to_ap_voc
    ap = 100 * np.array([f(results[label]) for label in results])
    return np.mean(ap), {label: f(results[label]) * 100 for label in results}


def ms_video_ap(GT, alldets, thr, act=False, moc=False):
    vlist = _vlist(GT)
    one = 1 if act else 0
    res = {}
    for ilabel in range(len(GT["labels"])):
        if GT["labels"][ilabel] in EXCLUDED:
            continue
        detections = alldets[ilabel]
        gt = {}
        for v in vlist:
            tubes = GT["gttubes"][v]
            if ilabel not in tubes:
                continue
            gt[v] = list(tubes[ilabel])
            if len(gt[v]) == 0:
                del gt[v]
        gt_num = sum([len(g) for g in gt.values()])
        if gt_num == 0 and not moc:
            continue
        if act:
            pr = np.empty((len(detections) + 1, 2), dtype=np.float32)
            pr[0, 0], pr[0, 1] = 1.0, 0.0
        else:
            pr = np.empty((len(detections), 2), dtype=np.float64)
        fn = gt_num
        tp = fp = 0
        detected = {}
        for i, j in enumerate(np.argsort(-np.array([dd[1] for dd in detections]))):
            v, score, tube = detections[j]
            pos = False
            if v in gt:
                ious = [ms_iou3dt(g, tube, one) for g in gt[v]]
                amax = np.argmax(ious)
                if ious[amax] >= thr:
                    if act:
                        pos = True
                        del gt[v][amax]
                        if len(gt[v]) == 0:
                            del gt[v]
                    else:
                        if v not in detected:
                            detected[v] = np.zeros(len(gt[v]), dtype=bool)
                        if not detected[v][amax]:
                            pos = True
                            detected[v][amax] = True
            if pos:
                tp += 1
                fn -= 1
            else:
                fp += 1
            row = i + 1 if act else i
            pr[row, 0] = float(tp) / float(tp + fp)
            pr[row, 1] = float(tp) / float(tp + fn)
        res[GT["labels"][ilabel]] = pr
    f = pr_to_ap_act if act else pr_to_ap_voc
    ap = 100 * np.array([f(res[label]) for label in res])
    return np.mean(ap), {label: f(res[label]) * 100 for label in res}


# ============================================================================ MOC linking
def moc_iou2d(b1, b2):
    return ms_iou2d(b1, b2, one=1)


def moc_nms_tubelets(dets, overlap=0.3, top_k=None):
    if top_k is None:
        top_k = len(dets)
    K = int((dets.shape[1] - 1) / 4)
    x1 = [dets[:, 4 * k] for k in range(K)]
    y1 = [dets[:, 4 * k + 1] for k in range(K)]
    x2 = [dets[:, 4 * k + 2] for k in range(K)]
    y2 = [dets[:, 4 * k + 3] for k in range(K)]
    scores = dets[:, -1]
    area = [(x2[k] - x1[k] + 1) * (y2[k] - y1[k] + 1) for k in range(K)]
    order = np.argsort(scores)[::-1]
    weight = np.zeros_like(scores) + 1
    while order.size > 0:
        i = order[0]
        xx1 = [np.maximum(x1[k][i], x1[k][order[1:]]) for k in range(K)]
        yy1 = [np.maximum(y1[k][i], y1[k][order[1:]]) for k in range(K)]
        xx2 = [np.minimum(x2[k][i], x2[k][order[1:]]) for k in range(K)]
        yy2 = [np.minimum(y2[k][i], y2[k][order[1:]]) for k in range(K)]
        w = [np.maximum(0, xx2[k] - xx1[k] + 1) for k in range(K)]
        h = [np.maximum(0, yy2[k] - yy1[k] + 1) for k in range(K)]
        inter = [w[k] * h[k] for k in range(K)]
        ious = sum([inter[k] / (area[k][order[1:]] + area[k][i] - inter[k]) for k in range(K)])
        index = np.where(ious > overlap * K)[0]
        weight[order[index + 1]] = 1 - ious[index]
        index2 = np.where(ious <= overlap * K)[0]
        order = order[index2 + 1]
    dets[:, -1] = dets[:, -1] * weight
    new_order = np.argsort(dets[:, -1])[::-1]
    dets = dets[new_order, :]
    return dets[:top_k, :]


def moc_build_tubes(vdets, frames, n_labels, nms=0.6, top_k=10, link_iou=0.5, min_score=0.005,
                    min_length=15, k_gap=1):
    """BuildTubes for one video, K = 1, over ``frames`` (1-based, ascending): ``vdets[frame][label]``
    is an (N, 5) float array. A tube ends when unmatched and ``steps since its last box >= k_gap``.
    Returns {label: [[out (rows: frame, x1, y1, x2, y2, score; detection frames only), score]]}."""
    RES = {}
    step_of = {f: s for s, f in enumerate(frames)}
    for ilabel in range(n_labels):
        FINISHED = []
        CURRENT = []

        def tubescore(tt):
            return np.mean(np.array([tt[i][1][-1] for i in range(len(tt))]))

        for frame in frames:
            lt = vdets[frame].get(ilabel, np.zeros((0, 5), np.float32)).copy()
            lt = moc_nms_tubelets(lt, nms, top_k=top_k)
            avg = [tubescore(t) for t in CURRENT]
            order = np.argsort(-np.array(avg))
            CURRENT = [CURRENT[i] for i in order]
            finished = []
            for it, t in enumerate(CURRENT):
                last_frame, last = t[-1]
                offset = step_of[frame] - step_of[last_frame]
                ious = moc_iou2d(lt[:, :4], last[:4])
                valid = np.where(ious >= link_iou)[0]
                if valid.size > 0:
                    idx = valid[np.argmax(lt[valid, -1])]
                    CURRENT[it].append((frame, lt[idx, :]))
                    lt = np.delete(lt, idx, axis=0)
                else:
                    if offset >= k_gap:
                        finished.append(it)
            for it in finished[::-1]:
                FINISHED.append(CURRENT[it][:])
                del CURRENT[it]
            for i in range(lt.shape[0]):
                CURRENT.append([(frame, lt[i, :])])
        FINISHED += CURRENT
        output = []
        for t in FINISHED:
            score = tubescore(t)
            if score < min_score:
                continue
            begin = t[0][0]
            end = t[-1][0]
            if end + 1 - begin < min_length:
                continue
            out = np.zeros((len(t), 6), dtype=np.float32)
            for i in range(len(t)):
                out[i, 0] = t[i][0]
                out[i, 1:5] = t[i][1][:4]
                out[i, 5] = t[i][1][-1]
            output.append([out, score])
        RES[ilabel] = output
    return RES


def moc_nms3dt(tubes, overlap=0.5):
    """tubes: list of (tube (n, 6) consecutive frames, score); ACT iou3dt (+1)."""
    if not tubes:
        return np.array([], dtype=np.int32)
    I = np.argsort([t[1] for t in tubes])
    indices = np.zeros(I.size, dtype=np.int32)
    counter = 0
    while I.size > 0:
        i = I[-1]
        indices[counter] = i
        counter += 1
        ious = np.array([ms_iou3dt(tubes[ii][0], tubes[i][0], one=1) for ii in I[:-1]])
        I = I[np.where(ious <= overlap)[0]]
    return indices[:counter]
