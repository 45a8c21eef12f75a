"""What is up to date is DVC's call: the flow asks ``dvc status`` and records runs in ``dvc.lock``.

A stage is stale exactly when ``dvc status <stage>`` reports a change (deps, params, outs, cmd), so the
flow and ``dvc repro`` always agree. DVC holds one lock per repository, so two ``dvc repro`` cannot run
at once (DVC issue 755). The flow therefore splits a stage the way ``dvc repro`` does internally, and
serializes only DVC's bookkeeping under :func:`dvc_lock`:

1. :func:`prepare_stage` (locked): ``dvc status`` of the stage; when stale, remove its outputs (DVC's
   ``remove_outs``, persistent outputs kept) and try DVC's run-cache, exactly as ``dvc repro`` would;
2. the stage's own command, as DVC defines it (``cmd`` of the stage in DVC's index, ``${}`` already
   resolved by DVC), run by the shell in the stage's ``wdir`` with ``DVC_ROOT`` / ``DVC_STAGE`` set
   (unlocked: several stages run at once);
3. ``dvc commit --force <stage>`` (locked): DVC hashes deps and outs, caches the outs, saves the
   run-cache entry and writes the stage's entry in dvc.lock, the same entry ``dvc repro`` writes; the
   stages of dvc.lock are kept in dvc.yaml order (:func:`order_lockfile`), so the file is the same text.

A stage whose work the flow maps over videos is committed the same way after its parts are merged.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import subprocess
import sys
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from actparse.stage import LOG_FORMAT


class TransientError(RuntimeError):
    """A failure worth retrying: the DVC lock stayed busy, or the stage was killed by a signal
    (its worker or machine went away, the OOM killer)."""


class LockBusy(TransientError):
    """:func:`dvc_lock` was not acquired within its timeout."""


def _describe(entries) -> str:
    parts = []
    for entry in entries:
        if isinstance(entry, str):
            parts.append(entry)
            continue
        for kind, what in entry.items():
            if isinstance(what, dict):
                items = []
                for path, change in what.items():
                    if isinstance(change, dict):
                        items += [f"{path}:{k} {v}" for k, v in change.items()]
                    else:
                        items.append(f"{path} {change}")
                parts.append(f"{kind}: " + ", ".join(items))
            else:
                parts.append(f"{kind}: {what}")
    return "; ".join(parts) or "changed"


def stage_status(root: str | Path, stages: Iterable[str]) -> dict[str, str | None]:
    """``{stage: None}`` when up to date, else a one-line reason (from DVC's own status).

    Every stage asked is checked in one pass over DVC's index of the repository, with the repository
    lock held, as ``dvc status`` does (``Repo.status`` calls the same ``Stage.status`` per stage); a
    stage is not looked up target by target, which re-reads dvc.yaml each time (0.2 s a stage).
    """
    from dvc.repo import Repo, lock_repo

    wanted = list(dict.fromkeys(stages))
    if not wanted:
        return {}
    root = Path(root).resolve()
    dvcfile = str(root / "dvc.yaml")
    out: dict[str, str | None] = {}
    with Repo(str(root)) as repo, lock_repo(repo):
        for stage in repo.index.stages:
            name = getattr(stage, "name", None)
            if name in wanted and name not in out and os.path.abspath(stage.path) == dvcfile:
                status = stage.status(check_updates=True)
                entries = [e for v in status.values() for e in v]
                out[name] = _describe(entries) if entries else None
    missing = [n for n in wanted if n not in out]
    if missing:
        raise ValueError(f"{dvcfile}: no stage {', '.join(map(repr, missing))}")
    return {n: out[n] for n in wanted}


def stale_stages(root: str | Path, order: list[str], upstream: dict[str, Iterable[str]],
                 force: bool = False) -> dict[str, str | None]:
    """For the stages of a plan (``order``: topological; ``upstream``: each stage's upstream stages in
    the plan), what is known before anything runs: ``{stage: None}`` for a stage that is up to date and
    stays so (DVC reports it and every upstream stage of the plan up to date, so no run of this plan
    can change its inputs), else why it must be looked at again when its turn comes (its own status or
    ``"upstream stale"``). One :func:`stage_status` pass; with ``force`` every stage is stale."""
    if force:
        return {n: "forced" for n in order}
    status = stage_status(root, order) if order else {}
    out: dict[str, str | None] = {}
    for n in order:
        ups = [u for u in upstream.get(n, ()) if u in out]
        out[n] = status[n] or ("upstream stale" if any(out[u] is not None for u in ups) else None)
    return out


def _lock_name(root: Path) -> str:
    return "actparse-dvc-" + hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]


def _dask_client():
    """The dask client of this worker or of the flow's task runner, or None outside dask."""
    if "distributed" not in sys.modules:  # no dask in this process, hence no client (and no import)
        return None
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


@contextmanager
def dvc_lock(root: str | Path, timeout: float = 600.0) -> Iterator[None]:
    """Hold the flow's lock on the DVC bookkeeping of the repository at ``root``.

    A named ``distributed.Lock`` when a dask cluster is reachable (held across every machine of the
    cluster), and an exclusive ``flock`` on ``.dvc/tmp/actparse-flow.lock`` (this machine, and other
    machines of a shared filesystem that supports locks). Raises :class:`LockBusy` after ``timeout``.
    """
    root = Path(root)
    dist = None
    client = _dask_client()
    if client is not None:
        from distributed import Lock

        dist = Lock(_lock_name(root))
        if not dist.acquire(timeout=timeout):
            raise LockBusy(f"{root}: the DVC bookkeeping lock stayed busy for {timeout:.0f}s")
    try:
        path = root / ".dvc" / "tmp" / "actparse-flow.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with open(path, "a") as fh:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.time() - t0 > timeout:
                        raise LockBusy(f"{path}: lock held by another process for {timeout:.0f}s") from None
                    time.sleep(0.1)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        if dist is not None:
            dist.release()


def _collect(repo, root: Path, name: str):
    (stage,) = repo.stage.collect(f"{root / 'dvc.yaml'}:{name}")
    return stage


def prepare_stage(root: str | Path, name: str, force: bool = False) -> dict:
    """Step 1 (take :func:`dvc_lock` around it): is ``name`` stale, and if so get it ready to run.

    Returns ``{"reason": None}`` when DVC reports the stage up to date (and not ``force``); otherwise
    ``reason`` (why it runs), ``restored`` (True: DVC restored its outputs from the run-cache, nothing
    to run), and the stage's interpolated ``cmd`` (a list of shell commands), ``wdir`` and ``env``.
    """
    from dvc.repo import Repo, lock_repo
    from dvc.stage.cache import RunCacheNotFoundError

    root = Path(root).resolve()
    reason = stage_status(root, [name])[name]
    if reason is None and not force:
        return {"reason": None}
    with Repo(str(root)) as repo, lock_repo(repo):
        stage = _collect(repo, root, name)
        cmd = stage.cmd if isinstance(stage.cmd, list) else [stage.cmd]
        out = {"reason": reason or "forced", "cmd": [str(c) for c in cmd], "wdir": str(stage.wdir),
               "env": {"DVC_ROOT": repo.root_dir, "DVC_STAGE": stage.addressing}, "restored": False}
        stage.remove_outs(ignore_remove=False, force=False)  # as dvc repro: a stale output never survives
        if not force:
            try:
                repo.stage_cache.restore(stage)  # DVC's run-cache: this exact run was recorded before
                out["restored"] = True
            except RunCacheNotFoundError:
                pass
    return out


def order_lockfile(root: str | Path) -> bool:
    """Put the stages of ``dvc.lock`` in ``dvc.yaml`` order, as ``dvc repro`` of the pipeline leaves
    them (stages committed at once are appended in the order they finished). Take :func:`dvc_lock`
    around it. Written with DVC's own YAML round-trip, so nothing else of the file changes; returns
    whether it had to reorder."""
    import yaml
    from dvc.utils.serialize import modify_yaml

    root = Path(root)
    lock = root / "dvc.lock"
    if not lock.exists():
        return False
    names = list((yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages") or {})
    with modify_yaml(str(lock)) as data:
        stages = data.get("stages")
        if not stages:
            return False
        order = [n for n in names if n in stages] + [n for n in stages if n not in names]
        if list(stages) == order:
            return False
        items = [(n, stages[n]) for n in order]
        for n in list(stages):
            del stages[n]
        for n, v in items:
            stages[n] = v
    return True


def commit_stage(root: str | Path, stage: str, env: dict, log: Callable[[int, str], None]) -> tuple[int, str, str]:
    """Step 3, under :func:`dvc_lock`: ``dvc commit --force <stage>``, then dvc.lock in dvc.yaml order."""
    with dvc_lock(root):
        rc, tail, last = run_logged(commit_cmd(stage), root, env, log)
        if rc == 0:
            order_lockfile(root)
    return rc, tail, last


def stage_env(threads: dict[str, str | None] | None = None) -> dict[str, str]:
    """Environment for a stage command run from a dask worker.

    The venv's ``bin`` goes first on PATH (``python -m stages.x`` must find this interpreter), and the
    thread-count variables dask pins to 1 in its worker processes are set back to the values the user
    launched the flow with (``threads``; None = unset), so stages use every core like under ``dvc repro``
    (``threads`` also carries the wait policy of :func:`launch_threads`).
    """
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    for key, value in (threads or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")  # stage output reaches the task log as it is printed
    return env


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


#: how OpenMP threads wait in the stages the flow runs, unless the launcher sets OMP_WAIT_POLICY: the
#: flow runs stages (and shards) side by side, and threads spinning at barriers for a descheduled
#: sibling slow a torch step several-fold (see actparse/determinism.py); no result depends on it
FLOW_WAIT_POLICY = "PASSIVE"


def launch_threads() -> dict[str, str | None]:
    """The thread-count variables of the launching process, and its OpenMP wait policy (default
    :data:`FLOW_WAIT_POLICY`), to hand to :func:`stage_env`."""
    out = {k: os.environ.get(k) for k in THREAD_VARS}
    out["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY") or FLOW_WAIT_POLICY
    return out


def _log_line_regex(fmt: str) -> re.Pattern:
    """A regex reading a line written with the stages' logging format (``LOG_FORMAT``)."""
    pats = {"asctime": r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", "name": r"\S+",
            "levelname": r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)", "message": r"(?P<message>.*)"}
    out, pos = "", 0
    for m in re.finditer(r"%\((\w+)\)s", fmt):
        out += re.escape(fmt[pos:m.start()]) + pats.get(m.group(1), r".*?")
        pos = m.end()
    return re.compile("^" + out + re.escape(fmt[pos:]) + "$")


STAGE_LINE = _log_line_regex(LOG_FORMAT)
_ERROR_LINE = re.compile(r"^[\w.]+: error: ")  # stage_main's one-line error (exit 2)
_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failed|Warning)\b")


class LineLevels:
    """The logging level of each output line of a stage command.

    A line in the stages' log format keeps its own level; ``<stage>: error: ...`` (the one-line error
    of :func:`actparse.stage.stage_main`) and a Python traceback are ERROR; anything else is INFO.
    """

    def __init__(self):
        self.in_traceback = False

    def __call__(self, line: str) -> tuple[int, str]:
        m = STAGE_LINE.match(line)
        if m:
            self.in_traceback = False
            return getattr(logging, m.group("level")), m.group("message")
        if line.startswith("Traceback (most recent call last)"):
            self.in_traceback = True
            return logging.ERROR, line
        if self.in_traceback:
            if not line[:1].isspace():
                self.in_traceback = False  # the exception line ends the traceback
            return logging.ERROR, line
        if _ERROR_LINE.match(line):
            return logging.ERROR, line
        return logging.INFO, line


def run_logged(cmd: list[str] | str, cwd: str | Path, env: dict, log: Callable[[int, str], None],
               tail_lines: int = 40, shell: bool = False) -> tuple[int, str, str]:
    """Run ``cmd``, passing each output line to ``log(level, line)`` as it comes (level: see
    :class:`LineLevels`); returns (exit code, output tail, the last ERROR line or else the last line).

    ``shell``: ``cmd`` is a shell command line, run by ``$SHELL`` (else /bin/sh) without its rc files,
    as DVC runs a stage's ``cmd``.
    """
    tail: deque[str] = deque(maxlen=tail_lines)
    levels = LineLevels()
    last_error = ""
    if shell:
        sh = os.environ.get("SHELL") or "/bin/sh"
        opts = {"bash": ["--noprofile", "--norc"], "zsh": ["--no-rcs"]}.get(os.path.basename(sh), [])
        cmd = [sh, *opts, "-c", str(cmd)]
    proc = subprocess.Popen(cmd, cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        # tqdm redraws with carriage returns: log the last state of the line.
        line = line.rstrip("\n").split("\r")[-1].rstrip()
        if line:
            tail.append(line)
            level, _ = levels(line)
            if level >= logging.ERROR:
                last_error = line
            log(level, line)
    rc = proc.wait()
    return rc, "\n".join(tail), last_error or (tail[-1] if tail else "")


def exit_reason(rc: int) -> str:
    """``exit code N``, or ``killed by SIGKILL`` for a command a signal ended (shell: 128 + signal)."""
    import signal

    sig = -rc if rc < 0 else (rc - 128 if 128 < rc < 160 else 0)
    if sig:
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit code {rc}"


def killed(rc: int) -> bool:
    """The command was ended by a signal (transient: a lost worker, a preempted machine, the OOM killer)."""
    return rc < 0 or 128 < rc < 160


def dvc_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def repro_cmd(stage: str, force: bool = False) -> list[str]:
    return dvc_cmd("repro", "--single-item", stage, *(["--force"] if force else []))


def commit_cmd(stage: str) -> list[str]:
    return dvc_cmd("commit", "--force", stage)
