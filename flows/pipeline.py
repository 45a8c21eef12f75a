"""Run the actparse DAG of dvc.yaml as a Prefect flow on a dask.distributed cluster.

    python -m flows.pipeline                        # whole DAG, local cluster, throw-away local API
                                                    # (or the running `python -m flows.server` of PREFECT_HOME)
    python -m flows.pipeline --api-url http://127.0.0.1:4200/api   # report into `python -m flows.server`
    python -m flows.pipeline --scheduler tcp://head:8786           # an existing multi-node cluster
    python -m flows.pipeline evaluate --force                      # a target and its upstream, rerun all

The stages, their commands, dependencies and order come from DVC's own reading of dvc.yaml (its index,
actparse.dag), never from a second list. Each
stage is a Prefect task named after it, submitted as soon as its upstream stages are done (``wait_for``:
the Prefect UI draws the edges), so independent stages run at once on different workers. The flow asks
DVC (``dvc status``, one pass over the plan) what is stale: a stage up to date with no stale upstream
stage in the plan finishes at once in state "Cached"; any other stage asks DVC again when its upstream
stages are done. So a second run with nothing changed does nothing (and starts no dask cluster), and a
changed param reruns exactly the stages ``dvc repro`` would.
A stale stage runs as ``dvc repro --single-item <stage>`` would run it, split so that DVC's one
repository lock is held only for its bookkeeping (flows/dvcstate.py): status, run-cache and removal
of old outputs, then the stage's own command from DVC's stage definition on a dask worker (its output
streamed into the task's log at the stage's own log levels), then ``dvc commit``; dvc.lock ends up as
``dvc repro`` writes it. Stages listed in ``flow.map_stages`` (default: decode) run one task per video
(``<stage>[<video>]``; a failing video is a failed task carrying its error), or for detect_persons,
keypoints, detect_parts, csn, part_states, stad_detect and partattn_predict one task per shard of
``flow.shard_videos`` videos (``<stage>[<first>..<last>]``, retried, reused after a crash), and are then
merged and committed.

A failed stage fails its task with the stage's own exit code and last error line; its downstream
stages are marked NotRun, the independent stages go on, and the run ends Failed listing every failure
(exit status 1). A stage killed by a signal (lost worker, OOM killer) or a DVC lock that stays busy is
retried; a stage's own error exit (2: bad input) is not.

GPU stages (``flow.gpu_stages``; default the training and inference stages) and their per-video
tasks carry the dask resource ``GPU=1`` whenever the cluster has GPU workers, so they only land on
workers started with ``--resources "GPU=1"``; CPU stages run anywhere. Without GPU workers (a CPU
machine) nothing is annotated and everything runs on CPU workers.

Runs are named ``<branch>@<commit>`` plus the params changed against the committed params.yaml, and
tagged ``branch:``, ``commit:`` and ``param:<key>=<value>``; the metrics files of dvc.yaml become a
markdown artifact (``actparse-metrics``), the DAG's final outputs link artifacts.

Params (section ``flow``): gpu_stages, map_stages, shard_videos, scheduler, n_workers, processes, workdir,
ui_host, ui_port. Environment: ACTPARSE_DASK_SCHEDULER (scheduler address), PREFECT_API_URL
(report into an existing Prefect server), PREFECT_HOME (where a local server keeps its database).
"""

from __future__ import annotations

import argparse
import contextvars
import os
import queue
import re
import shutil
import sys
import time
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

from flows.server import QUIET_ENV

for _k, _v in QUIET_ENV.items():
    os.environ.setdefault(_k, _v)

from prefect import flow, get_run_logger, task, unmapped  # noqa: E402
from prefect.artifacts import (create_link_artifact, create_markdown_artifact, create_progress_artifact,  # noqa: E402
                               create_table_artifact, update_progress_artifact)
from prefect.cache_policies import NONE as NO_CACHE  # noqa: E402
from prefect.states import Cancelled, Completed, Failed  # noqa: E402

from actparse.cli import setup_offline_env  # noqa: E402
from actparse.params import FLOW_SECTIONS, get, load_params  # noqa: E402
from flows import cluster as C  # noqa: E402
from flows import dvcstate  # noqa: E402
from flows.mapped import get_mapper, mapped_stages  # noqa: E402


