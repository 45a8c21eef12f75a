"""``actparse import`` and ``actparse export-official`` (subcommands of ``python -m actparse``)."""

from __future__ import annotations

import argparse

from . import DATASETS, VIDEO_MODES


def cmd_import(args) -> dict:
    from . import run_import

    return run_import(args.dataset, args.src, args.out, videos=args.videos, subset=args.subset, force=args.force)


def cmd_export(args) -> dict:
    from .export import EXPORTERS

    kw = {"shape": args.tps_shape} if args.dataset == "kinetics-tps" else {}
    out = EXPORTERS[args.dataset](args.data_root, args.out, **kw)
    return {"dataset": args.dataset, "out": str(out)}


def add_subparsers(sub) -> None:
    im = sub.add_parser("import", help="official data set (as downloaded) -> actparse data root",
                        description="Read SRC in the layout the data set's users download and write a data root "
                                    "(videos.parquet, ground-truth tables, official annotations) for data.root. "
                                    "See docs/datasets.md.", formatter_class=argparse.RawDescriptionHelpFormatter)
    im.add_argument("dataset", choices=DATASETS)
    im.add_argument("src", help="the downloaded data set folder")
    im.add_argument("--out", required=True, help="data root to write (must be new or empty, see --force)")
    im.add_argument("--videos", choices=VIDEO_MODES, default="symlink",
                    help="how the data root holds the videos (never re-encoded); default symlink")
    im.add_argument("--subset", help="FineGym: which gym*_categories.txt subset (gym99, gym288) when several")
    im.add_argument("--force", action="store_true", help="replace an earlier import in --out")
    im.set_defaults(func=cmd_import)

    ex = sub.add_parser("export-official", help="data root (e.g. the synthetic set) -> official download layout")
    ex.add_argument("dataset", choices=DATASETS)
    ex.add_argument("data_root", help="data root with videos.parquet + gt_persons.parquet (+ annotations/finegym)")
    ex.add_argument("--out", required=True, help="folder to write the official layout into")
    ex.add_argument("--tps-shape", choices=("named", "list"), default="named",
                    help="Kinetics-TPS per-frame JSON: parts keyed by name, or a list of obj_class/obj_bbox objects")
    ex.set_defaults(func=cmd_export)
