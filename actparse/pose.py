"""Top-down pose estimation around :mod:`actparse.hrnet`: crops, inference, training, box refinement.

Crop (mmpose ``TopDownAffine``, non-UDP): a person box is grown about its centre to the input aspect
ratio (w:h = 3:4 by default) and by ``padding`` (1.25), then warped affinely to the network input
(128x96 (h x w) on CPU, 256x192 the GPU preset). The centre of the box maps to (W/2, H/2) and the
padded box width to W. Heatmap pixel i <-> input pixel 4*i; :func:`back_project` inverts the same
affine matrix, so crop -> back-projection is exact.

Box refinement from the keypoints (seed 001, sec. 1.2) is :func:`actparse.boxes.refine_box`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from .constants import FLIP_PAIRS, NUM_KEYPOINTS

if TYPE_CHECKING:  # torch is imported lazily so that box refinement and crops load fast
    import torch

    from .hrnet import PoseHRNet

log = logging.getLogger("actparse.pose")

CPU_INPUT_SIZE = (128, 96)   # (h, w)
GPU_INPUT_SIZE = (256, 192)
PADDING = 1.25
# COCO keypoint OKS sigmas (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles).
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10.0


def input_size_param(params: dict) -> tuple[int, int]:
    """params ``keypoints.input_size`` [h, w], checked."""
    from .params import ParamError, get

    size = get(params, "keypoints.input_size", list)
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 32 and v % 32 == 0
                                 for v in size):
        raise ParamError.of(params, f"parameter 'keypoints.input_size' must be [h, w], "
                         f"two positive multiples of 32 (HRNet's coarsest branch is 1/32), got {size!r}")
    return int(size[0]), int(size[1])


# ------------------------------------------------------------------------------------ geometry

def box_to_center_size(boxes, aspect: float, padding: float = PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4) -> centres (N, 2) and region sizes (N, 2) = (w, h) with w/h == ``aspect``, padded."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    c = (b[:, :2] + b[:, 2:]) / 2
    w = np.maximum(b[:, 2] - b[:, 0], 1e-3)
    h = np.maximum(b[:, 3] - b[:, 1], 1e-3)
    w2 = np.where(w > aspect * h, w, h * aspect)
    h2 = np.where(w > aspect * h, w / aspect, h)
    return c, np.stack([w2, h2], 1) * padding


def affine_matrices(centers, sizes, input_size: tuple[int, int], rotation=None, flip=None) -> np.ndarray:
    """(N, 2, 3) matrices mapping image pixels -> crop pixels.

    The region of ``sizes`` (w, h) about ``centers`` maps onto the (h, w) = ``input_size`` crop,
    rotated by ``rotation`` degrees (N,) about the centre and mirrored (``flip`` (N,) bool:
    x -> W - 1 - x, the same as flipping the crop array).
    """
    c = np.asarray(centers, np.float64).reshape(-1, 2)
    s = np.asarray(sizes, np.float64).reshape(-1, 2)
    n = len(c)
    out_h, out_w = input_size
    theta = np.deg2rad(np.zeros(n) if rotation is None else np.asarray(rotation, np.float64).reshape(n))
    cos, sin = np.cos(theta), np.sin(theta)
    kx, ky = out_w / s[:, 0], out_h / s[:, 1]
    a = np.empty((n, 2, 2))
    a[:, 0, 0], a[:, 0, 1] = kx * cos, -kx * sin
    a[:, 1, 0], a[:, 1, 1] = ky * sin, ky * cos
    t = np.array([out_w / 2, out_h / 2]) - np.einsum("nij,nj->ni", a, c)
    m = np.concatenate([a, t[:, :, None]], 2)
    if flip is not None:
        f = np.asarray(flip, bool).reshape(n)
        m[f, 0, :] *= -1
        m[f, 0, 2] += out_w - 1
    return m


def apply_affine(points, mats) -> np.ndarray:
    """Points (N, K, 2) transformed by matrices (N, 2, 3)."""
    p = np.asarray(points, np.float64)
    m = np.asarray(mats, np.float64)
    return np.einsum("nij,nkj->nki", m[:, :, :2], p) + m[:, None, :, 2]


def invert_affine(mats) -> np.ndarray:
    m = np.asarray(mats, np.float64)
    inv_a = np.linalg.inv(m[:, :, :2])
    t = -np.einsum("nij,nj->ni", inv_a, m[:, :, 2])
    return np.concatenate([inv_a, t[:, :, None]], 2)


def back_project(points, mats, stride: float = 1.0) -> np.ndarray:
    """Crop points (N, K, 2) (in units of ``stride`` crop pixels, e.g. 4 for heatmaps) -> image pixels."""
    return apply_affine(np.asarray(points, np.float64) * stride, invert_affine(mats))


def warp_crops(image: np.ndarray, mats, input_size: tuple[int, int]) -> np.ndarray:
    """Crops (N, h, w, 3) uint8 of ``image`` for each matrix (bilinear, black outside the image)."""
    import cv2

    out_h, out_w = input_size
    mats = np.asarray(mats, np.float64)
    crops = np.zeros((len(mats), out_h, out_w, 3), np.uint8)
    for i, m in enumerate(mats):
        crops[i] = cv2.warpAffine(image, m, (out_w, out_h), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return crops


def crop_people(image: np.ndarray, boxes, input_size: tuple[int, int] = CPU_INPUT_SIZE,
                padding: float = PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Top-down crops of every box of one image: (crops (N, h, w, 3), matrices (N, 2, 3))."""
    aspect = input_size[1] / input_size[0]
    c, s = box_to_center_size(boxes, aspect, padding)
    mats = affine_matrices(c, s, input_size)
    return warp_crops(image, mats, input_size), mats


