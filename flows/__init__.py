"""Prefect orchestration of the actparse DAG (dvc.yaml): ``python -m flows.pipeline``, ``python -m flows.server``."""
