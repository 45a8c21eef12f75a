"""Import MultiSports as downloaded: ``trainval/multisports_GT.pkl`` and ``trainval/<sport>/<video>.mp4``.

Source layout (``SRC``)::

    trainval/multisports_GT.pkl      (also found as SRC/multisports_GT.pkl or SRC/annotations/multisports_GT.pkl)
    trainval/<sport>/<video>.mp4     the GT's video keys are "<sport>/<video>"; keys without a folder work too
    test/<sport>/<video>.mp4         the unlabelled challenge test videos: not imported (no ground truth)

The GT pkl holds ``labels`` (names keep their spaces: "aerobic kick jump"), ``train_videos`` and
``test_videos`` (lists of lists: one list per split; ``test_videos`` is in fact the *validation* split
and becomes our ``test``, the scored split), ``nframes``, ``resolution`` {video: (h, w)} and ``gttubes``
{video: {label index: [float32 (n, 5): frame (1-based), x1, y1, x2, y2]}}. It is read with the
project's pickle loader (:func:`actparse.formats.read_pickle`) and copied unchanged to
``annotations/multisports_gt.pkl``.

Rows of ``gt_persons``: one per tube frame, ``frame`` = tube frame - 1, ``person`` = the tube's index in
its video (MultiSports has no identities across tubes), ``action`` = the label name; no keypoints and
no parts (those columns are null). ``videos.action`` = the label with the most tube frames in the video
(null for a video without tubes).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .common import ImportResult, OfficialFormatError, VideoPlacer, as_int, copy_file, need, probe

GT_NAMES = ("trainval/multisports_GT.pkl", "multisports_GT.pkl", "annotations/multisports_GT.pkl")


def find_gt(src: Path) -> Path:
    for name in GT_NAMES:
        if (src / name).is_file():
            return src / name
    raise FileNotFoundError(f"{src}: no MultiSports ground truth ({' or '.join(GT_NAMES)})")


def _video_list(value, path: Path, key: str) -> list[str]:
    """``train_videos`` / ``test_videos``: a list of lists of names (a flat list is accepted)."""
    if not isinstance(value, (list, tuple)):
        raise OfficialFormatError(path, key, f"expected a list of lists of video names, got {type(value).__name__}")
    names = []
    for i, sub in enumerate(value):
        if isinstance(sub, str):
            names.append(sub)
            continue
        if not isinstance(sub, (list, tuple)) or not all(isinstance(v, str) for v in sub):
            raise OfficialFormatError(path, f"{key}[{i}]", "expected a list of video names")
        names.extend(sub)
    return names


def check_gt(gt, path: Path) -> dict:
    """Validate the GT pkl's structure (every field the importer reads); return it."""
    if not isinstance(gt, dict):
        raise OfficialFormatError(path, "(top level)", f"expected a dict, got {type(gt).__name__}")
    labels = need(gt, "labels", path, "")
    if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
        raise OfficialFormatError(path, "labels", "expected a list of label names")
    for key in ("nframes", "resolution", "gttubes"):
        if not isinstance(need(gt, key, path, ""), dict):
            raise OfficialFormatError(path, key, f"expected a dict, got {type(gt[key]).__name__}")
    _video_list(need(gt, "train_videos", path, ""), path, "train_videos")
    _video_list(need(gt, "test_videos", path, ""), path, "test_videos")
    for v, tubes in gt["gttubes"].items():
        if not isinstance(tubes, dict):
            raise OfficialFormatError(path, f"gttubes[{v!r}]", "expected a dict {label index: [tubes]}")
        for lab, lst in tubes.items():
            where = f"gttubes[{v!r}][{lab!r}]"
            li = as_int(lab, path, where)
            if not 0 <= li < len(labels):
                raise OfficialFormatError(path, where, f"label index {li} outside 0..{len(labels) - 1}")
            if not isinstance(lst, (list, tuple)):
                raise OfficialFormatError(path, where, "expected a list of tubes")
            for i, t in enumerate(lst):
                a = np.asarray(t) if isinstance(t, np.ndarray) else None
                if a is None or a.ndim != 2 or a.shape[1] < 5 or not np.issubdtype(a.dtype, np.number):
                    raise OfficialFormatError(path, f"{where}[{i}]", "expected a numeric array of shape (n, 5)")
                if not np.isfinite(a[:, :5]).all():
                    raise OfficialFormatError(path, f"{where}[{i}]", "non-finite values")
                fr = a[:, 0]
                if (fr < 1).any() or (fr != np.round(fr)).any() or len(np.unique(fr)) != len(fr):
                    raise OfficialFormatError(path, f"{where}[{i}]", "frames must be distinct integers >= 1")
    return gt


