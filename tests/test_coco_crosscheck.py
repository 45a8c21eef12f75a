"""COCO-style detection AP (actparse.metrics.detection) against pycocotools' COCOeval itself.

``detection_ap`` follows COCOeval for one IoU threshold, area "all", 100 detections per image
(bbox IoU, no crowd regions). Random small sets with several images and classes, duplicates,
near-misses, misses, classes without ground truth and images without detections are scored by both;
the AP of every class and the means at IoU 0.5 and over 0.50:0.95 must agree. Boxes have integer
corners, so COCO's [x, y, w, h] and our [x1, y1, x2, y2] give the same IoUs (ties at a threshold
included), and the thresholds are COCOeval's own floats.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from actparse.metrics.detection import detection_ap


def random_case(seed: int, n_img: int = 6, n_cls: int = 3):
    rng = np.random.default_rng(seed)
    gts, dets = [], []  # (image, class, [x1, y1, x2, y2]) / (..., score)
    for img in range(1, n_img + 1):
        for _ in range(int(rng.integers(0, 6))):
            x, y = rng.integers(0, 200, 2)
            w, h = rng.integers(8, 60, 2)
            c = int(rng.integers(1, n_cls + 1))
            box = [int(x), int(y), int(x + w), int(y + h)]
            gts.append((img, c, box))
            # detections of this box: none (a miss), one, or duplicates, jittered, sometimes mislabelled
            for _ in range(int(rng.choice([0, 1, 1, 2, 3]))):
                jit = rng.integers(-6, 7, 4)
                db = [box[0] + jit[0], box[1] + jit[1], box[2] + jit[2], box[3] + jit[3]]
                if db[2] <= db[0] or db[3] <= db[1]:
                    db = box
                dc = c if rng.random() < 0.85 else int(rng.integers(1, n_cls + 2))  # n_cls + 1: no ground truth
                dets.append((img, dc, [int(v) for v in db], float(rng.choice([0.3, 0.5, 0.7, 0.9]))
                             if rng.random() < 0.3 else float(rng.random())))  # some tied scores
        for _ in range(int(rng.integers(0, 3))):  # false positives anywhere
            x, y = rng.integers(0, 220, 2)
            w, h = rng.integers(5, 50, 2)
            dets.append((img, int(rng.integers(1, n_cls + 2)), [int(x), int(y), int(x + w), int(y + h)],
                         float(rng.random())))
    order = rng.permutation(len(dets))  # detections in no particular order
    return n_img, n_cls, gts, [dets[i] for i in order]


def coco_eval(n_img: int, n_cls: int, gts: list, dets: list) -> COCOeval:
    def xywh(b):
        return [b[0], b[1], b[2] - b[0], b[3] - b[1]]

    gt = {"info": {}, "licenses": [], "images": [{"id": i, "width": 300, "height": 300} for i in range(1, n_img + 1)],
          "categories": [{"id": c, "name": f"c{c}"} for c in range(1, n_cls + 2)],
          "annotations": [{"id": k + 1, "image_id": i, "category_id": c, "bbox": xywh(b),
                           "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0}
                          for k, (i, c, b) in enumerate(gts)]}
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = gt
        cg.createIndex()
        if dets:
            cd = cg.loadRes([{"image_id": i, "category_id": c, "bbox": xywh(b), "score": s} for i, c, b, s in dets])
        else:
            cd = COCO()
            cd.dataset = {**gt, "annotations": []}
            cd.createIndex()
        ev = COCOeval(cg, cd, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def ours(gts: list, dets: list, thr: float) -> dict:
    gi, gc, gb = zip(*gts)
    di, dc, db, ds = zip(*dets) if dets else ((), (), (), ())
    return detection_ap(np.array(gi), np.array(gc), np.array(gb, float), np.array(di, int), np.array(dc, int),
                        np.array(db, float).reshape(-1, 4), np.array(ds, float), iou_thr=thr, max_dets=100)


@pytest.mark.parametrize("seed", range(12))
def test_detection_ap_equals_cocoeval(seed):
    n_img, n_cls, gts, dets = random_case(seed)
    if not gts:
        pytest.skip("no ground truth drawn")
    ev = coco_eval(n_img, n_cls, gts, dets)
    cats = ev.params.catIds
    prec = ev.eval["precision"]  # (T, R, K, A, M); area "all" = 0, maxDets 100 = last
    maps = []
    for t, thr in enumerate(ev.params.iouThrs):
        res = ours(gts, dets, float(thr))
        for k, c in enumerate(cats):
            p = prec[t, :, k, 0, -1]
            if (p > -1).any():  # COCO scores a class only when it has ground truth
                assert res["ap"][c] == pytest.approx(float(np.mean(p)), abs=1e-12), (thr, c)
            else:
                assert c not in res["ap"]
        maps.append(res["map"])
    assert maps[0] == pytest.approx(ev.stats[1], abs=1e-6)  # AP@0.5
    assert float(np.mean(maps)) == pytest.approx(ev.stats[0], abs=1e-6)  # AP@[.5:.95]


def test_more_than_max_dets_per_image_are_cut_like_cocoeval():
    rng = np.random.default_rng(7)
    gts = [(1, 1, [10 * k, 0, 10 * k + 8, 8]) for k in range(30)]
    dets = [(1, 1, [10 * (k % 30), 0, 10 * (k % 30) + 8, 8], float(rng.random())) for k in range(130)]
    ev = coco_eval(1, 1, gts, dets)
    res = ours(gts, dets, 0.5)
    assert res["map"] == pytest.approx(ev.stats[1], abs=1e-6)
    assert res["ap"][1] == pytest.approx(float(np.mean(ev.eval["precision"][0, :, 0, 0, -1])), abs=1e-12)


def test_no_detections_scores_zero_like_cocoeval():
    _, _, gts, _ = random_case(3)
    ev = coco_eval(6, 3, gts, [])
    res = ours(gts, [], 0.5)
    assert res["map"] == ev.stats[1] == 0.0
