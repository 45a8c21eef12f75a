"""Predict every part's state per key frame with the seed 000 part-state network and score it.

Reads:  artifacts/models/partattn/model.pt; the test videos of <data.root>/videos.parquet;
        persons by partattn.persons_source: refined (artifacts/refined_persons.parquet), detected
          (artifacts/persons.parquet) or gt (ground truth on every partattn.stride-th frame);
        parts by partattn.parts_source: detected (artifacts/parts.parquet, joined on video / frame /
          person) or gt (the parts of the ground-truth person each box matches, IoU >= 0.5);
        the action input by partattn.action_source: predicted (artifacts/video_predictions.parquet,
          task "action", the ensemble's label) or gt (the video's label);
        <data.root>/gt_persons.parquet (scoring) and, when present, artifacts/part_states.parquet
          (seed 001's video-label states, scored alongside).
Writes: artifacts/partattn/part_states.parquet (schema "part_states"): a state per predicted part,
          one row group per test video (predicted video by video)
        artifacts/partattn/video_counts.parquet (schema "video_counts"): per test video, scored key
          ("model", "prior", "seed001_part_states") and part group, the parts scored and the right ones
        metrics/partattn.json: part-state top-1 accuracy (x100) over the visible ground-truth parts of
          the test key frames (persons matched at IoU >= 0.5; missed persons / parts count as wrong),
          per part group, for this model, for the most-frequent-state prior per (action, part) (seed
          001 submission 1) with the same action input, and for seed 001's part_states.parquet
        artifacts/skips/partattn_predict.parquet: test videos that could not be decoded
With partattn.enabled false it writes metrics/partattn.json {"enabled": false} and empty tables.
Params: partattn.enabled, partattn.persons_source, partattn.parts_source, partattn.action_source,
        partattn.min_score, partattn.stride, partattn.batch_size, device.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from actparse.params import get, resolve_device
from actparse.paths import Paths, data_root
from actparse.atomic import write_json
from actparse.schemas import from_columns, from_rows, read_df, write_table
from actparse.shards import VideoSkipped, VideoWork, cached, mapper_of, run_videos
from actparse.stage import seed_disabled, stage_log, stage_main
from actparse.video import decode_backend

log = stage_log("partattn_predict")


def predicted_actions(paths: Paths) -> dict[str, str]:
    """{video: action} from the CSN ensemble (task "action"; the best model row when no ensemble)."""
    df = read_df(paths.video_predictions, "video_predictions", columns=["video", "task", "model", "label", "score"])
    df = df[df["task"] == "action"]
    if df.empty:
        raise ValueError(f"{paths.video_predictions}: no task 'action' predictions")
    ens = df[df["model"] == "ensemble"]
    if ens.empty:
        ens = df.sort_values("score", ascending=False).drop_duplicates("video")
    return dict(zip(ens["video"], ens["label"]))


class Work(VideoWork):
    """partattn_predict per test video: params, model and action inputs read once, then :meth:`one`
    per video (the stage's run and the flow's shards, actparse/shards.py); :meth:`after` scores the
    written predictions (metrics/partattn.json) over the whole run."""

    STAGE, SCHEMA, SECTIONS = "partattn_predict", "part_states", ("partattn", "data.root", "decode.backend")
    WHAT = "test videos"

    def __init__(self, params: dict, root: Path):
        from actparse.dataset import BOX_SOURCES

        super().__init__(params, root)
        paths = self.paths = Paths(root)
        self.out_json = paths.metrics / "partattn.json"
        self.output = paths.partattn / "part_states.parquet"
        self.out_counts = paths.partattn / "video_counts.parquet"
        self.model_path = paths.models / "partattn" / "model.pt"
        if not self.enabled():
            return
        self.persons_source = get(params, "partattn.persons_source", str, choices=BOX_SOURCES)
        self.parts_source = get(params, "partattn.parts_source", str, choices=("detected", "gt"))
        self.action_source = get(params, "partattn.action_source", str, choices=("predicted", "gt"))
        self.min_score = get(params, "partattn.min_score", float, min_value=0.0)
        self.stride = get(params, "partattn.stride", int, min_value=1)
        self.device = resolve_device(params)
        self.droot = self.where = data_root(params, root)

    def enabled(self) -> bool:
        return get(self.params, "partattn.enabled", bool)

    def placeholder(self) -> None:
        seed_disabled(self.params, "partattn", "partattn_predict", self.root, tables={self.output: "part_states", self.out_counts: "video_counts"},
                      json_files=[self.out_json], skips=True)

    def inputs(self) -> list[Path]:
        from actparse.dataset import gt_persons_path

        persons = {"refined": self.paths.refined, "detected": self.paths.persons}.get(self.persons_source)
        return [p for p in (self.droot / "videos.parquet", gt_persons_path(self.droot), self.model_path, persons,
                            self.paths.parts if self.parts_source == "detected" else None,
                            self.paths.video_predictions if self.action_source == "predicted" else None) if p]

    def video_inputs(self, videos) -> list[Path]:
        from actparse.dataset import video_path

        test = self._test()
        return [video_path(self.droot, p) for p in test.loc[test["video"].isin(set(videos)), "path"]]

    def check(self) -> None:
        if not self.model_path.is_file():
            raise FileNotFoundError(f"{self.model_path}: part-state model not found (has partattn_train run?)")

    def _videos(self):
        from actparse.dataset import load_videos

        return load_videos(self.droot).to_pandas()

    def _acts(self, videos) -> dict:
        return predicted_actions(self.paths) if self.action_source == "predicted" else \
            dict(zip(videos["video"], videos["action"]))

    def _load(self):
        from actparse.partattn import load_checkpoint

        return cached(("partattn", str(self.model_path), self.device), [self.model_path],
                      lambda: load_checkpoint(self.model_path, self.device))

    def setup(self) -> None:
        from actparse.partattn import settings_from_params

        self.model, ck = self._load()
        self.actions = ck["actions"]
        s = self.s = settings_from_params(self.params)
        saved = ck["extra"].get("settings", {})
        s.num_frames, s.interval, s.margin = saved.get("num_frames", s.num_frames), saved.get("interval", s.interval), \
            saved.get("margin", s.margin)
        self.act_of = self._acts(self._videos())
        self.backend = decode_backend(self.params)

    def _test(self):
        videos = self._videos()
        return videos[videos["split"] == "test"].reset_index(drop=True)

    def videos(self) -> list[str]:
        return self._test()["video"].tolist()

    def total(self) -> int | None:
        return len(self._test())

    def _gt(self, vids=None):
        """The GT rows (of ``vids``; None: all)."""
        from actparse.dataset import gt_persons_path

        return read_df(gt_persons_path(self.droot), "gt_persons",
                       columns=["video", "frame", "person", "box", "part_boxes", "part_visible", "part_states"],
                       filters=[("video", "in", list(vids))] if vids else None)

    def _key_frames(self, gt, vids):
        """The scored GT rows: ``vids``' key frames."""
        return gt[gt["video"].isin(set(vids)) & (gt["frame"] % self.stride == 0)]

    def tables(self, videos=None):
        """(video, (its row of videos.parquet, its persons, its GT / detected parts by key)) for the test
        videos with persons."""
        from actparse.dataset import load_person_boxes

        test = self._test()
        if videos is not None:
            test = test[test["video"].isin(set(videos))]
        vids = test["video"].tolist()
        persons = load_person_boxes(self.persons_source, self.root, self.droot, vids, self.stride, self.min_score)
        by_video = {v: g for v, g in persons.groupby("video", sort=False)}
        gt_by, parts_by = {}, {}
        if self.parts_source == "gt":
            gt_by = {k: g for k, g in self._key_frames(self._gt(vids), vids).groupby(["video", "frame"], sort=False)}
        else:
            parts = read_df(self.paths.parts, "parts", columns=["video", "frame", "person", "part", "box"],
                            filters=[("video", "in", vids)] if vids else None)
            for r in parts[parts["video"].isin(set(vids))].itertuples(index=False):
                parts_by.setdefault((r.video, int(r.frame), int(r.person)), {})[r.part] = np.asarray(r.box, np.float64)
        for row in test.itertuples(index=False):
            if row.video in by_video:
                yield row.video, (row, by_video[row.video], gt_by, parts_by)

    def prepare(self, video: str, table):
        """The decoded video (on the prefetch thread, while the model runs the previous one)."""
        from actparse.clips import load_video
        from actparse.dataset import video_path
        from actparse.video import VideoError

        try:
            return (*table, load_video(video_path(self.droot, table[0].path), backend=self.backend))
        except (VideoError, ValueError) as exc:
            raise VideoSkipped(str(exc)) from None

    def one(self, video: str, prepared):
        from actparse.constants import GROUP_OF_PART, NUM_PARTS, PART_STATES, PARTS
        from actparse.partattn import PersonSample, match_persons, predict

        row, pv, gt_by, parts_by, v = prepared
        action = self.act_of.get(video)
        a_idx = self.actions.index(action) if action in self.actions else 0
        if action not in self.actions:
            log.warning("partattn: no known action for %s (%r); using %r", video, action, self.actions[0])
        samples, keys = [], []
        for fr, gf in pv.groupby("frame", sort=True):
            boxes = np.stack(gf["box"].to_numpy()).astype(np.float64)
            pids = gf["person"].to_numpy()
            if self.parts_source == "gt":
                g = gt_by.get((video, int(fr)))
                pairs = dict(match_persons(boxes, np.stack(g["box"].to_numpy()) if g is not None else np.zeros((0, 4))))
            for k, pid in enumerate(pids):
                pb = np.zeros((NUM_PARTS, 4))
                valid = np.zeros(NUM_PARTS, bool)
                if self.parts_source == "detected":
                    for j, part in enumerate(PARTS):
                        b = parts_by.get((video, int(fr), int(pid)), {}).get(part)
                        if b is not None:
                            pb[j], valid[j] = b, True
                elif k in pairs:
                    gr = g.iloc[pairs[k]]
                    pb = np.asarray(gr["part_boxes"], np.float64).reshape(NUM_PARTS, 4)
                    valid = np.asarray(gr["part_visible"], bool)
                if not valid.any():
                    continue
                samples.append(PersonSample(0, int(fr), boxes[k], pb, valid, a_idx))
                keys.append((int(fr), int(pid)))
        cols = {k: [] for k in ("video", "frame", "person", "part", "box", "state", "score")}
        if samples:
            states, probs = predict(self.model, [v], samples, self.s, self.device)
        for i, (smp, (fr, pid)) in enumerate(zip(samples, keys)):
            for j, part in enumerate(PARTS):
                if smp.part_valid[j]:
                    cols["video"].append(video)
                    cols["frame"].append(fr)
                    cols["person"].append(pid)
                    cols["part"].append(part)
                    cols["box"].append(smp.part_boxes[j].astype(np.float32))
                    cols["state"].append(PART_STATES[GROUP_OF_PART[part]][states[i, j]])
                    cols["score"].append(float(probs[i, j]))
        return from_columns(cols, "part_states") if cols["video"] else from_rows([], "part_states")

    def after(self) -> None:
        """metrics/partattn.json from the written predictions: each predicted person (its box from the
        person source, its parts' states) scored against the GT, with the prior and seed 001 alongside."""
        from actparse.dataset import load_person_boxes
        from actparse.metrics.bootstrap import counts_of
        from actparse.part_labels import baseline_states
        from actparse.partattn import state_accuracy

        videos = self._videos()
        vids = videos.loc[videos["split"] == "test", "video"].tolist()
        gt = self._gt()
        gt_test = self._key_frames(gt, vids)
        persons = load_person_boxes(self.persons_source, self.root, self.droot, vids, self.stride, self.min_score)
        box_of = {(r.video, int(r.frame), int(r.person)): np.asarray(r.box) for r in persons.itertuples(index=False)}
        act_of = self._acts(videos)
        train = videos[videos["split"] == "train"]
        prior = baseline_states(gt, {v: a for v, a in zip(train["video"], train["action"]) if isinstance(a, str)})
        pred = read_df(self.output, "part_states", columns=["video", "frame", "person", "part", "state"])
        pred_eval: dict = {}
        prior_eval: dict = {}
        for (v, fr, pid), g in pred.groupby(["video", "frame", "person"], sort=False):
            box = box_of[(v, int(fr), int(pid))].astype(np.float64)
            pred_eval.setdefault((v, int(fr)), []).append((box, dict(zip(g["part"], g["state"]))))
            table_a = prior.get(act_of.get(v), {})
            prior_eval.setdefault((v, int(fr)), []).append((box, {p: table_a.get(p, "none") for p in g["part"]}))
        items: dict[str, list] = {"model": [], "prior": []}
        _, ck = self._load()
        config, saved = ck["config"], ck["extra"].get("settings", {})
        metrics = {"enabled": True, "config": {k: config[k] for k in ("roi_mode", "use_action", "use_attention",
                                                                      "use_context")},
                   "augment": bool(saved.get("augment", True)), "persons_source": self.persons_source,
                   "parts_source": self.parts_source, "action_source": self.action_source,
                   "model": state_accuracy(pred_eval, gt_test, items=items["model"]),
                   "prior": state_accuracy(prior_eval, gt_test, items=items["prior"])}
        if self.paths.part_states.exists() and self.persons_source == "refined":
            ps = read_df(self.paths.part_states, "part_states", columns=["video", "frame", "person", "part", "state"])
            s001: dict = {}
            for (v, fr, pid), g in ps[ps["video"].isin(set(vids))].groupby(["video", "frame", "person"], sort=False):
                if (v, int(fr), int(pid)) in box_of:
                    s001.setdefault((v, int(fr)), []).append((box_of[(v, int(fr), int(pid))],
                                                              dict(zip(g["part"], g["state"]))))
            items["seed001_part_states"] = []
            metrics["seed001_part_states"] = state_accuracy(s001, gt_test, items=items["seed001_part_states"])
        rows = [(v, key, grp, right) for key, its in items.items() for v, grp, right in its]
        counts = counts_of(*zip(*rows)) if rows else counts_of([], [], [], [])
        write_table(from_columns(counts.to_dict("list"), "video_counts"), self.out_counts, "video_counts")
        write_json(metrics, self.out_json)
        self.n_persons = sum(len(persons) for persons in pred_eval.values())
        self.metrics = metrics


FLOW_MAPPER = mapper_of(Work)  # the flow's shards of consecutive videos (flow.map_stages, flow.shard_videos)


def run(params: dict, root: Path) -> None:
    work = Work(params, root)
    run_videos(work)
    if work.enabled():
        log.info(f"{work.n_persons} persons, state top-1 {work.metrics['model']['top1']} "
                 f"(prior {work.metrics['prior']['top1']}) -> {work.out_json}")


def main(argv=None):
    return stage_main("partattn_predict", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