# ---------------------------------------------------------------------------------- inference

class PoseEstimator:
    """Batched top-down inference with optional flip test; returns keypoints in image pixels."""

    def __init__(self, model: "PoseHRNet", input_size: tuple[int, int] = CPU_INPUT_SIZE, device: str = "cpu",
                 flip_test: bool = True, batch_size: int = 64, padding: float = PADDING, fuse: bool = True):
        import copy

        import torch

        from .hrnet import fuse_conv_bn

        # a copy with BatchNorm folded into the convolutions, channels-last: ~2x faster on CPU
        model = fuse_conv_bn(copy.deepcopy(model)) if fuse else model
        self.model = model.to(device).to(memory_format=torch.channels_last).eval()
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.device = device
        self.flip_test = flip_test
        self.batch_size = max(1, int(batch_size))
        self.padding = padding

    @staticmethod
    def model_input(crops: np.ndarray) -> "torch.Tensor":
        """uint8 crops (N, h, w, 3) -> the normalised float input (N, 3, h, w), in the channels-last
        memory the model runs in (the values of :func:`actparse.hrnet.normalize_images`, without its
        copy to channels-first and back)."""
        import torch

        from .hrnet import MEAN, STD

        return torch.from_numpy((np.asarray(crops, np.float32) - MEAN) / STD).permute(0, 3, 1, 2)

    def heatmaps(self, crops) -> "torch.Tensor":
        """uint8 crops (N, h, w, 3), or their :meth:`model_input`, -> heatmaps (N, K, h/4, w/4) on CPU
        (flip-averaged if flip_test)."""
        import torch

        from .hrnet import HEATMAP_STRIDE, flip_back

        inputs = crops if isinstance(crops, torch.Tensor) else self.model_input(crops)
        outs = []
        with torch.inference_mode():
            for i in range(0, len(inputs), self.batch_size):
                x = inputs[i:i + self.batch_size].to(self.device).contiguous(memory_format=torch.channels_last)
                hm = self.model(x)
                if self.flip_test:
                    hm = (hm + flip_back(self.model(x.flip(-1)))) * 0.5
                outs.append(hm.float().cpu())
        if not outs:
            k = self.model.num_keypoints
            return torch.zeros((0, k, self.input_size[0] // HEATMAP_STRIDE, self.input_size[1] // HEATMAP_STRIDE))
        return torch.cat(outs)

    def predict_crops(self, crops: np.ndarray, mats: np.ndarray) -> np.ndarray:
        """Keypoints (N, K, 3): x, y in image pixels, score = heatmap maximum."""
        from .hrnet import decode_heatmaps

        hm = self.heatmaps(crops)
        stride_x = self.input_size[1] / hm.shape[-1]
        coords, maxvals = decode_heatmaps(hm)
        xy = back_project(coords, mats, stride=stride_x) if len(coords) else np.zeros((0, hm.shape[1], 2))
        return np.concatenate([xy, maxvals[..., None]], -1).astype(np.float32)

    def predict(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per image, keypoints (N_i, K, 3) for its boxes (N_i, 4) (boxes in that image's pixels)."""
        return self.predict_cropped(self.crop(images, boxes))

    def crop(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> tuple:
        """The model's input of :meth:`predict` (no model needed: the keypoints stage makes it on its
        prefetch thread): ``(normalised crops (N, 3, h, w) or None, affine matrices, boxes per image)``."""
        crops, mats, counts = [], [], []
        for img, bx in zip(images, boxes):
            bx = np.asarray(bx, np.float64).reshape(-1, 4)
            counts.append(len(bx))
            if len(bx):
                c, m = crop_people(img, bx, self.input_size, self.padding)
                crops.append(c)
                mats.append(m)
        if not crops:
            return None, None, counts
        return self.model_input(np.concatenate(crops)), np.concatenate(mats), counts

    def predict_cropped(self, cropped: tuple) -> list[np.ndarray]:
        """:meth:`predict` from the output of :meth:`crop`."""
        crops, mats, counts = cropped
        if crops is None:
            return [np.zeros((0, self.model.num_keypoints, 3), np.float32) for _ in counts]
        kps = self.predict_crops(crops, mats)
        return list(np.split(kps, np.cumsum(counts)[:-1]))


# ------------------------------------------------------------------------------------ metrics

def pose_metrics(pred, gt, boxes, thr: float = 0.2) -> dict:
    """PCK@thr (normalised by the GT box's longer side), mean error and OKS over visible GT keypoints.

    pred: (N, K, >=2); gt: (N, K, 3) with visibility in [..., 2]; boxes: (N, 4) GT boxes.
    """
    pred = np.asarray(pred, np.float64).reshape(len(gt), -1, np.shape(pred)[-1])
    gt = np.asarray(gt, np.float64)
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    vis = gt[..., 2] > 0
    if not vis.any():
        return {"pck": float("nan"), "mean_error_px": float("nan"), "mean_norm_error": float("nan"),
                "oks": float("nan"), "n_keypoints": 0, "n_persons": int(len(gt))}
    d = np.linalg.norm(pred[..., :2] - gt[..., :2], axis=-1)
    size = np.maximum(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), 1e-6)[:, None]
    norm = d / size
    area = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-6)[:, None]
    k = gt.shape[1]
    sig = COCO_SIGMAS[:k] if k == len(COCO_SIGMAS) else np.full(k, 0.08)
    e = d ** 2 / (2 * area * (2 * sig[None]) ** 2)
    per_person = np.where(vis, np.exp(-e), 0).sum(1) / np.maximum(vis.sum(1), 1)
    has = vis.any(1)
    return {"pck": float((norm[vis] < thr).mean()), "mean_error_px": float(d[vis].mean()),
            "mean_norm_error": float(norm[vis].mean()), "oks": float(per_person[has].mean()),
            "n_keypoints": int(vis.sum()), "n_persons": int(len(gt))}


# ----------------------------------------------------------------------------------- training

@dataclass
class PoseSamples:
    """Training/eval persons: an image index, a box and GT keypoints, all in stored-image pixels."""

    images: list            # uint8 RGB arrays
    image_index: np.ndarray  # (N,) int
    boxes: np.ndarray        # (N, 4)
    keypoints: np.ndarray    # (N, K, 3) x, y, visible

    def __len__(self) -> int:
        return len(self.image_index)

    def subset(self, idx) -> "PoseSamples":
        idx = np.asarray(idx, np.int64)
        return PoseSamples(self.images, self.image_index[idx], self.boxes[idx], self.keypoints[idx])


@dataclass
class AugmentConfig:
    """Training augmentation: params ``keypoints.aug_*`` (stages.train_pose); ``rot_prob`` is fixed."""

    scale: float  # scale factor std (clipped to +-scale)
    rotation: float  # degrees std (clipped to +-2x), applied with probability rot_prob
    shift: float  # centre shift, fraction of the box size (uniform)
    flip: bool
    rot_prob: float = 0.6  # a constant of the recipe, not a parameter


def make_batch(samples: PoseSamples, idx, input_size: tuple[int, int], sigma: float = 2.0,
               aug: AugmentConfig | None = None, rng: np.random.Generator | None = None,
               flip_pairs=FLIP_PAIRS, padding: float = PADDING):
    """Crops + targets for samples ``idx``: (images tensor, heatmaps tensor, weights tensor)."""
    import torch

    from .hrnet import HEATMAP_STRIDE, encode_heatmaps, normalize_images

    idx = np.asarray(idx, np.int64)
    n = len(idx)
    aspect = input_size[1] / input_size[0]
    c, s = box_to_center_size(samples.boxes[idx], aspect, padding)
    rot = np.zeros(n)
    flip = np.zeros(n, bool)
    if aug is not None:
        rng = rng or np.random.default_rng()
        sf = np.clip(rng.standard_normal(n) * aug.scale + 1, 1 - aug.scale, 1 + aug.scale)
        s = s * sf[:, None]
        rot = np.where(rng.random(n) < aug.rot_prob,
                       np.clip(rng.standard_normal(n) * aug.rotation, -2 * aug.rotation, 2 * aug.rotation), 0.0)
        c = c + (rng.random((n, 2)) * 2 - 1) * aug.shift * s / padding
        if aug.flip:
            flip = rng.random(n) < 0.5
    mats = affine_matrices(c, s, input_size, rot, flip)
    crops = np.zeros((n, input_size[0], input_size[1], 3), np.uint8)
    order = samples.image_index[idx]
    for img_i in np.unique(order):
        sel = np.nonzero(order == img_i)[0]
        crops[sel] = warp_crops(samples.images[img_i], mats[sel], input_size)
    kp = samples.keypoints[idx].copy()
    xy = apply_affine(kp[..., :2], mats)
    vis = (kp[..., 2] > 0).astype(np.float32)
    if flip.any():
        perm = np.arange(kp.shape[1])
        for a, b in flip_pairs:
            if a < len(perm) and b < len(perm):
                perm[a], perm[b] = b, a
        xy[flip] = xy[flip][:, perm]
        vis[flip] = vis[flip][:, perm]
    hm_size = (input_size[0] // HEATMAP_STRIDE, input_size[1] // HEATMAP_STRIDE)
    stride = input_size[1] / hm_size[1]
    inside = (xy[..., 0] >= 0) & (xy[..., 0] <= input_size[1] - 1) & (xy[..., 1] >= 0) & (xy[..., 1] <= input_size[0] - 1)
    target, weight = encode_heatmaps(xy / stride, vis * inside, hm_size, sigma)
    return normalize_images(crops), torch.from_numpy(target), torch.from_numpy(weight)


def evaluate_samples(estimator: PoseEstimator, samples: PoseSamples, thr: float = 0.2) -> dict:
    """Pose metrics of ``estimator`` on ``samples`` with their (GT) boxes."""
    if len(samples) == 0:
        return pose_metrics(np.zeros((0, NUM_KEYPOINTS, 3)), np.zeros((0, NUM_KEYPOINTS, 3)), np.zeros((0, 4)), thr)
    aspect = estimator.input_size[1] / estimator.input_size[0]
    c, s = box_to_center_size(samples.boxes, aspect, estimator.padding)
    mats = affine_matrices(c, s, estimator.input_size)
    crops = np.zeros((len(samples), *estimator.input_size, 3), np.uint8)
    for img_i in np.unique(samples.image_index):
        sel = np.nonzero(samples.image_index == img_i)[0]
        crops[sel] = warp_crops(samples.images[img_i], mats[sel], estimator.input_size)
    pred = estimator.predict_crops(crops, mats)
    return pose_metrics(pred, samples.keypoints, samples.boxes, thr)


def train_step(model: "PoseHRNet", optimizer: "torch.optim.Optimizer", images: "torch.Tensor",
               targets: "torch.Tensor", weights: "torch.Tensor") -> float:
    """One optimisation step on a batch; returns the loss before the step (forward in bf16 on CUDA)."""
    from .hrnet import heatmap_loss

    import torch

    model.train()
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=images.is_cuda):  # bf16 on CUDA only
        heatmaps = model(images)
    loss = heatmap_loss(heatmaps.float(), targets, weights)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def train(model: "PoseHRNet", samples: PoseSamples, epochs: int, input_size: tuple[int, int], *,
          batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 0.0, sigma: float = 2.0,
          aug: AugmentConfig | None = None, seed: int = 0, device: str = "cpu",
          progress: bool | None = None, validate: Callable[[], float] | None = None) -> list[float]:
    """Adam + cosine decay (linear warm-up over the first 5% of steps); returns the mean loss per epoch.

    ``validate`` (e.g. PCK@0.2 on held-out videos) is called after every epoch, with the model in eval
    mode and the random states put back afterwards (:func:`actparse.train.monitoring`), so it only
    watches: the weights are those of a training without it. Its value goes into the progress line."""
    import torch
    from tqdm import tqdm

    from .train import monitoring

    if epochs <= 0 or len(samples) == 0:
        return []
    rng = np.random.default_rng(seed)
    model.to(device).to(memory_format=torch.channels_last)  # ~30% faster convolutions on CPU
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, math.ceil(len(samples) / batch_size))
    total = epochs * steps_per_epoch
    warm = max(1, int(0.05 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: min(1.0, (i + 1) / warm) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(i, total) / total))))
    history = []
    bar = tqdm(total=total, desc="train_pose", unit="step", disable=None if progress is None else not progress)
    t0 = time.time()
    for ep in range(epochs):
        order = rng.permutation(len(samples))
        losses = []
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            if len(idx) < 2:  # BatchNorm needs > 1 sample
                continue
            x, y, w = make_batch(samples, idx, input_size, sigma, aug, rng)
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            losses.append(train_step(model, optimizer, x, y.to(device), w.to(device)))
            sched.step()
            bar.update(1)
        history.append(float(np.mean(losses)) if losses else float("nan"))
        val = ""
        if validate is not None:
            with monitoring(model):
                model.eval()
                val = f" val_pck={validate():.4f}"
        log.info("progress: %d/%d epochs loss=%.6f%s (%.0fs)", ep + 1, epochs, history[-1], val, time.time() - t0)
    bar.close()
    model.eval()
    return history


