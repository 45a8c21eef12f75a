"""Video-level predictions of the CSN models and their weighted ensemble (seed 001 Tables 2-3).

Reads:  artifacts/models/csn/<variant>.pt for each variant in csn.variants,
        artifacts/part_labels/classes.json (class order) and labels.parquet (to log accuracies),
        <data.root>/videos.parquet and every video it names (all splits).
Writes: artifacts/video_predictions.parquet (schema "video_predictions"): one row per video x task
          (action + six part groups) x model (each variant, and "ensemble"); probs follow
          classes.json[task]; label / score = the arg-max class and its probability.
        artifacts/skips/csn.parquet: videos that could not be decoded.
        metrics/ensemble.json: the ensemble weights used per task; with csn.ensemble_weights: search
          also the validation accuracies of each variant and of the chosen weights, beside the test
          accuracies (seed 001 Table 2).
Params: device, csn.variants, csn.test_clips (clips per video, uniformly spaced; softmax averaged),
        csn.test_batch, csn.ensemble_weights ({default: {ip: w, ir: w}, <task>: {...}} overrides, or
        "search": per task, the weights on a grid of csn.ensemble_grid points per variant that
        maximise top-1 accuracy on the validation videos train_csn held out, csn.val_fraction).
Clip length, interval, resize, crop and background removal are those the models were trained with
(stored in the checkpoints). Per-split, per-model, per-task top-1 accuracies are logged.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from actparse.clips import test_clips
from actparse.csn import (clip_probs, ensemble, ensemble_search_enabled, ensemble_weights_from_params, load_model_dir,
                          memory_format, search_ensemble_weights, variants_from_params)
from actparse.dataset import load_videos, video_path
from actparse.params import get, resolve_device
from actparse.part_labels import accuracy, read_classes
from actparse.paths import Paths, data_root
from actparse.atomic import write_json
from actparse.schemas import ParquetStreamWriter, from_columns, read_df
from actparse.stage import SkipLedger, progress, stage_log, stage_main
from actparse.video import LazyVideo, VideoError, decode_backend

log = stage_log("csn")
ENSEMBLE = "ensemble"


def load_models(paths: Paths, variants: list[str], classes: dict, device: str, extras: dict | None = None):
    """The CSN folder artifacts/models/csn loaded whole (actparse.csn.load_model_dir): ({variant: model},
    {variant: ClipSpec}); ``extras`` (a dict) receives each checkpoint's ``extra``."""
    loaded = load_model_dir(paths.models / "csn", device, variants)
    if loaded.classes != classes:
        raise ValueError(f"{paths.models / 'csn'}: class lists differ from {paths.part_labels / 'classes.json'}; "
                         f"rerun train_csn")
    if extras is not None:
        extras.update(loaded.extras)
    models = {v: m.to(memory_format=memory_format(device)) for v, m in loaded.models.items()}
    return models, loaded.specs


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
    batch = get(params, "csn.test_batch", int, min_value=1)
    classes = read_classes(paths.part_labels)
    tasks = list(classes)
    weights = ensemble_weights_from_params(params, variants, tasks)
    search = ensemble_search_enabled(params)
    steps = get(params, "csn.ensemble_grid", int, min_value=2, max_value=1001)
    extras: dict = {}
    models, specs = load_models(paths, variants, classes, device, extras)
    cache_side = max(s.short_side for s in specs.values())

    droot = data_root(params, root)
    backend = decode_backend(params)
    videos = load_videos(droot).to_pylist()
    ledger, preds = SkipLedger("csn", root), {}
    pending: list[tuple[str, dict]] = []  # (video, {spec: clips}) waiting for a full batch
    t0 = time.time()

    def flush(emit) -> None:
        if not pending:
            return
        per_video: dict[str, dict[str, dict[str, np.ndarray]]] = {v: {} for v, _ in pending}
        for v, model in models.items():
            clips = torch.cat([c[specs[v]] for _, c in pending])
            probs = clip_probs(model, clips, device, batch)
            for k, (name, _) in enumerate(pending):
                per_video[name][v] = {t: p[k * n_clips:(k + 1) * n_clips].mean(0) for t, p in probs.items()}
        pending.clear()
        for name, probs in per_video.items():
            emit(name, probs)

    def predict(records, emit) -> None:
        for rec in progress(records, "csn"):
            ledger.tried(rec["video"])
            try:
                frames = LazyVideo(video_path(droot, rec["path"]), cache_side, backend=backend)  # the clips' frames
                clips = {sp: test_clips(frames, sp, n_clips) for sp in set(specs.values())}
            except (VideoError, ValueError) as exc:
                ledger.skip(rec["video"], exc)
                continue
            pending.append((rec["video"], clips))
            if len(pending) * n_clips >= batch:
                flush(emit)
        flush(emit)

    val_probs: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    report = None
    if search:  # the held-out train videos first: their scores choose the weights of every task
        val_names = validation_videos(paths, variants, extras)
        predict([r for r in videos if r["video"] in val_names], lambda n, p: val_probs.__setitem__(n, p))
        weights, report = choose_weights(paths, val_probs, variants, tasks, classes, steps)

    def write(writer: ParquetStreamWriter, name: str, probs: dict) -> None:
        probs[ENSEMBLE] = {t: ensemble({v: probs[v][t] for v in variants}, weights[t]).astype(np.float32)
                           for t in tasks}
        writer.write(prediction_table(name, probs, classes))
        preds[name] = {m: {t: classes[t][int(np.argmax(p))] for t, p in pt.items()} for m, pt in probs.items()}

    with ParquetStreamWriter(paths.video_predictions, "video_predictions") as writer:
        for name in [r["video"] for r in videos if r["video"] in val_probs]:
            write(writer, name, val_probs[name])
        predict([r for r in videos if r["video"] not in val_probs and not ledger.failed(r["video"])],
                lambda n, p: write(writer, n, p))
        ledger.check(droot)
    ledger.write()
    log.info("predicted %d videos x %d clips x %d models in %.1fs (%d skipped)", len(preds), n_clips,
             len(models), time.time() - t0, ledger.n_failed)
    accs = log_accuracy(paths, preds, tasks, list(models) + [ENSEMBLE])
    write_json(ensemble_report(search, weights, report, accs, tasks), paths.metrics / "ensemble.json")