class StageFailed(RuntimeError):
    """A stage command exited non-zero (message: its exit code, worker and last error line, then the end
    of its output); ``exit_code`` is the stage's own exit code."""

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.exit_code = exit_code


class StageKilled(StageFailed, dvcstate.TransientError):
    """The stage command was killed by a signal (lost worker, OOM killer): retried."""


# Transient failures (the DVC lock stayed busy, a stage killed by a signal) are retried; a stage's own
# non-zero exit (2: bad input, 1: a bug) is not: it would fail the same way again. A dask worker that
# dies mid-task is handled by dask itself, which reschedules its tasks on another worker.
RETRIES = 2
RETRY_DELAY_S = 5
# A mapper's per-item tasks are retried ``mapper.retries`` times (default 0: decode's per-video tasks
# fail on a bad video, which would fail again); a shard of a per-video stage catches its videos' skips
# itself, so whatever it raises is worth another try (flows/mapped.py, actparse/shards.py).
ITEM_RETRY_DELAY_S = 1


#: set by :func:`run_pipeline` for the flow run it starts: the DAG it read and, when it asked DVC, which
#: stages are stale (see :func:`flows.dvcstate.stale_stages`)
_LAUNCH: contextvars.ContextVar[dict | None] = contextvars.ContextVar("actparse_flow_launch", default=None)


def _launch_of(root: Path, targets, single_item: bool, force: bool) -> dict | None:
    """What :func:`run_pipeline` found for this very run (same thread, root and plan), else None.
    (A function, not the ContextVar itself, in the flow's code: Prefect pickles the flow for dask.)"""
    launch = _LAUNCH.get()
    if launch is None or (launch["root"], launch["targets"], launch["single_item"], launch["force"]) != \
            (str(root), list(targets or []), single_item, force):
        return None
    return launch