def _resolution(gt, v, path) -> tuple[int | None, int | None]:
    r = gt["resolution"].get(v)
    if r is None:
        return None, None
    if not isinstance(r, (list, tuple)) or len(r) != 2:
        raise OfficialFormatError(path, f"resolution[{v!r}]", f"expected (height, width), got {r!r}")
    return as_int(r[0], path, f"resolution[{v!r}]"), as_int(r[1], path, f"resolution[{v!r}]")


def find_video(src: Path, key: str) -> Path | None:
    for base in (src / "trainval", src):
        for suf in (".mp4", ".avi", ".mkv", ".webm"):
            p = base / f"{key}{suf}"
            if p.is_file():
                return p
    return None


def import_multisports(src: Path, out: Path, placer: VideoPlacer) -> ImportResult:
    from ..formats import read_pickle
    from ..schemas import from_columns, schema

    src = Path(src)
    gt_path = find_gt(src)
    gt = check_gt(read_pickle(gt_path), gt_path)
    labels = list(gt["labels"])
    splits = {}
    for key, ours in (("train_videos", "train"), ("test_videos", "test")):
        for v in _video_list(gt[key], gt_path, key):
            if v in splits and splits[v] != ours:
                raise OfficialFormatError(gt_path, key, f"video {v!r} is in both train_videos and test_videos")
            splits[v] = ours
    res = ImportResult("multisports")
    cols = {k: [] for k in ("video", "frame", "person", "box", "keypoints", "part_boxes", "part_visible",
                            "part_states", "action")}
    for v in sorted(splits):
        f = find_video(src, v)
        if f is None:
            res.skips.append({"video": v, "stage": "import", "error": f"{src / 'trainval'}: video {v!r} listed in "
                                                                      f"{gt_path.name} but not found"})
            continue
        meta, err = probe(f)
        if meta is None:
            res.skips.append({"video": v, "stage": "import", "error": err})
            continue
        h, w = _resolution(gt, v, gt_path)
        if v in gt["nframes"]:
            meta["n_frames"] = as_int(gt["nframes"][v], gt_path, f"nframes[{v!r}]")
        if h and w:
            meta["height"], meta["width"] = h, w
        tubes = gt["gttubes"].get(v, {})
        count: Counter = Counter()
        person = 0
        for lab in sorted(tubes, key=int):
            name = labels[int(lab)]
            for t in tubes[lab]:
                a = np.asarray(t, np.float64)
                n = len(a)
                cols["video"] += [v] * n
                cols["frame"] += (a[:, 0].astype(np.int64) - 1).tolist()
                cols["person"] += [person] * n
                cols["box"] += list(np.asarray(t)[:, 1:5].astype(np.float32))
                cols["keypoints"] += [None] * n
                cols["part_boxes"] += [None] * n
                cols["part_visible"] += [None] * n
                cols["part_states"] += [None] * n
                cols["action"] += [name] * n
                count[name] += n
                person += 1
        action = max(count.items(), key=lambda kv: (kv[1], -labels.index(kv[0])))[0] if count else None
        rel = placer.place(f, str(f.relative_to(src)))
        res.videos.append({"video": v, "path": rel, "split": splits[v], "action": action, **meta})
    res.gt = from_columns(cols, "gt_persons") if cols["video"] else schema("gt_persons").empty_table()
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    copy_file(gt_path, out / "annotations" / "multisports_gt.pkl")
    res.info = {"labels": labels, "keypoints": False, "parts": False,
                "note": "test_videos of the GT (the validation split) imported as split 'test'"}
    return res
