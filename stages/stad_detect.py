"""Score every person box of the test videos with the seed 003 action detector (frame-level detections).

Reads:  artifacts/models/stad/model.pt (and phase1.pt), <data.root>/videos.parquet + test videos,
        person boxes by stad.boxes: refined -> artifacts/refined_persons.parquet, detected ->
        artifacts/persons.parquet (both: boxes with score >= stad.min_score), gt -> ground-truth boxes
        on every stad.stride-th frame (an oracle for ablations).
Writes: artifacts/stad/action_detections.parquet         (schema "action_detections"): one row per
          person box per class, score = sigmoid probability of the final model
        artifacts/stad/action_detections_phase1.parquet  the same for the phase-1 model (before
          decoupled learning; identical model when stad.decoupled is false)
        artifacts/skips/stad_detect.parquet              test videos that could not be decoded
With stad.enabled false both tables are written empty.
Params: stad.enabled, stad.boxes, stad.min_score, stad.stride, stad.short_side, stad.batch_size, device,
        stad.test_scales (null = [stad.short_side]; seed 003: [256, 360]) and stad.test_flip (also the
        mirrored video): the sigmoid scores of every scale (and flip) are averaged.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from actparse.params import get, resolve_device
from actparse.paths import Paths, data_root
from actparse.schemas import from_columns, from_rows, write_table
from actparse.stage import SkipLedger, progress, seed_disabled, stage_log, stage_main

log = stage_log("stad_detect")
COLUMNS = ("video", "frame", "person", "label", "box", "score")


def _rows(video: str, frames, persons, boxes, probs, classes) -> dict:
    cols = {k: [] for k in COLUMNS}
    for fr, ps, bs, pr in zip(frames, persons, boxes, probs):
        for p, b, sc in zip(ps, bs, pr):
            for k, c in enumerate(classes):
                cols["video"].append(video)
                cols["frame"].append(int(fr))
                cols["person"].append(int(p))
                cols["label"].append(c)
                cols["box"].append(np.asarray(b, np.float32))
                cols["score"].append(float(sc[k]))
    return cols


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    out_final = paths.stad / "action_detections.parquet"
    out_p1 = paths.stad / "action_detections_phase1.parquet"
    if seed_disabled(params, "stad", "stad_detect", root, skips=True,
                     tables={out_final: "action_detections", out_p1: "action_detections"}):
        return
    import pyarrow as pa

    from actparse.clips import load_video
    from actparse.dataset import BOX_SOURCES, load_person_boxes, load_videos, video_path
    from actparse.stad import int_list, load_model, predict
    from actparse.video import VideoError, decode_backend

    source = get(params, "stad.boxes", str, choices=BOX_SOURCES)
    min_score = get(params, "stad.min_score", float, min_value=0.0)
    stride = get(params, "stad.stride", int, min_value=1)
    short_side = get(params, "stad.short_side", int, min_value=16)
    device = resolve_device(params)
    mdir = paths.models / "stad"
    final, ck = load_model(mdir / "model.pt", device)
    phase1, _ = load_model(mdir / "phase1.pt", device) if (mdir / "phase1.pt").exists() else (final, None)
    shared = {k: v for k, v in phase1.state_dict().items() if not k.startswith("head.classifier.")}
    mine = final.state_dict()
    if any(not np.array_equal(v.cpu().numpy(), mine[k].cpu().numpy()) for k, v in shared.items()):
        raise ValueError(f"{mdir}: phase1.pt and model.pt differ outside the classifier (not one stad_train run?)")
    classes = ck["classes"]
    from actparse.stad import STADSettings

    s = STADSettings(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in ck["extra"]["settings"].items()})
    test_scales = int_list(params, "stad.test_scales", min_value=16) or (short_side,)
    test_flip = get(params, "stad.test_flip", bool)
    decode_side = max(test_scales)
    if ck["extra"].get("short_side") and ck["extra"]["short_side"] != short_side:
        log.warning("stad: model trained at short side %s, running at %s", ck["extra"]["short_side"], short_side)

    droot = data_root(params, root)
    videos = load_videos(droot).to_pandas()
    test = videos[videos["split"] == "test"].reset_index(drop=True)
    boxes = load_person_boxes(source, root, droot, test["video"].tolist(), stride, min_score)
    by_video = {v: g for v, g in boxes.groupby("video", sort=False)}
    tables = {"final": [], "phase1": []}
    ledger = SkipLedger("stad_detect", root, what="test videos")
    for row in progress(list(test.itertuples(index=False)), "stad_detect"):
        g = by_video.get(row.video)
        if g is None:
            continue
        ledger.tried(row.video)
        try:
            v = load_video(video_path(droot, row.path), decode_side, decode_backend(params))
        except (VideoError, ValueError) as exc:
            ledger.skip(row.video, exc)
            continue
        scale = v.shape[1] / float(row.height or v.shape[1])
        frames, persons, obox = [], [], []
        for fr, gf in g.groupby("frame", sort=True):
            frames.append(int(fr))
            persons.append(gf["person"].to_numpy())
            obox.append(np.stack(gf["box"].to_numpy()).astype(np.float64))
        # phase 2 retrains only the classifier: both models share every other weight
        probs_final, probs_p1 = predict_views(v, frames, [b * scale for b in obox], test_scales, test_flip,
                                              lambda vs, bx: predict(final, vs, frames, bx, s, device, classifiers=[
                                                  final.head.classifier, phase1.head.classifier]))
        tables["final"].append(from_columns(_rows(row.video, frames, persons, obox, probs_final, classes),
                                            "action_detections"))
        tables["phase1"].append(from_columns(_rows(row.video, frames, persons, obox, probs_p1, classes),
                                             "action_detections"))
    ledger.check(droot)
    for name, path in (("final", out_final), ("phase1", out_p1)):
        t = pa.concat_tables(tables[name]) if tables[name] else from_rows([], "action_detections")
        write_table(t, path, "action_detections")
    ledger.write()
    n = sum(t.num_rows for t in tables["final"])
    log.info("%d test videos, %d detections (%s boxes) -> %s", len(test), n, source, paths.stad)


def predict_views(video: np.ndarray, frames: list, boxes: list, scales, flip: bool, score):
    """Scores averaged over the test views of seed 003: ``video`` (decoded at the largest of ``scales``)
    resized to each short side of ``scales``, and, with ``flip``, each also mirrored (boxes moved
    along). ``score(video, boxes)`` returns a list of per-classifier lists of (P_f, K) arrays."""
    from actparse.clips import resize_clip
    from actparse.stad import flip_boxes

    side0 = min(video.shape[1:3])
    total, n = None, 0
    for side in scales:
        vs = video if side == side0 else resize_clip(video, side)
        f = min(vs.shape[1:3]) / float(side0)
        bx = [b * f for b in boxes] if f != 1.0 else boxes
        views = [(vs, bx)] + ([(vs[:, :, ::-1], [flip_boxes(b, vs.shape[2]) for b in bx])] if flip else [])
        for vv, bb in views:
            out = score(vv, bb)
            total = out if total is None else [[a + b for a, b in zip(ta, oa)] for ta, oa in zip(total, out)]
            n += 1
    if n > 1:
        total = [[a / n for a in t] for t in total]
    return total


def main(argv=None):
    return stage_main("stad_detect", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
