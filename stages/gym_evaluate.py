"""Score the seed 004 models on the test element clips: top-1 / mean-class accuracy per level (seed 004 Table 2).

Reads:  artifacts/models/gym/{event,set,element,joint}.pt, <data.root>/annotations/finegym/
        (gym*_val_element*.txt = the test clips), the test videos, <data.root>/gt_persons.parquet.
Writes: artifacts/gym/clip_predictions.parquet (schema "clip_predictions"): per test clip, level and
          model (single pathway or joint) the predicted class, its probability and all probabilities
        artifacts/gym/video_counts.parquet (schema "video_counts"): per test video, key ("single.<level>" /
          "joint.<level>") and true class, the clips scored and the right ones (bootstrap intervals)
        metrics/gym.json: for each single model its own level, for the joint model all three levels:
          top-1, top-5 and mean-class accuracy (x100); the element model's predictions mapped up the
          hierarchy; the joint-minus-single gain per level
        artifacts/skips/gym_evaluate.parquet: test videos that could not be decoded
Every clip is scored on its centred temporal view and centre crop.
With gym.enabled false it writes metrics/gym.json {"enabled": false} and an empty table.
Params: gym.enabled, gym.size, gym.margin, gym.crop, gym.interval, gym.num_frames, gym.batch_size,
        gym.input_norm, device.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from actparse.params import resolve_device
from actparse.paths import Paths
from actparse.atomic import write_json
from actparse.schemas import from_columns, write_table
from actparse.stage import SkipLedger, seed_disabled, stage_log, stage_main

log = stage_log("gym_evaluate")


def _acc(truth: list, probs: np.ndarray, classes: list) -> dict:
    from actparse.metrics.classification import mean_class_accuracy, top1_accuracy, topk_accuracy

    pred = [classes[i] for i in probs.argmax(1)]
    return {"top1": round(100 * top1_accuracy(truth, pred), 2),
            "top5": round(100 * topk_accuracy(truth, probs, classes, 5), 2),
            "mean_class": round(100 * mean_class_accuracy(truth, pred), 2)}


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    out_json = paths.metrics / "gym.json"
    out_pred = paths.gym / "clip_predictions.parquet"
    out_counts = paths.gym / "video_counts.parquet"
    if seed_disabled(params, "gym", "gym_evaluate", root, tables={out_pred: "clip_predictions", out_counts: "video_counts"},
                     json_files=[out_json], skips=True):
        return
    import pyarrow as pa

    from actparse.gym import LEVELS, load_joint, load_level, load_split, pathway_features, predict_joint, \
        predict_level, settings_from_params
    from actparse.metrics.bootstrap import counts_of
    from actparse.metrics.classification import hierarchical_accuracy

    s = settings_from_params(params)
    device = resolve_device(params)
    mdir = paths.models / "gym"
    singles = {}
    for lvl in LEVELS:
        singles[lvl], ck = load_level(mdir / f"{lvl}.pt", device)
        s.num_frames[lvl] = int(ck.get("num_frames", s.num_frames[lvl]))
    joint, jck = load_joint(mdir / "joint.pt", [singles[lvl] for lvl in LEVELS], device)
    hier, clips, frames, skips = load_split(params, root, "test")
    ledger = SkipLedger("gym_evaluate", root, what="test videos")
    for c in clips:
        ledger.tried(c.video)
    for r in skips:
        ledger.skip(r["video"], r["error"])
    ledger.check()
    if not clips:
        raise ValueError("gym: no test element clips could be loaded")
    classes = {lvl: hier.classes(lvl) for lvl in LEVELS}
    for lvl in LEVELS:
        if classes[lvl] != jck["classes"][lvl]:
            raise ValueError(f"{mdir / 'joint.pt'}: {lvl} classes differ from the annotation's; retrain (gym_train)")
    truth = {lvl: [classes[lvl][hier.labels_of(c.label)[lvl]] for c in clips] for lvl in LEVELS}
    probs = {("single", lvl): predict_level(singles[lvl], frames, s.num_frames[lvl], s, device) for lvl in LEVELS}
    feats = pathway_features([singles[lvl] for lvl in LEVELS], frames, [s.num_frames[lvl] for lvl in LEVELS], s, None, device)
    for lvl, p in predict_joint(joint.cpu(), feats).items():
        probs[("joint", lvl)] = p

    tables = []
    for (kind, lvl), p in probs.items():
        model = lvl if kind == "single" else "joint"
        top = p.argmax(1)
        tables.append(from_columns({
            "clip": [c.clip for c in clips], "video": [c.video for c in clips], "level": [lvl] * len(clips),
            "model": [model] * len(clips), "truth": truth[lvl], "label": [classes[lvl][i] for i in top],
            "score": p[np.arange(len(p)), top].astype(np.float32), "probs": [row.astype(np.float32) for row in p]},
            "clip_predictions"))
    write_table(pa.concat_tables(tables), out_pred, "clip_predictions")
    # per video and true class, the right predictions of every model and level (bootstrap over videos)
    keys, vids, cls, right = [], [], [], []
    for (kind, lvl), p in probs.items():
        keys += [f"{kind}.{lvl}"] * len(clips)
        vids += [c.video for c in clips]
        cls += truth[lvl]
        right += [classes[lvl][i] == t for i, t in zip(p.argmax(1), truth[lvl])]
    write_table(from_columns(counts_of(vids, keys, cls, right).to_dict("list"), "video_counts"), out_counts,
                "video_counts")

    single = {lvl: _acc(truth[lvl], probs[("single", lvl)], classes[lvl]) for lvl in LEVELS}
    jres = {lvl: _acc(truth[lvl], probs[("joint", lvl)], classes[lvl]) for lvl in LEVELS}
    el_pred = [classes["element"][i] for i in probs[("single", "element")].argmax(1)]
    derived = hierarchical_accuracy(truth, {"element": el_pred}, hier.parents())
    metrics = {"enabled": True, "test_clips": len(clips),
               "classes": {lvl: len(classes[lvl]) for lvl in LEVELS},
               "single": single, "joint": jres,
               "gain_top1": {lvl: round(jres[lvl]["top1"] - single[lvl]["top1"], 2) for lvl in LEVELS},
               "gain_mean_class": {lvl: round(jres[lvl]["mean_class"] - single[lvl]["mean_class"], 2) for lvl in LEVELS},
               "element_model_up_the_hierarchy": {lvl: {k: round(100 * v, 2) for k, v in derived[lvl].items()}
                                                  for lvl in ("set", "event")}}
    write_json(metrics, out_json)
    ledger.write()
    log.info("top-1 single %s | joint %s -> %s", ", ".join(f"{lvl} {single[lvl]['top1']}" for lvl in LEVELS),
             ", ".join(f"{lvl} {jres[lvl]['top1']}" for lvl in LEVELS), out_json)


def main(argv=None):
    return stage_main("gym_evaluate", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