def is_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry only :class:`flows.dvcstate.TransientError`."""
    return isinstance(getattr(state, "data", None), dvcstate.TransientError)


PROGRESS = re.compile(r"\bprogress: (?P<done>\d+)/(?P<total>\d+) (?P<what>\S+)(?P<rest>.*)$")


def _artifact_key(*parts: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


class StageLog:
    """Passes a stage command's lines to the task's logger at the stage's own level, and turns its
    ``progress: 12/48 videos`` lines (:class:`actparse.stage.Progress`) into a Prefect progress artifact."""

    def __init__(self, stage: str, logger):
        self.stage, self.logger, self.artifact = stage, logger, None

    def __call__(self, level: int, line: str) -> None:
        m = dvcstate.STAGE_LINE.match(line)
        self.logger.log(level, m.group("message") if m else line)  # Prefect adds its own time and level
        m = PROGRESS.search(line)
        if not m:
            return
        done, total = int(m.group("done")), max(1, int(m.group("total")))
        pct = min(100.0, 100.0 * done / total)
        try:
            if self.artifact is None:
                self.artifact = create_progress_artifact(
                    pct, key=_artifact_key(self.stage, "progress"),
                    description=f"{self.stage}: {m.group('what')} done{m.group('rest')}")
            else:
                update_progress_artifact(self.artifact, pct)
        except Exception as exc:  # noqa: BLE001 - progress reporting never fails a stage
            self.logger.debug("progress artifact not updated: %s", exc)


# ----------------------------------------------------------------------------------------------- tasks
@task(name="stage-up-to-date", task_run_name="{stage}", cache_policy=NO_CACHE, persist_result=False)
def stage_up_to_date(stage: str):
    """A stage DVC reports as up to date: nothing to do."""
    get_run_logger().info("%s: up to date (dvc status clean) - skipped", stage)
    return Completed(name="Cached", message=f"{stage}: up to date per dvc.lock",
                     data={"stage": stage, "status": "up to date", "worker": "", "seconds": 0.0})


@task(name="stage-not-run", task_run_name="{stage}", cache_policy=NO_CACHE, persist_result=False)
def stage_not_run(stage: str, failed_upstream: list[str]):
    """A stage whose upstream stage failed (or did not run): marked, not run."""
    msg = f"{stage}: not run because upstream stage(s) {', '.join(failed_upstream)} failed"
    get_run_logger().warning(msg)
    return Cancelled(name="NotRun", message=msg)


@task(name="stage", task_run_name="{stage}", cache_policy=NO_CACHE, persist_result=False,
      retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=is_transient)
def run_stage(root: str, stage: str, force: bool = False, threads: dict | None = None):
    """One stage of dvc.yaml as ``dvc repro --single-item <stage>`` would run it (see flows/dvcstate.py):
    DVC's status and run-cache under the bookkeeping lock, the stage's own command unlocked on this
    worker (its output streamed into the task log at its own levels), then ``dvc commit`` under the lock."""
    log = get_run_logger()
    worker = C.worker_name()
    t0 = time.time()
    with dvcstate.dvc_lock(root):
        prep = dvcstate.prepare_stage(root, stage, force)
    if prep["reason"] is None:
        log.info("%s: up to date (dvc status clean) - skipped", stage)
        return Completed(name="Cached", message=f"{stage}: up to date per dvc.lock",
                         data={"stage": stage, "status": "up to date", "worker": "", "seconds": 0.0})
    status = "ran"
    if prep["restored"]:
        log.info("%s: %s; outputs restored from DVC's run-cache on worker %s", stage, prep["reason"], worker)
        status = "restored (run-cache)"
    else:
        log.info("%s: %s; running on worker %s", stage, prep["reason"], worker)
        env = dict(dvcstate.stage_env(threads), **prep["env"])
        sink = StageLog(stage, log)
        for cmd in prep["cmd"]:
            log.info("> %s", cmd)
            rc, tail, last = dvcstate.run_logged(cmd, prep["wdir"], env, sink, shell=True)
            if rc:
                cls = StageKilled if dvcstate.killed(rc) else StageFailed
                raise cls(f"stage {stage!r} failed with {dvcstate.exit_reason(rc)} on worker {worker}: {last}\n"
                          f"last output:\n{tail}", exit_code=rc)
    rc, tail, last = dvcstate.commit_stage(root, stage, dvcstate.stage_env(threads), log.log)
    if rc:
        raise StageFailed(f"dvc commit of stage {stage!r} failed with exit code {rc}: {last}\n{tail}", exit_code=rc)
    return {"stage": stage, "status": status, "worker": worker, "seconds": round(time.time() - t0, 1)}


@task(name="stage-item", task_run_name="{stage}[{label}]", cache_policy=NO_CACHE, persist_result=False)
def run_item(root: str, params_file: str, stage: str, module: str | None, item, label: str,
             workdir: str) -> dict:
    """One item (a video, or a shard of videos) of a mapped stage; an exception fails this task (and
    only this task) once its retries (``mapper.retries``) are spent."""
    mapper = get_mapper(root, params_file, stage, module)
    out = mapper.run_item(item, Path(workdir))
    return dict(out or {}, worker=C.worker_name())


@task(name="stage-merge", task_run_name="{stage}", cache_policy=NO_CACHE, persist_result=False,
      retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=is_transient)
def merge_stage(root: str, params_file: str, stage: str, module: str | None, items: list, errors: dict,
                workdir: str, threads: dict | None = None) -> dict:
    """Merge the per-video parts into the stage outputs, then ``dvc commit`` the stage."""
    log = get_run_logger()
    t0 = time.time()
    mapper = get_mapper(root, params_file, stage, module)
    info = mapper.merge(items, errors, Path(workdir))
    log.info("%s: merged %s", stage, info)
    rc, tail, last = dvcstate.commit_stage(root, stage, dvcstate.stage_env(threads), log.log)
    if rc:
        raise StageFailed(f"dvc commit of stage {stage!r} failed with exit code {rc}: {last}\n{tail}", exit_code=rc)
    shutil.rmtree(workdir, ignore_errors=True)
    return {"stage": stage, "status": "ran (mapped)", "worker": C.worker_name(),
            "seconds": round(time.time() - t0, 1), **{k: v for k, v in info.items() if k != "stage"}}


# ----------------------------------------------------------------------------------------------- flow
def _gpu_annotation(enabled: bool):
    if not enabled:
        return nullcontext()
    import dask

    return dask.annotate(resources={C.GPU: 1})


def _submit_after(task_, parameters: dict, upstream: list, via: str):
    """Submit ``task_`` with an edge from each of the ``upstream`` task runs (finished, failed ones
    included) in the run graph, recorded as inputs of its parameter ``via``: Prefect's ``wait_for``
    would refuse to start it after a failure."""
    from prefect.client.schemas.objects import TaskRunResult
    from prefect.context import FlowRunContext

    runner = FlowRunContext.get().task_runner
    deps = {via: {TaskRunResult(id=f.task_run_id) for f in upstream}} if upstream else None
    return runner.submit(task_, parameters, wait_for=None, dependencies=deps)


def _final_state(future):
    """The final Prefect state of a finished future; a Failed state when its dask task was lost."""
    future.wait()
    state = future.state
    if state.is_final():
        return state
    if state.name == "NotReady":  # Prefect did not start it: an upstream it waited for failed
        return Failed(message=state.message or "not run: upstream failed")
    try:
        exc = future.wrapped_future.exception(timeout=1)
    except Exception as e:  # noqa: BLE001 - whatever dask says about a lost task
        exc = e
    return Failed(message=f"task lost: {type(exc).__name__}: {exc}" if exc else "task lost")


def _error_record(state) -> dict | None:
    if not (state.is_failed() or state.is_crashed()):
        return None
    try:
        exc = state.result(raise_on_failure=False)
    except BaseException as e:  # noqa: BLE001 - a crashed task may raise here instead
        exc = e
    if isinstance(exc, BaseException):
        return {"type": type(exc).__name__, "message": str(exc)}
    return {"type": "Failed", "message": str(state.message)}


class _Mapped:
    """The per-video tasks of one mapped stage while they run."""

    def __init__(self, stage, items, labels, futures, workdir: Path, progress):
        self.stage, self.items, self.labels, self.workdir, self.progress = stage, items, labels, workdir, progress
        self.futures = futures
        self.label_of = {id(f): lab for f, lab in zip(futures, labels)}
        self.errors: dict[str, dict] = {}
        self.workers: set[str] = set()
        self.done = 0


def _flow_labels(root: Path, params_file: str) -> tuple[str | None, list[str]]:
    """Flow run name and tags: git branch, short commit, and the params that differ from HEAD's."""
    from flows.runinfo import run_labels

    try:
        return run_labels(root, params_file)
    except Exception as exc:  # noqa: BLE001 - labels are a convenience; never fail a run over them
        get_run_logger().warning("run name/tags from git not set: %s", exc)
        return None, []


