"""What pinning the CPU code paths costs: HRNet, CSN and YOLO training steps, pinned vs native, side by side.

    python -m benchmarks.repro_cost                      # writes benchmarks/results/repro_cost.json
    python -m benchmarks.repro_cost --steps 4 --rounds 3 --models hrnet,yolo

Each measurement is a fresh process (the caps are read once per process) that trains a few steps of
the default CPU models at the default sizes: HRNet-w18-small on 128x96 crops made by the training
code (affine warps, Gaussian heatmaps), batch 32; the slim ip-CSN on 8x64x85 clips, batch 8; the
person detector's YOLO11n network at 128 px, batch 16 (random images and a stand-in loss: the
network's cost without ultralytics' data loading). Every setting runs with the same thread count,
1 by default: on a machine shared with other work, a second thread that waits for a core makes the
first spin at every barrier, and both clocks then measure the load (2-thread runs on a loaded 2-core
machine gave per-step times varying 4x between identical processes); what an instruction set
costs is a property of its kernels, measured here on one thread. The settings (``ACTPARSE_CPU_ISA`` native, avx2, sse41) take turns
round after round, so load from other work hits them alike. Per model and setting the report gives
the seconds per step (the first step, warm-up, left out) by the wall clock and in process CPU time,
one value per round, and their ratios to native (medians over rounds, and the fastest rounds).

The same worker (``--worker``) trains the tiny models of ``tests/test_reproducible.py`` and saves their
weights, so that a test can compare the weights of runs under different environments.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from actparse.determinism import LEVELS

ROOT = Path(__file__).resolve().parents[1]

#: model sizes: "default" = the CPU default's training steps, "tiny" = the tests'
SIZES = {
    "hrnet": {"default": {"arch": "hrnet_w18_small", "input_size": (128, 96), "batch": 32},
              "tiny": {"arch": "hrnet_w18_small", "input_size": (96, 64), "batch": 4}},
    "csn": {"default": {"stem_dim": 16, "clip": (8, 64, 85), "batch": 8},
            "tiny": {"stem_dim": 8, "clip": (4, 32, 32), "batch": 4}},
    "yolo": {"default": {"model": "yolo11n.yaml", "imgsz": 128, "batch": 16},
             "tiny": {"model": "yolo11n.yaml", "imgsz": 64, "batch": 2}},
}


#: environment variables that choose CPU code paths or threads: a worker starts without the caller's
CPU_VARS = ("ACTPARSE_CPU_ISA", "ACTPARSE_CPU_THREADS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
            "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NPY_DISABLE_CPU_FEATURES",
            "OPENCV_CPU_DISABLE", "OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "GLIBC_TUNABLES")


# ------------------------------------------------------------------------------------- worker
def _save(model, path: Path) -> None:
    import torch

    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, path)


def _hrnet(size: dict, steps: int, init: Path):
    import numpy as np
    import torch

    from actparse.hrnet import build_pose_model
    from actparse.pose import AugmentConfig, PoseSamples, make_batch, train_step

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    b = size["batch"]
    images = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(4)]
    n = 2 * b
    x0, y0 = rng.uniform(5, 60, n), rng.uniform(5, 40, n)
    boxes = np.stack([x0, y0, x0 + rng.uniform(30, 90, n), y0 + rng.uniform(40, 75, n)], 1)
    kp = np.concatenate([boxes[:, None, :2] + rng.uniform(0, 1, (n, 17, 2)) * (boxes[:, None, 2:] - boxes[:, None, :2]),
                         np.ones((n, 17, 1))], 2)
    samples = PoseSamples(images, np.arange(n) % len(images), boxes, kp)
    model = build_pose_model(size["arch"]).to(memory_format=torch.channels_last)
    _save(model, init)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    times = []
    for i in range(steps):
        t, c = time.perf_counter(), time.process_time()
        x, y, w = make_batch(samples, np.arange(b) + b * (i % 2), tuple(size["input_size"]), 2.0,
                             AugmentConfig(scale=0.25, rotation=30.0, shift=0.1, flip=True), rng)
        train_step(model, opt, x.contiguous(memory_format=torch.channels_last), y, w)
        times.append((time.perf_counter() - t, time.process_time() - c))
    return model, times


def _csn(size: dict, steps: int, init: Path):
    import torch

    from actparse.csn import train_step
    from actparse.models.csn import TASKS, CSNConfig, MultiTaskCSN
    from actparse.train import make_optimizer, seed_everything

    seed_everything(0)
    model = MultiTaskCSN(CSNConfig(variant="ip", depth=50, stage_depths=(1, 1, 1, 1), stem_dim=size["stem_dim"],
                                   dropout=0.3), {t: 4 for t in TASKS})
    _save(model, init)
    opt = make_optimizer(model, lr=0.05)
    g = torch.Generator().manual_seed(1)
    b, (t_, h, w) = size["batch"], size["clip"]
    times = []
    for _ in range(steps):
        t, c = time.perf_counter(), time.process_time()
        clips = torch.randn(b, 3, t_, h, w, generator=g)
        targets = {k: torch.randint(0, 4, (b,), generator=g) for k in TASKS}
        train_step(model, clips, targets, opt)
        times.append((time.perf_counter() - t, time.process_time() - c))
    return model, times


def _yolo(size: dict, steps: int, init: Path):
    """The person detector's network (forward, backward, SGD step on random images; the loss is a
    stand-in for ultralytics' detection loss, the convolutions are the same)."""
    import torch

    from actparse.yolo import _build

    torch.manual_seed(0)
    model = _build(size["model"]).model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    _save(model, init)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    times = []
    for _ in range(steps):
        t, c = time.perf_counter(), time.process_time()
        x = torch.rand(size["batch"], 3, size["imgsz"], size["imgsz"], generator=g)
        out = model(x)
        outs = out if isinstance(out, (list, tuple)) else list(out.values()) if isinstance(out, dict) else [out]
        loss = sum(o.float().pow(2).mean() for o in outs if torch.is_tensor(o))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append((time.perf_counter() - t, time.process_time() - c))
    return model, times


