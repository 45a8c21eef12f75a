"""Frame-level part states from the video-level CSN predictions (seed 001 section 1.3).

Reads:  artifacts/parts.parquet (schema "parts": top-1 box per part per person per frame) or, with
          part_labels.parts_source: gt, the GT part boxes of <data.root>/gt_persons.parquet on every
          5th frame (oracle parts); artifacts/video_predictions.parquet (model "ensemble");
          artifacts/part_labels/baseline.json (mode baseline).
Writes: artifacts/part_states.parquet (schema "part_states": video, frame, person, part, box,
          state, score; one row group per video); artifacts/skips/part_states.parquet (videos with
          parts but no prediction).
Params: part_labels.mode: video_label (state = <state> of the ensemble's predicted
          "<action>_<group>_<state>" label of the part's group; score = its probability x part
          box score; seed 001 submission 5) | baseline (most frequent train state of the
          predicted action for that part; score = action probability x part box score;
          submission 1); part_labels.parts_source: detected | gt; data.root.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from actparse.dataset import gt_persons_path
from actparse.params import get
from actparse.constants import PART_GROUPS
from actparse.part_labels import assign_part_states, gt_parts
from actparse.paths import Paths, data_root
from actparse.schemas import from_columns, read_df
from actparse.shards import VideoSkipped, VideoWork, mapper_of, run_videos, video_tables, video_row_groups
from actparse.stage import stage_log, stage_main

log = stage_log("part_states")


class Work(VideoWork):
    """part_states per video: the predictions (and baseline table) read once, then :meth:`one` per
    video's parts (the stage's run and the flow's shards, actparse/shards.py)."""

    STAGE, SCHEMA, SECTIONS = "part_states", "part_states", ("part_labels", "data.root")

    def __init__(self, params: dict, root: Path):
        super().__init__(params, root)
        paths = self.paths = Paths(root)
        self.mode = get(params, "part_labels.mode", str, choices=("video_label", "baseline"))
        self.source = get(params, "part_labels.parts_source", str, choices=("detected", "gt"))
        self.gt = gt_persons_path(data_root(params, root)) if self.source == "gt" else None
        self.baseline_path = paths.part_labels / "baseline.json"
        self.output, self.where = paths.part_states, paths.video_predictions

    def inputs(self) -> list[Path]:
        return [self.gt or self.paths.parts, self.paths.video_predictions, self.baseline_path,
                self.paths.part_labels / "classes.json"]

    def check(self) -> None:
        if self.mode == "baseline" and not self.baseline_path.exists():
            raise FileNotFoundError(f"{self.baseline_path}: most-frequent-state baseline not found "
                                    f"(has part_labels run?)")

    def setup(self) -> None:
        self.check()
        preds = read_df(self.paths.video_predictions, "video_predictions")
        # each video's own predictions: a video's states read only its rows, and scanning all of them
        # for every video would grow with the square of the number of videos
        self.no_preds = preds.iloc[:0]
        self.preds = {v: g for v, g in preds.groupby("video", sort=False)}
        self.baseline = json.loads(self.baseline_path.read_text()) if self.mode == "baseline" else None

    def no_groups(self) -> bool:
        return self.mode == "video_label" and _no_part_groups(self.paths)

    def _gt_parts(self, videos=None):
        gt = read_df(self.gt, "gt_persons", columns=["video", "frame", "person", "part_boxes", "part_visible"],
                     filters=None if videos is None else [("video", "in", list(videos))])
        return gt_parts(gt)

    def videos(self) -> list[str]:
        if self.no_groups():
            return []
        if self.source == "gt":
            return list(dict.fromkeys(self._gt_parts()["video"]))
        return list(dict.fromkeys(v for group in video_row_groups(self.paths.parts) for v in group))

    def tables(self, videos=None):
        if self.no_groups():
            return
        if self.source == "gt":
            parts = self._gt_parts(videos)
            for video, g in parts.groupby("video", sort=False):
                yield video, g.reset_index(drop=True)
            return
        for video, table in video_tables(self.paths.parts, "parts", videos):
            yield video, table.to_pandas()

    def one(self, video: str, parts):
        states, dropped = assign_part_states(parts, self.preds.get(video, self.no_preds), self.mode, self.baseline)
        if dropped and not len(states):
            raise VideoSkipped("no ensemble prediction for this video")
        table = from_columns({c: states[c].tolist() for c in states.columns}, "part_states")
        if dropped:  # some part groups without a prediction: the others are kept
            return table, "no ensemble prediction for some part groups of this video"
        return table


FLOW_MAPPER = mapper_of(Work)  # the flow's shards of consecutive videos (flow.map_stages, flow.shard_videos)


def run(params: dict, root: Path) -> None:
    work = Work(params, root)
    if work.no_groups():
        log.warning("%s lists no part-group task (part_labels skipped them: the ground truth has no parts): "
                    "no part states; part_states.parquet is empty", work.paths.part_labels / "classes.json")
    rows, ledger = run_videos(work)
    if not ledger.n_tried and not work.no_groups():
        log.warning("no part boxes (%s): no part states to assign; part_states.parquet is empty",
                    "ground truth without parts" if work.source == "gt" else f"{work.paths.parts} is empty")
    log.info("%d part states (%s, %s parts) for %d videos; %d videos without prediction",
             rows, work.mode, work.source, ledger.n_tried - ledger.n_failed, ledger.n_failed)


def _no_part_groups(paths: Paths) -> bool:
    """Whether part_labels wrote class lists without any part-group task (ground truth without parts)."""
    path = paths.part_labels / "classes.json"
    if not path.exists():
        return False
    classes = json.loads(path.read_text())
    return isinstance(classes, dict) and not any(g in classes for g in PART_GROUPS)


def main(argv=None) -> int:
    return stage_main("part_states", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
