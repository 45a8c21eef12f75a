"""Merge params overlays (e.g. params.gpu.yaml) into params.yaml.

    python scripts/use_preset.py params.gpu.yaml [--base params.yaml] [--out params.yaml]
    python scripts/use_preset.py params.gpu.yaml params.gpu.stad.yaml   # GPU preset + seed 003's recipe

Keys of an overlay replace those of the base, section by section; everything else is kept, with
its comments and order: each changed value is rewritten in place on its own line (a value that is
not a one-line scalar or list falls back to a round-trip YAML writer, ruamel.yaml, which also keeps
comments and order). Several overlays are laid on in the order given (docs/recipes.md lists the
per-seed ones). The merged file is validated like any params file before it is written.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import yaml

from actparse.params import ParamError, apply_preset


def _flow(value) -> str:
    """``value`` as one line of YAML (flow style)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, sort_keys=False).strip()
    return text[:-3].strip() if text.endswith("\n...") or text.endswith("...") else text


def _leaves(over: dict, base: dict, path=()):
    """(path, value) of every overlay entry to write; sub-mappings present in both are walked."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            yield from _leaves(value, base[key], path + (key,))
        else:
            yield path + (key,), value


def _in_place(text: str, over: dict) -> str | None:
    """``text`` with the overlay's values rewritten on their own lines, or None where a value is
    not a one-line scalar / flow list in the base (the caller then uses the round-trip writer)."""
    from ruamel.yaml import YAML

    doc = YAML().load(text)
    plain = yaml.safe_load(text)
    lines = text.splitlines(keepends=True)
    added: dict[int, list[str]] = {}  # line index -> new key lines to write after it
    for path, value in _leaves(over, plain):
        node, old = doc, plain
        for key in path[:-1]:
            node, old = node[key], old[key]
        key = path[-1]
        if key not in node:  # a new key: its own line after the mapping's last key (one-line values only)
            if not isinstance(node, dict) or not node or not hasattr(node, "lc") or node.fa.flow_style():
                return None
            last = list(node)[-1]
            k_line, k_col = node.lc.key(last)
            if node.lc.value(last)[0] != k_line or (isinstance(node[last], dict) and not node[last].fa.flow_style()):
                return None
            added.setdefault(k_line, []).append(" " * k_col + f"{_flow({key: value})[1:-1]}\n")
            continue
        old = old[key]
        if old == value and type(old) is type(value):
            continue
        if isinstance(old, dict) or isinstance(value, dict):
            return None
        k_line = node.lc.key(key)[0]
        v_line, col = node.lc.value(key)
        if v_line != k_line:
            return None
        line = lines[v_line]
        body = line.rstrip("\r\n")
        rest = body[col:]
        # where the value may end: before a comment, or (inside a one-line flow mapping or list such as
        # ``{event: 4, set: 8}``) before the next separator
        cuts = [i for i in range(1, len(rest)) if (rest[i] == "#" and rest[i - 1] in " \t") or rest[i] in ",}]"]
        cuts.append(len(rest))
        for cut in cuts:
            frag = rest[:cut].rstrip()
            try:
                if yaml.safe_load(frag) == old:
                    break
            except yaml.YAMLError:
                continue
        else:
            return None
        new = frag[:len(frag) - len(frag.lstrip())] + _flow(value)  # keep any space before the value
        tail = rest[len(frag):]
        if tail.lstrip()[:1] in (",", "}", "]"):  # the value sits inside a flow collection
            pass
        elif tail.strip():  # a comment follows: keep its column where the new value fits
            gap = len(tail) - len(tail.lstrip())
            pad = max(1, len(frag) + gap - len(new))
            tail = " " * pad + tail.lstrip()
        lines[v_line] = body[:col] + new + tail + line[len(body):]
    for at, new_lines in added.items():
        lines[at] = (lines[at] if lines[at].endswith("\n") else lines[at] + "\n") + "".join(new_lines)
    return "".join(lines)


def _round_trip(text: str, over: dict) -> str:
    """``text`` with the overlay laid over it by ruamel.yaml's round-trip loader / dumper."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedSeq

    y = YAML()
    y.width = 1 << 30
    y.preserve_quotes = True
    y.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = y.load(text)

    def lay(node, over):
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(node.get(key), dict):
                lay(node[key], value)
            else:
                if isinstance(value, list):
                    value = CommentedSeq(value)
                    value.fa.set_flow_style()
                node[key] = value

    lay(doc, over)
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue()


def render(base_text: str, over: dict) -> str:
    """The base file's text with the overlay applied, comments and order kept."""
    out = _in_place(base_text, over)
    if out is None:
        out = _round_trip(base_text, over)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overlay", nargs="+", help="overlay file(s), applied in order")
    ap.add_argument("--base", default="params.yaml")
    ap.add_argument("--out", default=None, help="output file (default: the base)")
    args = ap.parse_args(argv)
    try:
        for f in (args.base, *args.overlay):
            if not Path(f).is_file():
                raise ParamError(f"{f}: file not found")
        text = Path(args.base).read_text()
        try:
            merged = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ParamError(f"not valid YAML: {' '.join(str(exc).split())}") from None
        if not isinstance(merged, dict):
            raise ParamError(f"{args.base}: top level must be a mapping of sections")
        for name in args.overlay:
            try:
                over = yaml.safe_load(Path(name).read_text()) or {}
            except yaml.YAMLError as exc:
                raise ParamError(f"{name}: not valid YAML: {' '.join(str(exc).split())}") from None
            if not isinstance(over, dict):
                raise ParamError(f"{name}: top level must be a mapping of sections")
            merged = apply_preset(merged, over, name)  # validated: unknown keys, types, bounds, NaN
            text = render(text, over)
        if yaml.safe_load(text) != {k: v for k, v in merged.items() if not str(k).startswith("_")}:
            raise ParamError(f"could not write the merged params over {args.base} (please report)")
    except ParamError as exc:
        print(f"use_preset: {exc} ({args.base})", file=sys.stderr)
        return 2
    out = Path(args.out or args.base)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    print(f"wrote {out} ({args.base} + {' + '.join(args.overlay)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
