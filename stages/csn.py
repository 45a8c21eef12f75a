"""Video-level predictions of the CSN models and their weighted ensemble (seed 001 Tables 2-3).

Reads:  artifacts/models/csn/<variant>.pt for each variant in csn.variants,
        artifacts/part_labels/classes.json (class order) and labels.parquet (to log accuracies),
        <data.root>/videos.parquet and every video it names (all splits).
Writes: artifacts/video_predictions.parquet (schema "video_predictions"): one row per video x task
          (action + six part groups) x model (each variant, and "ensemble"); probs follow
          classes.json[task]; label / score = the arg-max class and its probability.
        artifacts/skips/csn.parquet: videos that could not be decoded.
Params: device, csn.variants, csn.test_clips (clips per video, uniformly spaced; softmax averaged),
        csn.test_batch, csn.ensemble_weights ({default: {ip: w, ir: w}, <task>: {...}} overrides).
Clip length, interval, resize, crop and background removal are those the models were trained with
(stored in the checkpoints). Per-split, per-model, per-task top-1 accuracies are logged.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from actparse.cli import stage_main
from actparse.clips import ClipSpec, test_clips
from actparse.csn import (clip_probs, ensemble, ensemble_weights_from_params, load_checkpoint, memory_format,
                          variants_from_params)
from actparse.dataset import load_videos, video_path
from actparse.params import get, resolve_device
from actparse.part_labels import accuracy, read_classes
from actparse.paths import Paths, data_root
from actparse.schemas import ParquetStreamWriter, from_columns, from_rows, read_df, write_table
from actparse.video import LazyVideo, VideoError

log = logging.getLogger("actparse.csn")
ENSEMBLE = "ensemble"


def load_models(paths: Paths, variants: list[str], classes: dict, device: str):
    models, specs = {}, {}
    for v in variants:
        path = paths.models / "csn" / f"{v}.pt"
        model, ck = load_checkpoint(path, device)
        if ck["classes"] != classes:
            raise ValueError(f"{path}: class lists differ from {paths.part_labels / 'classes.json'}; rerun train_csn")
        clip = (ck.get("extra") or {}).get("clip")
        if not clip:
            raise ValueError(f"{path}: checkpoint has no clip settings; rerun train_csn")
        models[v] = model.to(memory_format=memory_format(device))
        known = {f.name for f in fields(ClipSpec)}
        specs[v] = ClipSpec(**{k: tuple(x) if isinstance(x, list) else x for k, x in clip.items() if k in known})
    return models, specs


def prediction_table(video: str, probs: dict[str, dict[str, np.ndarray]], classes: dict[str, list[str]]):
    """Rows of one video: probs = {model: {task: probs}}."""
    cols = {k: [] for k in ("video", "task", "model", "label", "score", "probs")}
    for model, per_task in probs.items():
        for task, p in per_task.items():
            k = int(np.argmax(p))
            cols["video"].append(video)
            cols["task"].append(task)
            cols["model"].append(model)
            cols["label"].append(classes[task][k])
            cols["score"].append(float(p[k]))
            cols["probs"].append(np.asarray(p, dtype=np.float32))
    return from_columns(cols, "video_predictions")


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    device = resolve_device(params)
    variants = variants_from_params(params)
    n_clips = get(params, "csn.test_clips", int, min_value=1)
    batch = get(params, "csn.test_batch", int, default=16, min_value=1)
    classes = read_classes(paths.part_labels)
    tasks = list(classes)
    weights = ensemble_weights_from_params(params, variants, tasks)
    models, specs = load_models(paths, variants, classes, device)
    cache_side = max(s.short_side for s in specs.values())

    droot = data_root(params, root)
    videos = load_videos(droot).to_pylist()
    skips, preds = [], {}
    pending: list[tuple[str, dict]] = []  # (video, {spec: clips}) waiting for a full batch
    t0 = time.time()

    def flush(writer: ParquetStreamWriter) -> None:
        if not pending:
            return
        per_video: dict[str, dict[str, dict[str, np.ndarray]]] = {v: {} for v, _ in pending}
        for v, model in models.items():
            clips = torch.cat([c[specs[v]] for _, c in pending])
            probs = clip_probs(model, clips, device, batch)
            for k, (name, _) in enumerate(pending):
                per_video[name][v] = {t: p[k * n_clips:(k + 1) * n_clips].mean(0) for t, p in probs.items()}
        for name, probs in per_video.items():
            probs[ENSEMBLE] = {t: ensemble({v: probs[v][t] for v in variants}, weights[t]).astype(np.float32)
                               for t in tasks}
            writer.write(prediction_table(name, probs, classes))
            preds[name] = {m: {t: classes[t][int(np.argmax(p))] for t, p in pt.items()} for m, pt in probs.items()}
        pending.clear()

    with ParquetStreamWriter(paths.video_predictions, "video_predictions") as writer:
        for rec in tqdm(videos, desc="csn", unit="video", disable=None):
            try:
                frames = LazyVideo(video_path(droot, rec["path"]), cache_side)  # decodes only the clips' frames
                clips = {sp: test_clips(frames, sp, n_clips) for sp in set(specs.values())}
            except (VideoError, ValueError) as exc:
                log.warning("skip %s: %s", rec["video"], exc)
                skips.append({"video": rec["video"], "stage": "csn", "error": str(exc)})
                continue
            pending.append((rec["video"], clips))
            if len(pending) * n_clips >= batch:
                flush(writer)
        flush(writer)
        if videos and len(skips) == len(videos):
            raise ValueError(f"csn: none of the {len(videos)} videos under {droot} could be decoded; "
                             f"first error: {skips[0]['error']}")
    write_table(from_rows(skips, "skips"), paths.skips / "csn.parquet", "skips")
    log.info("predicted %d videos x %d clips x %d models in %.1fs (%d skipped)", len(preds), n_clips,
             len(models), time.time() - t0, len(skips))
    log_accuracy(paths, preds, tasks, list(models) + [ENSEMBLE])


def log_accuracy(paths: Paths, preds: dict, tasks: list[str], model_names: list[str]) -> dict:
    """Top-1 accuracy per split / model / task against labels.parquet (logged; evaluate reports)."""
    labels_path = paths.part_labels / "labels.parquet"
    if not labels_path.exists():
        return {}
    labels = read_df(labels_path, "part_labels")
    out = {}
    for split in ("train", "test"):
        sub = labels[labels["split"] == split]
        for m in model_names:
            accs = {}
            for t in tasks:
                truth = dict(sub.loc[sub["task"] == t, ["video", "label"]].itertuples(index=False))
                truth = {v: l for v, l in truth.items() if v in preds}
                accs[t] = accuracy({v: preds[v][m][t] for v in truth}, truth)[0]
            out[(split, m)] = accs
            log.info("%s top-1 %-8s %s", split, m, " ".join(f"{t}={a:.3f}" for t, a in accs.items()))
    return out


def main(argv=None) -> int:
    return stage_main("csn", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
