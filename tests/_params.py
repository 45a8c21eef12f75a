"""Params files for tests: the committed params.yaml with a test's overlay laid over it.

load_params validates a whole file (every section, every key), so a test that needs a few values
of its own writes them as an overlay on the committed file rather than a partial file.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from actparse.params import merge_params

ROOT = Path(__file__).resolve().parents[1]


def committed() -> dict:
    """The committed params.yaml as a dict."""
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def overlaid(overlay: dict) -> dict:
    """The committed params with ``overlay`` laid over it section by section."""
    return merge_params(committed(), overlay)


def write_params(path: Path, overlay: dict | None = None) -> Path:
    """Write the committed params + ``overlay`` to ``path``; returns ``path``."""
    path = Path(path)
    path.write_text(yaml.safe_dump(overlaid(overlay or {}), sort_keys=False))
    return path