MODELS = {"hrnet": _hrnet, "csn": _csn, "yolo": _yolo}


def worker(model_name: str, size_name: str, steps: int, out: Path) -> None:
    """Train ``steps`` steps in this process as its environment says; save weights and timings."""
    from actparse import determinism

    determinism.pin_environment()  # before torch, as stages/__init__.py does
    import torch

    determinism.deterministic_algorithms()
    out.mkdir(parents=True, exist_ok=True)
    model, times = MODELS[model_name](SIZES[model_name][size_name], steps, out / "init.pt")
    _save(model, out / "state.pt")
    (out / "run.json").write_text(json.dumps({"step_s": [t[0] for t in times], "step_cpu_s": [t[1] for t in times],
                                              **determinism.report()}))


def run_worker(model_name: str, size_name: str, steps: int, out: Path, env: dict[str, str],
               timeout: float = 600) -> dict:
    """Run :func:`worker` in a fresh process with ``env`` over this environment; returns its report."""
    full = {k: v for k, v in os.environ.items() if k not in CPU_VARS}  # not what this process was pinned with
    full.update(env, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "benchmarks.repro_cost", "--worker", model_name, "--size", size_name,
           "--steps", str(steps), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=full, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads((out / "run.json").read_text())


# ------------------------------------------------------------------------------------- benchmark
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3, help="training steps per process (first one is warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="processes per model and setting, taking turns")
    ap.add_argument("--levels", default="native,avx2,sse41", help="ACTPARSE_CPU_ISA settings to compare")
    ap.add_argument("--models", default="hrnet,csn,yolo")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of every setting (default 1: see above; the stages use 2)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "repro_cost.json"))
    ap.add_argument("--worker", choices=sorted(SIZES), help=argparse.SUPPRESS)
    ap.add_argument("--size", default="default", choices=["default", "tiny"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.size, args.steps, Path(args.out))
        return 0
    if args.steps < 2:
        ap.error("--steps must be at least 2 (the first step is warm-up)")
    if args.threads < 1:
        ap.error("--threads must be at least 1")
    levels = [v.strip() for v in args.levels.split(",") if v.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for lv in levels:
        if lv not in LEVELS:
            ap.error(f"--levels: unknown setting {lv!r} (choose from {', '.join(LEVELS)})")
    for m in models:
        if m not in SIZES:
            ap.error(f"--models: unknown model {m!r} (choose from {', '.join(SIZES)})")
    # per model and setting, one (wall, cpu) median per round
    per_step: dict[str, dict[str, list[tuple[float, float]]]] = {m: {lv: [] for lv in levels} for m in models}
    info: dict[str, dict] = {}
    t0, load0 = time.time(), _load()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for m in models:
                for lv in levels:
                    rep = run_worker(m, "default", args.steps, Path(tmp) / f"{m}-{lv}-{r}",
                                     {"ACTPARSE_CPU_ISA": lv, "ACTPARSE_CPU_THREADS": str(args.threads)})
                    wall = statistics.median(rep["step_s"][1:])
                    cpu = statistics.median(rep["step_cpu_s"][1:])
                    per_step[m][lv].append((wall, cpu))
                    info[lv] = {k: rep[k] for k in ("aten_capability", "onednn_max_cpu_isa", "mkl_cbwr",
                                                    "openblas_coretype", "threads")}
                    print(f"round {r + 1} {m:5s} {lv:6s} {wall:7.3f} s/step wall {cpu:7.3f} s/step cpu", flush=True)
    base = levels[0]
    result = {"what": "seconds per training step, wall clock and process CPU time (median over the steps after "
                      "the first, one value per round); ratio = median over rounds / the same for " + base + "; best_round_ratio = "
                      "the same with the fastest round of each setting (the least disturbed by other work)",
              "steps_per_process": args.steps, "rounds": args.rounds, "threads": args.threads, "cpu": _cpu_name(),
              "cpu_count": os.cpu_count(), "load_average_before_after": [load0, _load()], "settings": info,
              "wall_s": round(time.time() - t0, 1), "models": {}}
    for m in models:
        med = {lv: [statistics.median(v[i] for v in vals) for i in (0, 1)] for lv, vals in per_step[m].items()}
        best = {lv: [min(v[i] for v in vals) for i in (0, 1)] for lv, vals in per_step[m].items()}
        result["models"][m] = {lv: {"wall_s_per_step": [round(v[0], 4) for v in vals],
                                    "cpu_s_per_step": [round(v[1], 4) for v in vals],
                                    f"wall_ratio_to_{base}": round(med[lv][0] / med[base][0], 3),
                                    f"cpu_ratio_to_{base}": round(med[lv][1] / med[base][1], 3),
                                    f"best_round_wall_ratio_to_{base}": round(best[lv][0] / best[base][0], 3),
                                    f"best_round_cpu_ratio_to_{base}": round(best[lv][1] / best[base][1], 3)}
                               for lv, vals in per_step[m].items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["models"], indent=1))
    return 0


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
