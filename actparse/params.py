"""Loading and checking ``params.yaml``.

:func:`load_params` validates the whole file against the schema in :mod:`actparse.param_models`
(one pydantic model per section) before any stage does work: an unknown or misspelt key, a missing
key, a wrong type, a value out of bounds, NaN / inf or an empty section raises :class:`ParamError`,
one line naming the file and the dotted key (and, for an unknown key, the nearest valid one).
Stages read values with :func:`get` (which checks again) or :func:`typed` (the validated model).
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path
from typing import Any

import yaml


class ParamError(ValueError):
    """A bad or missing parameter."""

    @classmethod
    def of(cls, params: dict, message: str) -> "ParamError":
        """``<params file>: message`` (the file a loaded params dict came from, else "params")."""
        return cls(f"{where_of(params)}: {message}")


def where_of(params: dict) -> str:
    """The params file a params dict was loaded from (its ``_path``), for error messages."""
    return str(params.get("_path", "params"))


class InputError(RuntimeError):
    """Bad input found while a stage runs (e.g. a video that breaks mid-training): the stages' command
    line prints its one-line message, which names the file, and exits 2."""


READER_CACHE_ENV = "ACTPARSE_READER_CACHE"  # environment variable: open video readers kept per process
READER_CACHE_SIZE = 8  # its default


DECODE_BUDGET_ENV = "ACTPARSE_DECODE_BUDGET_MB"  # environment variable: decoded train frames held in memory
DECODE_BUDGET_MB = 1024  # its default


def env_int(name: str, default: int, minimum: int, what: str) -> int:
    """The integer in environment variable ``name`` (``default`` when unset or empty); a value that is
    not an integer >= ``minimum`` is a :class:`ParamError` saying ``what`` it sets."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ParamError(f"{name}={raw!r}: {what} must be an integer >= {minimum}")
    return value


def decode_budget_bytes() -> int:
    """``$ACTPARSE_DECODE_BUDGET_MB`` (an integer >= 0; default 1024) in bytes: train videos whose
    decoded frames fit in it are decoded once and held in memory (fast), larger sets are read clip by
    clip on demand (bounded memory); the clips, and so the models, are the same either way. Any other
    value is a :class:`ParamError` (the stages check it at start)."""
    return env_int(DECODE_BUDGET_ENV, DECODE_BUDGET_MB, 0,
                   "the memory budget for decoded frames (MiB; 0 = always read clips on demand)") << 20


def reader_cache_size() -> int:
    """Bound of the process-wide video reader cache (:mod:`actparse.video`): ``$ACTPARSE_READER_CACHE``
    (an integer >= 1) or 8; any other value is a :class:`ParamError` (the stages check it at start)."""
    return env_int(READER_CACHE_ENV, READER_CACHE_SIZE, 1, "the number of open video readers")


FLOW_SECTIONS = ("device", "flow")
"""What the Prefect flow itself reads (and checks); each stage it runs checks the whole file."""


def load_params(path: str | os.PathLike = "params.yaml", sections: tuple[str, ...] | None = None) -> dict:
    """The params file as a dict (plus ``_path``), validated against the schema (:func:`validate_params`).

    ``sections`` (used by the Prefect flow, which also runs other DVC projects' DAGs and reads only its
    own keys) validates just those top-level entries, where present; the stages it runs check the rest."""
    path = Path(path)
    if not path.exists():
        raise ParamError(f"{path}: params file not found")
    with open(path) as fh:
        try:
            data = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise ParamError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        raise ParamError(f"{path}: the params file is empty")
    if not isinstance(data, dict):
        raise ParamError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    data.setdefault("_path", str(path))
    validate_params(data, sections=sections)
    return data


def validate_params(params: dict, where: str | None = None, sections: tuple[str, ...] | None = None) -> dict:
    """Check ``params`` (a whole params file, merged overlays included) against
    :class:`actparse.param_models.Params`; keys starting with ``_`` (``_path``, ``_args``) are the
    loader's own and skipped. Returns ``params``, its validated model stored under ``_model``.
    Raises :class:`ParamError` (one line) on the first problems found."""
    from pydantic import ValidationError

    from .param_models import Params

    where = where or where_of(params)
    data = {k: v for k, v in params.items() if not str(k).startswith("_")}
    if not data:
        raise ParamError(f"{where}: the params file is empty")
    bad = _non_finite(data)
    if bad:
        key, val = bad
        raise ParamError(f"{where}: parameter {key!r} is {val}; give a finite number")
    schema = Params if sections is None else _partial_model(tuple(s for s in sections if s in data
                                                                  and s in Params.model_fields))
    if sections is not None:
        data = {k: v for k, v in data.items() if k in schema.model_fields}
    try:
        model = schema.model_validate(data)
    except ValidationError as exc:
        raise ParamError(f"{where}: {_describe(exc, data)}") from None
    if sections is None:
        params["_model"] = model
    return params


