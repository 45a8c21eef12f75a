"""Merge a params overlay (e.g. params.gpu.yaml) into params.yaml.

    python scripts/use_preset.py params.gpu.yaml [--base params.yaml] [--out params.yaml]

Keys of the overlay replace those of the base, section by section; everything else is kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from actparse.params import ParamError, apply_preset


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overlay")
    ap.add_argument("--base", default="params.yaml")
    ap.add_argument("--out", default=None, help="output file (default: the base)")
    args = ap.parse_args(argv)
    base = yaml.safe_load(Path(args.base).read_text()) or {}
    over = yaml.safe_load(Path(args.overlay).read_text()) or {}
    try:
        merged = apply_preset(base, over, args.overlay)
    except ParamError as exc:
        print(f"use_preset: {exc} ({args.base})", file=sys.stderr)
        return 2
    out = Path(args.out or args.base)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(merged, sort_keys=False))
    tmp.replace(out)
    print(f"wrote {out} ({args.base} + {args.overlay})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
