"""Loading and checking ``params.yaml``.

Every stage reads its own section. A missing key or a value of the wrong type raises
:class:`ParamError` naming the file and the dotted key, before any work starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


class ParamError(ValueError):
    """A bad or missing parameter."""


class InputError(RuntimeError):
    """Bad input found while a stage runs (e.g. a video that breaks mid-training): the stages' command
    line prints its one-line message, which names the file, and exits 2."""


READER_CACHE_ENV = "ACTPARSE_READER_CACHE"  # environment variable: open video readers kept per process
READER_CACHE_SIZE = 8  # its default


def reader_cache_size() -> int:
    """Bound of the process-wide video reader cache (:mod:`actparse.video`): ``$ACTPARSE_READER_CACHE``
    (an integer >= 1) or 8; any other value is a :class:`ParamError` (the stages check it at start)."""
    raw = os.environ.get(READER_CACHE_ENV, "").strip()
    if not raw:
        return READER_CACHE_SIZE
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if size < 1:
        raise ParamError(f"{READER_CACHE_ENV}={raw!r}: the number of open video readers must be an integer >= 1")
    return size


def load_params(path: str | os.PathLike = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamError(f"{path}: params file not found")
    with open(path) as fh:
        try:
            data = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise ParamError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ParamError(f"{path}: top level must be a mapping")
    data.setdefault("_path", str(path))
    return data


_MISSING = object()


def get(params: dict, key: str, typ: type | tuple[type, ...] | None = None, default: Any = _MISSING,
        choices=None, min_value=None, max_value=None) -> Any:
    """Fetch dotted ``key`` from ``params``, checking type / choices / range."""
    where = params.get("_path", "params")
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not _MISSING:
                return default
            raise ParamError(f"{where}: missing parameter {key!r}")
        node = node[part]
    if typ is not None and node is not None:
        types = typ if isinstance(typ, tuple) else (typ,)
        if float in types and isinstance(node, int) and not isinstance(node, bool):
            node = float(node)
        if not isinstance(node, types) or (isinstance(node, bool) and bool not in types):
            names = "/".join(t.__name__ for t in types)
            raise ParamError(f"{where}: parameter {key!r} must be {names}, got {node!r}")
    if choices is not None and node not in choices:
        raise ParamError(f"{where}: parameter {key!r} must be one of {list(choices)}, got {node!r}")
    if min_value is not None and node < min_value:
        raise ParamError(f"{where}: parameter {key!r} must be >= {min_value}, got {node!r}")
    if max_value is not None and node > max_value:
        raise ParamError(f"{where}: parameter {key!r} must be <= {max_value}, got {node!r}")
    return node


def resolve_device(params: dict) -> str:
    """``device: auto`` -> "cuda" when available, else "cpu"."""
    dev = get(params, "device", str, default="auto", choices=("auto", "cpu", "cuda"))
    if dev == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return dev


def apply_preset(base: dict, overlay: dict, name: str = "preset") -> dict:
    """``base`` with a preset (e.g. params.gpu.yaml) laid over it by :func:`merge_params`; a
    section of the preset that the base lacks is a :class:`ParamError` (a typo would otherwise
    add a section no stage reads)."""
    unknown = [k for k in overlay if k not in base]
    if unknown:
        raise ParamError(f"{name}: sections {unknown} are not in the base params")
    return merge_params(base, overlay)


def merge_params(base: dict, overlay: dict) -> dict:
    """``base`` with ``overlay`` laid over it, section by section (used for presets and tests)."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_params(out[key], value)
        else:
            out[key] = value
    return out
