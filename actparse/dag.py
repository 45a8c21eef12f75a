"""The pipeline DAG as DVC reads ``dvc.yaml``: the one definition both ``dvc repro`` and the Prefect flow use.

:func:`load_dag` takes DVC's own index of the repository (``dvc.repo.Repo(root).index``): the stages with
their ``cmd``, ``deps``, ``outs`` (incl. metrics/plots) and ``params`` already interpolated by DVC
(``${...}`` from params.yaml and ``vars``), and DVC's graph of which stage reads another's outputs. It
orders the stages topologically (ties keep the ``dvc.yaml`` order). A stage is marked ``gpu`` when the
caller names it in ``gpu_stages`` (the flow's scheduling list, ``flow.gpu_stages``) or it carries
``meta: {gpu: true}`` in ``dvc.yaml``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable


class DagError(ValueError):
    """dvc.yaml cannot be turned into a DAG (bad YAML, unknown template key, cycle, ...)."""


@dataclass(frozen=True)
class Stage:
    name: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]  # outs + metrics + plots (file outputs), normalised posix paths
    params: tuple[str, ...]  # dotted keys; "file:key" when not params.yaml
    gpu: bool = False
    upstream: tuple[str, ...] = ()

    @property
    def module(self) -> str | None:
        """``stages.decode`` for ``cmd: python -m stages.decode ...``; None for other commands."""
        m = re.match(r"^\s*(?:\S*/)?python[0-9.]*\s+-m\s+([\w.]+)", self.cmd)
        return m.group(1) if m else None


@dataclass
class Dag:
    stages: dict[str, Stage]  # dvc.yaml order
    order: list[str] = field(default_factory=list)  # topological

    def __getitem__(self, name: str) -> Stage:
        try:
            return self.stages[name]
        except KeyError:
            raise DagError(f"unknown stage {name!r}; dvc.yaml has {list(self.stages)}") from None

    def __iter__(self):
        return (self.stages[n] for n in self.order)

    def __len__(self) -> int:
        return len(self.stages)

    @property
    def edges(self) -> set[tuple[str, str]]:
        """(upstream, downstream) pairs."""
        return {(u, s.name) for s in self.stages.values() for u in s.upstream}

    def ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self[name].upstream)
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(self.stages[n].upstream)
        return seen

    def descendants(self, name: str) -> set[str]:
        self[name]
        down: dict[str, list[str]] = {n: [] for n in self.stages}
        for u, d in self.edges:
            down[u].append(d)
        seen: set[str] = set()
        todo = list(down[name])
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(down[n])
        return seen

    def plan(self, targets: Iterable[str] | None = None, single_item: bool = False) -> list[str]:
        """Stages to visit, in order: all, or ``targets`` and their ancestors (like ``dvc repro T``)."""
        if not targets:
            return list(self.order)
        want: set[str] = set()
        for t in targets:
            self[t]
            want.add(t)
            if not single_item:
                want |= self.ancestors(t)
        return [n for n in self.order if n in want]


def _stage_spec(stage) -> dict:
    """cmd, deps, outs, params and the gpu marker of one DVC stage."""
    cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd or [])
    deps, params = [], []
    for d in stage.deps:
        if type(d).__name__ == "ParamsDependency":
            fname = Path(str(d.def_path)).name
            params += [k if fname == "params.yaml" else f"{d.def_path}:{k}" for k in d.params]
        else:
            deps.append(str(d.def_path))
    meta = getattr(stage, "meta", None) or {}
    return {"cmd": cmd, "deps": tuple(deps), "outs": tuple(str(o.def_path) for o in stage.outs),
            "params": tuple(params), "meta_gpu": bool(isinstance(meta, dict) and meta.get("gpu"))}


def load_dag(root: str | Path = ".", gpu_stages: Iterable[str] = ()) -> Dag:
    """DVC's reading of ``root/dvc.yaml`` as a :class:`Dag` (see the module docstring).

    ``gpu_stages``: names of stages to mark as GPU stages; a name that is not a stage raises
    :class:`DagError`.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    root = Path(root).resolve()
    path = root / "dvc.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path}: pipeline file not found")
    try:
        with Repo(str(root)) as repo:
            index = repo.index
            dvc_stages = [s for s in index.stages if getattr(s, "name", None) and Path(s.path).resolve() == path]
            specs = {s.name: _stage_spec(s) for s in dvc_stages}
            ups: dict[str, list[str]] = {n: [] for n in specs}
            for down, up in index.graph.edges:  # DVC's edges point from a stage to the stage it reads from
                if down.name in ups and up.name in specs and up.name not in ups[down.name]:
                    ups[down.name].append(up.name)
    except DvcException as exc:
        raise DagError(f"{path}: {exc}") from None
    gpu_set = set(gpu_stages)
    unknown = sorted(gpu_set - set(specs))
    if unknown:
        raise DagError(f"{path}: GPU stage(s) {unknown} are not stages of the pipeline")
    stages: dict[str, Stage] = {}
    for name, r in specs.items():
        meta_gpu = r.pop("meta_gpu")
        stages[name] = Stage(name=name, upstream=tuple(ups[name]), gpu=name in gpu_set or meta_gpu, **r)
    return Dag(stages=stages, order=_toposort(stages, path))


def _toposort(stages: dict[str, Stage], path: Path) -> list[str]:
    names = list(stages)
    pending = {n: set(stages[n].upstream) for n in names}
    order: list[str] = []
    while pending:
        ready = [n for n in names if n in pending and not pending[n]]
        if not ready:
            raise DagError(f"{path}: dependency cycle among stages {sorted(pending)}")
        n = ready[0]
        order.append(n)
        del pending[n]
        for rest in pending.values():
            rest.discard(n)
    return order
