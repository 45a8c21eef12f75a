"""Run the actparse DAG of dvc.yaml as a Prefect flow on a dask.distributed cluster.

    python -m flows.pipeline                        # whole DAG, local cluster, throw-away local API
    python -m flows.pipeline --api-url http://127.0.0.1:4200/api   # report into `python -m flows.server`
    python -m flows.pipeline --scheduler tcp://head:8786           # an existing multi-node cluster
    python -m flows.pipeline evaluate --force                      # a target and its upstream, rerun all

The stages, their commands, dependencies and order come from dvc.yaml (actparse.dag), never from a
second list. Each stage is a Prefect task named after it. Before running anything the flow asks DVC
(``dvc status``) whether the stage is stale; an up-to-date stage finishes at once in state "Cached",
so a second run with nothing changed does nothing, and a changed param reruns exactly the stages
``dvc repro`` would. A stale stage runs as ``dvc repro --single-item <stage>`` on a dask worker
(its output streamed into the task's log), so dvc.lock is written by DVC itself. Stages listed in
``flow.map_stages`` (default: decode) run one task per video (``<stage>[<video>]``; a failing video
is a failed task carrying its error) and are then merged and committed (``dvc commit``).

GPU stages (``flow.gpu_stages``; default the training and inference stages) and their per-video
tasks carry the dask resource ``GPU=1`` whenever the cluster has GPU workers, so they only land on
workers started with ``--resources "GPU=1"``; CPU stages run anywhere. Without GPU workers (a CPU
machine) nothing is annotated and everything runs on CPU workers.

Params (section ``flow``): gpu_stages, map_stages, scheduler, n_workers, processes, workdir,
ui_host, ui_port. Environment: ACTPARSE_DASK_SCHEDULER (scheduler address), PREFECT_API_URL
(report into an existing Prefect server), PREFECT_HOME (where a local server keeps its database).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

from flows.server import QUIET_ENV

for _k, _v in QUIET_ENV.items():
    os.environ.setdefault(_k, _v)

import dask  # noqa: E402
from prefect import flow, get_run_logger, task, unmapped  # noqa: E402
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact  # noqa: E402
from prefect.cache_policies import NONE as NO_CACHE  # noqa: E402
from prefect.futures import as_completed  # noqa: E402
from prefect.states import Completed  # noqa: E402

from actparse.cli import setup_offline_env  # noqa: E402
from actparse.dag import load_dag  # noqa: E402
from actparse.params import FLOW_SECTIONS, get, load_params  # noqa: E402
from flows import cluster as C  # noqa: E402
from flows import dvcstate  # noqa: E402
from flows.mapped import get_mapper, mapped_stages  # noqa: E402


class StageFailed(RuntimeError):
    """A stage command exited non-zero (message: exit code, worker and the end of its output)."""


# ----------------------------------------------------------------------------------------------- tasks
@task(name="stage-up-to-date", task_run_name="{stage}", cache_policy=NO_CACHE, persist_result=False)
def stage_up_to_date(stage: str):
    """A stage DVC reports as up to date: nothing to do."""
    get_run_logger().info("%s: up to date (dvc status clean) - skipped", stage)
    return Completed(name="Cached", message=f"{stage}: up to date per dvc.lock")


@task(name="stage", task_run_name="{stage}", cache_policy=NO_CACHE, persist_result=False)
def run_stage(root: str, stage: str, force: bool = False, threads: dict | None = None) -> dict:
    """``dvc repro --single-item <stage>`` on this worker, its output streamed into the task log."""
    log = get_run_logger()
    worker = C.worker_name()
    t0 = time.time()
    log.info("%s: running on worker %s", stage, worker)
    rc, tail = dvcstate.run_logged(dvcstate.repro_cmd(stage, force), root, dvcstate.stage_env(threads), log.info)
    if rc:
        raise StageFailed(f"stage {stage!r} failed with exit code {rc} on worker {worker}; last output:\n{tail}")
    return {"stage": stage, "status": "ran", "worker": worker, "seconds": round(time.time() - t0, 1)}


@task(name="stage-item", task_run_name="{stage}[{label}]", cache_policy=NO_CACHE, persist_result=False)
def run_item(root: str, params_file: str, stage: str, module: str | None, item, label: str,
             workdir: str) -> dict:
    """One video of a mapped stage; an exception fails this task (and only this task)."""
    mapper = get_mapper(root, params_file, stage, module)
    out = mapper.run_item(item, Path(workdir))
    return dict(out or {}, worker=C.worker_name())


@task(name="stage-merge", task_run_name="{stage}", cache_policy=NO_CACHE, persist_result=False)
def merge_stage(root: str, params_file: str, stage: str, module: str | None, items: list, errors: dict,
                workdir: str, threads: dict | None = None) -> dict:
    """Merge the per-video parts into the stage outputs, then ``dvc commit`` the stage."""
    log = get_run_logger()
    t0 = time.time()
    mapper = get_mapper(root, params_file, stage, module)
    info = mapper.merge(items, errors, Path(workdir))
    log.info("%s: merged %s", stage, info)
    rc, tail = dvcstate.run_logged(dvcstate.commit_cmd(stage), root, dvcstate.stage_env(threads), log.info)
    if rc:
        raise StageFailed(f"dvc commit of stage {stage!r} failed with exit code {rc}:\n{tail}")
    shutil.rmtree(workdir, ignore_errors=True)
    return {"stage": stage, "status": "ran (mapped)", "worker": C.worker_name(),
            "seconds": round(time.time() - t0, 1), **{k: v for k, v in info.items() if k != "stage"}}


# ----------------------------------------------------------------------------------------------- flow
def _gpu_annotation(enabled: bool):
    return dask.annotate(resources={C.GPU: 1}) if enabled else nullcontext()


def _error_record(future) -> dict | None:
    future.wait()
    state = future.state
    if not (state.is_failed() or state.is_crashed()):
        return None
    try:
        exc = future.result(raise_on_failure=False)
    except BaseException as e:  # noqa: BLE001 - a crashed task may raise here instead
        exc = e
    if isinstance(exc, BaseException):
        return {"type": type(exc).__name__, "message": str(exc)}
    return {"type": "Failed", "message": str(state.message)}


def _run_mapped(root: Path, params_file: str, stage, workdir: Path, use_gpu: bool, threads: dict) -> dict:
    log = get_run_logger()
    mapper = get_mapper(root, params_file, stage.name, stage.module)
    items = mapper.items()
    labels = [mapper.item_name(it) for it in items]
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    log.info("%s: %d per-video tasks%s", stage.name, len(items), " (GPU)" if use_gpu and stage.gpu else "")
    key = f"{stage.name.replace('_', '-').lower()}-videos"
    progress = create_progress_artifact(0.0, key=key, description=f"{stage.name}: videos done")
    with _gpu_annotation(use_gpu and stage.gpu):
        futures = run_item.map(unmapped(str(root)), unmapped(params_file), unmapped(stage.name),
                               unmapped(stage.module), items, labels, unmapped(str(workdir)))
    label_of = {id(f): lab for f, lab in zip(futures, labels)}
    errors: dict[str, dict] = {}
    workers: set[str] = set()
    for done, fut in enumerate(as_completed(futures), 1):
        err = _error_record(fut)
        if err:
            errors[label_of[id(fut)]] = err
            log.warning("%s[%s] failed: %s: %s", stage.name, label_of[id(fut)], err["type"], err["message"])
        else:
            workers.add(str((fut.result() or {}).get("worker", "?")))
        if done % max(1, len(futures) // 20) == 0 or done == len(futures):
            update_progress_artifact(progress, 100.0 * done / max(1, len(futures)))
    fut = merge_stage.submit(str(root), params_file, stage.name, stage.module, items, errors, str(workdir), threads)
    out = fut.result()
    out.update(items=len(items), failed_items=len(errors), item_workers=sorted(workers))
    return out


@flow(name="actparse", log_prints=True, validate_parameters=False)
def pipeline(root: str = ".", params_file: str = "params.yaml", targets: list[str] | None = None,
             force: bool = False, single_item: bool = False, use_gpu: bool = False,
             threads: dict | None = None) -> list[dict]:
    """The dvc.yaml DAG, stage by stage in topological order; returns one summary row per stage."""
    log = get_run_logger()
    rootp = Path(root).resolve()
    pfile = Path(params_file)
    params = load_params(pfile if pfile.is_absolute() else rootp / pfile, sections=FLOW_SECTIONS)
    dag = load_dag(rootp, params_file=params_file)
    mapped = set(mapped_stages(params))
    unknown = mapped - set(dag.stages)
    if unknown:
        raise ValueError(f"{params.get('_path')}: flow.map_stages names unknown stage(s) {sorted(unknown)}")
    workroot = rootp / get(params, "flow.workdir", str, default="artifacts/.flow")
    plan = dag.plan(targets, single_item)
    log.info("plan: %s (GPU routing %s)", " -> ".join(plan), "on" if use_gpu else "off: no GPU workers")
    status = dvcstate.stage_status(rootp, plan)
    progress = create_progress_artifact(0.0, key="actparse-stages", description="pipeline: stages done")
    summary: list[dict] = []
    ran: set[str] = set()
    try:
        for i, name in enumerate(plan):
            stage = dag[name]
            if ran.intersection(stage.upstream):
                status.update(dvcstate.stage_status(rootp, [name]))
            reason = status[name]
            if reason is None and not force:
                stage_up_to_date(name)
                summary.append({"stage": name, "status": "up to date", "worker": "", "seconds": 0.0})
            else:
                log.info("%s: %s", name, "forced" if force and reason is None else reason)
                if name in mapped:
                    row = _run_mapped(rootp, params_file, stage, workroot / name, use_gpu, threads or {})
                else:
                    with _gpu_annotation(use_gpu and stage.gpu):
                        fut = run_stage.submit(str(rootp), name, force, threads or {})
                    row = fut.result()
                summary.append(row)
                ran.add(name)
            update_progress_artifact(progress, 100.0 * (i + 1) / len(plan))
    except BaseException as exc:
        failed = plan[len(summary)] if len(summary) < len(plan) else "?"
        summary.append({"stage": failed, "status": f"FAILED: {type(exc).__name__}", "worker": "", "seconds": 0.0})
        log.error("stage %s failed; not run: %s", failed, ", ".join(plan[len(summary):]) or "-")
        raise
    finally:
        create_table_artifact(summary, key="actparse-summary", description="actparse stages: what ran where")
    return summary


# ----------------------------------------------------------------------------------------------- launcher
@contextmanager
def _environ(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def drain_prefect(timeout: float = 30.0) -> None:
    """Send the logs and events still queued in this process to the API (before it goes away)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        try:
            service.drain_all(timeout=timeout, at_exit=False)
        except Exception:  # noqa: BLE001 - best effort at shutdown
            pass


