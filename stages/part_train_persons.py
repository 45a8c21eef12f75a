"""The refined persons the part detector trains on: artifacts/refined_persons.parquet passed on when
train_part_detector's configuration reads it, an empty table when it does not.

Reads:  artifacts/refined_persons.parquet (schema "keypoints"), when needed; whether
        <data.root>/gt_persons.parquet has keypoint ground truth.
Writes: artifacts/part_train_persons.parquet (schema "keypoints"): every row of refined_persons.parquet
        with parts.train_persons: detected (crops of refined detections), or with gt on ground truth
        without keypoints (Kinetics-TPS: GT crops painted with the matching refined person's keypoints);
        no rows with gt on ground truth with keypoints, which train_part_detector then never reads.
Params: parts.train_persons, parts.paint.

Why a stage: DVC deps are static, and train_part_detector used to list refined_persons.parquet
whatever it read, so with parts.train_persons: gt it was retrained each time the pose model or the
box refinement changed. Now this stage (a second) reruns instead, writes the same empty table, and
DVC sees the part detector's input unchanged.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from actparse.dataset import gt_has_keypoints, gt_persons_path
from actparse.params import get
from actparse.paths import Paths, data_root
from actparse.schemas import SCHEMAS, read_table, write_table
from actparse.stage import stage_main

log = logging.getLogger("actparse.part_train_persons")


def needs_refined(params: dict, root: Path) -> bool:
    """Whether train_part_detector reads refined persons under these params and this data root."""
    source = get(params, "parts.train_persons", str, choices=("detected", "gt"))
    if source == "detected":
        return True
    paint = get(params, "parts.paint", bool)
    return bool(paint) and not gt_has_keypoints(gt_persons_path(data_root(params, root)))


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    if needs_refined(params, root):
        table = read_table(paths.refined, "keypoints")
        log.info("part detector trains on refined persons: %d rows passed on", table.num_rows)
    else:
        table = SCHEMAS["keypoints"].empty_table()
        log.info("parts.train_persons: gt with keypoint ground truth: the part detector reads no refined persons")
    write_table(table, paths.part_train_persons, "keypoints")


def main(argv=None) -> int:
    return stage_main("part_train_persons", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