_PARTIAL: dict = {}


def _partial_model(names: tuple[str, ...]):
    """A model of just the top-level entries ``names`` of :class:`Params`."""
    from pydantic import create_model

    from .param_models import Params, Section

    if names not in _PARTIAL:
        fields = {n: (Params.model_fields[n].annotation, ...) for n in names}
        _PARTIAL[names] = create_model("PartialParams", __base__=Section, **fields)
    return _PARTIAL[names]


def typed(params: dict):
    """The validated :class:`actparse.param_models.Params` of ``params`` (e.g. ``typed(p).csn.lr``)."""
    model = params.get("_model")
    if model is None:
        model = validate_params(params)["_model"]
    return model


def _non_finite(node: Any, key: str = "") -> tuple[str, float] | None:
    """(dotted key, value) of the first NaN / inf in ``node``, else None."""
    if isinstance(node, float) and not math.isfinite(node):
        return key, node
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, (list, tuple)):
        items = ((f"[{i}]", v) for i, v in enumerate(node))
    else:
        return None
    for k, v in items:
        sub = f"{key}{k}" if str(k).startswith("[") else (f"{key}.{k}" if key else str(k))
        hit = _non_finite(v, sub)
        if hit:
            return hit
    return None


_EXPECT = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
           "string_type": "a string", "list_type": "a list", "dict_type": "a mapping",
           "model_type": "a mapping", "model_attributes_type": "a mapping", "none_required": "null"}


def _expectation(err: dict) -> str | None:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _EXPECT:
        return _EXPECT[kind]
    if kind == "greater_than_equal":
        return f">= {ctx['ge']}"
    if kind == "less_than_equal":
        return f"<= {ctx['le']}"
    if kind in ("greater_than", "less_than"):
        return f"{'>' if kind == 'greater_than' else '<'} {ctx.get('gt', ctx.get('lt'))}"
    if kind == "literal_error":
        exp = str(ctx["expected"])
        return f"one of {exp}" if " or " in exp else exp
    if kind in ("too_short", "too_long"):
        lo, hi = ctx.get("min_length"), ctx.get("max_length")
        if kind == "too_short" and lo == 1:
            return "a non-empty list"
        return f"a list of {lo if kind == 'too_short' else hi} entries"
    if kind == "finite_number":
        return "a finite number"
    return None


def _dotted(loc: tuple, data: dict) -> str:
    """Dotted key of a pydantic error location (union-branch tags dropped), walking the raw data."""
    from .param_models import Params, section_model

    parts, node, model = [], data, Params
    for item in loc:
        if isinstance(node, dict) and item in node:
            field = model.model_fields.get(item) if model is not None else None
            model = section_model(field.annotation) if field is not None else None
            parts.append(str(item))
            node = node[item]
        elif isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
            node = node[item]
            model = None
        elif model is not None and item in model.model_fields and not isinstance(node, dict):
            break
        elif model is not None and item in model.model_fields:
            parts.append(str(item))  # missing key
            node = None
            model = None
        # anything else: a union branch tag such as 'int' or "literal['auto']"
    return ".".join(parts)


def _annotation(key: str):
    """The schema annotation of dotted ``key`` (None where the schema has no such field)."""
    from .param_models import Params, section_model

    model, ann = Params, None
    for part in key.split("."):
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return None
        ann = field.annotation
        model = section_model(ann)
    return ann


def _is_section(key: str) -> bool:
    from .param_models import section_model

    ann = _annotation(key)
    return ann is not None and section_model(ann) is not None


def _nullable(key: str) -> bool:
    return type(None) in (getattr(_annotation(key), "__args__", None) or ())


def _nearest(key: str) -> str | None:
    from .param_models import Params, section_model

    *parents, name = key.split(".")
    model = Params
    for p in parents:
        field = model.model_fields.get(p) if model is not None else None
        model = section_model(field.annotation) if field is not None else None
    if model is None:
        return None
    hit = difflib.get_close_matches(name, list(model.model_fields), n=1, cutoff=0.6)
    return ".".join([*parents, hit[0]]) if hit else None