# --------------------------------------------------------------------------------- data loading

def load_pose_samples(frames_path, gt_path, videos: Iterable[str], min_box: float = 4.0,
                      progress: bool | None = None) -> tuple[PoseSamples, dict]:
    """Frames of ``videos`` (frames.parquet JPEGs) with their GT persons (gt_persons.parquet).

    Boxes and keypoints are scaled to the stored frame size (``scale`` column). Persons whose box is
    smaller than ``min_box`` pixels, whose keypoints are null (not annotated) or who have no visible
    keypoint are left out. Returns
    (samples, stats) where stats counts frames and persons.
    """
    from tqdm import tqdm

    from .schemas import iter_row_groups, read_df
    from .video import decode_jpeg

    wanted = set(videos)
    gt = read_df(gt_path, "gt_persons", columns=["video", "frame", "person", "box", "keypoints"])
    gt = gt[gt["video"].isin(wanted) & gt["keypoints"].notna()]  # null keypoints: none annotated
    gt = gt.reset_index(drop=True)
    by_frame: dict[tuple[str, int], list[int]] = {}
    for i, (v, f) in enumerate(zip(gt["video"].to_numpy(), gt["frame"].to_numpy())):
        by_frame.setdefault((v, int(f)), []).append(i)
    gt_boxes = np.stack(gt["box"].to_numpy()) if len(gt) else np.zeros((0, 4))
    gt_kps = np.stack(gt["keypoints"].to_numpy()).reshape(len(gt), -1, 3) if len(gt) else np.zeros((0, NUM_KEYPOINTS, 3))
    images, image_index, boxes, kps = [], [], [], []
    stats = {"frames": 0, "persons": 0, "dropped_persons": 0}
    for table in tqdm(iter_row_groups(frames_path, "frames"), desc="load frames", unit="video", disable=None
                      if progress is None else not progress):
        vids = table.column("video").to_pylist()
        if not wanted.intersection(vids):
            continue
        frames = table.column("frame").to_pylist()
        scales = table.column("scale").to_pylist()
        jpegs = table.column("jpeg")
        for j, (v, f, s) in enumerate(zip(vids, frames, scales)):
            rows = by_frame.get((v, int(f)))
            if v not in wanted or not rows:
                continue
            b = gt_boxes[rows] * s
            k = gt_kps[rows].copy()
            k[..., :2] *= s
            ok = ((b[:, 2] - b[:, 0]) >= min_box) & ((b[:, 3] - b[:, 1]) >= min_box) & (k[..., 2] > 0).any(1)
            stats["dropped_persons"] += int((~ok).sum())
            if not ok.any():
                continue
            images.append(decode_jpeg(jpegs[j].as_py()))
            image_index.extend([len(images) - 1] * int(ok.sum()))
            boxes.append(b[ok])
            kps.append(k[ok])
            stats["frames"] += 1
    stats["persons"] = len(image_index)
    if not images:
        return PoseSamples([], np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros((0, NUM_KEYPOINTS, 3))), stats
    return PoseSamples(images, np.asarray(image_index, np.int64), np.concatenate(boxes),
                       np.concatenate(kps)), stats
