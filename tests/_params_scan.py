"""Static scan: which params.yaml keys does a stage's code read?

Follows, from ``stages/<name>.py``, every call into actparse code (functions, ``Class.method``),
transitively, and collects the dotted keys passed as string constants to ``get(params, "a.b")``
and to helpers such as ``_int_list(params, "csn.crop")`` (a whole section read by name, as
``data_root`` reads ``data``, is not seen). F-string keys (``f"{S}.conf"``) are
resolved where the prefix is a module constant or a constant argument of the call.
``device`` is left out: it picks where a stage runs, not what it computes, and no stage lists it.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

from actparse.param_models import Params, section_model

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = set(Params.model_fields)
SCALARS = {k for k, f in Params.model_fields.items() if section_model(f.annotation) is None}  # seed, device
IGNORED = {"device"}


def _is_key(s: str) -> bool:
    """A dotted params key (a bare section name is too common a word: table names, folders)."""
    return " " not in s and (s in SCALARS or ("." in s and s.split(".")[0] in SECTIONS))


def _module_path(name: str) -> Path | None:
    for cand in (ROOT / (name.replace(".", "/") + ".py"), ROOT / name.replace(".", "/") / "__init__.py"):
        if cand.exists():
            return cand
    return None


def _abs(module: str | None, level: int, here: Path) -> str | None:
    if level == 0:
        return module
    pkg = here.relative_to(ROOT).with_suffix("").parts[:-1]
    pkg = pkg[: len(pkg) - (level - 1)]
    return ".".join([*pkg, *([module] if module else [])])


class _Module:
    def __init__(self, path: Path):
        self.path = path
        tree = ast.parse(path.read_text())
        self.consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                       and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                       for t in n.targets if isinstance(t, ast.Name)}
        self.imports: dict[str, tuple] = {}
        for n in ast.walk(tree):
            if isinstance(n, ast.Import):
                for a in n.names:
                    if a.name.startswith(("actparse", "stages")):
                        self.imports[a.asname or a.name] = ("module", a.name)
            elif isinstance(n, ast.ImportFrom):
                base = _abs(n.module, n.level, path)
                if not base or not base.startswith(("actparse", "stages")):
                    continue
                for a in n.names:
                    sub = f"{base}.{a.name}"
                    self.imports[a.asname or a.name] = ("module", sub) if _module_path(sub) else ("symbol", base, a.name)
        self.funcs: dict[str, ast.AST] = {}
        for n in tree.body:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.funcs[n.name] = n
            elif isinstance(n, ast.ClassDef):
                for m in n.body:
                    if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        self.funcs[f"{n.name}.{m.name}"] = m
        self.tree = tree

    def target(self, func: ast.AST) -> tuple[str, str] | None:
        """(module name, function name) a call's ``func`` refers to, if it is actparse/stage code."""
        if isinstance(func, ast.Name):
            if func.id in self.funcs:
                return self.name, func.id
            imp = self.imports.get(func.id)
            if imp and imp[0] == "symbol":
                return imp[1], imp[2]
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            owner = func.value.id
            imp = self.imports.get(owner)
            if imp and imp[0] == "module":
                return imp[1], func.attr
            if imp and imp[0] == "symbol":
                return imp[1], f"{imp[2]}.{func.attr}"
            if f"{owner}.{func.attr}" in self.funcs:
                return self.name, f"{owner}.{func.attr}"
        return None

    @property
    def name(self) -> str:
        return ".".join(self.path.relative_to(ROOT).with_suffix("").parts)


@lru_cache(maxsize=None)
def _load(name: str) -> _Module | None:
    p = _module_path(name)
    return _Module(p) if p else None


def _text(node: ast.AST, mod: _Module, bound: dict[str, str]) -> str | None:
    """A string constant, or an f-string whose placeholders are constants / bound arguments."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return bound.get(node.id, mod.consts.get(node.id))
    if isinstance(node, ast.JoinedStr):
        out = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                out.append(str(v.value))
            elif isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Name):
                s = bound.get(v.value.id, mod.consts.get(v.value.id))
                if s is None:
                    return None
                out.append(s)
            else:
                return None
        return "".join(out)
    return None


def _walk(mod: _Module, body: ast.AST, bound: dict[str, str], keys: set, seen: set) -> None:
    bound = dict(bound)
    for n in ast.walk(body):  # local aliases of a bound argument (``s = section``)
        if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name):
            s = _text(n.value, mod, bound) if isinstance(n.value, ast.Name) else None
            if s is not None:
                bound.setdefault(n.targets[0].id, s)
    for n in ast.walk(body):
        if not isinstance(n, ast.Call):
            continue
        args = list(n.args) + [k.value for k in n.keywords]
        for a in args:
            s = _text(a, mod, bound)
            if s and _is_key(s):
                keys.add(s)
        tgt = mod.target(n.func)
        if tgt is None:
            continue
        callee = _load(tgt[0])
        fn = callee.funcs.get(tgt[1]) if callee else None
        if fn is None and callee and tgt[1] in {c.split(".")[0] for c in callee.funcs}:
            fn = callee.funcs.get(f"{tgt[1]}.__init__")
        if fn is None:
            continue
        params = [a.arg for a in fn.args.args]
        if params[:1] in (["self"], ["cls"]):
            params = params[1:]
        call_bound = {}
        for p, a in zip(params, n.args):
            s = _text(a, mod, bound)
            if s is not None:
                call_bound[p] = s
        for k in n.keywords:
            s = _text(k.value, mod, bound) if k.arg else None
            if s is not None:
                call_bound[k.arg] = s
        sig = (tgt, tuple(sorted(call_bound.items())))
        if sig in seen:
            continue
        seen.add(sig)
        _walk(callee, fn, call_bound, keys, seen)


def keys_read(stage_file: Path) -> set[str]:
    """Dotted params keys the stage module (and the actparse code it calls) reads."""
    mod = _Module(Path(stage_file))
    keys: set[str] = set()
    _walk(mod, mod.tree, {}, keys, set())
    return {k for k in keys if k not in IGNORED}
