# Sourced by the Makefile and CI: run everything offline, without telemetry.
export PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin:$PATH"
export YOLO_OFFLINE=1 YOLO_VERBOSE=False HF_HUB_OFFLINE=1
export DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1
export PYTHONHASHSEED=0