def validation_videos(paths: Paths, variants: list[str], extras: dict) -> set[str]:
    """The validation videos train_csn held out (stored in every checkpoint; they must agree)."""
    lists = {v: tuple(sorted((extras.get(v) or {}).get("val_videos") or [])) for v in variants}
    first = variants[0]
    if not lists[first]:
        raise ValueError(f"{paths.models / 'csn' / (first + '.pt')}: trained without a validation split "
                         f"(csn.val_fraction was 0 when train_csn ran), which csn.ensemble_weights: search "
                         f"needs; rerun train_csn")
    for v in variants[1:]:
        if lists[v] != lists[first]:
            raise ValueError(f"{paths.models / 'csn' / (v + '.pt')}: validation videos differ from those of "
                             f"{first}.pt; rerun train_csn")
    return set(lists[first])


def choose_weights(paths: Paths, val_probs: dict, variants: list[str], tasks: list[str], classes: dict,
                   steps: int) -> tuple[dict, dict]:
    """Per task, the grid weights with the best validation top-1 (seed 001 Table 2); (weights, report)."""
    labels_path = paths.part_labels / "labels.parquet"
    labels = read_df(labels_path, "part_labels")
    if not val_probs:
        raise ValueError("csn: none of the validation videos could be decoded; cannot search ensemble weights")
    names = sorted(val_probs)
    weights, report = {}, {}
    for t in tasks:
        truth = dict(labels.loc[labels["task"] == t, ["video", "label"]].itertuples(index=False))
        index = {c: i for i, c in enumerate(classes[t])}
        missing = [n for n in names if truth.get(n) not in index]
        if missing:
            raise ValueError(f"{labels_path}: validation video {missing[0]!r} has no {t!r} label in classes.json; "
                             f"rerun part_labels and train_csn")
        y = np.array([index[truth[n]] for n in names])
        res = search_ensemble_weights({v: np.stack([val_probs[n][v][t] for n in names]) for v in variants}, y, steps)
        weights[t] = res["weights"]
        report[t] = res
        log.info("val %-6s weights %s: ensemble %.3f (%s)", t, res["weights"], res["accuracy"],
                 " ".join(f"{v} {a:.3f}" for v, a in res["single"].items()))
    return weights, {"videos": len(names), "grid": steps, "tasks": report}


def ensemble_report(search: bool, weights: dict, report: dict | None, accs: dict, tasks: list[str]) -> dict:
    """metrics/ensemble.json: per task the weights used, validation accuracies (search) and test accuracies."""
    out: dict = {"search": bool(search)}
    if report is not None:
        out["val_videos"] = report["videos"]
        out["grid"] = report["grid"]
    per_task = {}
    for t in tasks:
        row: dict = {"weights": weights[t]}
        if report is not None:
            r = report["tasks"][t]
            row["val"] = {**r["single"], ENSEMBLE: r["accuracy"]}
        test = {m: a[t] for (split, m), a in accs.items() if split == "test" and t in a and a[t] == a[t]}
        if test:
            row["test"] = test
        per_task[t] = row
    out["tasks"] = per_task
    return out


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
