"""Each inference stage's steady-state throughput next to a bare batched forward of its model.

    python -m benchmarks.stage_throughput --root .      # a repository after `dvc repro` (models, frames)
    python -m benchmarks.stage_throughput --root . --stages detect_persons --videos 24 --rounds 5

For detect_persons, keypoints, detect_parts and csn, in one process (pinned and with the threads a stage
uses), on the first ``--videos`` videos of the repository's ``artifacts/frames.parquet``, taking turns
round after round:

* **stage**: the stage's own per-video loop (:func:`actparse.shards.results`, the loop of
  ``python -m stages.<name>`` and of the flow's shards, with its prefetch thread): JPEG decoding,
  crops, preprocessing, the forward passes, postprocessing, the output table. The input tables are
  read from Parquet before the clock starts, and nothing is written;
* **stage, no prefetch**: the same loop with ``prepare`` and ``one`` on one thread (the loop before the
  prefetch thread);
* **bare forward**: only the model's forward passes, on the very batches the stage forms (per video,
  ``predict_batch`` / ``keypoints.batch`` at most; the keypoint model's flip pass included; csn's batch
  groups of ``csn.test_batch // csn.test_clips`` videos, every variant), their input tensors made before
  the clock starts.

csn decodes its clips (from the videos) and runs each batch group inside ``tables()``, which the
prefetch thread runs, so its two stage rows differ only in where that happens. Throughput is model
inputs per second (frames for detect_persons, person crops for keypoints and detect_parts, clips for
csn); the report gives per round the seconds of each, and per stage the ratio stage /
bare forward (median over rounds, and of the fastest rounds), the target being >= 0.9.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("detect_persons", "keypoints", "detect_parts", "csn")


def _yolo_bare(model, batches):
    """The forward passes of ultralytics' predictor on its own preprocessed batches (list of lists of RGB)."""
    import numpy as np
    import torch

    pred = model.predictor
    tensors = [pred.preprocess([np.ascontiguousarray(np.asarray(im)[..., ::-1]) for im in b]) for b in batches]

    def run():
        with torch.inference_mode():
            for x in tensors:
                pred.inference(x)
    return run


def _pose_bare(est, crops_per_video):
    import torch

    from actparse.hrnet import normalize_images

    tensors = []
    for crops in crops_per_video:
        for i in range(0, len(crops), est.batch_size):
            tensors.append(normalize_images(crops[i:i + est.batch_size]).to(est.device).contiguous(
                memory_format=torch.channels_last))

    def run():
        with torch.inference_mode():
            for x in tensors:
                hm = est.model(x)
                if est.flip_test:
                    est.model(x.flip(-1))
        return hm
    return run


def _csn(work, n_videos: int):
    """csn: the stage's loop over the first videos (decoding and batch groups inside ``tables()``), and the
    bare forward passes of every variant on the same batch groups' clips, decoded beforehand."""
    import torch

    from actparse.clips import test_clips
    from actparse.csn import clip_probs
    from actparse.dataset import video_path
    from actparse.video import LazyVideo

    names = work.videos()[:n_videos]
    records = work.records()
    groups = []
    for s in range(0, len(names), work.group):
        clips = {}
        for name in names[s:s + work.group]:
            frames = LazyVideo(video_path(work.droot, records[name]["path"]), work.cache_side, backend=work.backend)
            clips[name] = {sp: test_clips(frames, sp, work.n_clips) for sp in set(work.specs.values())}
        groups.append({v: torch.cat([c[work.specs[v]] for c in clips.values()]) for v in work.models})

    def bare():
        with torch.inference_mode():
            for g in groups:
                for v, model in work.models.items():
                    clip_probs(model, g[v], work.device, work.batch)
    return work, _Lazy(work, names), bare, sum(len(x) for g in groups for x in g.values())


class _Lazy:
    """csn's input items: ``iter()`` gives the stage's ``tables()`` over the videos afresh each pass."""

    def __init__(self, work, names):
        self.work, self.names = work, names

    def __iter__(self):
        return iter(self.work.tables(self.names))


