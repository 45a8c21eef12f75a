"""Keypoint-painted person crops for the part detector (seed 001 section 1.2: X'_p = X_p + G(K_p)).

A person box (the keypoint-refined box) is grown by a margin, made square about its centre and
resampled to ``crop_size`` x ``crop_size``; pixels outside the frame get a constant grey. Each
confident keypoint (score > ``kp_thr``) is then drawn as a filled dot of a fixed colour (one colour
per COCO keypoint; left-side points warm, right-side points cool, so left and right differ
clearly). With painting switched off the crop is identical but undrawn (seed 001 Table 4 ablation).

:class:`CropTransform` maps boxes and points between frame and crop coordinates exactly (a scale
and an offset, continuous pixel coordinates where pixel ``i`` covers ``[i, i+1)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import COCO_KEYPOINTS, NUM_KEYPOINTS

# Fixed RGB colour per COCO keypoint. Left = reds/oranges/yellows/magentas, right = blues/cyans/greens.
KEYPOINT_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 255, 255),  # nose
    (255, 0, 0),      # left_eye
    (0, 0, 255),      # right_eye
    (255, 128, 0),    # left_ear
    (0, 128, 255),    # right_ear
    (255, 0, 255),    # left_shoulder
    (0, 255, 0),      # right_shoulder
    (255, 255, 0),    # left_elbow
    (0, 255, 255),    # right_elbow
    (160, 0, 0),      # left_wrist
    (0, 0, 160),      # right_wrist
    (255, 0, 128),    # left_hip
    (0, 160, 80),     # right_hip
    (255, 190, 100),  # left_knee
    (90, 170, 255),   # right_knee
    (128, 64, 0),     # left_ankle
    (0, 64, 128),     # right_ankle
)
assert len(set(KEYPOINT_COLORS)) == NUM_KEYPOINTS == len(COCO_KEYPOINTS)

PAD_VALUE = 114  # grey outside the frame (the YOLO letterbox colour)


@dataclass(frozen=True)
class CropTransform:
    """``crop = (frame - (x0, y0)) * scale``; the crop is ``size`` x ``size`` pixels."""

    x0: float
    y0: float
    scale: float
    size: int

    def boxes_to_crop(self, boxes) -> np.ndarray:
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        off = np.array([self.x0, self.y0, self.x0, self.y0])
        return (b - off) * self.scale

    def boxes_to_frame(self, boxes) -> np.ndarray:
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        off = np.array([self.x0, self.y0, self.x0, self.y0])
        return b / self.scale + off

    def points_to_crop(self, points) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return (p - np.array([self.x0, self.y0])) * self.scale

    def points_to_frame(self, points) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return p / self.scale + np.array([self.x0, self.y0])

    def matrix(self) -> np.ndarray:
        """2x3 affine matrix frame-pixel-index -> crop-pixel-index (pixel centres at i + 0.5)."""
        s = self.scale
        return np.array([[s, 0.0, (0.5 - self.x0) * s - 0.5],
                         [0.0, s, (0.5 - self.y0) * s - 0.5]])


def crop_transform(box, crop_size: int, margin: float = 0.1) -> CropTransform:
    """Square crop region around ``box`` grown by ``margin`` (fraction of its size, each side)."""
    b = np.asarray(box, dtype=np.float64).reshape(4)
    if not np.all(np.isfinite(b)):
        raise ValueError(f"person box {b.tolist()} is not finite")
    w, h = max(b[2] - b[0], 1.0), max(b[3] - b[1], 1.0)
    side = max(w, h) * (1.0 + 2.0 * float(margin))
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    return CropTransform(x0=cx - side / 2, y0=cy - side / 2, scale=int(crop_size) / side, size=int(crop_size))


def crop(image: np.ndarray, tf: CropTransform) -> np.ndarray:
    """Resample the crop region of ``image`` (uint8 HxWx3) to ``tf.size`` x ``tf.size``."""
    import cv2

    return cv2.warpAffine(image, tf.matrix(), (tf.size, tf.size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(PAD_VALUE,) * 3)


def paint_keypoints(crop_img: np.ndarray, keypoints_crop, kp_thr: float = 0.3, radius: float = 2.0) -> np.ndarray:
    """Draw each keypoint with score > ``kp_thr`` as a filled dot of its fixed colour (copy returned).

    ``keypoints_crop``: (17, 3) ``x, y, score`` in crop coordinates.
    """
    import cv2

    out = crop_img.copy()
    kp = np.asarray(keypoints_crop, dtype=np.float64).reshape(NUM_KEYPOINTS, 3)
    shift = 4  # sub-pixel centres
    r = max(1, int(round(radius * (1 << shift))))
    for k, (x, y, s) in enumerate(kp):
        if not (s > kp_thr) or not np.isfinite(x) or not np.isfinite(y):
            continue
        # continuous coordinate -> pixel-index coordinate
        c = (int(round((x - 0.5) * (1 << shift))), int(round((y - 0.5) * (1 << shift))))
        cv2.circle(out, c, r, KEYPOINT_COLORS[k], thickness=-1, lineType=cv2.LINE_8, shift=shift)
    return out


def person_crop(image: np.ndarray, box, keypoints=None, *, crop_size: int = 96, margin: float = 0.1,
                paint: bool = True, kp_thr: float = 0.3, radius: float = 2.0) -> tuple[np.ndarray, CropTransform]:
    """The (optionally keypoint-painted) crop of one person: returns ``(crop, transform)``.

    ``box`` and ``keypoints`` ((17, 3) or flat 51: x, y, score) are in ``image`` pixels.
    """
    tf = crop_transform(box, crop_size, margin)
    out = crop(image, tf)
    if paint and keypoints is not None:
        kp = np.asarray(keypoints, dtype=np.float64).reshape(NUM_KEYPOINTS, 3).copy()
        kp[:, :2] = tf.points_to_crop(kp[:, :2])
        out = paint_keypoints(out, kp, kp_thr, radius)
    return out, tf


@dataclass(frozen=True)
class PaintConfig:
    """How person crops are made and painted (params section ``parts``, :meth:`from_params`; no defaults here)."""

    paint: bool
    crop_size: int
    margin: float
    kp_thr: float
    radius: float

    @classmethod
    def from_params(cls, params: dict, section: str = "parts") -> "PaintConfig":
        from .params import get

        return cls(
            paint=get(params, f"{section}.paint", bool),
            crop_size=get(params, f"{section}.crop_size", int, min_value=16),
            margin=get(params, f"{section}.crop_margin", float, min_value=0.0, max_value=2.0),
            kp_thr=get(params, f"{section}.kp_thr", float),
            radius=get(params, f"{section}.dot_radius", float, min_value=0.5),
        )

    def __call__(self, image: np.ndarray, box, keypoints=None) -> tuple[np.ndarray, CropTransform]:
        return person_crop(image, box, keypoints, crop_size=self.crop_size, margin=self.margin, paint=self.paint,
                           kp_thr=self.kp_thr, radius=self.radius)


def scaled_keypoints(keypoints, factor: float) -> np.ndarray:
    """(17, 3) keypoints with x, y multiplied by ``factor`` (scores kept)."""
    kp = np.asarray(keypoints, dtype=np.float64).reshape(NUM_KEYPOINTS, 3).copy()
    kp[:, :2] *= factor
    return kp
