"""Stage throughputs of the DAG under a params preset (by default the GPU preset, params.gpu.yaml).

    python -m benchmarks.gpu_preset                      # params.yaml + params.gpu.yaml, full epochs
    python -m benchmarks.gpu_preset --epochs 2 --json tmp/gpu_preset.json
    python -m benchmarks.gpu_preset --preset none --device cpu --epochs 1   # the CPU default, shortened

Runs the default DAG's stages one after another (``python -m stages.<name> --root WORK``, the same
commands as dvc.yaml) in a work folder of its own, so neither ``params.yaml`` nor ``artifacts/`` of
the project is touched, and prints one row per stage: wall time and items per second (frames,
person crops, training images or clips, as each stage counts its work). Training stages also get
the rate over their own training loop (the seconds they record in ``train_info.json``), which leaves
out process start, data loading and the final validation.

``--epochs N`` sets every training stage's epoch count to N: a short run that measures training
throughput without training to convergence (its metrics then mean nothing). It also sets
``person_detector.conf: 0.001`` (every frame gets ``max_det`` person boxes, so the stages after the
detector have work to time) and ``parts.train_persons: gt``. ``--data DIR`` reuses a
rendered synthetic set (default: ``artifacts/synth`` when it exists; else the synth stage runs).
``--set section.key=value`` overrides any param (YAML value), after the preset. ``--stages a,b``
runs only those stages (``part_labels,train_csn,csn`` need nothing but the data).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actparse.params import ParamError, apply_preset  # noqa: E402

# The default DAG in dvc.yaml order (the seed stages stad_*, gym_*, partattn_* are off by default).
STAGES = ("synth", "decode", "train_person_detector", "detect_persons", "train_pose", "keypoints",
          "refine_boxes", "train_part_detector", "detect_parts", "part_labels", "train_csn", "csn",
          "part_states", "link_tubes", "evaluate")
# section.key of each training stage's epoch count
EPOCH_KEYS = ("person_detector.epochs", "keypoints.epochs", "parts.epochs", "csn.epochs")
# What --epochs also sets: a detector trained for a few epochs finds (almost) no person at the
# default score threshold, which would leave the downstream stages without work to time. At 0.001
# each frame gets its max_det boxes; the part detector trains on GT boxes (no match needed).
SHORT_RUN = {"person_detector.conf": 0.001, "parts.train_persons": "gt"}


def set_key(params: dict, dotted: str, value) -> None:
    node = params
    *path, last = dotted.split(".")
    for k in path:
        if not isinstance(node.get(k), dict):
            raise SystemExit(f"gpu_preset: --set {dotted}: section {k!r} is not in the params")
        node = node[k]
    node[last] = value


def build_params(base: Path, preset: str, device: str | None, epochs: int | None,
                 sets: list[str]) -> dict:
    params = yaml.safe_load(base.read_text()) or {}
    for name in ([] if preset == "none" else [p for p in preset.split(",") if p]):  # a,b: b laid over a
        overlay = yaml.safe_load(Path(name).read_text()) or {}
        try:
            params = apply_preset(params, overlay, name)
        except ParamError as exc:
            raise SystemExit(f"gpu_preset: {exc} ({base})") from None
    if device:
        params["device"] = device
    if epochs is not None:
        for key in EPOCH_KEYS:
            set_key(params, key, int(epochs))
        for key, value in SHORT_RUN.items():
            set_key(params, key, value)
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"gpu_preset: --set {item!r}: expected section.key=value")
        set_key(params, key, yaml.safe_load(raw))
    return params


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows if path.exists() else 0


def _info(work: Path, model: str) -> dict:
    p = work / "artifacts" / "models" / model / "train_info.json"
    return json.loads(p.read_text()) if p.exists() else {}


def stage_work(name: str, work: Path, params: dict) -> tuple[float, str, float | None]:
    """(items, unit, seconds of the stage's own training loop or None) for one finished stage."""
    art = work / "artifacts"
    if name == "decode":
        return _rows(art / "frames.parquet"), "frames", None
    if name == "detect_persons":
        return _rows(art / "frames.parquet"), "frames", None
    if name in ("train_person_detector", "train_part_detector"):
        info = _info(work, "person_detector" if name == "train_person_detector" else "part_detector")
        n = info.get("train_images", 0) * info.get("epochs", 0)
        return n, "train images", info.get("train_seconds")
    if name == "train_pose":
        info = _info(work, "pose")
        return info.get("n_train_persons", 0) * info.get("epochs", 0), "train crops", info.get("train_time_s")
    if name == "keypoints":
        flip = 2 if params.get("keypoints", {}).get("flip_test") else 1
        return _rows(art / "persons.parquet") * flip, "person crops", None
    if name == "refine_boxes":
        return _rows(art / "keypoints.parquet"), "boxes", None
    if name == "detect_parts":
        return _rows(art / "refined_persons.parquet"), "person crops", None
    if name == "train_csn":
        info = _info(work, "csn")
        variants = info.get("variants", {})
        epochs = params.get("csn", {}).get("epochs", 0)
        secs = sum(v.get("seconds", 0.0) for v in variants.values()) or None
        return info.get("videos", 0) * epochs * max(1, len(variants)), "train clips", secs
    if name == "csn":
        csn = params.get("csn", {})
        import pyarrow.parquet as pq

        vids = pq.read_table(art / "video_predictions.parquet", columns=["video"]).column(0).unique()
        return len(vids) * int(csn.get("test_clips", 1)) * len(csn.get("variants", [])), "clips", None
    if name in ("part_states",):
        return _rows(art / "part_states.parquet"), "part boxes", None
    if name == "link_tubes":
        return _rows(art / "refined_persons.parquet"), "person boxes", None
    return 0, "", None


def gpu_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
        return f"CPU, {os.cpu_count()} cores (torch {torch.__version__})"
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        return f"unknown ({exc})"


def run(args) -> dict:
    work = Path(args.work).resolve()
    if work.exists():
        shutil.rmtree(work)
    (work / "artifacts").mkdir(parents=True)
    params = build_params(Path(args.base), args.preset, args.device, args.epochs, args.set)
    stages = list(STAGES)
    data = Path(args.data) if args.data else (ROOT / "artifacts" / "synth")
    if data.is_dir() and (data / "videos.parquet").exists():
        shutil.copytree(data, work / "artifacts" / "synth")
        params.setdefault("data", {})["root"] = "artifacts/synth"
        stages.remove("synth")
    elif args.data:
        raise SystemExit(f"gpu_preset: --data {data}: no videos.parquet there")
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if args.stop_after:
        stages = stages[:stages.index(args.stop_after) + 1]
    if args.stages:
        wanted = args.stages.split(",")
        unknown = sorted(set(wanted) - set(STAGES))
        if unknown:
            raise SystemExit(f"gpu_preset: --stages: unknown stage(s) {unknown}; the stages are {list(STAGES)}")
        stages = [s for s in stages if s in wanted]
    report = {"device": gpu_name(), "host": platform.node(), "preset": args.preset, "epochs": args.epochs,
              "sets": args.set, "stages": [], "ok": True}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    t_all = time.time()
    for name in stages:
        t0 = time.time()
        cmd = [sys.executable, "-m", f"stages.{name}", "--root", str(work), "--params", str(work / "params.yaml")]
        log_path = work / f"{name}.log"
        with open(log_path, "w") as log:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        wall = time.time() - t0
        row = {"stage": name, "seconds": round(wall, 1), "rc": rc}
        if rc == 0:
            items, unit, loop_s = stage_work(name, work, params)
            row.update(items=items, unit=unit, per_second=round(items / wall, 1) if items else None)
            if loop_s:
                row.update(loop_seconds=round(loop_s, 1), loop_per_second=round(items / loop_s, 1))
        report["stages"].append(row)
        print(format_row(row), flush=True)
        if args.json:
            _write_json(Path(args.json), report)
        if rc != 0:
            report["ok"] = False
            tail = log_path.read_text(errors="replace")[-3000:]
            report["failed"] = {"stage": name, "log_tail": tail}
            print(f"--- {name} failed (rc {rc}); last lines of {log_path}:\n{tail}", flush=True)
            break
    report["total_seconds"] = round(time.time() - t_all, 1)
    metrics = work / "metrics" / "metrics.json"
    if metrics.exists():
        report["metrics"] = json.loads(metrics.read_text())
    if args.json:
        _write_json(Path(args.json), report)
    return report


def _write_json(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, path)


def format_row(row: dict) -> str:
    rate = f"{row['per_second']:.1f} {row['unit']}/s" if row.get("per_second") else ""
    loop = f" (training loop {row['loop_per_second']:.1f}/s)" if row.get("loop_per_second") else ""
    status = "" if row["rc"] == 0 else f"  FAILED rc {row['rc']}"
    return f"{row['stage']:<22} {row['seconds']:>8.1f} s  {rate}{loop}{status}"


def markdown(report: dict) -> str:
    lines = ["| stage | wall s | work | per second (wall) | per second (training loop) |",
             "|---|---:|---|---:|---:|"]
    for r in report["stages"]:
        work = f"{r['items']:,} {r['unit']}" if r.get("items") else ""
        lines.append(f"| {r['stage']} | {r['seconds']:.1f} | {work} | {r.get('per_second') or ''} | "
                     f"{r.get('loop_per_second') or ''} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="params.gpu.yaml", help="overlay on --base, several comma-separated (applied in order, e.g. "
                    "params.gpu.yaml,params.gpu.stad.yaml), or 'none' (default: params.gpu.yaml)")
    ap.add_argument("--base", default=str(ROOT / "params.yaml"), help="base params (default: the project's params.yaml)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="override params' device")
    ap.add_argument("--epochs", type=int, default=None, help="every training stage's epochs (a short throughput run)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param (repeatable)")
    ap.add_argument("--data", default=None, help="a rendered synthetic set to reuse (default: artifacts/synth if present)")
    ap.add_argument("--work", default=str(ROOT / "tmp" / "gpu_preset"), help="work folder (emptied first)")
    ap.add_argument("--stop-after", choices=STAGES, default=None, help="last stage to run")
    ap.add_argument("--stages", default=None,
                    help="only these stages (comma-separated, run in DAG order), e.g. part_labels,train_csn,csn "
                         "(their inputs must come from the data folder or earlier stages in the list)")
    ap.add_argument("--json", default=None, help="write the report here (after every stage)")
    args = ap.parse_args(argv)
    report = run(args)
    print(f"\n{report['device']}; preset {args.preset}; epochs {args.epochs or 'as in params'}; "
          f"total {report['total_seconds']:.0f} s")
    print(markdown(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
