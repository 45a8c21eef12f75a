"""Peak memory of the training stages as the number of train videos grows (on demand; CPU).

    python -m benchmarks.train_memory                      # 48 vs 480 train videos, this checkout
    python -m benchmarks.train_memory --code OTHER_CHECKOUT --out other.json   # the same for other code

A few synthetic videos are rendered once (``synth`` generator), then the data set is copied under
new names (symlinked video files, duplicated rows of videos.parquet / gt_persons.parquet and of the
FineGym annotations) to ``--base`` and ``--big`` train videos: memory depends on how many videos a
stage holds, not on what they show. train_csn, stad_train and gym_train then run, one subprocess
each, on both sets with one epoch and the smallest sampling knobs (params.yaml of the code under
test, plus the overrides below). Each subprocess's peak resident set size comes from ``os.wait4``.

Writes ``benchmarks/results/train_memory.json`` (or ``--out``) and prints, per stage, peak RSS at
both sizes and their ratio; target: ratio <= 1.15 (memory flat in the number of videos). Each row
also records a hash of the stage's checkpoints, so two runs (e.g. before / after a change to the
data path) can be checked for identical training results.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STAGES = ("train_csn", "stad_train", "gym_train")
MODEL_DIR = {"train_csn": "csn", "stad_train": "stad", "gym_train": "gym"}
# One epoch, the fewest samples per video, one CSN variant, one process: a few minutes on 2 cores.
OVERRIDES = {
    "seed": 0, "device": "cpu",
    "csn": {"variants": ["ir"], "epochs": 1, "lr_steps": [], "warmup_iters": 1, "train_workers": 1,
            "train_threads": 1},
    "stad": {"enabled": True, "epochs": 1, "samples_per_video": 1, "decoupled_epochs": 1,
             "decoupled_keyframes": 1, "lr_steps": []},
    "gym": {"enabled": True, "epochs": 1, "views_per_clip": 1, "joint_epochs": 1, "joint_views": 1},
}


def render_base(out: Path, n_train: int, seconds: float) -> None:
    from actparse.synth import SynthConfig, generate

    if (out / "videos.parquet").exists():
        return
    cfg = SynthConfig.from_params({"synth": dict(seed=5, n_train=n_train, n_test=2, min_seconds=seconds,
                                                 max_seconds=seconds, occluder_prob=0.0)})
    generate(cfg, out, progress=False)


def expand(base: Path, out: Path, n_train: int) -> None:
    """``base`` with its train videos repeated under new names up to ``n_train`` (files symlinked)."""
    import pandas as pd
    import pyarrow as pa

    from actparse.schemas import read_df, write_table

    if (out / "videos.parquet").exists():
        return
    (out / "videos").mkdir(parents=True, exist_ok=True)
    videos = read_df(base / "videos.parquet", "videos")
    gt = read_df(base / "gt_persons.parquet", "gt_persons")
    train = videos[videos["split"] == "train"].reset_index(drop=True)
    test = videos[videos["split"] == "test"].reset_index(drop=True)
    rows, gts, names = [], [], {}
    for k in range(n_train):
        src = train.iloc[k % len(train)]
        name = f"{src['video']}_c{k:04d}"
        names.setdefault(src["video"], []).append(name)
        (out / "videos" / f"{name}.mp4").symlink_to((base / src["path"]).resolve())
        rows.append({**src.to_dict(), "video": name, "path": f"videos/{name}.mp4"})
        gts.append(gt[gt["video"] == src["video"]].assign(video=name))
    for _, src in test.iterrows():
        (out / "videos" / f"{src['video']}.mp4").symlink_to((base / src["path"]).resolve())
        rows.append({**src.to_dict(), "path": f"videos/{src['video']}.mp4"})
        gts.append(gt[gt["video"] == src["video"]])
    write_table(pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False), out / "videos.parquet", "videos")
    write_table(pa.Table.from_pandas(pd.concat(gts, ignore_index=True), preserve_index=False), out / "gt_persons.parquet",
                "gt_persons")
    # FineGym layout: per-video events in the info json, element ids <video>_E_..._A_... in the lists
    src_gym, dst_gym = base / "annotations" / "finegym", out / "annotations" / "finegym"
    dst_gym.mkdir(parents=True)
    for f in (base / "annotations").iterdir():  # class lists (MultiSports pkl, TPS) as they are
        if f.name != "finegym":
            (out / "annotations" / f.name).symlink_to(f.resolve())
    info = json.loads((src_gym / "finegym_annotation_info.json").read_text())
    new_info = {}
    for v, ev in info.items():
        for name in names.get(v, [v] if v in set(test["video"]) else []):
            new_info[name] = ev
    (dst_gym / "finegym_annotation_info.json").write_text(json.dumps(new_info))
    for f in src_gym.iterdir():
        if f.name == "finegym_annotation_info.json":
            continue
        text = f.read_text()
        if "_element" in f.name:
            lines = []
            for line in text.splitlines():
                video = line.split("_E_", 1)[0]
                lines += [name + line[len(video):] for name in names.get(video, [video])]
            text = "\n".join(lines) + "\n"
        (dst_gym / f.name).write_text(text)


def _checkpoint_hash(folder: Path) -> str:
    """sha256 over every tensor of the stage's .pt files (by name), to compare two runs."""
    import torch

    h = hashlib.sha256()
    for f in sorted(folder.glob("*.pt")):
        tensors = {}

        def walk(obj, pre):
            if isinstance(obj, torch.Tensor):
                tensors[pre] = obj
            elif isinstance(obj, dict):
                for k, v in obj.items():
                    walk(v, f"{pre}.{k}")

        walk(torch.load(f, map_location="cpu", weights_only=True), f.name)
        for k in sorted(tensors):
            h.update(k.encode())
            h.update(tensors[k].detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def run_stage(code: Path, stage: str, params: dict, project: Path) -> dict:
    """Run ``stage`` of the checkout ``code`` in a fresh process; its peak RSS (MiB) and wall time."""
    project.mkdir(parents=True, exist_ok=True)
    (project / "params.json").write_text(json.dumps(params))
    prog = ("import json, sys; from pathlib import Path; from stages import {s}; "
            "{s}.run(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))").format(s=stage)
    # budget 0: train_csn reads clips on demand at every size (its default holds sets under 1 GiB of
    # decoded frames in memory, which is what this benchmark is not about)
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
           "ACTPARSE_DECODE_BUDGET_MB": os.environ.get("ACTPARSE_DECODE_BUDGET_MB", "0")}
    log = open(project / f"{stage}.log", "w")
    t = time.time()
    proc = subprocess.Popen([sys.executable, "-c", prog, str(project / "params.json"), str(project)], cwd=code,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    if proc.returncode != 0:
        tail = (project / f"{stage}.log").read_text()[-2000:]
        raise SystemExit(f"{stage} failed (exit {proc.returncode}) on {project}:\n{tail}")
    kib = usage.ru_maxrss if platform.system() != "Darwin" else usage.ru_maxrss / 1024
    return {"peak_rss_mib": round(kib / 1024, 1), "seconds": round(time.time() - t, 1),
            "weights_sha": _checkpoint_hash(project / "artifacts" / "models" / MODEL_DIR[stage])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout whose stages and params.yaml are measured")
    ap.add_argument("--base", type=int, default=48, help="train videos of the small set")
    ap.add_argument("--big", type=int, default=480, help="train videos of the large set")
    ap.add_argument("--render", type=int, default=8, help="distinct train videos actually rendered")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each rendered video")
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--work", type=Path, default=None, help="folder for the data sets (kept; reused if present)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_memory.json")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from actparse.params import load_params, merge_params

    work = a.work or Path(tempfile.mkdtemp(prefix="train_memory_"))
    code = a.code.resolve()
    render_base(work / "base", a.render, a.seconds)
    sets = {n: work / f"train{n}" for n in (a.base, a.big)}
    for n, d in sets.items():
        expand(work / "base", d / "data", n)
    base_params = load_params(code / "params.yaml")
    results = {}
    for stage in a.stages:
        results[stage] = {}
        for n, d in sets.items():
            params = merge_params(base_params, {**OVERRIDES, "data": {"root": str(d / "data")}})
            project = d / f"{stage}_{code.name}"
            if stage == "train_csn":  # its inputs: part labels of the expanded set
                from stages import part_labels

                part_labels.run(params, project)
            results[stage][n] = run_stage(code, stage, params, project)
            print(f"{stage:>10} {n:4d} videos: {results[stage][n]}", flush=True)
    rows = {s: {"rss_mib": {str(n): r["peak_rss_mib"] for n, r in res.items()},
                "ratio": round(res[a.big]["peak_rss_mib"] / res[a.base]["peak_rss_mib"], 3),
                "seconds": {str(n): r["seconds"] for n, r in res.items()},
                "weights_sha": {str(n): r["weights_sha"] for n, r in res.items()}} for s, res in results.items()}
    out = {"code": str(code.name), "videos": [a.base, a.big], "rendered": a.render, "seconds_per_video": a.seconds,
           "overrides": OVERRIDES, "target_ratio": 1.15, "stages": rows,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\n{'stage':>10} | peak RSS {a.base:>4} videos | peak RSS {a.big:>4} videos | ratio | target <= 1.15")
    for s, r in rows.items():
        ok = "ok" if r["ratio"] <= 1.15 else "OVER"
        print(f"{s:>10} | {r['rss_mib'][str(a.base)]:>14.0f} MiB | {r['rss_mib'][str(a.big)]:>14.0f} MiB | "
              f"{r['ratio']:5.2f} | {ok}")
    print(f"-> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