def setup_stage(name: str, params: dict, root: Path, n_videos: int):
    """(work, [(video, prepared-free input table)], bare forward callable, number of model inputs)."""
    import importlib

    from actparse.detector_data import decode_frames, person_crops
    from actparse.pose import crop_people

    mod = importlib.import_module(f"stages.{name}")
    work = mod.Work(params, root)
    work.setup()
    if name == "csn":
        return _csn(work, n_videos)
    items = []
    for video, table in work.tables():
        items.append((video, table))
        if len(items) >= n_videos:
            break
    if not items:
        raise SystemExit(f"{name}: no videos to run on in {root}")
    # one pass of the stage first: ultralytics builds its predictor on the first call
    for video, table in items[:1]:
        work.one(video, work.prepare(video, table))
    if name == "detect_persons":
        batches = []
        for _, table in items:
            images = decode_frames(table)[0]
            batches += [images[i:i + work.batch] for i in range(0, len(images), work.batch)]
        n = sum(len(b) for b in batches)
        return work, items, _yolo_bare(work.model, batches), n
    if name == "detect_parts":
        batches = []
        for video, table in items:
            images, frames, scales, _ = decode_frames(table)
            crops = [c["crop"] for c in person_crops(images, frames, scales, work._refined[video], work.cfg)]
            batches += [crops[i:i + work.batch] for i in range(0, len(crops), work.batch)]
        n = sum(len(b) for b in batches)
        return work, items, _yolo_bare(work.model, batches), n
    # keypoints: the crops the estimator makes, per video
    import numpy as np

    est = work.estimator
    crops_per_video = []
    for video, table in items:
        prepared = work.prepare(video, table)
        images, boxes = prepared["images"], prepared["img_boxes"]
        cs = [crop_people(im, np.asarray(b, np.float64).reshape(-1, 4), est.input_size, est.padding)[0]
              for im, b in zip(images, boxes) if len(b)]
        if cs:
            crops_per_video.append(np.concatenate(cs))
    n = sum(len(c) for c in crops_per_video)
    return work, items, _pose_bare(est, crops_per_video), n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".", help="repository with a finished default run (artifacts/)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "stage_throughput.json"))
    args = ap.parse_args(argv)
    import stages  # noqa: F401  (pins the CPU code paths and threads before torch loads, as a stage does)
    from actparse import shards
    from actparse.params import load_params

    root = Path(args.root).resolve()
    params = load_params(root / args.params)
    names = [s.strip() for s in args.stages.split(",") if s.strip()]
    for s in names:
        if s not in STAGES:
            ap.error(f"--stages: unknown stage {s!r} (choose from {', '.join(STAGES)})")
    t0, load0 = time.time(), _load()
    result = {"what": "seconds per pass over the same videos, per round; inputs_per_s from the median round; "
                      "ratio = stage throughput / bare forward throughput (>= 0.9 is the target)",
              "videos": args.videos, "rounds": args.rounds, "cpu_count": os.cpu_count(),
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "stages": {}}
    for name in names:
        work, items, bare, n = setup_stage(name, params, root, args.videos)
        import torch

        runs = {"stage": lambda: list(shards.results(work, iter(items))),
                "stage_no_prefetch": lambda: list(shards.results(work, iter(items), prefetch=False)),
                "bare_forward": bare}
        secs = {k: [] for k in runs}
        for r in range(args.rounds):
            for k, fn in runs.items():
                t = time.perf_counter()
                fn()
                secs[k].append(time.perf_counter() - t)
            print(f"round {r + 1} {name:15s} " + " ".join(f"{k} {v[-1]:.3f} s" for k, v in secs.items()), flush=True)
        med = {k: statistics.median(v) for k, v in secs.items()}
        best = {k: min(v) for k, v in secs.items()}
        result["stages"][name] = {
            "inputs": n, "torch_threads": torch.get_num_threads(),
            "seconds": {k: [round(x, 4) for x in v] for k, v in secs.items()},
            "inputs_per_s": {k: round(n / v, 1) for k, v in med.items()},
            "ratio_to_bare": {k: round(med["bare_forward"] / v, 3) for k, v in med.items()},
            "best_round_ratio_to_bare": {k: round(best["bare_forward"] / v, 3) for k, v in best.items()}}
        print(name, json.dumps(result["stages"][name]["ratio_to_bare"]), flush=True)
    result["load_average_before_after"] = [load0, _load()]
    result["wall_s"] = round(time.time() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _load():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
