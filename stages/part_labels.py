"""Convert frame-level part states into video-level part labels (seed 001 section 1.3).

Reads:  <data.root>/videos.parquet (split, action) and <data.root>/gt_persons.parquet.
Writes: artifacts/part_labels/labels.parquet (schema "part_labels"): per video one row for task
          "action" (label = the action) and one per part group (head, hand, arm, hip, leg, foot)
          with label "<action>_<group>_<state>", state = the group's most frequent visible state
          over all persons on the Kinetics-TPS frames (every 5th); train and test videos.
        artifacts/part_labels/classes.json: {task: sorted labels of the TRAIN split} (the class
          order of every CSN output; a test label unseen in train stays in labels.parquet as is).
        artifacts/part_labels/baseline.json: {action: {part: state}}, the most frequent state per
          (action, part) over the train split (seed 001 submission 1 baseline).
        artifacts/skips/part_labels.parquet: videos with no action label or no ground truth.
Ground truth without part states (MultiSports imports): the "action" rows only, classes.json has
the "action" task only and baseline.json is {} (the part-group labels are skipped, with a warning).
With csn.model set (a trained CSN folder) the class lists and the baseline table are that model's
and no ground truth is needed: labels.parquet holds the videos that have labels and GT (for
scoring; none for a bare folder of videos), and unlabelled videos are not skips.
Params: data.root, csn.model.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pandas as pd

from actparse.stage import stage_main
from actparse.constants import TPS_SAMPLING
from actparse.csn import given_model_dir, load_model_dir, read_model_manifest
from actparse.dataset import gt_persons_path, load_videos
from actparse.part_labels import TASKS, baseline_states, class_lists, video_labels
from actparse.paths import Paths, data_root
from actparse.atomic import write_json
from actparse.schemas import from_rows, read_df, write_table

log = logging.getLogger("actparse.part_labels")
GT_COLUMNS = ["video", "frame", "person", "part_visible", "part_states", "action"]


def build_labels(videos: pd.DataFrame, gt: pd.DataFrame, sampling: int = TPS_SAMPLING, parts: bool = True):
    """-> (label rows, skip rows) for every video of ``videos`` (columns video, split, action).

    ``parts`` False (ground truth without part states, MultiSports): the "action" row only."""
    rows, skips = [], []
    by_video = {v: g for v, g in gt.groupby("video", sort=False)}
    for rec in videos.itertuples(index=False):
        if rec.action is None or (isinstance(rec.action, float) and pd.isna(rec.action)):
            skips.append({"video": rec.video, "stage": "part_labels", "error": "video has no action label"})
            continue
        g = by_video.get(rec.video)
        if g is None or len(g) == 0:
            skips.append({"video": rec.video, "stage": "part_labels", "error": "no ground-truth persons"})
            continue
        if not parts:
            rows.append({"video": rec.video, "split": rec.split, "task": "action", "label": rec.action, "state": None})
            continue
        for task, (label, state) in video_labels(rec.action, g, sampling).items():
            rows.append({"video": rec.video, "split": rec.split, "task": task, "label": label, "state": state})
    return rows, skips


def from_given_model(paths: Paths, droot: Path, videos: pd.DataFrame, model_dir: Path) -> None:
    """csn.model: class lists + baseline from the trained model; labels only where GT exists."""
    model = read_model_manifest(model_dir)
    classes, baseline = model.get("classes"), model.get("baseline") or {}
    if not classes:  # a folder written before model.json: the class lists are in the checkpoints
        loaded = load_model_dir(model_dir)
        classes, baseline = loaded.classes, loaded.baseline
    rows = []
    gt_path = gt_persons_path(droot)
    if gt_path.exists():
        gt = read_df(gt_path, "gt_persons", columns=GT_COLUMNS)
        rows, _ = build_labels(videos, gt, parts=bool(gt["part_states"].notna().any()))
    out = paths.part_labels
    out.mkdir(parents=True, exist_ok=True)
    write_table(from_rows(rows, "part_labels"), out / "labels.parquet", "part_labels")
    write_json(classes, out / "classes.json")
    write_json(baseline, out / "baseline.json")
    write_table(from_rows([], "skips"), paths.skips / "part_labels.parquet", "skips")
    n = len({r["video"] for r in rows})
    log.info("class lists of the trained CSN %s (%s); %d of %d videos have labels and ground truth%s",
             model_dir, {t: len(c) for t, c in classes.items()}, n, len(videos),
             "" if n else " (nothing to score)")


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    droot = data_root(params, root)
    videos = load_videos(droot).to_pandas()[["video", "split", "action"]]
    given = given_model_dir(params, root)
    if given is not None:
        from_given_model(paths, droot, videos, given)
        return
    gt = read_df(gt_persons_path(droot), "gt_persons", columns=GT_COLUMNS)
    parts = bool(gt["part_states"].notna().any())  # null: parts not annotated (MultiSports)
    if not parts:
        log.warning("%s has no part ground truth: part-group labels skipped (action labels only; the CSN "
                    "part-group heads and part states have nothing to learn)", gt_persons_path(droot))
    rows, skips = build_labels(videos, gt, parts=parts)
    if not rows:
        raise ValueError(f"{droot}: no video has both an action label and ground truth; nothing to label "
                         f"(for videos without them, give a trained CSN folder with csn.model)")
    labels = pd.DataFrame(rows)
    classes = class_lists(labels, "train")
    if "action" not in classes:
        raise ValueError(f"{droot}: the train split has no labelled video with ground truth")
    train_actions = dict(videos.loc[(videos["split"] == "train") & videos["video"].isin(labels["video"]),
                                    ["video", "action"]].itertuples(index=False))
    baseline = baseline_states(gt, train_actions) if parts else {}

    out = paths.part_labels
    out.mkdir(parents=True, exist_ok=True)
    write_table(from_rows(rows, "part_labels"), out / "labels.parquet", "part_labels")
    write_json(classes, out / "classes.json")
    write_json(baseline, out / "baseline.json")
    write_table(from_rows(skips, "skips"), paths.skips / "part_labels.parquet", "skips")

    test = labels[labels["split"] == "test"]
    unseen = {t: int((~test.loc[test["task"] == t, "label"].isin(classes.get(t, []))).sum()) for t in TASKS}
    log.info("labelled %d videos (%d skipped); classes per task: %s; test labels unseen in train: %s",
             labels["video"].nunique(), len(skips), {t: len(c) for t, c in classes.items()}, unseen)


def main(argv=None) -> int:
    return stage_main("part_labels", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
