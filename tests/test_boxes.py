"""actparse.boxes: box geometry and the keypoint box refinement (seed 001 sec. 1.2)."""

from __future__ import annotations

import numpy as np
import pytest

from actparse import boxes as B
from actparse.boxes import refine_box
from actparse.constants import NUM_KEYPOINTS


def test_box_geometry():
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]])
    m = B.iou_matrix(a, a)
    assert np.allclose(np.diag(m), 1) and m[0, 1] == pytest.approx(25 / 175)
    assert B.iou_matrix(a, np.zeros((0, 4))).shape == (2, 0)
    e = B.expand([[0, 0, 10, 20]], 2.0)[0]
    assert e.tolist() == [-5, -10, 15, 30]
    r = B.to_aspect([[0, 0, 10, 20]], 1.0)[0]
    assert r[2] - r[0] == pytest.approx(20) and r[3] - r[1] == pytest.approx(20)
    with pytest.raises(ValueError, match="shape"):
        B.as_boxes([[1, 2, 3]])


def test_refine_box_grows_ignores_low_scores_never_shrinks_and_clips():
    box = np.array([[20.0, 20.0, 60.0, 100.0], [20.0, 20.0, 60.0, 100.0], [20.0, 20.0, 60.0, 100.0]])
    kp = np.zeros((3, NUM_KEYPOINTS, 3))
    kp[:, :, :2] = [40, 60]
    kp[:, :, 2] = 0.9
    kp[0, 9] = [70.0, 50.0, 0.9]   # confident wrist right of the box
    kp[0, 15] = [30.0, 110.0, 0.8]  # confident ankle below
    kp[1, 9] = [70.0, 50.0, 0.1]   # low score: ignored
    kp[2, 10] = [-30.0, 50.0, 0.9]  # outside the image on the left
    out = refine_box(box, kp, thr=0.3, margin=0.0, image_size=(160, 120))
    assert np.allclose(out[0], [20, 20, 70, 110])
    assert np.allclose(out[1], box[1])
    assert np.allclose(out[2], [0, 20, 60, 100])
    # margin (fraction of the longer side, 80 px) and never shrinking a box larger than its keypoints
    out = refine_box(box[0], kp[0], thr=0.3, margin=0.05, image_size=(160, 120))
    assert np.allclose(out, [20, 20, 74, 114])
    big = np.array([0.0, 0.0, 150.0, 118.0])
    assert np.allclose(refine_box(big, kp[0], 0.3, 0.05, (160, 120)), big)
    # every confident keypoint ends up inside
    rng = np.random.default_rng(3)
    boxes = rng.uniform(0, 80, (50, 2))
    boxes = np.concatenate([boxes, boxes + rng.uniform(5, 40, (50, 2))], 1)
    pts = np.concatenate([rng.uniform(0, 160, (50, NUM_KEYPOINTS, 1)), rng.uniform(0, 120, (50, NUM_KEYPOINTS, 1)),
                          rng.uniform(0, 1, (50, NUM_KEYPOINTS, 1))], -1)
    out = refine_box(boxes, pts.reshape(50, -1), 0.5, 0.02, np.tile([160, 120], (50, 1)))
    conf = pts[..., 2] > 0.5
    inside = ((pts[..., 0] >= out[:, None, 0]) & (pts[..., 0] <= out[:, None, 2])
              & (pts[..., 1] >= out[:, None, 1]) & (pts[..., 1] <= out[:, None, 3]))
    assert inside[conf].all()
    assert (out[:, :2] <= boxes[:, :2]).all() and (out[:, 2:] >= boxes[:, 2:]).all()
