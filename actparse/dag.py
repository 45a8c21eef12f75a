"""The pipeline DAG, read from ``dvc.yaml``: the one definition both ``dvc repro`` and the Prefect flow use.

:func:`load_dag` parses ``dvc.yaml`` (stage ``cmd``, ``deps``, ``outs`` incl. metrics/plots, ``params``),
resolves ``${key}`` templating from ``params.yaml`` (and top-level ``vars``) the way DVC does, links a stage
to every stage whose outputs overlap its dependencies, and orders the stages topologically (ties keep the
``dvc.yaml`` order). Which stages need a GPU is a marker kept beside the DAG: the ``flow.gpu_stages`` list
in ``params.yaml`` (default :data:`DEFAULT_GPU_STAGES`) or ``meta: {gpu: true}`` on a stage in ``dvc.yaml``.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from .params import ParamError

# Stages that train or run a network: on a cluster they run only on workers that declare a GPU.
DEFAULT_GPU_STAGES = ("train_person_detector", "detect_persons", "train_pose", "keypoints",
                      "train_part_detector", "detect_parts", "train_csn", "csn")

_TEMPLATE = re.compile(r"\$\{\s*([^}]+?)\s*\}")
_UNSUPPORTED = ("foreach", "matrix", "do", "wdir")


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


def _lookup(ctx: dict, key: str, where: str) -> Any:
    node: Any = ctx
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise DagError(f"{where}: template ${{{key}}} not found in params/vars")
    return node


def interpolate(value: Any, ctx: dict, where: str = "dvc.yaml") -> Any:
    """Resolve ``${a.b}`` in strings (recursively in lists/dicts) from ``ctx``."""
    if isinstance(value, str):
        whole = _TEMPLATE.fullmatch(value.strip())
        if whole:
            got = _lookup(ctx, whole.group(1), where)
            return got
        return _TEMPLATE.sub(lambda m: str(_lookup(ctx, m.group(1), where)), value)
    if isinstance(value, list):
        return [interpolate(v, ctx, where) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, ctx, where) for k, v in value.items()}
    return value


def _norm(path: str) -> str:
    p = posixpath.normpath(str(path).replace("\\", "/"))
    return p[2:] if p.startswith("./") else p


def _overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _entry_paths(entries: Any, where: str) -> list[str]:
    """outs/metrics/plots entries: "path" or {"path": {options}}."""
    out = []
    for e in entries or []:
        if isinstance(e, str):
            out.append(_norm(e))
        elif isinstance(e, dict) and len(e) == 1:
            out.append(_norm(next(iter(e))))
        else:
            raise DagError(f"{where}: cannot read entry {e!r}")
    return out


def _param_keys(entries: Any, where: str) -> list[str]:
    keys = []
    for e in entries or []:
        if isinstance(e, str):
            keys.append(e)
        elif isinstance(e, dict):
            for fname, ks in e.items():
                for k in ks or []:
                    keys.append(str(k) if fname == "params.yaml" else f"{fname}:{k}")
        else:
            raise DagError(f"{where}: cannot read params entry {e!r}")
    return keys


def _load_yaml(path: Path, what: str) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DagError(f"{path}: not valid YAML ({what}): {exc}") from None


def _context(root: Path, doc: dict, params_file: Path) -> dict:
    """Template context as DVC builds it: params.yaml, then top-level ``vars`` (files or mappings)."""
    ctx: dict = {}
    if params_file.exists():
        loaded = _load_yaml(params_file, "params file") or {}
        if isinstance(loaded, dict):
            ctx.update(loaded)
    for var in doc.get("vars") or []:
        if isinstance(var, dict):
            ctx.update(var)
        elif isinstance(var, str):
            fname, _, keys = var.partition(":")
            data = _load_yaml(root / fname, "vars file") or {}
            if keys:
                data = {k: data[k] for k in keys.split(",") if k in data}
            ctx.update(data)
    return ctx


def gpu_stage_names(params: dict | None) -> tuple[str, ...]:
    """``flow.gpu_stages`` from params (a list of stage names), default :data:`DEFAULT_GPU_STAGES`."""
    flow = (params or {}).get("flow") or {}
    names = flow.get("gpu_stages", DEFAULT_GPU_STAGES)
    if names is None:
        return ()
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        where = (params or {}).get("_path", "params")
        raise ParamError(f"{where}: parameter 'flow.gpu_stages' must be a list of stage names, got {names!r}")
    return tuple(names)


def load_dag(root: str | Path = ".", dvc_file: str = "dvc.yaml", params_file: str | Path = "params.yaml",
             gpu_stages: Iterable[str] | None = None) -> Dag:
    """Parse ``root/dvc_file`` into a :class:`Dag`.

    ``gpu_stages``: names of GPU stages; None reads ``flow.gpu_stages`` from the params file. A name
    that is not a stage raises :class:`ParamError`.
    """
    root = Path(root)
    path = root / dvc_file
    doc = _load_yaml(path, "pipeline file")
    if not isinstance(doc, dict) or not isinstance(doc.get("stages"), dict):
        raise DagError(f"{path}: expected a top-level 'stages' mapping")
    pfile = Path(params_file)
    pfile = pfile if pfile.is_absolute() else root / pfile
    ctx = _context(root, doc, pfile)
    if gpu_stages is None:
        params = ctx if "flow" in ctx else {}
        params = dict(params, _path=str(pfile))
        gpu_stages = gpu_stage_names(params)
    gpu_set = set(gpu_stages)
    unknown = sorted(gpu_set - set(doc["stages"]))
    if unknown:
        raise ParamError(f"{pfile}: parameter 'flow.gpu_stages' names unknown stage(s) {unknown}")

    raw: dict[str, dict] = {}
    for name, spec in doc["stages"].items():
        where = f"{path}: stage {name!r}"
        if not isinstance(spec, dict):
            raise DagError(f"{where}: expected a mapping")
        bad = [k for k in _UNSUPPORTED if k in spec]
        if bad:
            raise DagError(f"{where}: {bad} not supported by actparse.dag")
        cmd = interpolate(spec.get("cmd"), ctx, where)
        if isinstance(cmd, list):
            cmd = " && ".join(cmd)
        if not isinstance(cmd, str) or not cmd.strip():
            raise DagError(f"{where}: missing 'cmd'")
        deps = [_norm(d) for d in interpolate(spec.get("deps") or [], ctx, where)]
        outs = []
        for key in ("outs", "metrics", "plots"):
            outs += _entry_paths(interpolate(spec.get(key) or [], ctx, where), where)
        meta = spec.get("meta") or {}
        raw[name] = {"cmd": cmd, "deps": tuple(deps), "outs": tuple(outs),
                     "params": tuple(_param_keys(spec.get("params"), where)),
                     "gpu": name in gpu_set or bool(isinstance(meta, dict) and meta.get("gpu"))}

    owner: dict[str, str] = {}
    for name, r in raw.items():
        for o in r["outs"]:
            for other_out, other in owner.items():
                if _overlap(o, other_out):
                    raise DagError(f"{path}: output {o!r} of stage {name!r} overlaps output "
                                   f"{other_out!r} of stage {other!r}")
            owner[o] = name
    stages: dict[str, Stage] = {}
    for name, r in raw.items():
        ups = []
        for d in r["deps"]:
            for o, producer in owner.items():
                if producer != name and _overlap(d, o) and producer not in ups:
                    ups.append(producer)
        stages[name] = Stage(name=name, upstream=tuple(ups), **r)
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
