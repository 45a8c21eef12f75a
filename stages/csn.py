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
        csn.test_batch (clips per forward pass; the clips of max(1, test_batch // test_clips) consecutive
        videos are batched together), csn.ensemble_weights ({default: {ip: w, ir: w}, <task>: {...}} overrides, or
        "search": per task, the weights on a grid of csn.ensemble_grid points per variant that
        maximise top-1 accuracy on the validation videos train_csn held out, csn.val_fraction).
Clip length, interval, resize, crop and background removal are those the models were trained with
(stored in the checkpoints). Per-split, per-model, per-task top-1 accuracies are logged.

In the Prefect flow (``flow.map_stages: [..., csn]``) the videos run in shards (:class:`Shards`): each
shard writes its videos' probabilities of every variant, and the merge searches the weights, makes the
ensemble and writes these same files, byte for byte.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

from actparse.clips import test_clips
from actparse.csn import (clip_probs, ensemble, ensemble_search_enabled, ensemble_weights_from_params, load_model_dir,
                          memory_format, read_model_manifest, search_ensemble_weights, variants_from_params)
from actparse.dataset import load_videos, video_path
from actparse.params import get, resolve_device
from actparse.part_labels import accuracy, read_classes
from actparse.paths import Paths, data_root
from actparse.atomic import write_json
from actparse.schemas import ParquetStreamWriter, from_columns, iter_row_groups, read_df
from actparse.shards import ShardMapper, VideoSkipped, VideoWork, cached, file_state
from actparse.stage import Progress, SkipLedger, stage_log, stage_main
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


class Work(VideoWork):
    """csn's per-video work (the stage's run and the flow's shards, actparse/shards.py): each video's
    probabilities of every variant and task. Clips of consecutive videos are batched in fixed *batch
    groups*: ``max(1, csn.test_batch // csn.test_clips)`` videos of the list being processed, counted from
    its start (a video that cannot be decoded keeps its place). A video's probabilities depend on which
    other clips share its forward pass (last-bit float differences), so the shards of the flow are made of
    whole batch groups: they run the very batches the stage runs and get the very same numbers."""

    STAGE, SCHEMA = "csn", "video_predictions"
    SECTIONS = ("csn.variants", "csn.test_clips", "csn.test_batch", "decode.backend", "data.root")

    def __init__(self, params: dict, root: Path):
        super().__init__(params, root)
        self.paths = Paths(root)
        self.device = resolve_device(params)
        self.variants = variants_from_params(params)
        self.n_clips = get(params, "csn.test_clips", int, min_value=1)
        self.batch = get(params, "csn.test_batch", int, min_value=1)
        self.group = max(1, self.batch // self.n_clips)  # videos per batch group
        self.search = ensemble_search_enabled(params)
        self.droot = data_root(params, root)
        self.backend = decode_backend(params)
        self.model_dir = self.paths.models / "csn"
        self.output, self.where = self.paths.video_predictions, self.droot
        self._records: dict[str, dict] | None = None

    def inputs(self) -> list[Path]:
        return [self.droot / "videos.parquet", self.model_dir, self.paths.part_labels / "classes.json"]

    def check(self) -> None:
        read_classes(self.paths.part_labels)
        read_model_manifest(self.model_dir)

    def setup_classes(self) -> None:
        """The class lists and the fixed ensemble weights / search grid (what the merge needs; no model)."""
        self.classes = read_classes(self.paths.part_labels)
        self.tasks = list(self.classes)
        self.fixed = ensemble_weights_from_params(self.params, self.variants, self.tasks)
        self.steps = get(self.params, "csn.ensemble_grid", int, min_value=2, max_value=1001)

    def setup(self) -> None:
        self.setup_classes()

        def load():
            extras: dict = {}
            models, specs = load_models(self.paths, self.variants, self.classes, self.device, extras)
            return models, specs, extras

        self.models, self.specs, self.extras = cached(("csn", self.device, tuple(self.variants)),
                                                      [self.model_dir, self.paths.part_labels / "classes.json"], load)
        self.cache_side = max(s.short_side for s in self.specs.values())

    def records(self) -> dict[str, dict]:
        """{video: its videos.parquet record}, in data-set order."""
        if self._records is None:
            self._records = {r["video"]: r for r in load_videos(self.droot).to_pylist()}
        return self._records

    def val_names(self) -> set[str]:
        """The validation videos of the ensemble search (empty without it), from the checkpoints (read on
        the CPU: the flow plans its shards where there may be no GPU)."""
        if not self.search:
            return set()
        extras = getattr(self, "extras", None)
        if extras is None:
            extras = cached(("csn extras", tuple(self.variants)), [self.model_dir],
                            lambda: load_model_dir(self.model_dir, "cpu", self.variants).extras)
        return validation_videos(self.paths, self.variants, extras)

    def lists(self) -> list[list[str]]:
        """The videos in the order they are processed: with the ensemble search the validation videos
        first (their scores choose the weights), then the others; each in data-set order. Batch groups
        and shards never span two lists."""
        names = list(self.records())
        if not self.search:
            return [names]
        val = self.val_names()
        return [[n for n in names if n in val], [n for n in names if n not in val]]

    def videos(self) -> list[str]:
        return [n for names in self.lists() for n in names]

    def total(self) -> int | None:
        return len(self.records())

    def tables(self, videos=None):
        """``(video, {variant: {task: probs}})`` per video of ``videos`` (None: all, in processing order),
        in that order; ``(video, VideoSkipped)`` for a video that cannot be decoded. The clips of the next
        batch group are decoded on a thread of their own while the models run the current one (the same
        clips, only earlier)."""
        from concurrent.futures import ThreadPoolExecutor

        names = self.videos() if videos is None else list(videos)
        groups = [names[s:s + self.group] for s in range(0, len(names), self.group)]
        if not groups:
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="csn-decode") as pool:
            pending = pool.submit(self._decode, groups[0])
            for k, group in enumerate(groups):
                clips, skipped = pending.result()
                if k + 1 < len(groups):
                    pending = pool.submit(self._decode, groups[k + 1])
                probs = self.forward(clips)
                for name in group:
                    yield name, probs[name] if name in probs else skipped[name]

    def _decode(self, group: list[str]) -> tuple[dict[str, dict], dict[str, VideoSkipped]]:
        """The test clips of one batch group's videos ({video: {spec: clips}}) and the videos skipped."""
        records = self.records()
        clips: dict[str, dict] = {}
        skipped: dict[str, VideoSkipped] = {}
        for name in group:
            if name not in records:
                raise ValueError(f"{self.droot / 'videos.parquet'}: no video {name!r} (the data set changed "
                                 f"while the stage ran)")
            try:
                frames = LazyVideo(video_path(self.droot, records[name]["path"]), self.cache_side,
                                   backend=self.backend)  # the clips' frames
                clips[name] = {sp: test_clips(frames, sp, self.n_clips) for sp in set(self.specs.values())}
            except (VideoError, ValueError) as exc:
                skipped[name] = VideoSkipped(str(exc) or type(exc).__name__)
        return clips, skipped

    def forward(self, clips: dict[str, dict]) -> dict[str, dict[str, dict[str, np.ndarray]]]:
        """One batch group: {video: {spec: clips}} -> {video: {variant: {task: probs averaged over clips}}}."""
        out: dict[str, dict[str, dict[str, np.ndarray]]] = {name: {} for name in clips}
        if not clips:
            return out
        n = self.n_clips
        for v, model in self.models.items():
            probs = clip_probs(model, torch.cat([c[self.specs[v]] for c in clips.values()]), self.device, self.batch)
            for k, name in enumerate(clips):
                out[name][v] = {t: p[k * n:(k + 1) * n].mean(0) for t, p in probs.items()}
        return out

    def one(self, video: str, probs):
        """A video's part of a shard: its rows of every variant (the ensemble is made at the merge)."""
        if isinstance(probs, VideoSkipped):
            raise probs
        return prediction_table(video, probs, self.classes)

    def write(self, probs: dict, ledger: SkipLedger, weights: dict, report: dict | None, t0: float) -> int:
        """The stage's outputs from every video's probabilities ({video: {variant: {task: probs}}}): the
        predictions with the ensemble rows, in processing order, the skips, metrics/ensemble.json."""
        classes, tasks, variants = self.classes, self.tasks, self.variants
        preds = {}
        with ParquetStreamWriter(self.output, "video_predictions") as writer:
            for name in self.videos():
                if name not in probs:
                    continue
                p = probs[name]
                p[ENSEMBLE] = {t: ensemble({v: p[v][t] for v in variants}, weights[t]).astype(np.float32)
                               for t in tasks}
                writer.write(prediction_table(name, p, classes))
                preds[name] = {m: {t: classes[t][int(np.argmax(x))] for t, x in pt.items()} for m, pt in p.items()}
            ledger.check(self.droot)
        ledger.write()
        log.info("predicted %d videos x %d clips x %d models in %.1fs (%d skipped)", len(preds), self.n_clips,
                 len(variants), time.time() - t0, ledger.n_failed)
        accs = log_accuracy(self.paths, preds, tasks, list(variants) + [ENSEMBLE])
        write_json(ensemble_report(self.search, weights, report, accs, tasks), self.paths.metrics / "ensemble.json")
        return writer.rows

    def weights(self, probs: dict) -> tuple[dict, dict | None]:
        """(per-task ensemble weights, search report or None): csn.ensemble_weights, or searched on the
        probabilities of the validation videos in ``probs``."""
        if not self.search:
            return self.fixed, None
        val = self.val_names()
        return choose_weights(self.paths, {n: p for n, p in probs.items() if n in val}, self.variants, self.tasks,
                              self.classes, self.steps)


class Shards(ShardMapper):
    """The flow's shards of csn (``flow.map_stages``): each shard writes its videos' probabilities of every
    variant; the merge searches the ensemble weights on the validation videos' (csn.ensemble_weights:
    search), makes the ensemble rows and writes the stage's outputs. A shard holds whole batch groups
    (``flow.shard_videos`` rounded up to a multiple of ``max(1, csn.test_batch // csn.test_clips)``), and
    never mixes validation and other videos, so that it runs exactly the batches the stage runs."""

    WORK = Work

    def __init__(self, root, params: dict):
        super().__init__(root, params)
        self.asked, group = self.size, self.work.group
        self.size = -(-self.size // group) * group

    def items(self) -> list[list]:
        self.work.check()
        if self.size != self.asked:
            log.info("shards of %d videos: flow.shard_videos %d rounded up to whole batch groups of %d videos "
                     "(csn.test_batch // csn.test_clips)", self.size, self.asked, self.work.group)
        chunks = [names[s:s + self.size] for names in self.work.lists() for s in range(0, len(names), self.size)]
        return [[i, c] for i, c in enumerate(chunks) if c]

    def fingerprint(self, videos) -> str:
        """The base fingerprint plus the size and mtime of the shard's own video files."""
        records = self.work.records()
        files = [[n, file_state(video_path(self.work.droot, records[n]["path"])) if n in records else None]
                 for n in videos]
        return hashlib.sha256((super().fingerprint(videos) + repr(files)).encode()).hexdigest()

    def merge(self, items, errors: dict[str, dict], workdir) -> dict:
        """The stage's outputs from the parts: the ensemble weights (searched on the validation videos'
        probabilities), the ensemble rows, the skips (a shard that failed after its retries has its
        videos recorded as skips with its error)."""
        t0 = time.time()
        work = self.work
        ledger, _, parts = self.replay(items, errors, workdir)
        work.setup_classes()
        probs: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        for part in parts:
            for group in iter_row_groups(part[0], "video_predictions"):
                for r in group.select(["video", "model", "task", "probs"]).to_pylist():
                    probs.setdefault(r["video"], {}).setdefault(r["model"], {})[r["task"]] = \
                        np.asarray(r["probs"], dtype=np.float32)
        weights, report = work.weights(probs)
        rows = work.write(probs, ledger, weights, report, t0)
        return {"videos": ledger.n_tried - ledger.n_failed, "rows": rows, "skipped": ledger.n_failed,
                "shards": len(items)}


FLOW_MAPPER = Shards  # the flow's shards of consecutive videos (flow.map_stages, flow.shard_videos)


def run(params: dict, root: Path) -> None:
    work = Work(params, root)
    work.setup()
    ledger = SkipLedger("csn", root)
    probs: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    t0 = time.time()
    with Progress(work.total(), "videos", "csn") as bar:
        def predict(names: list[str]) -> None:
            for name, result in work.tables(names):
                ledger.tried(name)
                bar.update()
                if isinstance(result, VideoSkipped):
                    ledger.skip(name, result)
                else:
                    probs[name] = result

        *first, rest = work.lists()
        for names in first:  # the search's validation videos: their scores choose the weights of every task
            predict(names)
        weights, report = work.weights(probs)
        predict(rest)
    work.write(probs, ledger, weights, report, t0)


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
