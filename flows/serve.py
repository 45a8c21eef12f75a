"""Serve the actparse flow as a Prefect deployment: start runs from the UI, or on a schedule.

    python -m flows.server                                   # terminal 1: API + UI (scheduler on)
    python -m flows.serve --api-url http://127.0.0.1:4200/api                 # terminal 2: manual runs only
    python -m flows.serve --api-url http://127.0.0.1:4200/api --cron "0 3 * * *"   # and every night at 3:00
    python -m flows.serve --interval 21600 --start 2026-01-01T06:00:00Z      # every 6 h from that time

This registers the deployment ``actparse/<name>`` (default name: ``actparse``) and keeps running,
polling the API for its runs (Ctrl-C or SIGTERM stops it and pauses the schedule, Prefect's default).
In the UI: Deployments -> actparse -> Run (the parameters root, params_file, targets, force,
single_item and compare_to can be changed per run), or the schedule fires. Each run is the same flow as
``python -m flows.pipeline``: on a local dask cluster built from the ``flow`` section of the params
file (flow.n_workers CPU workers plus a worker per visible CUDA device), or on the cluster named by
--scheduler / ACTPARSE_DASK_SCHEDULER / flow.scheduler. Runs execute in this process's environment and
working tree: start it from the project root with ``source scripts/env.sh``.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path

from flows.server import QUIET_ENV

for _k, _v in QUIET_ENV.items():
    os.environ.setdefault(_k, _v)


def deployment_flow(root: str | Path = ".", params_file: str = "params.yaml", scheduler: str | None = None):
    """:func:`flows.pipeline.pipeline` with the task runner a deployment's runs use (see the module doc)."""
    from prefect_dask import DaskTaskRunner

    from actparse.params import FLOW_SECTIONS, load_params
    from flows import cluster as C
    from flows.pipeline import pipeline

    root = Path(root).resolve()
    pfile = Path(params_file)
    pfile = pfile if pfile.is_absolute() else root / pfile
    params = load_params(pfile, sections=FLOW_SECTIONS)
    security = C.security(params)
    address = C.scheduler_address(params, scheduler)
    if address:
        runner = DaskTaskRunner(address=address, client_kwargs={"security": security} if security else None)
    else:
        runner = DaskTaskRunner(cluster_class=C.params_cluster, cluster_kwargs={"params_file": str(pfile)})
    return pipeline.with_options(task_runner=runner)


def _schedule(args):
    from prefect.schedules import Cron, Interval

    if args.cron and args.interval:
        raise ValueError("give --cron or --interval, not both")
    if args.start and not args.interval:
        raise ValueError("--start is the anchor of an --interval schedule")
    if args.cron:
        return [Cron(args.cron, timezone=args.timezone)]
    if args.interval:
        if args.interval <= 0:
            raise ValueError(f"--interval must be > 0 seconds, got {args.interval}")
        anchor = datetime.fromisoformat(args.start.replace("Z", "+00:00")) if args.start else None
        return [Interval(timedelta(seconds=args.interval), anchor_date=anchor, timezone=args.timezone)]
    return []


def main(argv=None) -> int:
    from flows.dvcstate import FLOW_WAIT_POLICY

    os.environ.setdefault("OMP_WAIT_POLICY", FLOW_WAIT_POLICY)  # the runs' local workers: stages side by side
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=".", help="project root (holds dvc.yaml); default the current folder")
    parser.add_argument("--params", default="params.yaml", help="params file of the flow section, relative to --root")
    parser.add_argument("--name", default="actparse", help="deployment name (default actparse)")
    parser.add_argument("--api-url", default=None, help="Prefect API (default PREFECT_API_URL)")
    parser.add_argument("--scheduler", default=None, help="dask scheduler address (default "
                        "ACTPARSE_DASK_SCHEDULER or flow.scheduler; none: a local cluster per run)")
    parser.add_argument("--cron", default=None, help='a cron schedule, e.g. "0 3 * * *"')
    parser.add_argument("--interval", type=float, default=None, help="a schedule every N seconds")
    parser.add_argument("--start", default=None, help="anchor of --interval (ISO 8601 time, e.g. 2026-01-01T06:00:00Z)")
    parser.add_argument("--timezone", default=None, help="time zone of the schedule (default UTC)")
    parser.add_argument("--limit", type=int, default=1, help="runs at once (default 1: DVC runs one pipeline per repo)")
    parser.add_argument("--compare-to", default=None, metavar="REV",
                        help="default of the runs' compare_to parameter: each run ends with an `actparse compare "
                             "REV workspace` report, linked from the run's artifacts (e.g. main)")
    args = parser.parse_args(argv)

    from actparse.cli import setup_offline_env

    setup_offline_env()
    url = args.api_url or os.environ.get("PREFECT_API_URL")
    if not url:
        print("flows.serve: error: no Prefect API: give --api-url or set PREFECT_API_URL "
              "(start one with `python -m flows.server`)", file=sys.stderr)
        return 2
    os.environ["PREFECT_API_URL"] = url  # this process, the runs it starts, and their dask workers
    try:
        schedules = _schedule(args)
        root = Path(args.root).resolve()
        flow_ = deployment_flow(root, args.params, args.scheduler)
        from actparse.params import FLOW_SECTIONS, load_params
        from flows.cluster import flow_dag

        pfile = Path(args.params) if Path(args.params).is_absolute() else root / args.params
        flow_dag(root, load_params(pfile, sections=FLOW_SECTIONS))  # a bad dvc.yaml fails here, not in a run
    except (ValueError, FileNotFoundError) as exc:
        print(f"flows.serve: error: {exc}", file=sys.stderr)
        return 2
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        flow_.serve(name=args.name, schedules=schedules or None, limit=args.limit,
                    parameters={"root": str(root), "params_file": args.params,
                                **({"compare_to": args.compare_to} if args.compare_to else {})},
                    description="the actparse DAG of dvc.yaml (python -m flows.pipeline) as a deployment",
                    tags=["actparse"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
