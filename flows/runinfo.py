"""What a flow run is labelled with and reports: its name and tags (git branch, commit, changed params)
and the metrics and main outputs it shows as Prefect artifacts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Iterable

import yaml

MAX_PARAM_TAGS = 12
MAX_VALUE_CHARS = 40


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data} if prefix else {}


def changed_params(root: Path, rel: str = "params.yaml") -> dict[str, Any]:
    """Params of the working ``rel`` that differ from its committed version (HEAD); removed keys map
    to None. Empty outside git or when the file is not committed."""
    committed = _git(root, "show", f"HEAD:{rel}")
    path = root / rel
    if committed is None or not path.is_file():
        return {}
    old = flatten(yaml.safe_load(committed) or {})
    new = flatten(yaml.safe_load(path.read_text()) or {})
    return {k: new.get(k) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS - 3] + "..."


def run_labels(root: str | Path, params_file: str = "params.yaml") -> tuple[str | None, list[str]]:
    """(flow run name, tags) for a run of the project at ``root``.

    Tags: ``branch:<branch>``, ``commit:<short sha>``, and ``param:<key>=<value>`` for each param of
    params.yaml (the file the stages read) that differs from HEAD (at most :data:`MAX_PARAM_TAGS`;
    ``param:+N more`` for the rest); with another ``params_file``, ``params:<file>``. The name is
    ``<branch>@<sha>`` followed by the first changed params. Outside git: no name, no tags.
    """
    root = Path(root).resolve()
    branch = (_git(root, "rev-parse", "--abbrev-ref", "HEAD") or "").strip()
    sha = (_git(root, "rev-parse", "--short=7", "HEAD") or "").strip()
    if not branch and not sha:
        return None, []
    branch = "detached" if branch == "HEAD" else branch
    tags = [f"branch:{branch}"] if branch else []
    tags += [f"commit:{sha}"] if sha else []
    if str(params_file) not in ("params.yaml", str(root / "params.yaml")):
        tags.append(f"params:{params_file}")
    changed = changed_params(root)
    items = [f"{k}={_short(v)}" for k, v in changed.items()]
    tags += [f"param:{it}" for it in items[:MAX_PARAM_TAGS]]
    if len(items) > MAX_PARAM_TAGS:
        tags.append(f"param:+{len(items) - MAX_PARAM_TAGS} more")
    name = f"{branch or '?'}@{sha or '?'}"
    if items:
        name += " " + ", ".join(items[:3]) + (f" (+{len(items) - 3})" if len(items) > 3 else "")
    return name, tags


def outputs(root: str | Path, plan: Iterable[str]) -> dict[str, list[str]]:
    """From DVC's own index: ``metrics`` (the metrics files of the planned stages) and ``main`` (the
    outputs of the planned stages no other stage reads, metrics first)."""
    from dvc.repo import Repo

    plan = set(plan)
    metrics: list[str] = []
    main: list[str] = []
    with Repo(str(Path(root).resolve())) as repo:
        graph = repo.index.graph
        for stage in repo.index.stages:
            if stage.name not in plan:
                continue
            sink = not any(True for _ in graph.predecessors(stage))  # edges point downstream -> upstream
            for out in stage.outs:
                path = str(out.def_path)
                if out.metric:
                    metrics.append(path)
                elif sink and not out.plot:
                    main.append(path)
    return {"metrics": metrics, "main": metrics + main}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def metrics_markdown(root: str | Path, files: Iterable[str], max_rows: int = 400) -> str:
    """A markdown table (file, metric, value) of the JSON/YAML metrics files that exist; "" if none."""
    root = Path(root)
    rows: list[str] = []
    missing: list[str] = []
    for rel in files:
        path = root / rel
        if not path.is_file():
            missing.append(rel)
            continue
        try:
            text = path.read_text()
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            rows.append(f"| `{rel}` | (unreadable) | {_fmt(exc)} |")
            continue
        for key, value in flatten(data).items():
            rows.append(f"| `{rel}` | {_fmt(key)} | {_fmt(value)} |")
    if not rows:
        return ""
    more = len(rows) - max_rows
    md = ["# actparse metrics", "", "| file | metric | value |", "|---|---|---|", *rows[:max_rows]]
    if more > 0:
        md.append(f"\n{more} more rows not shown")
    if missing:
        md.append("\nnot written (yet): " + ", ".join(f"`{m}`" for m in missing))
    return "\n".join(md) + "\n"


def compare_markdown(cmp, max_rows: int = 200) -> str:
    """The params and metrics of an :class:`actparse.compare.Comparison` as markdown tables (A vs B), with
    its problems (e.g. artifacts of a revision that are not in the DVC cache)."""
    md = [f"# actparse compare: A = `{cmp.rev_a}`, B = `{cmp.rev_b}`", ""]
    tables = (("Params changed", ["file", "key", "A", "B"],
               [[p["file"], p["key"], p["old"], p["new"]] for p in cmp.params]),
              ("Metrics", ["file", "metric", "A", "B", "change"],
               [[m["file"], m["key"], m["old"], m["new"], m["diff"]] for m in cmp.metrics]),
              ("Models", ["model", "stage", "status"],
               [[m.path, m.stage, m.status] for m in cmp.models if m.status != "same"]))
    for title, head, rows in tables:
        md += [f"## {title}", ""]
        if not rows:
            md += ["(none)", ""]
            continue
        md += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        md += ["| " + " | ".join(f"`{c}`" if i == 0 else _fmt(c) for i, c in enumerate(r)) + " |" for r in rows[:max_rows]]
        if len(rows) > max_rows:
            md.append(f"\n{len(rows) - max_rows} more rows not shown")
        md.append("")
    if cmp.errors:
        md += ["## Problems", "", *[f"- {_fmt(e)}" for e in cmp.errors], ""]
    return "\n".join(md)

