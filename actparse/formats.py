"""Converters between the pipeline's Parquet artifacts and the official challenge file formats.

Read-only on their inputs; every converter has an inverse, and ``tests/test_formats.py`` checks
each round trip.

Kinetics-TPS (Andy1621/Kinetics-TPS-evaluation README):
  ``pred_part_result.json`` / ``gt_part_result.json``: {video: {"img_00001.json": {"humans": [
  {"number", "box": [x1, y1, x2, y2], "parts": {part: {"number", "box", "verb", "name"}}}]}}},
  frames every 5th (img_00001, img_00006, ...); ``*_vid_result.json``: {video: class}.
  Written so that the official script scores them as intended: a part's ``box`` is ONE box and its
  ``verb`` has the ground truth's type (a one-element list by default), because the official code
  wraps the prediction (see :mod:`actparse.metrics.tps`). Extra ``score`` keys (ignored by the
  official code) keep the round trip lossless.
MultiSports (MCG-NJU/MultiSports README):
  ground truth pkl: {"labels", "train_videos": [[...]], "test_videos": [[...]], "nframes",
  "resolution": {v: (h, w)}, "gttubes": {v: {label index: [float32 (n, 5): frame (1-based), x1, y1,
  x2, y2]}}}; ``frame_detections.pkl``: (N, 8) video index, frame (1-based), label index, score,
  x1, y1, x2, y2; ``video_detections.pkl``: {label index: [(video, score, (n, 6) frame, x1, y1,
  x2, y2, box score)]}.
Our side: frames are 0-based; labels are names.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from . import safe_pickle
from .constants import PARTS, TPS_SAMPLING, tps_frame_index, tps_frame_name
from .atomic import write_atomically
from .schemas import from_columns, schema

BACKGROUND_ACTIONS = ("none",)


def write_pickle(obj, path: str | os.PathLike) -> Path:
    """Atomically pickle ``obj`` to ``path`` (protocol 4, readable by the official Python 3 scripts)."""
    def dump(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            pickle.dump(obj, fh, protocol=4)

    return write_atomically(path, dump)  # disk full...: named by the final path; the previous file stays


def read_pickle(path: str | os.PathLike):
    """A MultiSports-format pickle, read with the allow-listed unpickler of :mod:`actparse.safe_pickle`
    (a file naming anything but containers, numbers, strings and numpy arrays is refused)."""
    return safe_pickle.load(path)


def _floats(box) -> list:
    return [float(x) for x in np.asarray(box, np.float64).tolist()]


def _df(obj) -> pd.DataFrame:
    if isinstance(obj, pa.Table):
        return obj.to_pandas()
    return obj


# ====================================================================================== TPS
def tps_part_result(persons, parts=None, frames: dict | None = None, stride: int = TPS_SAMPLING,
                    verb_as_list: bool = True, max_humans: int = 10) -> dict:
    """Official ``*_part_result.json`` dict from a persons table and a part-states table.

    ``persons``: video, frame, person, box, score (schema "persons", or "keypoints" whose refined
    ``box`` is used); ``parts``: video, frame, person, part, box, state (schema "part_states").
    Frames kept: ``frame % stride == 0``; ``frames[video]`` adds frames to write even when empty.
    At most ``max_humans`` (the official limit) per frame, by person index (= score rank).
    """
    persons = _df(persons)
    parts = _df(parts) if parts is not None else None
    out: dict = {}
    if frames:
        for v, fs in frames.items():
            for f in fs:
                if int(f) % stride == 0:
                    out.setdefault(v, {})[tps_frame_name(int(f))] = {"humans": []}
    p = persons[persons["frame"] % stride == 0].sort_values(["video", "frame", "person"], kind="stable")
    p = p[p["person"] < max_humans] if max_humans else p
    by_key: dict = {}
    for v, f, pid, box, sc in zip(p["video"], p["frame"], p["person"], p["box"], p["score"]):
        human = {"number": int(pid) + 1, "box": _floats(box), "score": float(sc), "parts": {}}
        out.setdefault(v, {}).setdefault(tps_frame_name(int(f)), {"humans": []})["humans"].append(human)
        by_key[(v, int(f), int(pid))] = human
    if parts is not None and len(parts):
        q = parts[parts["frame"] % stride == 0]
        q = q.assign(_order=q["part"].map({n: i for i, n in enumerate(PARTS)}).fillna(len(PARTS)))
        q = q.sort_values(["video", "frame", "person", "_order"], kind="stable")
        for v, f, pid, name, box, st, sc in zip(q["video"], q["frame"], q["person"], q["part"], q["box"],
                                                q["state"], q["score"]):
            human = by_key.get((v, int(f), int(pid)))
            if human is None:
                continue  # a part of a person not written (over max_humans or filtered)
            human["parts"][name] = {"number": len(human["parts"]) + 1, "box": _floats(box),
                                    "verb": [str(st)] if verb_as_list else str(st), "name": name,
                                    "score": float(sc)}
    return {v: dict(sorted(fr.items())) for v, fr in sorted(out.items())}


def tps_part_result_tables(part_result: dict) -> tuple[pa.Table, pa.Table]:
    """Inverse of :func:`tps_part_result`: ("persons" table, "part_states" table).

    A part's state is its verb (the first one of a list); a list of proposal boxes gives its first.
    Missing ``score`` keys read as 1.0; person = position in the frame's list.
    """
    pv, pf, pp, pb, ps = [], [], [], [], []
    qv, qf, qp, qn, qb, qs, qsc = [], [], [], [], [], [], []
    for v, frames in part_result.items():
        for fname, fr in frames.items():
            f = tps_frame_index(fname)
            for i, h in enumerate(fr.get("humans", [])):
                pv.append(v), pf.append(f), pp.append(i), pb.append(_floats(h["box"])), ps.append(float(h.get("score", 1.0)))
                for name, part in h.get("parts", {}).items():
                    box = part["box"]
                    if len(box) and isinstance(box[0], (list, tuple)):
                        box = box[0]
                    verb = part["verb"]
                    if isinstance(verb, (list, tuple)):
                        verb = verb[0] if verb else ""
                    qv.append(v), qf.append(f), qp.append(i), qn.append(name), qb.append(_floats(box))
                    qs.append(str(verb)), qsc.append(float(part.get("score", 1.0)))
    persons = from_columns({"video": pv, "frame": pf, "person": pp, "box": pb, "score": ps}, "persons") \
        if pv else schema("persons").empty_table()
    states = from_columns({"video": qv, "frame": qf, "person": qp, "part": qn, "box": qb, "state": qs,
                           "score": qsc}, "part_states") if qv else schema("part_states").empty_table()
    return persons, states


def tps_vid_result(video_predictions, model: str = "ensemble", task: str = "action") -> dict:
    """Official ``pred_vid_result.json`` dict from the "video_predictions" table."""
    d = _df(video_predictions)
    d = d[(d["model"] == model) & (d["task"] == task)]
    return {v: str(lab) for v, lab in sorted(zip(d["video"], d["label"]))}


def tps_vid_result_table(vid_result: dict, model: str = "ensemble", task: str = "action") -> pa.Table:
    """Inverse of :func:`tps_vid_result` (score 1, empty probabilities)."""
    vids = list(vid_result)
    return from_columns({"video": vids, "task": [task] * len(vids), "model": [model] * len(vids),
                         "label": [str(vid_result[v]) for v in vids], "score": [1.0] * len(vids),
                         "probs": [[] for _ in vids]}, "video_predictions")


def tps_ground_truth(gt_persons, videos, split: str = "test", stride: int = TPS_SAMPLING,
                     verb_as_list: bool = True) -> tuple[dict, dict]:
    """(gt_part_result, gt_vid_result) in the official layout from "gt_persons" + "videos" tables:
    every ``stride``-th frame of each ``split`` video, visible parts only."""
    g = _df(gt_persons)
    vt = _df(videos)
    vt = vt[vt["split"] == split] if split else vt
    g = g[g["video"].isin(set(vt["video"])) & (g["frame"] % stride == 0)]
    persons = g[["video", "frame", "person", "box"]].assign(score=1.0)
    rows = []
    for v, f, pid, pboxes, vis, states in zip(g["video"], g["frame"], g["person"], g["part_boxes"],
                                              g["part_visible"], g["part_states"]):
        pboxes = np.asarray(pboxes, np.float64).reshape(-1, 4)
        for k, name in enumerate(PARTS):
            if vis[k]:
                rows.append((v, f, pid, name, pboxes[k], states[k], 1.0))
    parts = pd.DataFrame(rows, columns=["video", "frame", "person", "part", "box", "state", "score"])
    frames = {}
    for v, n in zip(vt["video"], vt["n_frames"]):
        if n is not None and not pd.isna(n):
            frames[v] = range(0, int(n), stride)
    part_result = tps_part_result(persons, parts, frames=frames, stride=stride, verb_as_list=verb_as_list,
                                  max_humans=0)
    for h in (h for fr in part_result.values() for x in fr.values() for h in x["humans"]):
        h.pop("score", None)
        for part in h["parts"].values():
            part.pop("score", None)
    vid_result = {v: str(a) for v, a in sorted(zip(vt["video"], vt["action"])) if a is not None}
    return part_result, vid_result


def tps_verb_is_list(gt_part: dict) -> bool:
    """Whether a ground-truth file stores part states as lists (True) or strings (False)."""
    for frames in gt_part.values():
        for fr in (frames.values() if isinstance(frames, dict) else ()):
            for h in (fr.get("humans", []) if isinstance(fr, dict) else ()):
                for part in (h.get("parts", {}).values() if isinstance(h, dict) and isinstance(h.get("parts"), dict) else ()):
                    return isinstance(part.get("verb"), (list, tuple)) if isinstance(part, dict) else True
    return True


# ================================================================================ MultiSports
def multisports_ground_truth(gt_persons, videos, labels: list, background=BACKGROUND_ACTIONS) -> dict:
    """The official GT pkl dict: one tube per run of consecutive frames in which a person does the
    same (non-background) action."""
    g = _df(gt_persons).sort_values(["video", "person", "frame"], kind="stable")
    vt = _df(videos)
    index = {lab: i for i, lab in enumerate(labels)}
    gttubes: dict = {v: {} for v in vt["video"]}
    vid = g["video"].to_numpy()
    per = g["person"].to_numpy()
    fr = g["frame"].to_numpy().astype(np.int64)
    act = g["action"].to_numpy()
    box = np.stack(g["box"].to_numpy()).astype(np.float32) if len(g) else np.zeros((0, 4), np.float32)
    if len(g):
        brk = np.flatnonzero(np.r_[True, (vid[1:] != vid[:-1]) | (per[1:] != per[:-1]) | (fr[1:] != fr[:-1] + 1)
                                   | (act[1:] != act[:-1])])
        ends = np.r_[brk[1:], len(g)]
        for a, b in zip(brk, ends):
            if act[a] in background or act[a] not in index:
                continue
            tube = np.zeros((b - a, 5), np.float32)
            tube[:, 0] = fr[a:b] + 1
            tube[:, 1:5] = box[a:b]
            gttubes.setdefault(vid[a], {}).setdefault(index[act[a]], []).append(tube)
    train = [v for v, s in zip(vt["video"], vt["split"]) if s == "train"]
    test = [v for v, s in zip(vt["video"], vt["split"]) if s == "test"]
    nframes, resolution = {}, {}
    last = g.groupby("video")["frame"].max().to_dict() if len(g) else {}
    for v, n, w, h in zip(vt["video"], vt["n_frames"], vt["width"], vt["height"]):
        nframes[v] = int(n) if n is not None and not pd.isna(n) else int(last.get(v, -1)) + 1
        resolution[v] = (int(h) if h is not None and not pd.isna(h) else 0, int(w) if w is not None and not pd.isna(w) else 0)
    return {"labels": list(labels), "train_videos": [train], "test_videos": [test], "nframes": nframes,
            "resolution": resolution, "gttubes": gttubes}


def multisports_gt_on_frames(gt: dict, stride: int) -> dict:
    """A copy of the GT keeping tube rows on frames ``(frame - 1) % stride == 0`` (the decoded
    frames), for frame-mAP of detections that exist on those frames only."""
    out = dict(gt)
    out["gttubes"] = {}
    for v, tubes in gt["gttubes"].items():
        nt = {}
        for lab, lst in tubes.items():
            kept = [t[(t[:, 0].astype(np.int64) - 1) % stride == 0] for t in lst]
            kept = [t for t in kept if len(t)]
            if kept:
                nt[lab] = kept
        out["gttubes"][v] = nt
    return out


def frame_detections_array(dets, vlist: list, labels: list) -> np.ndarray:
    """"action_detections" table -> official (N, 8) float32 array (unknown videos/labels dropped)."""
    d = _df(dets)
    vi = {v: i for i, v in enumerate(vlist)}
    li = {lab: i for i, lab in enumerate(labels)}
    iv = d["video"].map(vi)
    il = d["label"].map(li)
    ok = iv.notna() & il.notna()
    d = d[ok]
    out = np.zeros((len(d), 8), np.float32)
    if len(d):
        out[:, 0] = iv[ok].to_numpy()
        out[:, 1] = d["frame"].to_numpy() + 1
        out[:, 2] = il[ok].to_numpy()
        out[:, 3] = d["score"].to_numpy()
        out[:, 4:8] = np.stack(d["box"].to_numpy())
    return out


def frame_detections_table(arr, vlist: list, labels: list) -> pa.Table:
    """Official (N, 8) array -> "action_detections" table (person = order within video/frame)."""
    from .metrics.multisports import as_frame_detections

    a = as_frame_detections(arr)
    if len(a) == 0:
        return schema("action_detections").empty_table()
    iv = a[:, 0].astype(np.int64)
    fr = a[:, 1].astype(np.int64) - 1
    key = iv * (1 << 32) + fr
    o = np.argsort(key, kind="stable")
    first = np.searchsorted(key[o], key[o], side="left")
    person = np.empty(len(a), np.int64)
    person[o] = np.arange(len(a)) - first
    return from_columns({"video": [vlist[i] for i in iv], "frame": fr, "person": person,
                         "label": [labels[int(x)] for x in a[:, 2]], "box": a[:, 4:8].astype(np.float32),
                         "score": a[:, 3].astype(np.float32)}, "action_detections")


def tubes_to_video_detections(tubes, labels: list) -> dict:
    """"tubes" table -> official ``video_detections`` dict {label index: [(video, score, (n, 6))]}."""
    d = _df(tubes)
    li = {lab: i for i, lab in enumerate(labels)}
    out = {i: [] for i in range(len(labels))}
    if not len(d):
        return out
    d = d.sort_values(["video", "tube", "frame"], kind="stable")
    for (v, t), g in d.groupby(["video", "tube"], sort=False):
        lab = g["label"].iloc[0]
        if lab not in li:
            continue
        arr = np.zeros((len(g), 6), np.float32)
        arr[:, 0] = g["frame"].to_numpy() + 1
        arr[:, 1:5] = np.stack(g["box"].to_numpy())
        arr[:, 5] = g["score"].to_numpy()
        out[li[lab]].append((v, np.float32(g["tube_score"].iloc[0]), arr))
    return out


def video_detections_to_tubes(video_dets: dict, labels: list) -> pa.Table:
    """Official ``video_detections`` dict -> "tubes" table (tube = running index per video)."""
    cols = {k: [] for k in ("video", "tube", "label", "tube_score", "frame", "box", "score")}
    counter: dict = {}
    for lab in sorted(video_dets):
        for v, score, tube in video_dets[lab]:
            tube = np.asarray(tube)
            t = counter.get(v, 0)
            counter[v] = t + 1
            n = len(tube)
            cols["video"] += [v] * n
            cols["tube"] += [t] * n
            cols["label"] += [labels[int(lab)]] * n
            cols["tube_score"] += [float(score)] * n
            cols["frame"] += (tube[:, 0].astype(np.int64) - 1).tolist()
            cols["box"] += tube[:, 1:5].astype(np.float32).tolist()
            cols["score"] += (tube[:, 5] if tube.shape[1] > 5 else np.zeros(n)).astype(np.float32).tolist()
    if not cols["video"]:
        return schema("tubes").empty_table()
    return from_columns(cols, "tubes")