def _describe(exc, data: dict) -> str:
    """One line for a pydantic ValidationError on ``data``."""
    unknown, missing, other = [], [], {}
    for err in exc.errors():
        key = _dotted(tuple(err["loc"]), data)
        if err["type"] == "extra_forbidden":
            unknown.append(key)
        elif err["type"] == "missing":
            missing.append(key)
        else:
            other.setdefault(key, []).append(err)
    msgs, suggested = [], set()
    for key in unknown:
        near = _nearest(key)
        if near:
            suggested.add(near)
        kind = "section" if "." not in key and (near is None or _is_section(near)) else "key"
        msgs.append(f"unknown {kind} {key!r}" + (f" (did you mean {near!r}?)" if near else ""))
    for key in [k for k in other if any(o.startswith(k + "[") or o.startswith(k + ".") for o in other if o != k)]:
        del other[key]  # a union's branch error for the whole value; the inner entries say more
    for key, errs in other.items():
        node = _lookup(data, key)
        if node is None and key and _is_section(key) and key in data:
            msgs.append(f"section {key!r} is empty (null); it must hold the section's keys")
            continue
        if any(e["type"] in ("value_error", "assertion_error") for e in errs):
            e = next(e for e in errs if e["type"] in ("value_error", "assertion_error"))
            msg = str(e["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
            if "." not in key or key in msg:  # a section-level check: its message names the keys
                msgs.append(msg)
            elif msg.startswith("must"):
                msgs.append(f"parameter {key!r} {msg}, got {node!r}")
            else:
                msgs.append(f"parameter {key!r} {msg}")
            continue
        wants = []
        for e in errs:
            w = _expectation(e) or str(e["msg"])
            if w not in wants:
                wants.append(w)
        if _nullable(key) and "null" not in wants:
            wants.append("null")
        what = "section" if _is_section(key) else "parameter"
        msgs.append(f"{what} {key!r} must be {' or '.join(wants)}, got {node!r}")
    for key in missing:
        if key not in suggested:
            msgs.append(f"missing {'section' if _is_section(key) else 'parameter'} {key!r}")
    head = "; ".join(msgs[:4])
    return head + (f"; and {len(msgs) - 4} more" if len(msgs) > 4 else "")


def _lookup(data: dict, key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        name, _, rest = part.partition("[")
        if isinstance(node, dict):
            node = node.get(name)
        for idx in rest.replace("]", "[").split("[") if rest else ():
            if idx and isinstance(node, list):
                node = node[int(idx)]
    return node



def get(params: dict, key: str, typ: type | tuple[type, ...] | None = None,
        choices=None, min_value=None, max_value=None) -> Any:
    """Fetch dotted ``key`` from ``params``, checking type / choices / range.

    There is no default: the values live only in the params file (a missing key is a
    :class:`ParamError` naming the file and the key)."""
    where = where_of(params)
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamError(f"{where}: missing parameter {key!r}")
        node = node[part]
    if typ is not None and node is not None:
        types = typ if isinstance(typ, tuple) else (typ,)
        if float in types and isinstance(node, int) and not isinstance(node, bool):
            node = float(node)
        if not isinstance(node, types) or (isinstance(node, bool) and bool not in types):
            names = "/".join(t.__name__ for t in types)
            raise ParamError(f"{where}: parameter {key!r} must be {names}, got {node!r}")
    bad = _non_finite(node, key)
    if bad:
        raise ParamError(f"{where}: parameter {bad[0]!r} is {bad[1]}; give a finite number")
    if choices is not None and node not in choices:
        raise ParamError(f"{where}: parameter {key!r} must be one of {list(choices)}, got {node!r}")
    if min_value is not None and node < min_value:
        raise ParamError(f"{where}: parameter {key!r} must be >= {min_value}, got {node!r}")
    if max_value is not None and node > max_value:
        raise ParamError(f"{where}: parameter {key!r} must be <= {max_value}, got {node!r}")
    return node


def resolve_device(params: dict) -> str:
    """``device: auto`` -> "cuda" when available, else "cpu"."""
    dev = get(params, "device", str, choices=("auto", "cpu", "cuda"))
    if dev == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return dev


def apply_preset(base: dict, overlay: dict, name: str = "preset") -> dict:
    """``base`` with a preset (e.g. params.gpu.yaml) laid over it by :func:`merge_params`, the result
    validated (:func:`validate_params`); a section of the preset that the base lacks is a
    :class:`ParamError` (a typo would otherwise add a section no stage reads)."""
    unknown = [k for k in overlay if k not in base]
    if unknown:
        near = {k: difflib.get_close_matches(str(k), [str(b) for b in base], n=1) for k in unknown}
        hint = "".join(f" (did you mean {near[k][0]!r} for {k!r}?)" for k in unknown if near[k])
        raise ParamError(f"{name}: sections {unknown} are not in the base params{hint}")
    merged = merge_params(base, overlay)
    validate_params(dict(merged), where=f"{base.get('_path', 'params')} + {name}")
    return merged


def merge_params(base: dict, overlay: dict) -> dict:
    """``base`` with ``overlay`` laid over it, section by section (used for presets and tests)."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_params(out[key], value)
        else:
            out[key] = value
    return out


def system_seed(params: dict, section: str) -> int:
    """The training seed of a seed system (``stad`` / ``gym`` / ``partattn``): its own ``<section>.seed``
    when set, else the top-level ``seed``. The ablation grids vary the system's own seed so that a new
    training seed retrains that system alone, not the default pipeline it reads."""
    own = get(params, f"{section}.seed", int)
    return get(params, "seed", int) if own is None else own
