"""Shared command-line scaffolding for ``python -m stages.<name>``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

from .params import InputError, ParamError, load_params, reader_cache_size

log = logging.getLogger("actparse")


def setup_offline_env() -> None:
    """Nothing downloads at run time: ultralytics offline, plots off, no telemetry."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")


LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """The stages' log format on stderr (also used by their spawned worker processes)."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)


def stage_main(name: str, doc: str | None, run: Callable[[dict, Path], object],
               argv: list[str] | None = None, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """Parse ``--params`` / ``--root``, load params, call ``run(params, root)``.

    Errors the user can fix (bad params, bad input) print one clear line and exit 2.
    """
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--root", default=".", help="project root holding artifacts/ (default: .)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    if extra:
        extra(parser)
    args = parser.parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    setup_offline_env()
    t0 = time.time()
    try:
        reader_cache_size()  # a bad $ACTPARSE_READER_CACHE stops the stage here, not video by video
        params = load_params(args.params)
        params["_args"] = vars(args)
        run(params, Path(args.root))
    except (ParamError, FileNotFoundError, ValueError, InputError) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    log.info("stage %s done in %.1fs", name, time.time() - t0)
    return 0
