"""``actparse infer``: every per-frame and per-video output for a folder of videos, from trained models.

    actparse infer VIDEO_DIR --models MODELS_DIR --out OUT_DIR [--device auto|cpu|cuda] [--params P]

``MODELS_DIR`` is laid out as ``artifacts/models`` after ``dvc repro``::

    person_detector/model.pt        ultralytics YOLO, one class (train_info.json beside it: imgsz)
    pose/model.pt                   actparse HRNet checkpoint (arch, input size, weights)
    part_detector/model.pt          ultralytics YOLO, the 10 Kinetics-TPS parts (train_info.json: paint settings)
    csn/model.json + <variant>.pt   the CSN variants with their seven heads and class lists

``OUT_DIR`` becomes a work folder: ``OUT_DIR/params.yaml`` is ``P`` (default: the project's
``params.yaml``) with ``data.root`` at ``VIDEO_DIR`` and every model given by path, so that each
training stage copies its model instead of training; then the DAG's stages (read from ``dvc.yaml``,
in its topological order, ``synth`` left out) run in this process with ``--root OUT_DIR``, exactly
as ``dvc repro`` runs them. Outputs land under ``OUT_DIR/artifacts``, ``OUT_DIR/metrics`` and
``OUT_DIR/plots``; ``OUT_DIR/infer_summary.json`` lists them. A video that cannot be decoded is a
recorded skip (``OUT_DIR/artifacts/skips/``), not an error. See docs/infer.md.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# MODELS_DIR entries: (path, what it is)
MODEL_FILES = (("person_detector/model.pt", "person detector (ultralytics YOLO .pt)"),
               ("pose/model.pt", "pose model (actparse HRNet checkpoint)"),
               ("part_detector/model.pt", "part detector (ultralytics YOLO .pt, 10 part classes)"),
               ("csn", "CSN folder (model.json and one <variant>.pt per variant)"))
# Seed systems that are off unless their models are trained in the same run; infer leaves them off.
SEED_SWITCHES = ("stad", "gym", "partattn")
# The outputs infer reports: (path under OUT_DIR, schema or None, what)
OUTPUTS = (("artifacts/frames.parquet", "frames", "decoded frames"),
           ("artifacts/persons.parquet", "persons", "person boxes"),
           ("artifacts/keypoints.parquet", "keypoints", "17 keypoints per person"),
           ("artifacts/refined_persons.parquet", "keypoints", "refined person boxes"),
           ("artifacts/parts.parquet", "parts", "body-part boxes"),
           ("artifacts/part_states.parquet", "part_states", "part states"),
           ("artifacts/video_predictions.parquet", "video_predictions", "video action + part-group labels"),
           ("artifacts/tubes.parquet", "tubes", "action tubes"),
           ("artifacts/submission/pred_part_result.json", None, "Kinetics-TPS part submission"),
           ("artifacts/submission/pred_vid_result.json", None, "Kinetics-TPS video submission"),
           ("artifacts/submission/frame_detections.pkl", None, "MultiSports frame detections"),
           ("artifacts/submission/video_detections.pkl", None, "MultiSports video detections"),
           ("metrics/metrics.json", None, "metrics"))


class InferError(ValueError):
    """Bad input to ``actparse infer`` (missing folder or model, a failed stage)."""


def check_models(models_dir: str | Path) -> dict:
    """Check the layout of ``models_dir``; one error naming everything that is missing."""
    from .csn import read_model_manifest

    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise InferError(f"{models_dir}: models folder not found")
    missing = [f"{rel} ({what})" for rel, what in MODEL_FILES
               if not ((models_dir / rel).is_file() if rel.endswith(".pt") else (models_dir / rel).is_dir())]
    if missing:
        raise InferError(f"{models_dir}: not a models folder laid out as artifacts/models; missing: "
                         + "; ".join(missing))
    try:
        manifest = read_model_manifest(models_dir / "csn")
    except (FileNotFoundError, ValueError) as exc:
        raise InferError(str(exc)) from None
    absent = [f for f in manifest["files"].values() if not (models_dir / "csn" / f).is_file()]
    if absent:
        raise InferError(f"{models_dir / 'csn'}: checkpoint(s) {absent} named by model.json are missing")
    return {"csn": manifest, "person_detector": _train_info(models_dir / "person_detector"),
            "part_detector": _train_info(models_dir / "part_detector")}


def _train_info(model_dir: Path) -> dict:
    path = model_dir / "train_info.json"
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InferError(f"{path}: not valid JSON: {exc}") from None
    return info if isinstance(info, dict) else {}


def infer_params(base: dict, video_dir: Path, models_dir: Path, device: str, found: dict) -> dict:
    """``base`` params with the data at ``video_dir`` and every model of ``models_dir`` given by path.

    What a model was trained with and inference must match is taken from the model folder: the
    detectors' input size, the part detector's painting settings, the CSN variants (the pose
    model's input size and the CSN clip settings are read from the checkpoints by the stages)."""
    p = copy.deepcopy({k: v for k, v in base.items() if not k.startswith("_")})
    models_dir = models_dir.resolve()
    p["device"] = device
    p.setdefault("data", {})["root"] = str(video_dir.resolve())
    det = p.setdefault("person_detector", {})
    det.update(weights=str(models_dir / "person_detector" / "model.pt"), finetune=False)
    if isinstance(found["person_detector"].get("imgsz"), int):
        det["imgsz"] = found["person_detector"]["imgsz"]
    p.setdefault("keypoints", {}).update(checkpoint=str(models_dir / "pose" / "model.pt"), epochs=0)
    parts = p.setdefault("parts", {})
    parts.update(weights=str(models_dir / "part_detector" / "model.pt"), finetune=False)
    info = found["part_detector"]
    for key, param in (("imgsz", "imgsz"), ("paint", "paint"), ("crop_size", "crop_size"),
                       ("crop_margin", "crop_margin"), ("kp_thr", "kp_thr"), ("dot_radius", "dot_radius")):
        if key in info and info[key] is not None:
            parts[param] = info[key]
    csn = p.setdefault("csn", {})
    csn.update(model=str(models_dir / "csn"), variants=list(found["csn"]["variants"]))
    for section in SEED_SWITCHES:
        if isinstance(p.get(section), dict):
            p[section]["enabled"] = False
    return p


def stage_plan(params_file: Path) -> list[str]:
    """The DAG's stages in topological order (``dvc.yaml`` beside the package), ``synth`` left out."""
    from .dag import load_dag

    if not (ROOT / "dvc.yaml").exists():
        raise InferError(f"{ROOT / 'dvc.yaml'}: the pipeline definition is not beside the actparse package")
    dag = load_dag(ROOT)
    return [s.name for s in dag if s.name != "synth" and s.module == f"stages.{s.name}"]


def run_stages(names: list[str], params_file: Path, out: Path) -> list[tuple[str, float]]:
    """Run each stage's ``main`` in this process (as ``python -m stages.<name> --params --root``)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    times = []
    for i, name in enumerate(names, 1):
        print(f"actparse infer: [{i}/{len(names)}] {name}", flush=True)
        t0 = time.time()
        mod = importlib.import_module(f"stages.{name}")
        try:
            rc = mod.main(["--params", str(params_file), "--root", str(out)])
        except Exception as exc:  # a bug, not bad input: keep the traceback, then one line
            traceback.print_exc()
            raise InferError(f"stage {name} crashed ({type(exc).__name__}: {exc})") from None
        if rc:
            raise InferError(f"stage {name} failed (exit {rc}); its error is printed above. "
                             f"Rerun it alone: python -m stages.{name} --params {params_file} --root {out}")
        times.append((name, round(time.time() - t0, 1)))
        print(f"actparse infer: [{i}/{len(names)}] {name} done in {times[-1][1]:.1f} s", flush=True)
    return times


def summarise(out: Path, stages: list[str] | None = None) -> dict:
    """What was written where: rows and videos per table, the submissions, metrics, skipped videos
    (each with the first stage, in ``stages`` order, that skipped it)."""
    from .schemas import read_table

    outputs = []
    for rel, schema, what in OUTPUTS:
        path = out / rel
        entry = {"path": rel, "what": what, "exists": path.exists()}
        if path.exists() and schema:
            t = read_table(path, schema, columns=["video"])
            entry.update(rows=t.num_rows, videos=len(set(t.column("video").to_pylist())))
        outputs.append(entry)
    skips: dict[str, dict] = {}
    rank = {n: i for i, n in enumerate(stages or [])}
    for path in sorted((out / "artifacts" / "skips").glob("*.parquet"), key=lambda q: (rank.get(q.stem, 1 << 30), q.stem)):
        for rec in read_table(path, "skips").to_pylist():
            skips.setdefault(rec["video"], {"video": rec["video"], "stage": rec["stage"], "error": rec["error"]})
    metrics_path = out / "metrics" / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return {"outputs": outputs, "skipped": list(skips.values()), "scored": bool(metrics.get("scored", True)),
            "metrics_note": metrics.get("note")}


def print_summary(summary: dict, out: Path, videos: int, seconds: float) -> None:
    print(f"\nactparse infer: {videos} video file(s) in {seconds:.0f} s; outputs under {out}")
    for o in summary["outputs"]:
        if not o["exists"]:
            print(f"  MISSING  {o['path']}")
        elif "rows" in o:
            print(f"  {o['path']:<44} {o['rows']:>8} rows, {o['videos']} video(s)  ({o['what']})")
        else:
            print(f"  {o['path']:<44} {'':>8}  ({o['what']})")
    if summary["metrics_note"]:
        print(f"  metrics: {summary['metrics_note']}")
    for s in summary["skipped"]:
        print(f"  skipped {s['video']} ({s['stage']}): {s['error']}")


def infer(video_dir: str | Path, models_dir: str | Path, out: str | Path, device: str = "auto",
          params: str | Path | None = None, decode_backend: str | None = None) -> dict:
    """Run every inference output for ``video_dir``; returns the summary (also in infer_summary.json)."""
    from .dataset import load_videos
    from .params import load_params
    from .atomic import write_json
    from .video import check_backend

    video_dir, models_dir, out = Path(video_dir), Path(models_dir), Path(out)
    if not video_dir.is_dir():
        raise InferError(f"{video_dir}: video folder not found")
    n_videos = load_videos(video_dir).num_rows  # clear error when it holds no video
    if decode_backend:
        check_backend(decode_backend)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InferError("--device cuda: no CUDA device is visible to torch (use --device cpu or auto)")
    found = check_models(models_dir)
    if (out.resolve() / "artifacts") in (models_dir.resolve(), *models_dir.resolve().parents):
        raise InferError(f"{models_dir}: lies inside {out / 'artifacts'}, which this run writes; "
                         f"give another --out, or copy the models out first")
    base_file = Path(params) if params else ROOT / "params.yaml"
    base = load_params(base_file)
    if decode_backend:
        base["decode"]["backend"] = decode_backend
    check_backend(base["decode"]["backend"])  # not installed: one line now, before any stage runs
    out.mkdir(parents=True, exist_ok=True)
    params_file = (out / "params.yaml").resolve()
    text = yaml.safe_dump(infer_params(base, video_dir, models_dir, device, found), sort_keys=False)
    params_file.write_text(f"# written by actparse infer from {base_file}: models from {models_dir.resolve()}\n{text}")
    names = stage_plan(params_file)
    print(f"actparse infer: {n_videos} video file(s) in {video_dir}, models from {models_dir}, "
          f"{len(names)} stages into {out}", flush=True)
    t0 = time.time()
    times = run_stages(names, params_file, out.resolve())
    summary = summarise(out, names)
    summary.update(video_dir=str(video_dir.resolve()), models=str(models_dir.resolve()), video_files=n_videos,
                   params=str(params_file), stage_seconds=dict(times))
    write_json(summary, out / "infer_summary.json")
    print_summary(summary, out, n_videos, time.time() - t0)
    return summary


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="actparse infer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video_dir", help="folder of videos (searched recursively; or a data root with videos.parquet)")
    ap.add_argument("--models", required=True, help="models folder laid out as artifacts/models after dvc repro")
    ap.add_argument("--out", required=True, help="work and output folder (created)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: auto")
    ap.add_argument("--params", help="params file for the inference settings (default: the project's params.yaml)")
    ap.add_argument("--decode-backend", choices=("decord", "pyav", "torchcodec"),
                    help="video decoder (sets decode.backend; default: the params file's; the frames are the same)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .cli import setup_offline_env
    from .params import InputError, ParamError

    setup_offline_env()
    try:
        summary = infer(args.video_dir, args.models, args.out, args.device, args.params, args.decode_backend)
    except (InferError, ParamError, InputError, FileNotFoundError, ValueError) as exc:
        print(f"actparse infer: error: {exc}", file=sys.stderr)
        return 2
    missing = [o["path"] for o in summary["outputs"] if not o["exists"]]
    if missing:
        print(f"actparse infer: error: outputs missing: {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
