"""Frame-level part states from the video-level CSN predictions (seed 001 section 1.3).

Reads:  artifacts/parts.parquet (schema "parts": top-1 box per part per person per frame) or, with
          part_labels.parts_source: gt, the GT part boxes of <data.root>/gt_persons.parquet on every
          5th frame (oracle parts); artifacts/video_predictions.parquet (model "ensemble");
          artifacts/part_labels/baseline.json (mode baseline).
Writes: artifacts/part_states.parquet (schema "part_states": video, frame, person, part, box,
          state, score); artifacts/skips/part_states.parquet (videos with parts but no prediction).
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
from actparse.schemas import from_columns, read_df, write_table
from actparse.stage import SkipLedger, stage_log, stage_main

log = stage_log("part_states")


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    mode = get(params, "part_labels.mode", str, choices=("video_label", "baseline"))
    source = get(params, "part_labels.parts_source", str, choices=("detected", "gt"))
    if source == "gt":
        gt = read_df(gt_persons_path(data_root(params, root)), "gt_persons",
                     columns=["video", "frame", "person", "part_boxes", "part_visible"])
        parts = gt_parts(gt)
    else:
        parts = read_df(paths.parts, "parts")
    preds = read_df(paths.video_predictions, "video_predictions")
    baseline = None
    if mode == "baseline":
        path = paths.part_labels / "baseline.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: most-frequent-state baseline not found (has part_labels run?)")
        with open(path) as fh:
            baseline = json.load(fh)
    if not len(parts):
        log.warning("no part boxes (%s): no part states to assign; part_states.parquet is empty",
                    "ground truth without parts" if source == "gt" else f"{paths.parts} is empty")
    elif mode == "video_label" and _no_part_groups(paths):
        log.warning("%s lists no part-group task (part_labels skipped them: the ground truth has no parts): "
                    "no part states; part_states.parquet is empty", paths.part_labels / "classes.json")
        parts = parts.iloc[:0]
    states, dropped = assign_part_states(parts, preds, mode, baseline)
    ledger = SkipLedger("part_states", root)
    for v in dict.fromkeys(parts["video"]):
        ledger.tried(v)
    for v in dropped:
        ledger.skip(v, "no ensemble prediction for this video")
    ledger.check(paths.video_predictions)
    write_table(from_columns({c: states[c].tolist() for c in states.columns}, "part_states"),
                paths.part_states, "part_states")
    ledger.write()
    log.info("%d part states (%s, %s parts) for %d videos; %d videos without prediction",
             len(states), mode, source, states["video"].nunique() if len(states) else 0, len(dropped))


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