def run_pipeline(root: str | Path = ".", params_file: str = "params.yaml", targets: list[str] | None = None,
                 force: bool = False, single_item: bool = False, api_url: str | None = None,
                 scheduler: str | None = None, prefect_home: str | Path | None = None,
                 fake_gpus: int = 0, return_state: bool = False):
    """Launch :func:`pipeline` with its API and cluster; returns the summary (or the final state).

    ``api_url`` (else PREFECT_API_URL): report into that Prefect server; neither: a local API server
    is started for this run only. ``scheduler`` (else ACTPARSE_DASK_SCHEDULER, else flow.scheduler):
    an existing dask cluster; none: a local cluster (flow.n_workers CPU workers + a worker per CUDA
    device; ``fake_gpus`` adds workers that only declare GPU=1, to try the routing).
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_dask import DaskTaskRunner

    from flows.server import running_server

    setup_offline_env()
    root = Path(root).resolve()
    pfile = Path(params_file)
    params = load_params(pfile if pfile.is_absolute() else root / pfile, sections=FLOW_SECTIONS)
    load_dag(root, params_file=params_file).plan(targets, single_item)  # bad dvc.yaml / target: fail now
    mapped_stages(params)
    security = C.security(params)  # flow.tls or dask's TLS configuration; None: plain TCP
    threads = dvcstate.launch_threads()
    with ExitStack() as stack:
        url = api_url or os.environ.get("PREFECT_API_URL")
        if not url:
            url = stack.enter_context(running_server(home=prefect_home, ui=False))
            stack.callback(drain_prefect)  # runs before the server stops
        # Worker processes inherit the environment; in-process code reads the settings context.
        stack.enter_context(_environ(PREFECT_API_URL=url))
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
        address = C.scheduler_address(params, scheduler)
        if not address:
            n_cpu = get(params, "flow.n_workers", int, default=2, min_value=0)
            processes = get(params, "flow.processes", bool, default=True)
            cl = stack.enter_context(C.local_cluster(n_cpu, C.local_gpu_ids(params), fake_gpus, processes,
                                                     security=security))
            address = cl.scheduler_address
        use_gpu = bool(C.gpu_workers(address, security))
        runner = DaskTaskRunner(address=address, client_kwargs={"security": security} if security else None)
        return pipeline.with_options(task_runner=runner)(
            root=str(root), params_file=str(params_file), targets=list(targets or []) or None, force=force,
            single_item=single_item, use_gpu=use_gpu, threads=threads, return_state=return_state)


def _print_summary(rows: list[dict]) -> None:
    print(f"{'stage':<24}{'status':<16}{'worker':<10}{'seconds':>8}")
    for r in rows:
        print(f"{r['stage']:<24}{str(r['status']):<16}{str(r.get('worker', '')):<10}{r.get('seconds', 0):>8}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", help="stages to bring up to date (with their upstream); default all")
    parser.add_argument("--root", default=".", help="project root (holds dvc.yaml)")
    parser.add_argument("--params", default="params.yaml",
                        help="params file for the flow section and dvc.yaml templating, relative to --root "
                             "(the stages themselves read params.yaml, as dvc.yaml says)")
    parser.add_argument("-f", "--force", action="store_true", help="rerun the planned stages even if up to date")
    parser.add_argument("-s", "--single-item", action="store_true", help="only the targets, not their upstream")
    parser.add_argument("--api-url", default=None, help="Prefect API to report into (default PREFECT_API_URL)")
    parser.add_argument("--scheduler", default=None, help="dask scheduler address (default "
                        f"{C.SCHEDULER_ENV} or flow.scheduler; none: a local cluster)")
    parser.add_argument("--fake-gpus", type=int, default=0, help="extra local workers declaring GPU=1 (routing test)")
    args = parser.parse_args(argv)
    try:
        state = run_pipeline(args.root, args.params, args.targets, args.force, args.single_item, args.api_url,
                             args.scheduler, fake_gpus=args.fake_gpus, return_state=True)
    except (ValueError, FileNotFoundError) as exc:
        print(f"flows.pipeline: error: {exc}", file=sys.stderr)
        return 2
    if state.is_completed():
        _print_summary(state.result())
        return 0
    print(f"flows.pipeline: flow run {state.name}: {state.message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
