"""Shared command-line scaffolding for ``python -m stages.<name>``.

The scaffolding now lives in :mod:`actparse.stage` (the stage kit); these names stay importable
from here for existing code.
"""

from __future__ import annotations

from .stage import LOG_FORMAT, configure_logging, log, setup_offline_env, stage_main

__all__ = ["LOG_FORMAT", "configure_logging", "log", "setup_offline_env", "stage_main"]
