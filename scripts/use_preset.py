"""Merge params overlays (e.g. params.gpu.yaml) into params.yaml.

    python scripts/use_preset.py params.gpu.yaml [--base params.yaml] [--out params.yaml]
    python scripts/use_preset.py params.gpu.yaml params.gpu.stad.yaml   # GPU preset + seed 003's recipe

Keys of an overlay replace those of the base, section by section; everything else is kept. Several
overlays are laid on in the order given (docs/recipes.md lists the per-seed ones).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from actparse.params import ParamError, apply_preset


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overlay", nargs="+", help="overlay file(s), applied in order")
    ap.add_argument("--base", default="params.yaml")
    ap.add_argument("--out", default=None, help="output file (default: the base)")
    args = ap.parse_args(argv)
    base = yaml.safe_load(Path(args.base).read_text()) or {}
    merged = base
    for name in args.overlay:
        try:
            over = yaml.safe_load(Path(name).read_text()) or {}
            if not isinstance(over, dict):
                raise ParamError(f"{name}: top level must be a mapping")
            merged = apply_preset(merged, over, name)
        except (OSError, yaml.YAMLError) as exc:
            print(f"use_preset: {name}: cannot read the overlay: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 2
        except ParamError as exc:
            print(f"use_preset: {exc} ({args.base})", file=sys.stderr)
            return 2
    out = Path(args.out or args.base)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(merged, sort_keys=False))
    tmp.replace(out)
    print(f"wrote {out} ({args.base} + {' + '.join(args.overlay)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
