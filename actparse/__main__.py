"""The ``actparse`` command: score files in the official challenge formats, link tubes.

  actparse eval tps --gt GT_DIR --parts pred_part_result.json --videos pred_vid_result.json
  actparse eval multisports --gt multisports_GT.pkl --dets frame_detections.pkl [--dets video_detections.pkl]
  actparse eval finegym --gt labels.json --pred predictions.json
  actparse link --dets DETS (.parquet "action_detections" | MOC .pkl | frame_detections.pkl) --out video_detections.pkl
  actparse import {kinetics-tps,multisports,finegym} SRC --out DATA_ROOT [--videos symlink|copy|hardlink|reference]
  actparse export-official {kinetics-tps,multisports,finegym} DATA_ROOT --out DST   (official download layouts)
  actparse compare REV_A REV_B [--html report.html]   (params, metrics, plots, models and artifact diffs of two
      revisions; see actparse.compare)
  actparse metrics [FILE.json ...]   (the pipeline's metrics as one readable table; default metrics/*.json)
  actparse ablate [--rows ...] [--dry-run] [--table-only] [--readme docs/results.md]   (seed 001 ablations as DVC
      experiments and their Table-1-shaped table; see actparse.ablation)
  actparse infer VIDEO_DIR --models MODELS_DIR --out OUT_DIR [--device auto|cpu|cuda]   (every output for a
      folder of videos from trained models; see actparse.infer and docs/infer.md)

Each ``eval`` prints one JSON object of metrics on stdout. ``python -m actparse`` works the same.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def _clean(obj):
    """JSON-safe: NumPy scalars to Python, NaN to null."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        x = float(obj)
        return None if math.isnan(x) else x
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _json_kind(x) -> str:
    """What a JSON value is, in words (for error messages)."""
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "a boolean"
    return {dict: "an object", list: "a list", str: "a string"}.get(type(x), "a number")


def _load_json(path: str | Path):
    from .metrics.tps import read_json_file

    return read_json_file(path)


# ------------------------------------------------------------------------------------- eval tps
def cmd_eval_tps(args) -> dict:
    from .metrics import tps

    gt_dir = Path(args.gt)
    gt_part = gt_dir / "gt_part_result.json" if gt_dir.is_dir() else gt_dir
    gt_vid_path = gt_dir / "gt_vid_result.json" if gt_dir.is_dir() else Path(args.gt_videos or "")
    if not gt_dir.is_dir() and not args.gt_videos:
        raise ValueError("--gt is a file: give the video ground truth with --gt-videos")
    if not gt_part.exists():
        raise FileNotFoundError(f"{gt_part}: file not found")
    pred_dir = Path(args.pred) if args.pred else None
    parts = Path(args.parts) if args.parts else (pred_dir / "pred_part_result.json" if pred_dir else None)
    vids = Path(args.videos) if args.videos else (pred_dir / "pred_vid_result.json" if pred_dir else None)
    if parts is None or vids is None:
        raise ValueError("give --parts and --videos (or --pred DIR holding both)")
    opts = tps.TPSOptions(human_iou=args.human_iou, part_iou=args.part_iou,
                          plus_one_iou=not args.continuous_iou, wrap_proposals=not args.proposals,
                          part_iou_inclusive=not args.readme_rules, psc_inclusive=not args.readme_rules,
                          check_limits=not args.no_limits,
                          missing_video="zero" if args.missing_zero else "error")
    # the part-result files are scanned from their bytes (actparse.metrics.tps_scan), or loaded
    # with json where the scanner does not take them: the same numbers either way
    res = tps.evaluate_files(gt_vid_path, gt_part, vids, parts, opts)
    out = res.as_dict()
    if args.per_video:
        out["per_video"] = {v: {"psc": float(p), "correct": bool(c)} for v, p, c in zip(res.videos, res.psc, res.correct)}
    return out


