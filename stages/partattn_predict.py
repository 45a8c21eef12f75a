"""Predict every part's state per key frame with the seed 000 part-state network and score it.

Reads:  artifacts/models/partattn/model.pt; the test videos of <data.root>/videos.parquet;
        persons by partattn.persons_source: refined (artifacts/refined_persons.parquet), detected
          (artifacts/persons.parquet) or gt (ground truth on every partattn.stride-th frame);
        parts by partattn.parts_source: detected (artifacts/parts.parquet, joined on video / frame /
          person) or gt (the parts of the ground-truth person each box matches, IoU >= 0.5);
        the action input by partattn.action_source: predicted (artifacts/video_predictions.parquet,
          task "action", the ensemble's label) or gt (the video's label);
        <data.root>/gt_persons.parquet (scoring) and, when present, artifacts/part_states.parquet
          (seed 001's video-label states, scored alongside).
Writes: artifacts/partattn/part_states.parquet (schema "part_states"): a state per predicted part
        metrics/partattn.json: part-state top-1 accuracy (x100) over the visible ground-truth parts of
          the test key frames (persons matched at IoU >= 0.5; missed persons / parts count as wrong),
          per part group, for this model, for the most-frequent-state prior per (action, part) (seed
          001 submission 1) with the same action input, and for seed 001's part_states.parquet
        artifacts/skips/partattn_predict.parquet: test videos that could not be decoded
With partattn.enabled false it writes metrics/partattn.json {"enabled": false} and empty tables.
Params: partattn.enabled, partattn.persons_source, partattn.parts_source, partattn.action_source,
        partattn.min_score, partattn.stride, partattn.batch_size, device.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from actparse.params import get, resolve_device
from actparse.paths import Paths, data_root
from actparse.atomic import write_json
from actparse.schemas import from_columns, from_rows, read_df, write_table
from actparse.stage import SkipLedger, progress, seed_disabled, stage_log, stage_main

log = stage_log("partattn_predict")


def predicted_actions(paths: Paths) -> dict[str, str]:
    """{video: action} from the CSN ensemble (task "action"; the best model row when no ensemble)."""
    df = read_df(paths.video_predictions, "video_predictions", columns=["video", "task", "model", "label", "score"])
    df = df[df["task"] == "action"]
    if df.empty:
        raise ValueError(f"{paths.video_predictions}: no task 'action' predictions")
    ens = df[df["model"] == "ensemble"]
    if ens.empty:
        ens = df.sort_values("score", ascending=False).drop_duplicates("video")
    return dict(zip(ens["video"], ens["label"]))


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    out_json = paths.metrics / "partattn.json"
    out_pred = paths.partattn / "part_states.parquet"
    if seed_disabled(params, "partattn", "partattn_predict", root, tables={out_pred: "part_states"},
                     json_files=[out_json], skips=True):
        return

    from actparse.clips import load_video
    from actparse.constants import GROUP_OF_PART, NUM_PARTS, PART_STATES, PARTS
    from actparse.dataset import BOX_SOURCES, gt_persons_path, load_person_boxes, load_videos, video_path
    from actparse.part_labels import baseline_states
    from actparse.partattn import PersonSample, load_checkpoint, match_persons, predict, settings_from_params, \
        state_accuracy
    from actparse.video import VideoError, decode_backend

    persons_source = get(params, "partattn.persons_source", str, choices=BOX_SOURCES)
    parts_source = get(params, "partattn.parts_source", str, choices=("detected", "gt"))
    action_source = get(params, "partattn.action_source", str, choices=("predicted", "gt"))
    min_score = get(params, "partattn.min_score", float, min_value=0.0)
    stride = get(params, "partattn.stride", int, min_value=1)
    device = resolve_device(params)
    model, ck = load_checkpoint(paths.models / "partattn" / "model.pt", device)
    actions = ck["actions"]
    s = settings_from_params(params)
    saved = ck["extra"].get("settings", {})
    s.num_frames, s.interval, s.margin = saved.get("num_frames", s.num_frames), saved.get("interval", s.interval), \
        saved.get("margin", s.margin)

    droot = data_root(params, root)
    videos = load_videos(droot).to_pandas()
    test = videos[videos["split"] == "test"].reset_index(drop=True)
    vids = test["video"].tolist()
    act_of = predicted_actions(paths) if action_source == "predicted" else dict(zip(videos["video"], videos["action"]))
    gt = read_df(gt_persons_path(droot), "gt_persons",
                 columns=["video", "frame", "person", "box", "part_boxes", "part_visible", "part_states"])
    gt_test = gt[gt["video"].isin(set(vids)) & (gt["frame"] % stride == 0)]
    gt_by = {k: g for k, g in gt_test.groupby(["video", "frame"], sort=False)}
    persons = load_person_boxes(persons_source, root, droot, vids, stride, min_score)
    parts_by = {}
    if parts_source == "detected":
        parts = read_df(paths.parts, "parts", columns=["video", "frame", "person", "part", "box"])
        parts = parts[parts["video"].isin(set(vids))]
        for r in parts.itertuples(index=False):
            parts_by.setdefault((r.video, int(r.frame), int(r.person)), {})[r.part] = np.asarray(r.box, np.float64)

    samples, keys, decoded = [], [], []
    ledger = SkipLedger("partattn_predict", root, what="test videos")
    for row in progress(list(test.itertuples(index=False)), "partattn_predict"):
        pv = persons[persons["video"] == row.video]
        if pv.empty:
            continue
        action = act_of.get(row.video)
        a_idx = actions.index(action) if action in actions else 0
        if action not in actions:
            log.warning("partattn: no known action for %s (%r); using %r", row.video, action, actions[0])
        ledger.tried(row.video)
        try:
            v = load_video(video_path(droot, row.path), backend=decode_backend(params))
        except (VideoError, ValueError) as exc:
            ledger.skip(row.video, exc)
            continue
        vi = len(decoded)
        decoded.append(v)
        for fr, gf in pv.groupby("frame", sort=True):
            boxes = np.stack(gf["box"].to_numpy()).astype(np.float64)
            pids = gf["person"].to_numpy()
            if parts_source == "gt":
                g = gt_by.get((row.video, int(fr)))
                pairs = dict(match_persons(boxes, np.stack(g["box"].to_numpy()) if g is not None else np.zeros((0, 4))))
            for k, pid in enumerate(pids):
                pb = np.zeros((NUM_PARTS, 4))
                valid = np.zeros(NUM_PARTS, bool)
                if parts_source == "detected":
                    for j, part in enumerate(PARTS):
                        b = parts_by.get((row.video, int(fr), int(pid)), {}).get(part)
                        if b is not None:
                            pb[j], valid[j] = b, True
                elif k in pairs:
                    gr = g.iloc[pairs[k]]
                    pb = np.asarray(gr["part_boxes"], np.float64).reshape(NUM_PARTS, 4)
                    valid = np.asarray(gr["part_visible"], bool)
                if not valid.any():
                    continue
                samples.append(PersonSample(vi, int(fr), boxes[k], pb, valid, a_idx))
                keys.append((row.video, int(fr), int(pid)))
    ledger.check(droot)
    states, probs = predict(model, decoded, samples, s, device) if samples else (np.zeros((0, NUM_PARTS), int), None)

    cols = {k: [] for k in ("video", "frame", "person", "part", "box", "state", "score")}
    pred_eval: dict = {}
    for i, (smp, (v, fr, pid)) in enumerate(zip(samples, keys)):
        st = {}
        for j, part in enumerate(PARTS):
            if not smp.part_valid[j]:
                continue
            name = PART_STATES[GROUP_OF_PART[part]][states[i, j]]
            st[part] = name
            cols["video"].append(v)
            cols["frame"].append(fr)
            cols["person"].append(pid)
            cols["part"].append(part)
            cols["box"].append(smp.part_boxes[j].astype(np.float32))
            cols["state"].append(name)
            cols["score"].append(float(probs[i, j]))
        pred_eval.setdefault((v, fr), []).append((smp.box, st))
    table = from_columns(cols, "part_states") if cols["video"] else from_rows([], "part_states")
    write_table(table, out_pred, "part_states")

    # the same persons and parts with the most-frequent-state prior (seed 001 submission 1)
    train_actions = dict(zip(videos.loc[videos["split"] == "train", "video"], videos.loc[videos["split"] == "train", "action"]))
    prior = baseline_states(gt, {v: a for v, a in train_actions.items() if isinstance(a, str)})
    prior_eval: dict = {}
    for smp, (v, fr, pid) in zip(samples, keys):
        table_a = prior.get(act_of.get(v), {})
        prior_eval.setdefault((v, fr), []).append(
            (smp.box, {p: table_a.get(p, "none") for j, p in enumerate(PARTS) if smp.part_valid[j]}))
    metrics = {"enabled": True, "config": {k: ck["config"][k] for k in ("roi_mode", "use_action", "use_attention", "use_context")},
               "augment": bool(saved.get("augment", True)), "persons_source": persons_source,
               "parts_source": parts_source, "action_source": action_source,
               "model": state_accuracy(pred_eval, gt_test), "prior": state_accuracy(prior_eval, gt_test)}
    if paths.part_states.exists() and persons_source == "refined":
        ps = read_df(paths.part_states, "part_states", columns=["video", "frame", "person", "part", "state"])
        box_of = {(r.video, int(r.frame), int(r.person)): np.asarray(r.box) for r in persons.itertuples(index=False)}
        s001: dict = {}
        for (v, fr, pid), g in ps[ps["video"].isin(set(vids))].groupby(["video", "frame", "person"], sort=False):
            if (v, int(fr), int(pid)) in box_of:
                s001.setdefault((v, int(fr)), []).append((box_of[(v, int(fr), int(pid))], dict(zip(g["part"], g["state"]))))
        metrics["seed001_part_states"] = state_accuracy(s001, gt_test)
    write_json(metrics, out_json)
    ledger.write()
    log.info(f"{len(samples)} persons, state top-1 {metrics['model']['top1']} "
             f"(prior {metrics['prior']['top1']}) -> {out_json}")


def main(argv=None):
    return stage_main("partattn_predict", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
