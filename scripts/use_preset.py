"""Merge a params overlay (e.g. params.gpu.yaml) into params.yaml.

    python scripts/use_preset.py params.gpu.yaml [--base params.yaml] [--out params.yaml]

Keys of the overlay replace those of the base, section by section; everything else is kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from actparse.params import merge_params


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overlay")
    ap.add_argument("--base", default="params.yaml")
    ap.add_argument("--out", default=None, help="output file (default: the base)")
    args = ap.parse_args(argv)
    base = yaml.safe_load(Path(args.base).read_text()) or {}
    over = yaml.safe_load(Path(args.overlay).read_text()) or {}
    unknown = [k for k in over if k not in base]
    if unknown:
        print(f"use_preset: {args.overlay}: sections {unknown} are not in {args.base}", file=sys.stderr)
        return 2
    out = Path(args.out or args.base)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(merge_params(base, over), sort_keys=False))
    tmp.replace(out)
    print(f"wrote {out} ({args.base} + {args.overlay})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
