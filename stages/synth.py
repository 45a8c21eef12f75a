"""Render the synthetic part-level action data set (videos + exact ground truth).

Reads:  params.yaml section `synth` (seed, n_train, n_test, width, height, fps, min_seconds,
        max_seconds, max_people, occluder_prob, fourcc, long_tail, workers, context). Command-line
        options override them.
Writes (default: artifacts/synth/ under --root, or --out DIR):
  videos/<video>.mp4                       rendered clips (cv2.VideoWriter, decord-readable)
  videos.parquet                           one row per video (schema "videos")
  gt_persons.parquet                       every frame, every person: box, 17 keypoints,
                                           10 part boxes / visibility / states, action
  annotations/tps/<split>/gt_part_result.json, gt_vid_result.json   Kinetics-TPS layout
  annotations/multisports_gt.pkl           MultiSports / MOC ground-truth tubes
  annotations/finegym/                     FineGym layout: event -> set -> element labels (seed 004)

Standalone example (a harder, bigger set elsewhere):
  python -m stages.synth --out data/synth_big --n-train 200 --n-test 100 --width 320 --height 240
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from actparse.paths import Paths
from actparse.stage import stage_log, stage_main
from actparse.synth import SynthConfig, generate

log = stage_log("synth")

_OPTS = (
    ("--out", str, "output folder (default: artifacts/synth under --root)"),
    ("--seed", int, "override synth.seed"),
    ("--n-train", int, "override synth.n_train"),
    ("--n-test", int, "override synth.n_test"),
    ("--width", int, "override synth.width"),
    ("--height", int, "override synth.height"),
    ("--fps", int, "override synth.fps"),
    ("--min-seconds", float, "override synth.min_seconds"),
    ("--max-seconds", float, "override synth.max_seconds"),
    ("--max-people", int, "override synth.max_people"),
    ("--occluder-prob", float, "override synth.occluder_prob"),
)


def _extra(parser) -> None:
    for flag, typ, help_ in _OPTS:
        parser.add_argument(flag, type=typ, default=None, help=help_)


def run(params: dict, root: Path) -> None:
    args = params.get("_args") or {}
    overrides = {flag[2:].replace("-", "_"): args.get(flag[2:].replace("-", "_"))
                 for flag, _, _ in _OPTS if flag != "--out"}
    cfg = SynthConfig.from_params(params, **overrides)
    out = Path(args["out"]) if args.get("out") else Paths(root).synth
    t0 = time.time()
    s = generate(cfg, out)
    log.info(f"{s['videos']} videos ({s['train']} train / {s['test']} test), {s['frames']} frames, "
             f"{s['gt_rows']} person-frames, {s['tubes']} tubes, {cfg.width}x{cfg.height} @ {cfg.fps} fps "
             f"-> {out} in {time.time() - t0:.1f}s")


def main(argv=None):
    return stage_main("synth", __doc__, run, argv, extra=_extra)


if __name__ == "__main__":
    sys.exit(main())
