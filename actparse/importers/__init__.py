"""Importers of the official data sets (Kinetics-TPS, MultiSports, FineGym) into an actparse data root.

``actparse import <dataset> SRC --out DATA_ROOT`` reads ``SRC`` as the data set's users download it and
writes a data root that ``dvc repro`` runs on (``data.root: DATA_ROOT``):

* ``videos.parquet`` (schema "videos"): one row per imported video, split train / test, label;
* ``gt_persons.parquet`` (Kinetics-TPS, MultiSports): person boxes per annotated frame; ``keypoints``
  is null (neither data set has keypoints), ``part_*`` null for MultiSports (no parts);
* ``gym_elements.parquet`` (FineGym): the element clips with their own split and times in the video;
* ``annotations/``: the official ground truth in the layouts the stages read;
* ``skips.parquet``: videos listed by the annotations but missing or unreadable;
* ``import_info.json``: counts and what the ground truth holds.

Videos are never re-encoded (``--videos symlink|copy|hardlink|reference``). See docs/datasets.md.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .common import VIDEO_MODES, OfficialFormatError, VideoPlacer, write_root

DATASETS = ("kinetics-tps", "multisports", "finegym")

__all__ = ["DATASETS", "VIDEO_MODES", "OfficialFormatError", "run_import"]


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not force:
            raise ValueError(f"{out}: exists and is not empty (use --force to replace an earlier import)")
        if not (out / "import_info.json").exists():
            raise ValueError(f"{out}: not an earlier import (no import_info.json); refusing to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def run_import(dataset: str, src, out, videos: str = "symlink", subset: str | None = None,
               force: bool = False) -> dict:
    """Import ``src`` (official layout of ``dataset``) into the data root ``out``; return a summary."""
    src, out = Path(src), Path(out)
    if dataset not in DATASETS:
        raise ValueError(f"unknown data set {dataset!r}; known: {list(DATASETS)}")
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: source folder not found")
    placer = VideoPlacer(out, videos)
    _prepare_out(out, force)
    try:
        if dataset == "kinetics-tps":
            from .kinetics_tps import import_kinetics_tps

            res = import_kinetics_tps(src, out, placer)
        elif dataset == "multisports":
            from .multisports import import_multisports

            res = import_multisports(src, out, placer)
        else:
            from .finegym import import_finegym

            res = import_finegym(src, out, placer, subset)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # no half-written data root is left behind
        raise
    return write_root(res, out, src, videos)