def _label_run(root: Path, params_file: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    name, tags = _flow_labels(root, params_file)
    ctx = FlowRunContext.get()
    if not ctx or not ctx.flow_run or not (name or tags):
        return
    run = ctx.flow_run
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(run.id, name=name or run.name,
                                   tags=list(dict.fromkeys([*(run.tags or []), *tags])))
        get_run_logger().info("run %s, tags %s", name, ", ".join(tags) or "-")
    except Exception as exc:  # noqa: BLE001
        get_run_logger().warning("run name/tags not set: %s", exc)


def _detect_gpu() -> bool:
    """Whether the flow's dask cluster has GPU workers (for a run started from a deployment)."""
    client = dvcstate._dask_client()
    if client is None:
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        client = getattr(getattr(ctx, "task_runner", None), "client", None)
    if client is None:
        return False
    info = client.scheduler_info(n_workers=-1) if C._accepts_n_workers(client) else client.scheduler_info()
    return any((w.get("resources") or {}).get(C.GPU, 0) > 0 for w in info.get("workers", {}).values())


@flow(name="actparse", log_prints=True, validate_parameters=False)
def pipeline(root: str = ".", params_file: str = "params.yaml", targets: list[str] | None = None,
             force: bool = False, single_item: bool = False, use_gpu: bool | None = None,
             threads: dict | None = None, compare_to: str | None = None):
    """The dvc.yaml DAG: each stage is submitted as soon as its upstream stages are done (``wait_for``
    edges), so independent stages run at once; a failed stage stops only its downstream stages. Returns
    one summary row per stage, or a Failed state naming every failed stage.

    ``compare_to`` (a git revision, e.g. ``main``): at the end, ``actparse compare <rev> workspace``
    is written as an HTML report under ``flow.workdir``/reports, linked from a link artifact
    ``compare-report``, with its params and metrics as a markdown artifact ``compare-summary``."""
    log = get_run_logger()
    rootp = Path(root).resolve()
    pfile = Path(params_file)
    params = load_params(pfile if pfile.is_absolute() else rootp / pfile, sections=FLOW_SECTIONS)
    launch = _launch_of(rootp, targets, single_item, force)
    dag = launch["dag"] if launch else C.flow_dag(rootp, params)
    mapped = set(mapped_stages(params))
    unknown = mapped - set(dag.stages)
    if unknown:
        raise ValueError(f"{params.get('_path')}: flow.map_stages names unknown stage(s) {sorted(unknown)}")
    _label_run(rootp, params_file)
    if use_gpu is None:
        use_gpu = _detect_gpu()
    threads = dvcstate.launch_threads() if threads is None else threads
    workroot = rootp / get(params, "flow.workdir", str)
    plan = dag.plan(targets, single_item)
    in_plan = set(plan)
    ups = {n: [u for u in dag[n].upstream if u in in_plan] for n in plan}
    if launch and launch["known"] is not None:
        known = launch["known"]
    else:
        with dvcstate.dvc_lock(rootp):
            known = dvcstate.stale_stages(rootp, plan, ups, force)
    # Up to date and no upstream stage of the plan stale: nothing this run does can change that, so
    # these stages finish "Cached" at once, without asking DVC again or a trip to a dask worker.
    settled = {n for n, why in known.items() if why is None}
    log.info("plan: %d stages, %d edges, %d up to date (GPU routing %s)", len(plan),
             sum(map(len, ups.values())), len(settled), "on" if use_gpu else "off: no GPU workers")
    progress = create_progress_artifact(0.0, key="actparse-stages", description="pipeline: stages done")

    done_q: queue.Queue = queue.Queue()
    futures: dict[str, object] = {}  # stage -> the future its downstream stages wait for
    outcome: dict[str, str] = {}  # stage -> ok | failed | not run
    rows: dict[str, dict] = {}
    failures: dict[str, str] = {}
    watching: dict[int, tuple[str, str, object]] = {}  # id(future) -> (kind, stage, future)
    maps: dict[str, _Mapped] = {}
    pending = list(plan)

    def watch(kind: str, name: str, fut) -> None:
        watching[id(fut)] = (kind, name, fut)
        fut.add_done_callback(done_q.put)

    def finish(name: str, state) -> None:
        if state.is_completed():
            outcome[name] = "ok"
            rows[name] = state.result(raise_on_failure=False) or {"stage": name, "status": "ran"}
            if isinstance(rows[name], dict) and name in maps:
                m = maps.pop(name)
                rows[name].update(items=len(m.items), failed_items=len(m.errors), item_workers=sorted(m.workers))
        elif state.is_cancelled():
            outcome[name] = "not run"
            rows[name] = {"stage": name, "status": "not run", "worker": "", "seconds": 0.0}
        else:
            err = _error_record(state) or {"type": "Failed", "message": str(state.message)}
            outcome[name] = "failed"
            failures[name] = err["message"].splitlines()[0] if err["message"] else err["type"]
            rows[name] = {"stage": name, "status": f"FAILED: {err['type']}", "worker": "", "seconds": 0.0}
            log.error("%s failed: %s", name, failures[name])
        update_progress_artifact(progress, 100.0 * len(outcome) / len(plan))

    def start(name: str) -> None:
        stage = dag[name]
        waits = [futures[u] for u in ups[name] if u in futures]
        bad = [u for u in ups[name] if outcome.get(u, "ok") != "ok"]  # (a settled upstream may still run)
        if bad:
            fut = _submit_after(stage_not_run, {"stage": name, "failed_upstream": bad}, waits, "failed_upstream")
        elif name in settled:
            fut = stage_up_to_date.submit(name, wait_for=waits)
        elif name in mapped:
            fut = _start_mapped(name, stage, waits)
        else:
            with _gpu_annotation(use_gpu and stage.gpu):
                fut = run_stage.submit(str(rootp), name, force, threads, wait_for=waits)
        if fut is not None:
            futures[name] = fut
            watch("stage", name, fut)

    def _start_mapped(name: str, stage, waits):
        with dvcstate.dvc_lock(rootp):
            reason = dvcstate.stage_status(rootp, [name])[name]
        if reason is None and not force:
            return stage_up_to_date.submit(name, wait_for=waits)
        log.info("%s: %s", name, "forced" if reason is None else reason)
        mapper = get_mapper(rootp, params_file, name, stage.module)
        items = mapper.items()
        labels = [mapper.item_name(it) for it in items]
        workdir = workroot / name
        if not getattr(mapper, "resumable", False):  # a resumable mapper reuses the complete parts it finds
            shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True, exist_ok=True)
        log.info("%s: %d per-item tasks%s", name, len(items), " (GPU)" if use_gpu and stage.gpu else "")
        bar = create_progress_artifact(0.0, key=_artifact_key(name, "videos"), description=f"{name}: videos done")
        retries = int(getattr(mapper, "retries", 0))
        item_task = run_item.with_options(retries=retries, retry_delay_seconds=ITEM_RETRY_DELAY_S) if retries \
            else run_item
        with _gpu_annotation(use_gpu and stage.gpu):
            futs = item_task.map(unmapped(str(rootp)), unmapped(params_file), unmapped(name),
                                unmapped(stage.module), items, labels, unmapped(str(workdir)),
                                wait_for=waits)
        maps[name] = _Mapped(stage, items, labels, list(futs), workdir, bar)
        for f in futs:
            watch("item", name, f)
        if not futs:
            return _merge(name)
        return None

    def _merge(name: str):
        m = maps[name]
        fut = _submit_after(merge_stage, {"root": str(rootp), "params_file": params_file, "stage": name,
                                          "module": m.stage.module, "items": m.items, "errors": m.errors,
                                          "workdir": str(m.workdir), "threads": threads}, m.futures, "items")
        futures[name] = fut
        watch("stage", name, fut)
        return None

    try:
        while pending or watching:
            for name in list(pending):
                # a settled stage's upstream stages are settled too: it goes as soon as they are submitted
                if all(u in outcome for u in ups[name]) or (name in settled and all(u in futures for u in ups[name])):
                    pending.remove(name)
                    try:
                        start(name)
                    except Exception as exc:  # noqa: BLE001 - a stage that cannot even start fails alone
                        outcome[name] = "failed"
                        failures[name] = f"{type(exc).__name__}: {exc}"
                        rows[name] = {"stage": name, "status": f"FAILED: {type(exc).__name__}", "worker": "",
                                      "seconds": 0.0}
                        log.error("%s could not start: %s", name, failures[name])
            if not watching:
                if pending and all(any(u in pending for u in ups[n]) for n in pending):
                    raise RuntimeError(f"stages {pending} wait on each other")  # cannot happen for a DAG
                continue
            fut = done_q.get()
            kind, name, fut = watching.pop(id(fut), (None, None, None))
            if kind is None:
                continue
            state = _final_state(fut)
            if kind == "item":
                m = maps[name]
                err = _error_record(state)
                m.done += 1
                if err:
                    m.errors[m.label_of[id(fut)]] = err
                    log.warning("%s[%s] failed: %s: %s", name, m.label_of[id(fut)], err["type"], err["message"])
                else:
                    m.workers.add(str((state.result(raise_on_failure=False) or {}).get("worker", "?")))
                if m.done % max(1, len(m.futures) // 20) == 0 or m.done == len(m.futures):
                    update_progress_artifact(m.progress, 100.0 * m.done / max(1, len(m.futures)))
                if m.done == len(m.futures):
                    _merge(name)
            else:
                finish(name, state)
    finally:
        summary = [rows.get(n) or {"stage": n, "status": "not run", "worker": "", "seconds": 0.0} for n in plan]
        create_table_artifact(summary, key="actparse-summary", description="actparse stages: what ran where")
        _report_outputs(rootp, plan)
        if compare_to:
            _report_compare(rootp, compare_to, workroot)
    not_run = [n for n in plan if outcome.get(n) != "ok" and n not in failures]
    if failures:
        lines = [f"{n}: {m}" for n, m in failures.items()]
        msg = (f"{len(failures)} stage(s) failed: " + "; ".join(lines)
               + (f"; not run: {', '.join(not_run)}" if not_run else ""))
        log.error(msg)
        return Failed(message=msg, data=summary)
    return summary


def _report_outputs(root: Path, plan: list[str]) -> None:
    """The metrics table as a markdown artifact and link artifacts to the main outputs."""
    from flows.runinfo import metrics_markdown, outputs

    try:
        outs = outputs(root, plan)
        md = metrics_markdown(root, outs["metrics"])
        if md:
            create_markdown_artifact(md, key="actparse-metrics", description="metrics of this run (dvc.yaml metrics)")
        for path in outs["main"]:
            create_link_artifact(link=(root / path).as_uri(), link_text=path, key=_artifact_key("output", path),
                                 description=f"output of the DAG: {path}")
    except Exception as exc:  # noqa: BLE001 - reporting never fails a run
        get_run_logger().warning("metrics/link artifacts not written: %s", exc)


def _report_compare(root: Path, rev: str, workroot: Path) -> Path | None:
    """``actparse compare <rev> workspace`` as an HTML report (link artifact ``compare-report``) and a
    markdown summary (``compare-summary``); returns the report's path (None when it could not be made)."""
    from actparse.compare import compare, render_html, write_report
    from flows.runinfo import compare_markdown

    log = get_run_logger()
    try:
        cmp = compare(root, rev, "workspace")
        out = write_report(workroot / "reports" / f"compare-{_artifact_key(rev) or 'rev'}.html",
                           render_html(cmp, root=root))
    except Exception as exc:  # noqa: BLE001 - reporting never fails a run
        log.warning("compare report against %r not written: %s: %s", rev, type(exc).__name__, exc)
        return None
    create_link_artifact(link=out.as_uri(), link_text=f"{rev} vs this run", key="compare-report",
                         description=f"actparse compare {rev} workspace: plots, models, changed rows (HTML)")
    create_markdown_artifact(compare_markdown(cmp), key="compare-summary",
                             description=f"params and metrics: {rev} vs this run")
    log.info("compare report (%s vs this run): %s", rev, out)
    return out


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
                 fake_gpus: int = 0, return_state: bool = False, compare_to: str | None = None):
    """Launch :func:`pipeline` with its API and cluster; returns the summary (or the final state).

    ``api_url`` (else PREFECT_API_URL): report into that Prefect server; neither: into the
    ``python -m flows.server`` running on the database of ``prefect_home`` (else PREFECT_HOME, else
    ~/.prefect) if there is one, else into a local API server started for this run only (it starts while
    DVC is asked what is stale). ``scheduler`` (else ACTPARSE_DASK_SCHEDULER, else flow.scheduler): an
    existing dask cluster; none: a local cluster (flow.n_workers CPU workers + a worker per CUDA device;
    ``fake_gpus`` adds workers that only declare GPU=1, to try the routing), started only when DVC
    reports a stage of the plan stale or with ``force``: with everything up to date the flow records
    its Cached stages from its own threads. ``compare_to``: see :func:`pipeline`.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.server import find_running, home_dir, starting_server

    setup_offline_env()
    root = Path(root).resolve()
    pfile = Path(params_file)
    params = load_params(pfile if pfile.is_absolute() else root / pfile, sections=FLOW_SECTIONS)
    dag = C.flow_dag(root, params)
    plan = dag.plan(targets, single_item)  # bad dvc.yaml / target / gpu_stages: fail now
    mapped_stages(params)
    # flow.tls checked now; dask's own TLS configuration (and dask itself) only read if a cluster is used
    security = C.security(params) if (params.get("flow") or {}).get("tls") else None
    threads = dvcstate.launch_threads()
    with ExitStack() as stack:
        # the local cluster's workers (which run the shards in-process) wait as the stage commands do
        stack.enter_context(_environ(OMP_WAIT_POLICY=threads["OMP_WAIT_POLICY"]))
        url = api_url or os.environ.get("PREFECT_API_URL")
        if not url:
            url = find_running(prefect_home)  # a `python -m flows.server` on the same database
            if url:
                print(f"flows.pipeline: reporting into the running Prefect server at {url} "
                      f"(python -m flows.server of {home_dir(prefect_home)})", file=sys.stderr)
        wait_api = None
        if not url:  # a throw-away API: it starts while DVC is asked what is stale
            url, wait_api = stack.enter_context(starting_server(home=prefect_home, ui=False, scheduler=False))
            stack.callback(drain_prefect)  # runs before the server stops
        address = C.scheduler_address(params, scheduler)
        local = not address
        known = None
        if local and not force:
            # A local cluster only when a stage must run: a run with everything up to date records its
            # Cached stages from the flow's own threads.
            plan_set = set(plan)
            ups = {n: [u for u in dag[n].upstream if u in plan_set] for n in plan}
            with dvcstate.dvc_lock(root):
                known = dvcstate.stale_stages(root, plan, ups)
            local = any(why is not None for why in known.values())
        if wait_api is not None:
            wait_api()
        # Worker processes inherit the environment; in-process code reads the settings context.
        stack.enter_context(_environ(PREFECT_API_URL=url))
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
        if address or local:
            from prefect_dask import DaskTaskRunner

            security = security or C.security(params)  # flow.tls or dask's TLS configuration; None: plain TCP
            if not address:
                n_cpu = get(params, "flow.n_workers", int, min_value=0)
                processes = get(params, "flow.processes", bool)
                cl = stack.enter_context(C.local_cluster(n_cpu, C.local_gpu_ids(params), fake_gpus, processes,
                                                         security=security))
                address = cl.scheduler_address
            use_gpu = bool(C.gpu_workers(address, security))
            runner = DaskTaskRunner(address=address, client_kwargs={"security": security} if security else None)
        else:
            use_gpu, runner = False, ThreadPoolTaskRunner()
        # The flow reuses the DAG and DVC's answer from here (same thread, same root and plan) instead
        # of reading them again; a run started any other way (a deployment) reads them itself.
        stack.callback(_LAUNCH.reset, _LAUNCH.set({"root": str(root), "targets": list(targets or []),
                                                   "single_item": single_item, "force": force,
                                                   "dag": dag, "known": known}))
        return pipeline.with_options(task_runner=runner)(
            root=str(root), params_file=str(params_file), targets=list(targets or []) or None, force=force,
            single_item=single_item, use_gpu=use_gpu, threads=threads, compare_to=compare_to,
            return_state=return_state)


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
                        help="params file of the flow section, relative to --root "
                             "(the stages themselves read params.yaml, as dvc.yaml says)")
    parser.add_argument("-f", "--force", action="store_true", help="rerun the planned stages even if up to date")
    parser.add_argument("-s", "--single-item", action="store_true", help="only the targets, not their upstream")
    parser.add_argument("--api-url", default=None, help="Prefect API to report into (default PREFECT_API_URL)")
    parser.add_argument("--scheduler", default=None, help="dask scheduler address (default "
                        f"{C.SCHEDULER_ENV} or flow.scheduler; none: a local cluster)")
    parser.add_argument("--fake-gpus", type=int, default=0, help="extra local workers declaring GPU=1 (routing test)")
    parser.add_argument("--compare-to", default=None, metavar="REV",
                        help="at the end, compare this git revision (e.g. main) with the run's results: an HTML "
                             "report under flow.workdir/reports, linked from the run's artifacts")
    args = parser.parse_args(argv)
    try:
        state = run_pipeline(args.root, args.params, args.targets, args.force, args.single_item, args.api_url,
                             args.scheduler, fake_gpus=args.fake_gpus, return_state=True,
                             compare_to=args.compare_to)
    except (ValueError, FileNotFoundError) as exc:
        print(f"flows.pipeline: error: {exc}", file=sys.stderr)
        return 2
    if state.is_completed():
        _print_summary(state.result())
        return 0
    try:
        rows = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - a crashed run has no summary
        rows = None
    if isinstance(rows, list):
        _print_summary(rows)
    print(f"flows.pipeline: flow run {state.name}: {state.message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
