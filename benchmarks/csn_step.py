"""Time a CSN training step and the clip making that feeds it (on demand; GPU or CPU).

    python -m benchmarks.csn_step                       # params.yaml + params.gpu.yaml: CSN-152, 32x2, 224
    python -m benchmarks.csn_step --preset none --steps 3   # the CPU default's slim CSN

Prints, for the preset's clip and model sizes and one batch (``csn.batch_size`` clips):
- clip making: one batch made on one thread (how the CPU path makes it) and by the thread pool the
  CUDA path uses (``actparse.csn._ClipMaker``);
- the training step (forward, multi-task loss, backward, SGD) in each memory format, bf16 autocast
  on CUDA, timed after warm-up steps with the device synchronised.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actparse import csn as C  # noqa: E402
from actparse.models.csn import MultiTaskCSN  # noqa: E402
from actparse.train import make_optimizer  # noqa: E402
from benchmarks.gpu_preset import build_params  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_clips(videos, spec, batch: int, rng) -> dict:
    from actparse.clips import train_clip

    t = time.perf_counter()
    torch.stack([train_clip(videos[i % len(videos)], spec, rng) for i in range(batch)])
    serial = time.perf_counter() - t
    maker = C._ClipMaker(videos, spec, batch)
    order = np.arange(3 * batch) % len(videos)
    maker.start_epoch(order, rng)
    t = time.perf_counter()
    for b in range(3):
        maker.batch(b)
    pooled = (time.perf_counter() - t) / 3
    maker.close()
    return {"serial_s_per_batch": round(serial, 3), "pool_s_per_batch": round(pooled, 3),
            "pool_threads": maker.pool._max_workers}


def time_steps(params: dict, device: str, steps: int, warmup: int, memory_format) -> dict:
    cfg = C.model_config_from_params(params, "ip")
    n_classes = {t: 10 for t in ("action", "head", "hand", "arm", "hip", "leg", "foot")}
    model = MultiTaskCSN(cfg, n_classes).to(device).to(memory_format=memory_format)
    spec = C.clip_spec_from_params(params)
    batch = int(params["csn"]["batch_size"])
    h, w = spec.crop
    x = torch.randn(batch, 3, spec.num_frames, h, w, device=device).contiguous(memory_format=memory_format)
    y = {t: torch.randint(0, k, (batch,), device=device) for t, k in n_classes.items()}
    opt = make_optimizer(model, 0.01)
    model.train()
    times = []
    for k in range(warmup + steps):
        _sync(device)
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            out = {t_: o.float() for t_, o in model(x).items()}
        loss = C.multitask_loss(out, y)
        loss.backward()
        opt.step()
        _sync(device)
        if k >= warmup:
            times.append(time.perf_counter() - t)
    med = float(np.median(times))
    res = {"ms_per_step": round(1000 * med, 1), "clips_per_s": round(batch / med, 2),
           "parameters": sum(p.numel() for p in model.parameters())}
    if device.startswith("cuda"):
        res["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
        torch.cuda.reset_peak_memory_stats()
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=str(ROOT / "params.gpu.yaml"))
    ap.add_argument("--base", default=str(ROOT / "params.yaml"))
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    params = build_params(Path(args.base), args.preset, None, None, [])
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    spec = C.clip_spec_from_params(params)
    batch = int(params["csn"]["batch_size"])
    rng = np.random.default_rng(0)
    side = spec.cache_short_side
    videos = [rng.integers(0, 255, (64, side, side * 4 // 3, 3), dtype=np.uint8) for _ in range(4)]
    report = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
              "batch": batch, "clip": [spec.num_frames, *spec.crop], "depth": params["csn"]["depth"],
              "clip_making": time_clips(videos, spec, batch, rng), "steps": {}}
    print(json.dumps(report["clip_making"]), flush=True)
    for name, fmt in (("channels_last_3d", torch.channels_last_3d), ("contiguous", torch.contiguous_format)):
        report["steps"][name] = time_steps(params, device, args.steps, args.warmup, fmt)
        print(name, json.dumps(report["steps"][name]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
