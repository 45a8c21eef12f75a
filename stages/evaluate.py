"""Score the test split: detection AP, video accuracy, part states, Kinetics-TPS, MultiSports.

Reads:  <data.root>/videos.parquet, gt_persons.parquet, annotations/tps/test/gt_part_result.json +
        gt_vid_result.json, annotations/multisports_gt.pkl (official-format ground truth; when a file
        is missing it is rebuilt from gt_persons.parquet with actparse.formats, with a warning);
        artifacts/refined_persons.parquet, parts.parquet, part_states.parquet, video_predictions.parquet,
        tubes.parquet, part_labels/ (classes.json, labels.parquet).
Writes: metrics/metrics.json (DVC metrics: person_ap50, part_ap50 (+ per part), video_acc (ensemble,
        + per model, mean-class, per part group), part_state_acc / part_state_recall, tps_score (area,
        rounded to 6 decimals as the leaderboard), tps_area, tps_psc_mean, frame_map50, video_map20,
        video_map50, video_map10_90 (MultiSports numbers in percent, as the official script prints));
        plots/person_pr.csv, plots/part_pr.csv (COCO 101-point precision vs recall), plots/tps_curve.csv
        (conditioned accuracy vs PSC threshold), plots/confusion.csv (video actions, actual/predicted);
        artifacts/eval_records/ (per-video records for bootstrap intervals over videos: every kept
        detection with its match, ground-truth counts, and per video the action, TPS and part-state
        outcomes; actparse.metrics.bootstrap);
        artifacts/submission/pred_part_result.json + pred_vid_result.json (official Kinetics-TPS
        submission, every 5th frame) and frame_detections.pkl + video_detections.pkl (official
        MultiSports result layout).
Frames scored are the decoded ones (every evaluate.stride-th; 0 = inferred from the predictions).
A test video missing from the predictions scores 0 (not an error, unlike the official scripts). A data
root without any ground truth (a user's unlabelled videos) gets the submission files, empty plots and
metrics {"scored": false, "ground_truth": false, "note": "no ground truth: metrics skipped", ...}. Ground
truth without parts (MultiSports imports) or without action tubes (Kinetics-TPS imports: no
annotations/multisports_gt.pkl, not rebuilt for an imported data root) gets the metrics it can, and
metrics.json "skipped": {metric: why} names the others (part_ap50 with part_state_*; tps_score with
tps_*; frame_map50 with video_map*). Params: evaluate.*, link.top_k_classes,
link.min_person_score (the frame detections of frame-mAP are those link_tubes links).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from actparse.stage import stage_main
from actparse.constants import PARTS, TPS_SAMPLING
from actparse.dataset import gt_has_parts, load_videos
from actparse.formats import (frame_detections_array, multisports_ground_truth, multisports_gt_on_frames,
                              read_pickle, tps_ground_truth, tps_part_result, tps_verb_is_list, tps_vid_result,
                              tubes_to_video_detections, write_pickle)
from actparse.link import frame_detections_from_artifacts, infer_stride
from actparse.metrics import bootstrap as BS
from actparse.metrics import classification as C
from actparse.metrics import multisports as MS
from actparse.metrics import tps as TPS
from actparse.metrics.detection import REC_THRS, detection_ap, match_detections
from actparse.params import get
from actparse.paths import Paths, data_root
from actparse.atomic import write_atomically, write_json
from actparse.schemas import from_columns, read_df, write_table

log = logging.getLogger("actparse.evaluate")
NO_GT = "no ground truth: metrics skipped"


def _image_ids(video: pd.Series, frame: pd.Series, index: dict) -> np.ndarray:
    return video.map(index).to_numpy().astype(np.int64) * (1 << 20) + frame.to_numpy().astype(np.int64)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    """A plot's CSV, atomically (disk full...: the previous plot stays)."""
    write_atomically(path, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6g"))


def _parts_or_absent(gt: pd.DataFrame) -> pd.DataFrame:
    """GT rows whose parts are not annotated (null part columns) as rows with every part absent."""
    missing = gt["part_boxes"].isna() | gt["part_visible"].isna() | gt["part_states"].isna()
    if not missing.any():
        return gt
    gt = gt.copy()
    for col, empty in (("part_boxes", np.zeros(len(PARTS) * 4, np.float32)),
                       ("part_visible", np.zeros(len(PARTS), bool)),
                       ("part_states", np.array(["none"] * len(PARTS), object))):
        gt[col] = [empty if m else v for v, m in zip(gt[col], missing)]
    return gt


def _imported_dataset(droot: Path) -> str | None:
    """The official data set a data root was imported from (``import_info.json``), or None."""
    info = droot / "import_info.json"
    if not info.exists():
        return None
    try:
        return str(json.loads(info.read_text()).get("dataset") or "official")
    except (ValueError, AttributeError):
        return "official"


def _load_json(path: Path):
    return TPS.read_json_file(path)


def detection_metrics(gt: pd.DataFrame, persons: pd.DataFrame, parts: pd.DataFrame, vindex: dict,
                      iou: float) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Person AP and part AP (mean over the ten parts) on the scored frames."""
    out = {}
    gimg = _image_ids(gt["video"], gt["frame"], vindex)
    pimg = _image_ids(persons["video"], persons["frame"], vindex)
    res = detection_ap(gimg, np.zeros(len(gt), int), np.stack(gt["box"].to_numpy()) if len(gt) else np.zeros((0, 4)),
                       pimg, np.zeros(len(persons), int),
                       np.stack(persons["box"].to_numpy()) if len(persons) else np.zeros((0, 4)),
                       persons["score"].to_numpy(), iou_thr=iou, classes=[0])
    out["person_ap50"] = res["ap"].get(0, float("nan"))
    person_pr = pd.DataFrame({"recall": REC_THRS, "precision": res["precision"].get(0, np.full(len(REC_THRS), np.nan))})
    # parts: GT visible part boxes
    pb = np.stack(gt["part_boxes"].to_numpy()).reshape(-1, len(PARTS), 4) if len(gt) else np.zeros((0, len(PARTS), 4))
    vis = np.stack(gt["part_visible"].to_numpy()) if len(gt) else np.zeros((0, len(PARTS)), bool)
    r, k = np.nonzero(vis)
    g_img, g_cls, g_box = gimg[r], np.asarray(PARTS, object)[k], pb[r, k]
    d_img = _image_ids(parts["video"], parts["frame"], vindex)
    res = detection_ap(g_img, g_cls, g_box, d_img, parts["part"].to_numpy(),
                       np.stack(parts["box"].to_numpy()) if len(parts) else np.zeros((0, 4)),
                       parts["score"].to_numpy(), iou_thr=iou, classes=list(PARTS))
    out["part_ap50"] = res["map"]
    out["part_ap50_per_part"] = {c: res["ap"][c] for c in PARTS if c in res["ap"]}
    curves = [res["precision"][c] for c in PARTS if c in res["precision"]]
    part_pr = pd.DataFrame({"recall": REC_THRS, "precision": np.mean(curves, 0) if curves else np.full(len(REC_THRS), np.nan)})
    return out, person_pr, part_pr


def part_state_metrics(gt: pd.DataFrame, states: pd.DataFrame, vindex: dict, iou: float) -> tuple[dict, pd.DataFrame]:
    """States of predicted parts matched (same part, IoU >= iou, COCO greedy by score) to GT parts;
    and per video the parts matched and those with the right state."""
    pb = np.stack(gt["part_boxes"].to_numpy()).reshape(-1, len(PARTS), 4) if len(gt) else np.zeros((0, len(PARTS), 4))
    vis = np.stack(gt["part_visible"].to_numpy()) if len(gt) else np.zeros((0, len(PARTS)), bool)
    st = np.stack(gt["part_states"].to_numpy()) if len(gt) else np.zeros((0, len(PARTS)), object)
    r, k = np.nonzero(vis)
    gimg = _image_ids(gt["video"], gt["frame"], vindex)[r]
    n_gt, matched, correct = len(r), 0, 0
    d_img = _image_ids(states["video"], states["frame"], vindex)
    per_matched, per_correct = np.zeros(len(vindex), np.int64), np.zeros(len(vindex), np.int64)
    for j, name in enumerate(PARTS):
        gs = k == j
        ds = (states["part"] == name).to_numpy()
        if not gs.any() or not ds.any():
            continue
        tp, kept, m = match_detections(gimg[gs], pb[r[gs], j], d_img[ds], np.stack(states["box"].to_numpy()[ds]),
                                       states["score"].to_numpy()[ds], iou, max_dets=None)
        ok = m >= 0
        right = st[r[gs], j][m[ok]] == states["state"].to_numpy()[ds][ok]
        matched += int(ok.sum())
        correct += int(right.sum())
        vid = d_img[ds][ok] >> 20  # the video index of each matched part (see _image_ids)
        np.add.at(per_matched, vid, 1)
        np.add.at(per_correct, vid[right], 1)
    per_video = pd.DataFrame({"video": list(vindex), "state_matched": per_matched, "state_correct": per_correct})
    return ({"part_state_acc": correct / matched if matched else float("nan"),
             "part_state_recall": correct / n_gt if n_gt else float("nan"),
             "part_state_matched": matched}, per_video)


def video_metrics(videos: pd.DataFrame, preds: pd.DataFrame,
                  labels: pd.DataFrame | None) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Video accuracy (ensemble, per model, mean class, per part group), the confusion pairs, and per
    test video whether the ensemble's action is right."""
    out: dict = {}
    test = videos[["video", "action"]].dropna()
    act = preds[preds["task"] == "action"]
    conf = pd.DataFrame({"actual": [], "predicted": []})
    per_video = pd.DataFrame({"video": test["video"].to_numpy(), "action_correct": False})
    for model, g in act.groupby("model"):
        m = test.merge(g[["video", "label"]], on="video", how="left")
        pred = m["label"].fillna("<missing>").to_numpy()
        key = "video_acc" if model == "ensemble" else f"video_acc_{model}"
        out[key] = C.top1_accuracy(m["action"].to_numpy(), pred)
        if model == "ensemble":
            out["video_mean_class_acc"] = C.mean_class_accuracy(m["action"].to_numpy(), pred)
            conf = pd.DataFrame({"actual": m["action"].to_numpy(), "predicted": pred})
            per_video = pd.DataFrame({"video": m["video"].to_numpy(), "action_correct": m["action"].to_numpy() == pred})
    if "video_acc" not in out:
        raise ValueError("video_predictions has no ensemble action predictions")
    if labels is not None and len(labels):
        groups = {}
        ens = preds[(preds["model"] == "ensemble") & (preds["task"] != "action")]
        lab = labels[labels["video"].isin(set(test["video"])) & (labels["task"] != "action")]
        m = lab.merge(ens[["video", "task", "label"]], on=["video", "task"], how="left", suffixes=("", "_pred"))
        for task, g in m.groupby("task"):
            groups[task] = C.top1_accuracy(g["label"].to_numpy(), g["label_pred"].fillna("<missing>").to_numpy())
        if groups:
            out["part_group_acc"] = groups
    return out, conf, per_video


def eval_records(gt: pd.DataFrame, persons: pd.DataFrame, parts: pd.DataFrame, vindex: dict, iou: float,
                 with_parts: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-video detection records (every kept detection with its match, ground-truth counts) for
    person AP and part AP, matched exactly as ``detection_metrics`` matches them."""
    gimg = _image_ids(gt["video"], gt["frame"], vindex)
    boxes = lambda df: np.stack(df["box"].to_numpy()) if len(df) else np.zeros((0, 4))  # noqa: E731
    d1, g1 = BS.ap_records("person_ap50", gt["video"], gimg, np.zeros(len(gt), int), boxes(gt), persons["video"],
                           _image_ids(persons["video"], persons["frame"], vindex), np.zeros(len(persons), int),
                           boxes(persons), persons["score"].to_numpy(), iou_thr=iou, classes=[0])
    if not with_parts:
        return d1, g1
    pb = np.stack(gt["part_boxes"].to_numpy()).reshape(-1, len(PARTS), 4) if len(gt) else np.zeros((0, len(PARTS), 4))
    vis = np.stack(gt["part_visible"].to_numpy()) if len(gt) else np.zeros((0, len(PARTS)), bool)
    r, k = np.nonzero(vis)
    d2, g2 = BS.ap_records("part_ap50", gt["video"].to_numpy()[r], gimg[r], np.asarray(PARTS, object)[k], pb[r, k],
                           parts["video"], _image_ids(parts["video"], parts["frame"], vindex), parts["part"].to_numpy(),
                           boxes(parts), parts["score"].to_numpy(), iou_thr=iou, classes=list(PARTS))
    return pd.concat([d1, d2], ignore_index=True), pd.concat([g1, g2], ignore_index=True)


def _write_records(folder: Path, records, per_video: pd.DataFrame | None) -> None:
    """artifacts/eval_records/: detections, ground_truth, videos (empty tables when nothing is scored)."""
    if records is None:
        records = ({c: [] for c in BS.DET_COLUMNS}, {c: [] for c in BS.GT_COLUMNS})
        per_video = {c: [] for c in BS.VIDEO_COLUMNS}
    dets, gts = records
    pv = pd.DataFrame(per_video)
    if len(pv):
        pv = pv.assign(state_matched=pv["state_matched"].fillna(0).astype(np.int64),
                       state_correct=pv["state_correct"].fillna(0).astype(np.int64),
                       tps_correct=pv["tps_correct"].astype(object).where(pv["tps_correct"].notna(), None))
    folder.mkdir(parents=True, exist_ok=True)
    write_table(from_columns({c: pd.DataFrame(dets)[c] for c in BS.DET_COLUMNS}, "eval_detections"),
                folder / "detections.parquet", "eval_detections")
    write_table(from_columns({c: pd.DataFrame(gts)[c] for c in BS.GT_COLUMNS}, "eval_ground_truth"),
                folder / "ground_truth.parquet", "eval_ground_truth")
    write_table(from_columns({c: pv[c] for c in BS.VIDEO_COLUMNS}, "eval_videos"), folder / "videos.parquet",
                "eval_videos")


def run(params: dict, root: Path) -> None:
    t0 = time.time()
    paths = Paths(root)
    droot = data_root(params, root)
    iou = get(params, "evaluate.iou", float, min_value=0.0, max_value=1.0)
    stride = get(params, "evaluate.stride", int, min_value=0)
    split = get(params, "evaluate.split", str)
    human_iou = get(params, "evaluate.tps_human_iou", float, min_value=0.0, max_value=1.0)
    part_iou = get(params, "evaluate.tps_part_iou", float, min_value=0.0, max_value=1.0)
    variant = get(params, "evaluate.multisports_variant", str, choices=MS.VARIANTS)

    videos = load_videos(droot).to_pandas()
    videos = videos[videos["split"] == split].sort_values("video")
    if not len(videos):
        raise ValueError(f"{droot}/videos.parquet: no {split!r} videos to evaluate")
    vset = set(videos["video"])
    vindex = {v: i for i, v in enumerate(videos["video"])}
    refined = read_df(paths.refined, "keypoints", columns=["video", "frame", "person", "box", "score"])
    refined = refined[refined["video"].isin(vset)]
    parts = read_df(paths.parts, "parts")
    parts = parts[parts["video"].isin(vset)]
    states = read_df(paths.part_states, "part_states")
    states = states[states["video"].isin(vset)]
    preds = read_df(paths.video_predictions, "video_predictions")
    preds = preds[preds["video"].isin(vset)]
    tubes = read_df(paths.tubes, "tubes")
    tubes = tubes[tubes["video"].isin(vset)]
    if not stride:
        stride = infer_stride(refined["frame"]) if len(refined) else TPS_SAMPLING

    # ---- submissions (always written)
    sub = paths.submission
    sub.mkdir(parents=True, exist_ok=True)
    tps_dir = droot / "annotations" / "tps" / split
    gt_persons_path = droot / "gt_persons.parquet"
    skipped: dict[str, str] = {}  # metric -> why it is not computed (data sets without keypoints / parts)
    imported = _imported_dataset(droot)
    has_gt = gt_persons_path.exists() or (tps_dir / "gt_part_result.json").exists()
    gt_part = gt_vid = tps_names = None
    if (tps_dir / "gt_part_result.json").exists() and (tps_dir / "gt_vid_result.json").exists():
        gt_part, gt_vid = _load_json(tps_dir / "gt_part_result.json"), _load_json(tps_dir / "gt_vid_result.json")
        tps_names = (f"{tps_dir / 'gt_vid_result.json'}: ground truth", f"{tps_dir / 'gt_part_result.json'}: "
                     "ground truth", "predicted video classes", "prediction")
        TPS.check_video_classes(gt_vid, tps_names[0])
        TPS.check_part_result(gt_part, tps_names[1])
    elif gt_has_parts(gt_persons_path):
        log.warning("%s missing: Kinetics-TPS ground truth rebuilt from %s", tps_dir, gt_persons_path)
        gt_part, gt_vid = tps_ground_truth(read_df(gt_persons_path, "gt_persons"), videos, split)
    elif gt_persons_path.exists():
        skipped["tps_score"] = (f"no Kinetics-TPS ground truth: {tps_dir} has no gt_part_result.json and "
                                f"{gt_persons_path} no part ground truth")
    verb_list = tps_verb_is_list(gt_part) if gt_part else True
    frames = {v: range(0, int(n), TPS_SAMPLING) for v, n in zip(videos["video"], videos["n_frames"]) if pd.notna(n)}
    pred_part = tps_part_result(refined, states, frames=frames, verb_as_list=verb_list)
    pred_vid = tps_vid_result(preds)
    write_json(pred_part, sub / "pred_part_result.json", indent=None)
    write_json(pred_vid, sub / "pred_vid_result.json")

    ms_path = droot / "annotations" / "multisports_gt.pkl"
    ms_gt = None
    if ms_path.exists():
        ms_gt = read_pickle(ms_path)
        MS.check_ground_truth(ms_gt, ms_path)
    elif gt_persons_path.exists() and imported:
        skipped["frame_map50"] = (f"no MultiSports ground truth: {ms_path} missing and the {imported} import "
                                  f"annotates no action tubes (its persons are not rebuilt into tubes)")
    elif gt_persons_path.exists():
        log.warning("%s missing: MultiSports ground truth rebuilt from %s", ms_path, gt_persons_path)
        from actparse.constants import ACTIONS

        ms_gt = multisports_ground_truth(read_df(gt_persons_path, "gt_persons"), load_videos(droot).to_pandas(), list(ACTIONS))
    adets, _ = frame_detections_from_artifacts(params, root)
    adets = adets.to_pandas()
    adets = adets[adets["video"].isin(vset)]
    labels = list(ms_gt["labels"]) if ms_gt else sorted(set(adets["label"]))
    vlist = MS.test_videos(ms_gt) if ms_gt else sorted(vset)
    fdets = frame_detections_array(adets, vlist, labels)
    vdets = tubes_to_video_detections(tubes, labels)
    write_pickle(fdets, sub / "frame_detections.pkl")
    write_pickle(vdets, sub / "video_detections.pkl")

    metrics: dict = {"n_test_videos": int(len(videos)), "stride": int(stride)}
    plots = paths.plots
    if not has_gt:
        log.warning("%s has no ground truth: metrics skipped (submissions written to %s)", droot, sub)
        print(f"evaluate: no ground truth under {droot}: metrics skipped; submissions written to {sub}")
        metrics.update({"scored": False, "ground_truth": False, "note": NO_GT,
                        "n_videos_predicted": int(len(pred_vid))})
        for name, cols in (("person_pr.csv", ["recall", "precision"]), ("part_pr.csv", ["recall", "precision"]),
                           ("tps_curve.csv", ["threshold", "accuracy"]), ("confusion.csv", ["actual", "predicted"])):
            _write_csv(pd.DataFrame({c: [] for c in cols}), plots / name)
        _write_records(paths.eval_records, None, None)
        write_json(metrics, paths.metrics / "metrics.json")
        return

    # ---- detection, parts, states, videos
    gt = read_df(gt_persons_path, "gt_persons")
    gt = gt[gt["video"].isin(vset) & (gt["frame"] % stride == 0)]
    refined_s = refined[refined["frame"] % stride == 0]
    gt = _parts_or_absent(gt)  # a row without part annotation scores no part
    det, person_pr, part_pr = detection_metrics(gt, refined_s, parts[parts["frame"] % stride == 0], vindex, iou)
    metrics.update(det)
    ps, ps_video = part_state_metrics(gt, states[states["frame"] % stride == 0], vindex, iou)
    metrics.update(ps)
    if not gt_has_parts(gt_persons_path):
        for key in ("part_ap50", "part_ap50_per_part", "part_state_acc", "part_state_recall", "part_state_matched"):
            metrics.pop(key, None)
        part_pr = pd.DataFrame({"recall": [], "precision": []})
        why = f"{gt_persons_path} has no part ground truth"
        skipped.update({"part_ap50": why, "part_state_acc": why})
    lab_path = paths.part_labels / "labels.parquet"
    plabels = read_df(lab_path, "part_labels") if lab_path.exists() else None
    vm, conf, act_video = video_metrics(videos, preds, plabels)
    metrics.update(vm)

    # ---- Kinetics-TPS
    tps_curve = pd.DataFrame({"threshold": [], "accuracy": []})
    tps_video = pd.DataFrame({"video": pd.Series(dtype=str), "tps_psc": pd.Series(dtype=float),
                              "tps_correct": pd.Series(dtype=bool)})
    if gt_part is not None:
        opts = TPS.TPSOptions(human_iou=human_iou, part_iou=part_iou, missing_video="zero", check_limits=verb_list)
        if not verb_list:
            log.warning("ground-truth part states are strings: the official script would stop on states longer "
                        "than 5 characters (its len(verb) <= 5 check); that check is skipped here")
        gt_vid_s = {v: a for v, a in gt_vid.items() if v in vset}
        res = TPS.evaluate(gt_vid_s, gt_part, pred_vid, pred_part, opts, names=tps_names)
        metrics.update({"tps_score": res.score, "tps_area": res.area, "tps_psc_mean": float(np.mean(res.psc)),
                        "tps_video_acc": float(np.mean(res.correct))})
        t101 = np.round(np.linspace(0, 1, 101), 10)
        acc101 = TPS.accuracy_curve(res.psc, res.correct, steps=100)[1]
        acc_at_1 = float(np.mean((res.psc >= 1.0) & res.correct))
        tps_curve = pd.DataFrame({"threshold": t101, "accuracy": np.r_[acc101, acc_at_1]})
        tps_video = pd.DataFrame({"video": res.videos, "tps_psc": res.psc, "tps_correct": res.correct})

    # ---- MultiSports
    if ms_gt is not None:
        vlist_eval = [v for v in vlist if v in vset]  # the scored split only; detections re-indexed on it
        ms_gt = dict(ms_gt, test_videos=[vlist_eval])
        fdets_eval = fdets if vlist_eval == vlist else frame_detections_array(adets, vlist_eval, labels)
        fa = MS.frame_ap(multisports_gt_on_frames(ms_gt, stride), fdets_eval, 0.5, variant)
        va = MS.video_ap(ms_gt, vdets, [0.2, 0.5], variant, missing_label="empty")
        rng = MS.video_ap_ranges(ms_gt, vdets, variant, missing_label="empty")
        metrics.update({"frame_map50": fa.map, "video_map20": va[0.2].map, "video_map50": va[0.5].map,
                        "video_map10_90": rng["0.10:0.90"]})

    if skipped:
        metrics["skipped"] = skipped
        for metric, why in skipped.items():
            log.warning("%s (and the metrics that go with it) skipped: %s", metric, why)
    records = eval_records(gt, refined_s, parts[parts["frame"] % stride == 0], vindex, iou,
                           with_parts=gt_has_parts(gt_persons_path))
    per_video = act_video.merge(ps_video, on="video", how="left").merge(tps_video, on="video", how="left")
    _write_records(paths.eval_records, records, per_video)
    _write_csv(person_pr, plots / "person_pr.csv")
    _write_csv(part_pr, plots / "part_pr.csv")
    _write_csv(tps_curve, plots / "tps_curve.csv")
    _write_csv(conf, plots / "confusion.csv")
    metrics = _json_safe(metrics)
    write_json(metrics, paths.metrics / "metrics.json")
    _print_table(metrics)
    log.info("evaluate done in %.1fs", time.time() - t0)


def _json_safe(obj, key: str = ""):
    """Plain JSON: NaN -> null, floats rounded to 6 decimals (tps_area kept whole, unrounded)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, (np.floating, float)):
        x = float(obj)
        return None if np.isnan(x) else (x if key == "tps_area" else round(x, 6))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _print_table(metrics: dict) -> None:
    rows = []
    for k, v in metrics.items():
        if isinstance(v, dict):
            rows += [(f"{k}.{kk}", vv) for kk, vv in v.items()]
        else:
            rows.append((k, v))
    width = max(len(k) for k, _ in rows)
    log.info("metrics:\n%s", "\n".join(
        f"{k:<{width}}  {'-' if v is None else (f'{v:.4f}' if isinstance(v, float) else v)}" for k, v in rows))


def main(argv=None) -> int:
    return stage_main("evaluate", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