# ----------------------------------------------------------------------------- eval multisports
def cmd_eval_multisports(args) -> dict:
    from .formats import read_pickle
    from .metrics import multisports as ms

    gt = read_pickle(args.gt)
    if not isinstance(gt, dict) or "gttubes" not in gt:
        raise ValueError(f"{args.gt}: not a MultiSports ground-truth pkl (no 'gttubes')")
    ms.check_ground_truth(gt, args.gt)
    frame_dets = video_dets = None
    for path in args.dets:
        obj = read_pickle(path)
        if isinstance(obj, dict):
            video_dets = ms.as_video_detections(obj, path)
        else:
            frame_dets = ms.as_frame_detections(obj, path)
    if frame_dets is None and video_dets is None:
        raise ValueError("give --dets frame_detections.pkl and/or video_detections.pkl")
    excluded = () if args.all_labels else ms.OFFICIAL_EXCLUDED_LABELS
    out = ms.evaluate(gt, frame_dets, video_dets, args.variant, excluded,
                      "empty" if args.missing_empty else "error", True if args.temporal_plus_one else None)
    if args.per_class:
        if frame_dets is not None:
            out["frame_ap@0.5"] = ms.frame_ap(gt, frame_dets, 0.5, args.variant, excluded).as_dict()["ap"]
        if video_dets is not None:
            r = ms.video_ap(gt, video_dets, [0.2, 0.5], args.variant, excluded, "empty" if args.missing_empty else "error")
            out["video_ap@0.2"] = r[0.2].as_dict()["ap"]
            out["video_ap@0.5"] = r[0.5].as_dict()["ap"]
    return out


# -------------------------------------------------------------------------------- eval finegym
def cmd_eval_finegym(args) -> dict:
    from .metrics.classification import hierarchical_accuracy

    gt = _load_json(args.gt)
    pred = _load_json(args.pred)
    for path, obj in ((args.gt, gt), (args.pred, pred)):
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: not an object mapping clip -> {{level: label}} (the top level is "
                             f"{_json_kind(obj)})")
        for clip, labels in obj.items():
            if not isinstance(labels, dict):
                raise ValueError(f"{path}: clip {clip!r} maps to {_json_kind(labels)}, not an object "
                                 f"{{level: label}}")
            bad = next((lvl for lvl, x in labels.items() if isinstance(x, bool) or not isinstance(x, (str, int))), None)
            if bad is not None:
                raise ValueError(f"{path}: clip {clip!r} level {bad!r}: a label must be a string or an integer, "
                                 f"got {json.dumps(labels[bad])[:40]}")
    clips = list(gt)
    missing = [c for c in clips if c not in pred]
    if missing:
        raise ValueError(f"{args.pred}: no prediction for {len(missing)} clip(s), e.g. {missing[0]!r}")
    levels = sorted({lvl for c in clips for lvl in gt[c]})
    short = next((c for c in clips if len(gt[c]) < len(levels)), None)
    if short is not None:
        raise ValueError(f"{args.gt}: clip {short!r} has no label for level(s) "
                         f"{sorted(set(levels) - set(gt[short]))} (other clips have them)")
    y_true = {lvl: [gt[c].get(lvl) for c in clips] for lvl in levels}
    y_pred = {lvl: [pred[c].get(lvl) for c in clips] for lvl in levels}
    return {"n_clips": len(clips), **hierarchical_accuracy(y_true, y_pred)}


