"""What is up to date is DVC's call: the flow asks ``dvc status`` and records runs in ``dvc.lock``.

A stage is stale exactly when ``dvc status <stage>`` reports a change (deps, params, outs, cmd), so the
flow and ``dvc repro`` always agree. A stage the flow runs as one command runs through
``dvc repro --single-item`` (DVC runs it and writes dvc.lock, run-cache included); a stage whose work the
flow maps over videos is committed with ``dvc commit --force <stage>`` after its parts are merged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Callable, Iterable


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
    """``{stage: None}`` when up to date, else a one-line reason (from DVC's own status)."""
    from dvc.repo import Repo

    stages = list(stages)
    if not stages:
        return {}
    dvcfile = Path(root).resolve() / "dvc.yaml"
    out: dict[str, str | None] = {}
    with Repo(str(Path(root).resolve())) as repo:
        for name in stages:
            # One target at a time: DVC keys its answer by a cwd-relative address.
            status = repo.status(targets=[f"{dvcfile}:{name}"])
            entries = [e for v in status.values() for e in v]
            out[name] = _describe(entries) if entries else None
    return out


def stage_env(threads: dict[str, str | None] | None = None) -> dict[str, str]:
    """Environment for a stage command run from a dask worker.

    The venv's ``bin`` goes first on PATH (``python -m stages.x`` must find this interpreter), and the
    thread-count variables dask pins to 1 in its worker processes are set back to the values the user
    launched the flow with (``threads``; None = unset), so stages use every core like under ``dvc repro``.
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


def launch_threads() -> dict[str, str | None]:
    """The thread-count variables of the launching process (to hand to :func:`stage_env`)."""
    return {k: os.environ.get(k) for k in THREAD_VARS}


def run_logged(cmd: list[str], cwd: str | Path, env: dict, log: Callable[[str], None],
               tail_lines: int = 40) -> tuple[int, str]:
    """Run ``cmd``, passing each output line to ``log`` as it comes; returns (exit code, output tail)."""
    tail: deque[str] = deque(maxlen=tail_lines)
    proc = subprocess.Popen(cmd, cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        # tqdm redraws with carriage returns: log the last state of the line.
        line = line.rstrip("\n").split("\r")[-1].rstrip()
        if line:
            tail.append(line)
            log(line)
    return proc.wait(), "\n".join(tail)


def dvc_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def repro_cmd(stage: str, force: bool = False) -> list[str]:
    return dvc_cmd("repro", "--single-item", stage, *(["--force"] if force else []))


def commit_cmd(stage: str) -> list[str]:
    return dvc_cmd("commit", "--force", stage)
