"""Data plumbing shared by the person / part detector stages (no ultralytics here; the detection AP
of the evaluation is :mod:`actparse.metrics.detection`).

Frames come from ``frames.parquet`` (stored JPEGs, possibly resized by ``scale`` = stored /
original); every box and keypoint in the artifacts is in ORIGINAL video pixels, so these helpers
convert at the boundary. Also a small VOC-style AP@IoU used by tests and quick evaluations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .constants import NUM_KEYPOINTS
from .boxes import iou_matrix
from .schemas import iter_row_groups, read_table
from .video import decode_jpeg


def frames_by_video(frames_path: str | Path, videos: Iterable[str] | None = None,
                    row_groups: Iterable[int] | None = None) -> Iterator[tuple[str, pa.Table]]:
    """Stream ``frames.parquet`` video by video: yields ``(video, table)``; ``videos`` filters;
    ``row_groups``: read only these row groups (those holding ``videos``)."""
    keep = None if videos is None else set(videos)
    pending: dict[str, list[pa.Table]] = {}
    order: list[str] = []
    done: set[str] = set()
    for rg in iter_row_groups(frames_path, "frames", row_groups):
        names = rg.column("video").to_pylist()
        for v in dict.fromkeys(names):
            if keep is not None and v not in keep:
                continue
            part = rg.filter(pc.equal(rg.column("video"), v))
            if v in done:
                raise ValueError(f"{frames_path}: rows of video {v!r} are not contiguous")
            if v not in pending:
                pending[v] = []
                order.append(v)
            pending[v].append(part)
        # decode writes one row group per video: flush every video seen before the last one
        while len(order) > 1:
            v = order.pop(0)
            done.add(v)
            yield v, pa.concat_tables(pending.pop(v))
    for v in order:
        yield v, pa.concat_tables(pending.pop(v))


def decode_frames(table: pa.Table) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """JPEGs of a frames table -> (RGB images, frame ids, scales, original (w, h) per frame).

    Raises ValueError naming the video and frame of a corrupt JPEG.
    """
    d = table.to_pydict()
    images = []
    for v, f, jpg in zip(d["video"], d["frame"], d["jpeg"]):
        try:
            images.append(decode_jpeg(jpg))
        except ValueError:
            raise ValueError(f"frames.parquet: corrupt JPEG for video {v!r} frame {f}") from None
    scale = np.asarray(d["scale"], dtype=np.float64)
    if np.any(~(scale > 0)):
        raise ValueError(f"frames.parquet: non-positive scale for video {d['video'][0]!r}")
    orig_wh = np.stack([np.asarray(d["width"]) / scale, np.asarray(d["height"]) / scale], axis=1)
    return images, np.asarray(d["frame"], dtype=np.int64), scale, orig_wh


def gt_index(gt_path: str | Path, videos: Iterable[str], columns=("box",)) -> dict[tuple[str, int], dict]:
    """GT rows of ``videos`` grouped by (video, frame): {key: {"person": ints, col: stacked arrays}}."""
    vids = sorted(set(videos))
    if not vids:
        return {}
    cols = ["video", "frame", "person", *columns]
    t = read_table(gt_path, "gt_persons", filters=[("video", "in", vids)]).select(cols)
    df = t.to_pandas()
    out: dict[tuple[str, int], dict] = {}
    for (v, f), g in df.groupby(["video", "frame"], sort=False):
        rec = {"person": g["person"].to_numpy()}
        for c in columns:
            rec[c] = np.stack(g[c].to_numpy())
        out[(str(v), int(f))] = rec
    return out


def voc_ap(preds: dict, gts: dict, iou_thr: float = 0.5) -> float:
    """VOC all-point AP for one class.

    ``preds``: {image_key: (boxes (n,4), scores (n,))}; ``gts``: {image_key: boxes (m,4)}.
    Greedy matching by descending score; each GT matches at most once. NaN when there is no GT.
    """
    n_gt = sum(len(np.asarray(b).reshape(-1, 4)) for b in gts.values())
    if n_gt == 0:
        return float("nan")
    recs = []
    for key, (boxes, scores) in preds.items():
        for b, s in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(scores).reshape(-1)):
            recs.append((float(s), key, b))
    recs.sort(key=lambda r: -r[0])
    used = {k: np.zeros(len(np.asarray(b).reshape(-1, 4)), bool) for k, b in gts.items()}
    tp = np.zeros(len(recs))
    for i, (_, key, b) in enumerate(recs):
        g = np.asarray(gts.get(key, np.zeros((0, 4)))).reshape(-1, 4)
        if len(g) == 0:
            continue
        ious = iou_matrix(b[None], g)[0]
        ious[used[key]] = -1
        j = int(np.argmax(ious))
        if ious[j] >= iou_thr:
            tp[i] = 1
            used[key][j] = True
    ctp = np.cumsum(tp)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, len(recs) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def refined_by_video(refined_path: str | Path, videos: Iterable[str] | None = None) -> dict:
    """refined_persons.parquet (schema "keypoints") as {video: DataFrame(frame, person, box, keypoints)}."""
    filters = None if videos is None else [("video", "in", sorted(set(videos)))]
    if videos is not None and not filters[0][2]:
        return {}
    t = read_table(refined_path, "keypoints", filters=filters).select(["video", "frame", "person", "box", "keypoints"])
    df = t.to_pandas()
    return {str(v): g.reset_index(drop=True) for v, g in df.groupby("video", sort=False)}


def gt_persons_by_video(gt_path: str | Path, videos: Iterable[str]) -> dict:
    """GT persons of ``videos`` in the refined-persons layout: {video: DataFrame(frame, person, box, keypoints)}.

    The keypoint score is the GT visibility flag (0 or 1), so painting draws exactly the visible
    GT keypoints. Used by ``parts.train_persons: gt``.
    """
    vids = sorted(set(videos))
    if not vids:
        return {}
    t = read_table(gt_path, "gt_persons", filters=[("video", "in", vids)]).select(
        ["video", "frame", "person", "box", "keypoints"])
    df = t.to_pandas()
    df["keypoints"] = [_visibility_as_score(k) for k in df["keypoints"]]
    return {str(v): g.drop(columns="video").reset_index(drop=True) for v, g in df.groupby("video", sort=False)}


def with_predicted_keypoints(gt_persons: dict, refined: dict, thr: float = 0.5) -> dict:
    """GT persons (:func:`gt_persons_by_video`) whose keypoints are taken from the refined person that
    matches each GT box (IoU >= ``thr``, one to one per frame); all-zero (nothing painted) where none does.
    For GT without keypoint annotations (Kinetics-TPS)."""
    out = {}
    for video, df in gt_persons.items():
        df = df.copy()
        kps = [np.zeros(NUM_KEYPOINTS * 3, np.float32) for _ in range(len(df))]
        pred = refined.get(video)
        if pred is not None and len(pred):
            for f, rows in df.groupby("frame").indices.items():
                cand = pred[pred["frame"] == f]
                if not len(cand):
                    continue
                pairs = match_greedy(np.stack(df["box"].to_numpy()[rows]), np.stack(cand["box"].to_numpy()), thr)
                for i, j in pairs:
                    kps[rows[i]] = np.asarray(cand["keypoints"].iloc[j], np.float32)
        df["keypoints"] = kps
        out[video] = df
    return out


def _visibility_as_score(keypoints) -> np.ndarray:
    if keypoints is None:  # no keypoint ground truth (Kinetics-TPS, MultiSports): nothing to paint
        return np.zeros(NUM_KEYPOINTS * 3, np.float32)
    kp = np.asarray(keypoints, np.float32).copy()
    kp[2::3] = np.minimum(kp[2::3], 1.0)  # COCO-style 2 = visible -> score 1
    return kp


def person_crops(images: list, frames: np.ndarray, scales: np.ndarray, persons, make_crop) -> list[dict]:
    """Crops of every person row of one video whose frame is among ``frames``.

    ``persons``: DataFrame with frame, person, box, keypoints (ORIGINAL pixels). ``make_crop`` is a
    :class:`actparse.paint.PaintConfig`. Each result has frame, person, box (original pixels),
    crop (RGB), tf (stored-image pixels <-> crop) and scale (stored / original).
    """
    from .paint import scaled_keypoints

    where = {int(f): i for i, f in enumerate(frames)}
    out = []
    for f, p, box, kp in zip(persons["frame"], persons["person"], persons["box"], persons["keypoints"]):
        i = where.get(int(f))
        if i is None:
            continue
        s = float(scales[i])
        b = np.asarray(box, dtype=np.float64)
        crop, tf = make_crop(images[i], b * s, scaled_keypoints(kp, s))
        out.append({"frame": int(f), "person": int(p), "box": b, "crop": crop, "tf": tf, "scale": s})
    return out


def match_greedy(a, b, thr: float = 0.5) -> list[tuple[int, int]]:
    """One-to-one matches (i, j) between boxes ``a`` and ``b`` with IoU >= thr, highest IoU first."""
    iou = iou_matrix(a, b)
    pairs = []
    if iou.size == 0:
        return pairs
    used_a, used_b = set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] < thr:
            break
        if i in used_a or j in used_b:
            continue
        used_a.add(int(i))
        used_b.add(int(j))
        pairs.append((int(i), int(j)))
    return pairs
