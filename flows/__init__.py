"""Prefect orchestration of the actparse DAG (dvc.yaml): ``python -m flows.pipeline``, ``python -m flows.server``."""

# Imported before any flow module (and before torch, numpy, OpenCV): the flow's own processes and the
# dask workers that run mapped stages in-process get the stages' CPU pinning (actparse/determinism.py).
import sys as _sys

from actparse.determinism import pin_environment as _pin_environment

try:
    _pin_environment()
except ValueError as _exc:
    print(f"flows: error: {_exc}", file=_sys.stderr)
    _sys.exit(2)
