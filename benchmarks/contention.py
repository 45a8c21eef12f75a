"""Torch stages next to another busy process: training-step time alone and beside a CPU-bound process.

    python -m benchmarks.contention                 # writes benchmarks/results/contention.json
    python -m benchmarks.contention --rounds 3 --models hrnet,csn --policies passive,unset

Each measurement is a fresh process that trains a few steps of a default CPU model (the workers of
``benchmarks.repro_cost``: HRNet-w18-small on 128x96 crops, batch 32; the slim ip-CSN on 8x64x85
clips, batch 8; the person detector's YOLO11n network at 128 px, batch 16) with the stages' own
pinned environment and thread count (2), under one OpenMP wait policy:

* ``passive``: what :func:`actparse.determinism.pin_environment` sets (``OMP_WAIT_POLICY=PASSIVE``:
  a thread that waits at a barrier sleeps at once);
* ``unset``: OpenMP's default (the variable removed after pinning: GNU OpenMP's threads spin a while
  at each barrier before they sleep), which is what the stages ran with before;
* ``spin1k`` .. ``spin100k``: the default policy with ``GOMP_SPINCOUNT`` 1,000 .. 100,000 (a shorter spin);
* ``active``: ``OMP_WAIT_POLICY=ACTIVE`` (spin only).

Each runs twice per round: alone, and while one other process keeps a core busy (a pure-Python
loop, started before the worker and killed after it). Policies and loads take turns round after round,
so other load on the machine hits them alike. The report gives the seconds per step (median of the
steps after the first) per round, and per model and policy the ratio busy / alone (median over
rounds, and of the fastest rounds), plus each policy's idle time relative to ``unset``.
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

from benchmarks.repro_cost import CPU_VARS, MODELS, SIZES, _cpu_name, _load

ROOT = Path(__file__).resolve().parents[1]
#: environment of each setting (None: the variable removed after pinning)
POLICIES = {"passive": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None},
            "unset": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None},
            "active": {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": None},
            **{f"spin{n // 1000}k": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": str(n)}
               for n in (1000, 10000, 30000, 100000)}}
BURNER = "import time\nend = time.time() + {s}\nx = 0\nwhile time.time() < end:\n    x += 1\n"


def worker(model_name: str, steps: int, policy: str, out: Path) -> None:
    """Train ``steps`` steps pinned as a stage is, with the wait policy ``policy``; write the step times."""
    from actparse import determinism

    determinism.pin_environment()
    for key, value in POLICIES[policy].items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    import torch  # noqa: F401  (OpenMP reads the policy when torch's runtime starts)

    out.mkdir(parents=True, exist_ok=True)
    _, times = MODELS[model_name](SIZES[model_name]["default"], steps, out / "init.pt")
    (out / "run.json").write_text(json.dumps({"step_s": [t[0] for t in times], "threads": torch.get_num_threads(),
                                              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                                              "gomp_spincount": os.environ.get("GOMP_SPINCOUNT")}))


def run_once(model: str, steps: int, policy: str, busy: bool, out: Path, timeout: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CPU_VARS and k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = str(ROOT)
    burner = subprocess.Popen([sys.executable, "-c", BURNER.format(s=timeout)]) if busy else None
    try:
        if burner:
            time.sleep(0.5)  # the busy process has its core before the worker starts
        cmd = [sys.executable, "-m", "benchmarks.contention", "--worker", model, "--policy", policy,
               "--steps", str(steps), "--out", str(out)]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    finally:
        if burner:
            burner.kill()
            burner.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads((out / "run.json").read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5, help="training steps per process (the first is warm-up)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="hrnet,csn,yolo")
    ap.add_argument("--policies", default="unset,spin1k,passive", help=f"from {', '.join(POLICIES)}")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per worker process at most")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "contention.json"))
    ap.add_argument("--worker", choices=sorted(MODELS), help=argparse.SUPPRESS)
    ap.add_argument("--policy", choices=sorted(POLICIES), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.steps, args.policy, Path(args.out))
        return 0
    if args.steps < 2:
        ap.error("--steps must be at least 2 (the first step is warm-up)")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    for m in models:
        if m not in MODELS:
            ap.error(f"--models: unknown model {m!r} (choose from {', '.join(MODELS)})")
    for p in policies:
        if p not in POLICIES:
            ap.error(f"--policies: unknown policy {p!r} (choose from {', '.join(POLICIES)})")
    steps: dict = {m: {p: {"alone": [], "busy": []} for p in policies} for m in models}
    t0, load0 = time.time(), _load()
    threads = None
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for m in models:
                for p in policies:
                    for busy in (False, True):
                        key = "busy" if busy else "alone"
                        rep = run_once(m, args.steps, p, busy, Path(tmp) / f"{m}-{p}-{key}-{r}", args.timeout)
                        threads = rep["threads"]
                        s = statistics.median(rep["step_s"][1:])
                        steps[m][p][key].append(s)
                        print(f"round {r + 1} {m:5s} {p:7s} {key:5s} {s:7.3f} s/step", flush=True)
    result = {"what": "seconds per training step (median of the steps after the first, one value per round), alone "
                      "and beside one CPU-bound process; busy_over_alone = median over rounds of busy / the same "
                      "alone (best_round_*: the fastest round of each); alone_vs_unset = this policy's time alone / "
                      "the unset policy's",
              "steps_per_process": args.steps, "rounds": args.rounds, "torch_threads": threads, "cpu": _cpu_name(),
              "cpu_count": os.cpu_count(), "load_average_before_after": [load0, _load()],
              "wall_s": round(time.time() - t0, 1), "models": {}}
    for m in models:
        res = {}
        for p in policies:
            alone, busy = steps[m][p]["alone"], steps[m][p]["busy"]
            res[p] = {"alone_s_per_step": [round(v, 4) for v in alone], "busy_s_per_step": [round(v, 4) for v in busy],
                      "busy_over_alone": round(statistics.median(busy) / statistics.median(alone), 3),
                      "best_round_busy_over_alone": round(min(busy) / min(alone), 3)}
            if "unset" in policies:
                res[p]["alone_vs_unset"] = round(statistics.median(alone) / statistics.median(steps[m]["unset"]["alone"]), 3)
        result["models"][m] = res
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["models"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
