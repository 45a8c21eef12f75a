"""Link the seed 003 frame-level action detections into tubes and score them (frame-mAP, video-mAP).

Reads:  artifacts/stad/action_detections.parquet and action_detections_phase1.parquet,
        artifacts/models/stad/train_info.json (train class counts),
        <data.root>/annotations/multisports_gt.pkl (MultiSports ground truth, test_videos scored).
Writes: artifacts/stad/tubes.parquet (schema "tubes"): MOC-linked tubes of the final model
        artifacts/stad/frame_records/: the frame-AP matches per test video of both models (detections /
          ground_truth.parquet, schemas eval_detections / eval_ground_truth), for bootstrap intervals
        metrics/stad.json: frame-mAP@0.5 and video-mAP@0.2 / 0.5 / 0.10:0.90 (x100, official
          MultiSports code) of the final model, the same under "phase1" (before decoupled learning),
          the decoupled-learning gain on the head / tail halves of the classes (ranked by train
          person-frames, seed 003 sec 3.4), per-class frame AP.
Frame-mAP is scored on the key frames that were classified (every stad.stride-th frame: detections
exist only there), i.e. on the ground truth of those frames; video-mAP uses the full tubes (the
linker interpolates between key frames).
Linking: actparse.link (MOC, K = 1) with the thresholds of params section `link`.
With stad.enabled false it writes metrics/stad.json {"enabled": false} and an empty tubes table.
Params: stad.enabled, stad.head, stad.boxes, stad.stride, link.*.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from actparse import safe_pickle
from actparse.params import get
from actparse.paths import Paths, data_root
from actparse.atomic import write_json
from actparse.schemas import from_columns, from_rows, read_df, write_table
from actparse.stage import seed_disabled, stage_log, stage_main

log = stage_log("stad_evaluate")


def keyframe_gt(gt: dict, stride: int) -> dict:
    """The ground truth restricted to frames (1-based) ``1, 1 + stride, ...`` (the classified key frames)."""
    out = dict(gt)
    tubes = {}
    for v, per_label in gt["gttubes"].items():
        tubes[v] = {}
        for lab, ts in per_label.items():
            kept = [t[(t[:, 0].astype(np.int64) - 1) % stride == 0] for t in ts]
            tubes[v][lab] = [t for t in kept if len(t)]
    out["gttubes"] = tubes
    return out


def frame_detections(det, vlist: list, labels: list) -> np.ndarray:
    """action_detections DataFrame -> official (N, 8) array: video index, frame (1-based), label, score, box."""
    vidx = {v: i for i, v in enumerate(vlist)}
    lidx = {c: i for i, c in enumerate(labels)}
    det = det[det["video"].isin(vidx) & det["label"].isin(lidx)]
    if det.empty:
        return np.zeros((0, 8), np.float32)
    arr = np.zeros((len(det), 8), np.float32)
    arr[:, 0] = det["video"].map(vidx).to_numpy()
    arr[:, 1] = det["frame"].to_numpy() + 1
    arr[:, 2] = det["label"].map(lidx).to_numpy()
    arr[:, 3] = det["score"].to_numpy()
    arr[:, 4:8] = np.stack(det["box"].to_numpy())
    return arr


def video_detections(det, labels: list, link_params):
    """Link per (video, label) over the video's key frames -> official video detections {label: [(v, score, tube)]}."""
    from actparse.link import link_moc_layout

    lidx = {c: i for i, c in enumerate(labels)}
    det = det[det["label"].isin(lidx)]
    vdets: dict = {}
    grids: dict = {}
    for (v, fr, lab), g in det.groupby(["video", "frame", "label"], sort=True):
        arr = np.concatenate([np.stack(g["box"].to_numpy()).astype(np.float32),
                              g["score"].to_numpy().astype(np.float32)[:, None]], axis=1)
        vdets.setdefault(v, {}).setdefault(int(fr) + 1, {})[lidx[lab]] = arr
    for v, g in det.groupby("video", sort=False):
        grids[v] = sorted(int(f) + 1 for f in g["frame"].unique())
    return link_moc_layout(vdets, len(labels), link_params, grids)


def score(det, gt: dict, stride: int, link_params, records: dict | None = None) -> tuple[dict, dict, dict]:
    """(metrics, per-class frame AP, video detections) of one detection table; ``records`` receives
    the frame-AP matches per video (multisports.frame_ap)."""
    from actparse.metrics.multisports import frame_ap, test_videos, video_ap, video_ap_ranges

    labels = list(gt["labels"])
    vlist = test_videos(gt)
    fdets = frame_detections(det, vlist, labels)
    fres = frame_ap(keyframe_gt(gt, stride), fdets, 0.5, records=records)
    vdets = video_detections(det[det["video"].isin(set(vlist))], labels, link_params)
    vres = video_ap(gt, vdets, [0.2, 0.5], missing_label="empty")
    rng = video_ap_ranges(gt, vdets, missing_label="empty")

    def num(x):
        x = float(x)
        return None if np.isnan(x) else round(x, 4)

    m = {"frame_map@0.5": num(fres.map), "video_map@0.2": num(vres[0.2].map), "video_map@0.5": num(vres[0.5].map),
         "video_map@0.10:0.90": num(rng["0.10:0.90"])}
    return m, {k: num(v) for k, v in fres.ap.items()}, vdets