# ------------------------------------------------------------------------------------------ link
def cmd_link(args) -> dict:
    import numpy as np

    from .formats import frame_detections_table, read_pickle, tubes_to_video_detections, write_pickle
    from dataclasses import asdict

    from .link import LinkParams, link_moc_layout, link_table, params_from
    from .params import load_params

    if args.params:
        section = dict(load_params(args.params)["link"])
    else:  # no params file: MOC's own linking values (LinkParams' defaults, the official code's)
        section = asdict(LinkParams())
    flags = {}
    for key in ("nms_iou", "top_k", "link_iou", "min_score", "min_length", "k", "tube_nms_iou"):
        val = getattr(args, key)
        if val is not None:
            flags[key] = section[key] = val
    # checked like params.yaml (types, bounds, NaN)
    where = " + ".join(([args.params] if args.params else []) + (["options " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in flags.items())] if flags else [])) or "actparse link"
    params = params_from({"_path": where, "link": section})
    src = Path(args.dets)
    if src.suffix == ".parquet":
        from .schemas import read_table

        dets = read_table(src, "action_detections")
        labels = args.labels.split(",") if args.labels else sorted(set(dets.column("label").to_pylist()))
        tubes = link_table(dets, params, args.stride, labels)
        out = tubes_to_video_detections(tubes, labels)
    else:
        obj = read_pickle(src)
        if isinstance(obj, dict):  # MOC layout {video: {frame: {label: (N, 5)}}}
            from .link import check_moc_layout

            check_moc_layout(obj, str(src))
            out = link_moc_layout(obj, None, params)
        else:  # official frame_detections (N, 8): needs video names and labels
            if not args.gt:
                raise ValueError("linking frame_detections.pkl needs --gt GT.pkl (video names and labels)")
            from .metrics.multisports import test_videos

            gt = read_pickle(args.gt)
            labels = list(gt["labels"])
            table = frame_detections_table(np.asarray(obj), test_videos(gt), labels)
            out = tubes_to_video_detections(link_table(table, params, args.stride, labels), labels)
    write_pickle(out, args.out)
    return {"out": str(args.out), "tubes": int(sum(len(v) for v in out.values())),
            "labels_with_tubes": int(sum(1 for v in out.values() if v))}


