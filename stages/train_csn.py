"""Train the CSN video models (ip-CSN and/or ir-CSN) on the seed-001 part labels.

Reads:  <data.root>/videos.parquet and the train-split videos it names (decord; each training clip's
          frames are decoded when the clip is made, so memory does not grow with the number of
          videos), artifacts/part_labels/labels.parquet + classes.json.
Writes: artifacts/models/csn/<variant>.pt per variant in csn.variants (weights, architecture, class
          lists, clip settings), artifacts/models/csn/model.json (variants, class lists, clip
          settings, normalisation, the part-state baseline table: the folder loads as a whole with
          actparse.csn.load_model_dir), artifacts/models/csn/train_info.json (per-epoch loss / train
          accuracy, time, settings), artifacts/skips/train_csn.parquet (undecodable videos).
With csn.model set (a trained CSN folder, e.g. the artifacts/models/csn of another run) nothing is
trained and no label is read: the folder is loaded whole (checked), its csn.variants are copied here
and train_info.json records {"trained": false, "source": ...}.
Params: seed, device, csn.model, csn.variants, csn.depth, csn.stage_depths, csn.stem_dim, csn.stem_pool,
        csn.dropout, csn.shared_backbone, csn.freeze_bn, csn.pretrained.{ip,ir,key_map},
        csn.num_frames, csn.interval, csn.short_side, csn.crop, csn.train_short_side, csn.flip,
        csn.color_jitter, csn.grayscale_prob, csn.background, csn.epochs, csn.batch_size, csn.lr,
        csn.momentum, csn.weight_decay, csn.nesterov, csn.warmup_iters, csn.lr_steps, csn.lr_gamma,
        csn.mixup_alpha, csn.train_workers, csn.train_threads, csn.input_norm, csn.val_fraction.
With csn.val_fraction > 0 a seeded, per-action stratified part of the labelled train videos is held
out (not trained on); its list is stored in each checkpoint (extra.val_videos) and train_info.json,
and the csn stage predicts it to choose the ensemble weights (csn.ensemble_weights: search).
On CPU the variants train at once, one process each (csn.train_workers); on CUDA one after another.
Each model has seven outputs (video action + six part groups); seed 001 trains seven networks
per variant, set csn.shared_backbone: false for that.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from actparse import determinism
from actparse.clips import load_video
from actparse.csn import (clip_spec_from_params, fit, given_model_dir, load_model_dir, load_pretrained,
                          model_config_from_params, pretrained_path, save_checkpoint, train_settings_from_params,
                          val_fraction_from_params, variants_from_params, write_model_manifest)
from actparse.dataset import load_videos, video_path
from actparse.models.csn import MultiTaskCSN
from actparse.params import get, resolve_device
from actparse.parallel import map_jobs
from actparse.part_labels import read_classes
from actparse.paths import Paths, check_outside, data_root
from actparse.atomic import write_json
from actparse.schemas import read_df
from actparse.stage import SkipLedger, configure_logging, model_folder, stage_log, stage_main
from actparse.train import count_parameters, seed_everything, val_split
from actparse.weights.csn import KEY_MAPS
from actparse.video import DECODE_BUDGET_ENV, LazyVideo, VideoError, decode_backend, decode_budget_bytes, hold_in_memory

log = stage_log("train_csn")


def decode_videos(droot: Path, records: list[dict], short_side: int, ledger: SkipLedger, desc: str,
                  backend: str = "decord") -> dict:
    """The train videos' frames: decoded once and held in memory when they fit in
    ``$ACTPARSE_DECODE_BUDGET_MB``, else opened for on-demand clip reading (:class:`LazyVideo`: the
    frames a clip needs are decoded when it is made). Both give the same clips. Returns {video: frames};
    videos that cannot be opened go to ``ledger``."""
    eager, size = hold_in_memory(records, short_side)
    mib = f"~{size / 2**20:.0f} MiB decoded" if size is not None else "size unknown"
    log.info("%s train videos (%s, %s=%d MiB): %s", len(records), mib, DECODE_BUDGET_ENV,
             decode_budget_bytes() >> 20, "decoded into memory" if eager else "clips read on demand")
    out = {}
    for rec in tqdm(records, desc=desc, unit="video", disable=None):
        ledger.tried(rec["video"])
        try:
            path = video_path(droot, rec["path"])
            out[rec["video"]] = load_video(path, short_side, backend) if eager else \
                LazyVideo(path, short_side, backend=backend)
        except (VideoError, ValueError) as exc:
            ledger.skip(rec["video"], exc)
    return out


def training_processes(params: dict, n_variants: int, device: str) -> tuple[int, int]:
    """(processes, torch threads per process) for training ``n_variants`` CSN variants.

    ``csn.train_workers``: variants trained at once, each in its own process (0 = one per variant,
    at most one per core; 1 = one after another); only on CPU, where one small 3D network keeps two
    cores only ~65% busy. ``csn.train_threads``: torch threads per process (0 = ACTPARSE_CPU_THREADS or 2, / processes).
    """
    workers = get(params, "csn.train_workers", int, min_value=0, max_value=64)
    threads = get(params, "csn.train_threads", int, min_value=0, max_value=256)
    cores = determinism.cores()
    procs = 1 if device != "cpu" else max(1, min(n_variants, workers or cores))
    return procs, threads or max(1, cores // procs)


def train_variant(job: dict) -> dict:
    """Train one variant and save its checkpoint; runs in the stage process or a spawned worker."""
    if not logging.getLogger().handlers:  # a spawned worker: same log format as the stage
        configure_logging()
    torch.set_num_threads(job["threads"])
    variant, settings = job["variant"], job["settings"]
    seed_everything(job["seed"])
    model = MultiTaskCSN(job["cfg"], job["n_classes"])
    pre = job["pretrained"]
    if pre is not None:
        n = load_pretrained(model, pre, job["key_map"])
        log.info("%s-CSN: loaded %d pretrained tensors from %s", variant, n, pre)
    t1 = time.time()
    history = fit(model, job["clips"], job["targets"], job["spec"], settings, seed=job["seed"],
                  device=job["device"], desc=f"train {variant}-CSN", position=job["position"], val=job["val"])
    secs = time.time() - t1
    model.to("cpu").to(memory_format=torch.contiguous_format)
    extra = {"clip": job["clip_info"], "pretrained": str(pre) if pre else None}
    if job.get("val_videos"):
        extra["val_videos"] = list(job["val_videos"])
    save_checkpoint(model, job["out"], job["classes"], extra=extra)
    n_params = count_parameters(model)
    log.info("%s-CSN: %d params, %d epochs in %.1fs, final loss %.3f, train action acc %.2f", variant,
             n_params, settings.epochs, secs, history["loss"][-1],
             history["train_acc"][-1].get("action", float("nan")))
    return {"config": job["cfg"].to_dict(), "parameters": n_params, "seconds": round(secs, 2),
            "threads": job["threads"], "pretrained": str(pre) if pre else None,
            "final_loss": history["loss"][-1], "final_train_acc": history["train_acc"][-1],
            "loss": history["loss"], "train_acc": history["train_acc"],
            **({"val_acc": history["val_acc"]} if "val_acc" in history else {})}


def use_given_model(paths: Paths, given: Path, variants: list[str]) -> None:
    """csn.model: load the trained folder whole (a clear error if anything is missing), copy it in."""
    import shutil
    from dataclasses import asdict as _asdict

    src = load_model_dir(given, "cpu", variants)
    with model_folder(paths.models / "csn") as out_dir:  # replaces the old folder only on success
        for v in variants:
            shutil.copyfile(given / src.manifest["files"][v], out_dir / f"{v}.pt")
        clip = {k: list(x) if isinstance(x, tuple) else x for k, x in _asdict(src.specs[variants[0]]).items()}
        write_model_manifest(out_dir, variants, src.classes, clip, src.baseline,
                             extra={"trained": False, "source": str(given)})
        write_json({"trained": False, "source": str(given), "variants": variants,
                    "classes": {t: len(c) for t, c in src.classes.items()}}, out_dir / "train_info.json")
    SkipLedger("train_csn", paths.root).write()  # nothing decoded: no skips
    log.info("using the trained CSN %s (%s; no training)", given, "+".join(variants))


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    given = given_model_dir(params, root)
    if given is not None:
        check_outside(given, paths.models / "csn", "csn.model")
        use_given_model(paths, given, variants_from_params(params))
        return
    seed = get(params, "seed", int)
    device = resolve_device(params)
    variants = variants_from_params(params)
    spec = clip_spec_from_params(params)
    settings = train_settings_from_params(params)
    configs = {v: model_config_from_params(params, v) for v in variants}
    key_map = get(params, "csn.pretrained.key_map", str, choices=tuple(KEY_MAPS))
    for v in variants:
        if configs[v].freeze_bn and pretrained_path(params, v) is None:
            log.warning("%s-CSN: csn.freeze_bn is true but csn.pretrained.%s is null: trained from scratch, a frozen "
                        "BN never learns its statistics (use freeze_bn: auto)", v, v)
    classes = read_classes(paths.part_labels)
    tasks = list(classes)

    labels = read_df(paths.part_labels / "labels.parquet", "part_labels")
    train = labels[labels["split"] == "train"]
    droot = data_root(params, root)
    videos = load_videos(droot).to_pandas()
    names = sorted(set(train["video"]) & set(videos["video"]))
    if not names:
        raise ValueError(f"{paths.part_labels / 'labels.parquet'}: no labelled train-split video in {droot}")
    val_fraction = val_fraction_from_params(params)
    val_videos: list[str] = []
    if val_fraction > 0:
        action = train[train["task"] == "action"].set_index("video")["label"]
        val_videos = val_split(names, [action.get(n, "") for n in names], val_fraction, seed)
        names = [n for n in names if n not in set(val_videos)]
        log.info("held out %d of %d train videos for validation (csn.val_fraction %s)", len(val_videos),
                 len(names) + len(val_videos), val_fraction)
    records = videos.set_index("video").loc[names].reset_index().to_dict("records")

    torch.manual_seed(seed)
    t0 = time.time()
    ledger = SkipLedger("train_csn", root, what="train videos")
    decoded = decode_videos(droot, records, spec.cache_short_side, ledger, "load train videos", decode_backend(params))
    ledger.check(droot)
    names = [n for n in names if n in decoded]
    index = {t: {c: i for i, c in enumerate(cl)} for t, cl in classes.items()}
    lab = train.set_index(["video", "task"])["label"]
    missing = [(n, t) for t in tasks for n in names if (n, t) not in lab.index or lab[(n, t)] not in index[t]]
    if missing:
        raise ValueError(f"{paths.part_labels}: labels.parquet and classes.json disagree (e.g. video {missing[0][0]!r}, "
                         f"task {missing[0][1]!r}); rerun part_labels")
    targets = {t: np.array([index[t][lab[(n, t)]] for n in names], dtype=np.int64) for t in tasks}
    clips = [decoded[n] for n in names]
    val = None
    if val_videos:  # watched after every epoch (top-1 per head, one centre clip per video)
        vrec = videos.set_index("video").loc[val_videos].reset_index().to_dict("records")
        vdec = decode_videos(droot, vrec, spec.cache_short_side, ledger, "load validation videos",
                             decode_backend(params))
        kept = [n for n in val_videos if n in vdec and all((n, t) in lab.index and lab[(n, t)] in index[t]
                                                           for t in tasks)]
        val = ([vdec[n] for n in kept], {t: np.array([index[t][lab[(n, t)]] for n in kept], np.int64) for t in tasks})
    decode_s = time.time() - t0
    log.info("loaded %d train videos in %.1fs (%d skipped)", len(names), decode_s, ledger.n_failed)

    procs, threads = training_processes(params, len(variants), device)
    with model_folder(paths.models / "csn") as out_dir:  # replaces the old folder only on success
        info = {"videos": len(names), "decode_seconds": round(decode_s, 2), "device": device,
                "processes": procs, "threads_per_process": threads,
                "clip": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()},
                "train": settings.to_dict(), "val_videos": val_videos, "variants": {}}
        jobs = [dict(variant=variant, cfg=configs[variant], n_classes={t: len(classes[t]) for t in tasks},
                     pretrained=pretrained_path(params, variant), key_map=key_map, clips=clips, targets=targets,
                     spec=spec, settings=settings, seed=seed + 1000 * k, device=device, threads=threads,
                     out=out_dir / f"{variant}.pt", classes=classes, clip_info=info["clip"], position=k,
                     val_videos=val_videos, val=val)
                for k, variant in enumerate(variants)]
        if procs > 1:
            log.info("training %s in %d processes, %d torch thread(s) each", "+".join(variants), procs, threads)
        results = list(map_jobs(train_variant, jobs, procs))
        for variant, res in zip(variants, results):
            info["variants"][variant] = res
        baseline_path = paths.part_labels / "baseline.json"
        baseline = json.loads(baseline_path.read_text()) if baseline_path.exists() else {}
        write_model_manifest(out_dir, variants, classes, info["clip"], baseline, extra={"trained": True})
        write_json(info, out_dir / "train_info.json")
    ledger.write()


def main(argv=None) -> int:
    return stage_main("train_csn", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
