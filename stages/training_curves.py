"""Training curves of every trained network, as DVC plots.

Reads:  artifacts/models/<model>/train_info.json of person_detector, pose, part_detector, csn, stad, gym,
        partattn (the per-epoch history each training stage records there).
Writes: plots/train/<curve>.csv (one per network, epoch + its per-epoch values; see actparse.curves),
        declared in the top-level `plots:` of dvc.yaml, so `dvc plots diff main <branch>` draws them
        side by side. A model given by the user (not trained here) or a seed system that is switched off
        gets a file with the header only.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from actparse.curves import write_curves
from actparse.paths import Paths
from actparse.stage import stage_main

log = logging.getLogger("actparse.training_curves")


def run(params: dict, root: Path) -> None:
    paths = Paths(root)
    done = write_curves(paths.models, paths.plots / "train")
    log.info("training curves: %s", ", ".join(f"{k} {n} epochs" for k, n in done.items() if n) or "none trained")


def main(argv=None) -> int:
    return stage_main("training_curves", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