def _flat(obj, prefix: str = ""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flat(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, obj


def print_metrics(files) -> int:
    """Print metrics JSON files (default: metrics/*.json, as `dvc metrics show` reads them) as rows
    ``file  key  value``; switched-off seed systems ({"enabled": false}) print one line each."""
    from pathlib import Path

    # the ablation grids' stores and tables (metrics/ablation*.json) are not this run's metrics:
    # `actparse ablate --table-only` prints them; name one to print it here
    paths = [Path(f) for f in files] or [p for p in sorted(Path("metrics").glob("*.json"))
                                         if not p.name.startswith("ablation")]
    if not paths:
        print("actparse: error: no metrics files (run `dvc repro` first)", file=sys.stderr)
        return 2
    rows = []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"actparse: error: {path}: {exc}", file=sys.stderr)
            return 2
        if not isinstance(data, dict):
            print(f"actparse: error: {path}: not a metrics object mapping names to values (the top level is "
                  f"{_json_kind(data)})", file=sys.stderr)
            return 2
        if data.get("enabled") is False:
            rows.append((str(path), "enabled", "false (switched off)"))
            continue
        for key, value in _flat(data):
            if isinstance(value, list):
                continue
            rows.append((str(path), key, f"{value:.4f}" if isinstance(value, float) else str(value)))
    if not rows:
        print(f"actparse: error: {', '.join(map(str, paths))}: no metric values", file=sys.stderr)
        return 2
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    for f, k, v in rows:
        print(f"{f:<{w0}}  {k:<{w1}}  {v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="actparse", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ev = sub.add_parser("eval", help="score official-format files").add_subparsers(dest="track", required=True)

    t = ev.add_parser("tps", help="Kinetics-TPS score (official eval_detection.py semantics)")
    t.add_argument("--gt", required=True, help="folder with gt_part_result.json + gt_vid_result.json (or the part file)")
    t.add_argument("--gt-videos", help="gt_vid_result.json when --gt is a file")
    t.add_argument("--parts", help="pred_part_result.json")
    t.add_argument("--videos", help="pred_vid_result.json")
    t.add_argument("--pred", help="folder holding both prediction files")
    t.add_argument("--human-iou", type=float, default=0.5)
    t.add_argument("--part-iou", type=float, default=0.3)
    t.add_argument("--readme-rules", action="store_true", help="'>' thresholds as the README says (official code: '>=')")
    t.add_argument("--proposals", action="store_true", help="README proposals (lists, 1/N_p credit) instead of the official wrapping")
    t.add_argument("--continuous-iou", action="store_true", help="IoU without the +1 pixel convention")
    t.add_argument("--no-limits", action="store_true", help="skip the official 10-humans / 5-proposals asserts")
    t.add_argument("--missing-zero", action="store_true", help="a video missing from the predictions scores 0 (official: error)")
    t.add_argument("--per-video", action="store_true")
    t.set_defaults(func=cmd_eval_tps)

    m = ev.add_parser("multisports", help="MultiSports frame-mAP / video-mAP (official evaluate_multisports.py)")
    m.add_argument("--gt", required=True, help="ground-truth pkl")
    m.add_argument("--dets", required=True, action="append", help="frame_detections.pkl and/or video_detections.pkl")
    m.add_argument("--variant", choices=("multisports", "act", "moc"), default="multisports",
                   help="multisports: evaluate_multisports.py; act: the ACT-derived challenge evaluate.py; moc: "
                        "MOC-Detector's ACT.py (as act, but a label without ground truth counts AP 0)")
    m.add_argument("--all-labels", action="store_true", help="also score the 6 labels the official code skips")
    m.add_argument("--missing-empty", action="store_true", help="a label absent from video detections has none (official: error)")
    m.add_argument("--temporal-plus-one", action="store_true",
                   help="frame spans as last - first + 1 (fixes the MultiSports one-frame-overlap quirk)")
    m.add_argument("--per-class", action="store_true")
    m.set_defaults(func=cmd_eval_multisports)

    f = ev.add_parser("finegym", help="FineGym top-1 / mean-class accuracy per hierarchy level")
    f.add_argument("--gt", required=True, help="JSON {clip: {level: label}}")
    f.add_argument("--pred", required=True, help="JSON {clip: {level: label}}")
    f.set_defaults(func=cmd_eval_finegym)

    lk = sub.add_parser("link", help="MOC tube linking of per-frame detections -> official video_detections.pkl")
    lk.add_argument("--dets", required=True, help=".parquet (action_detections), MOC-layout .pkl or frame_detections.pkl")
    lk.add_argument("--out", required=True, help="output video_detections.pkl")
    lk.add_argument("--gt", help="GT pkl (video names and labels for frame_detections.pkl)")
    lk.add_argument("--labels", help="comma-separated label order for a .parquet input")
    lk.add_argument("--params", help="params.yaml whose `link` section sets the thresholds")
    lk.add_argument("--stride", type=int, help="decoding stride of the frames (default: inferred)")
    for key, typ in (("nms_iou", float), ("top_k", int), ("link_iou", float), ("min_score", float),
                     ("min_length", int), ("k", int), ("tube_nms_iou", float)):
        lk.add_argument("--" + key.replace("_", "-"), dest=key, type=typ)
    lk.set_defaults(func=cmd_link)

    # official data sets -> data root, and back (actparse.importers; docs/datasets.md)
    from .importers.cli import add_subparsers as add_import_subparsers

    add_import_subparsers(sub)
    # commands with their own parsers (main() hands them their arguments; `actparse CMD --help`)
    for name, text in (("compare", "params, metrics, plots and artifact diffs of two revisions (HTML report)"),
                       ("metrics", "the pipeline's metrics as one table (default metrics/*.json)"),
                       ("ablate", "seed 001's ablation grid as DVC experiments, and its table"),
                       ("infer", "every output for a folder of videos, from trained models")):
        sub.add_parser(name, help=text, add_help=False)
    return ap


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["compare"]:  # its own parser and output (tables + HTML), see actparse/compare.py
        from .compare import main as compare_main

        return compare_main(argv[1:])
    if argv[:1] == ["metrics"]:
        if {"-h", "--help"} & set(argv[1:]):
            print("usage: actparse metrics [FILE.json ...]\n\nThe pipeline's metrics as rows `file  key  value` "
                  "(default: metrics/*.json, as `dvc metrics show` reads them, except the ablation grids' "
                  "metrics/ablation*.json: `actparse ablate --table-only` prints those).")
            return 0
        return print_metrics(argv[1:])
    if argv[:1] == ["ablate"]:
        from .ablation import main as ablate_main

        return ablate_main(argv[1:])
    if argv[:1] == ["infer"]:  # inference on a folder of videos (actparse/infer.py)
        from .infer import main as infer_main

        return infer_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        out = args.func(args)
    except (OSError, ValueError) as exc:  # OSError: files (not found, unreadable, disk full), named
        print(f"actparse: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(_clean(out), indent=None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