def tubes_table(vdets: dict, labels: list):
    cols = {k: [] for k in ("video", "tube", "label", "tube_score", "frame", "box", "score")}
    n = 0
    for lab, items in sorted(vdets.items()):
        for v, sc, tube in items:
            for r in tube:
                cols["video"].append(v)
                cols["tube"].append(n)
                cols["label"].append(labels[lab])
                cols["tube_score"].append(float(sc))
                cols["frame"].append(int(r[0]) - 1)
                cols["box"].append(np.asarray(r[1:5], np.float32))
                cols["score"].append(float(r[5]))
            n += 1
    return from_columns(cols, "tubes") if n else from_rows([], "tubes")


def write_frame_records(folder: Path, records: dict) -> None:
    """Per-video frame-AP records (bootstrap intervals over videos): ``detections.parquet`` (schema
    eval_detections; each metric's and class's rows in the official rank order) and
    ``ground_truth.parquet`` (eval_ground_truth), the metric column naming the metrics file's key."""
    import pandas as pd

    dets = [r["detections"].assign(metric=m) for m, r in records.items() if "detections" in r]
    gts = [r["ground_truth"].assign(metric=m) for m, r in records.items() if "ground_truth" in r]
    for name, schema, parts in (("detections", "eval_detections", dets), ("ground_truth", "eval_ground_truth", gts)):
        df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        table = from_columns(df.to_dict("list"), schema) if len(df) else from_rows([], schema)
        write_table(table, folder / f"{name}.parquet", schema)


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    out_json = paths.metrics / "stad.json"
    tubes_path = paths.stad / "tubes.parquet"
    rec = paths.stad / "frame_records"
    if seed_disabled(params, "stad", "stad_evaluate", root, json_files=[out_json],
                     tables={tubes_path: "tubes", rec / "detections.parquet": "eval_detections",
                             rec / "ground_truth.parquet": "eval_ground_truth"}):
        return
    from actparse.link import params_from

    stride = get(params, "stad.stride", int, min_value=1)
    droot = data_root(params, root)
    pkl = droot / "annotations" / "multisports_gt.pkl"
    if not pkl.exists():
        raise FileNotFoundError(f"{pkl}: MultiSports ground truth not found")
    gt = safe_pickle.load(pkl)  # allow-listed: containers and numpy arrays only
    link_params = params_from(params)
    info_path = paths.models / "stad" / "train_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    final = read_df(paths.stad / "action_detections.parquet", "action_detections")
    phase1 = read_df(paths.stad / "action_detections_phase1.parquet", "action_detections")
    rec_final: dict = {}
    rec_p1: dict = {}
    m_final, ap_final, vdets = score(final, gt, stride, link_params, rec_final)
    m_p1, ap_p1, _ = score(phase1, gt, stride, link_params, rec_p1)
    labels = list(gt["labels"])
    write_table(tubes_table(vdets, labels), tubes_path, "tubes")
    write_frame_records(paths.stad / "frame_records", {"frame_map@0.5": rec_final, "phase1.frame_map@0.5": rec_p1})

    counts = info.get("person_frames_per_class", {})
    ranked = sorted((c for c in labels if c in ap_final and ap_final[c] is not None),
                    key=lambda c: (-counts.get(c, 0), labels.index(c)))
    half = len(ranked) // 2

    def gain(cs):
        d = [ap_final[c] - ap_p1[c] for c in cs if ap_final.get(c) is not None and ap_p1.get(c) is not None]
        return round(float(np.mean(d)), 4) if d else None

    metrics = {"enabled": True, "head": info.get("head", get(params, "stad.head", str, choices=("pcca", "linear"))),
               "boxes": get(params, "stad.boxes", str, choices=("refined", "detected", "gt")), "decoupled": bool(info.get("decoupled")),
               **m_final, "phase1": m_p1,
               "decoupled_gain": {"frame_map@0.5": None if m_final["frame_map@0.5"] is None or m_p1["frame_map@0.5"] is None
                                  else round(m_final["frame_map@0.5"] - m_p1["frame_map@0.5"], 4),
                                  "head_classes": gain(ranked[:half]), "tail_classes": gain(ranked[half:])},
               "per_class_frame_ap": {c: {"final": ap_final.get(c), "phase1": ap_p1.get(c),
                                          "train_person_frames": counts.get(c)} for c in ranked}}
    write_json(metrics, out_json)
    log.info(f"frame-mAP@0.5 {m_final['frame_map@0.5']}, video-mAP@0.5 {m_final['video_map@0.5']} "
             f"(phase 1: {m_p1['frame_map@0.5']}, {m_p1['video_map@0.5']}) -> {out_json}")


def main(argv=None):
    return stage_main("stad_evaluate", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
