"""Link per-frame action detections into action tubes with MOC's linking (seed 003).

Reads:  artifacts/refined_persons.parquet (schema "keypoints": person boxes and scores on the decoded
        frames), artifacts/video_predictions.parquet (rows model "ensemble", task "action": each video's
        action probabilities), artifacts/part_labels/classes.json ("action": the class of each probability).
Writes: artifacts/tubes.parquet (schema "tubes": one row per tube per frame; frames consecutive, boxes
        linearly interpolated between decoded frames; tube ids count per video).
Per frame, every person box with score >= link.min_person_score becomes one detection per class among
the video's link.top_k_classes most probable, scored person score x class probability. Each
(video, class) is linked as MOC's BuildTubes does with one-frame tubelets (actparse.link): soft NMS
(link.nms_iou, link.top_k), greedy linking (link.link_iou), a tube ends after link.k unmatched decoded
frames, tubes under link.min_score or shorter than link.min_length frames are dropped, then nms3dt
(link.tube_nms_iou; 0 = off). The decoding stride is inferred from the frames.
Params: link.* (see params.yaml).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from actparse.stage import stage_main
from actparse.link import frame_detections_from_artifacts, link_table, params_from
from actparse.paths import Paths
from actparse.schemas import write_table

log = logging.getLogger("actparse.link_tubes")


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    p = params_from(params)
    t0 = time.time()
    dets, classes = frame_detections_from_artifacts(params, root)
    tubes = link_table(dets, p, labels=classes)
    write_table(tubes, paths.tubes, "tubes")
    n_tubes = len(set(zip(tubes.column("video").to_pylist(), tubes.column("tube").to_pylist())))
    log.info("linked %d detections into %d tubes (%d rows) in %.2fs", dets.num_rows, n_tubes, tubes.num_rows,
             time.time() - t0)


def main(argv=None) -> int:
    return stage_main("link_tubes", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
