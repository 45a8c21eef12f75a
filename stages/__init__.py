# Imported before any stage module (and before torch): pin the CPU math libraries' code paths.
import sys as _sys

from actparse.determinism import pin_environment as _pin_environment

try:
    _pin_environment()
except ValueError as _exc:
    print(f"stages: error: {_exc}", file=_sys.stderr)
    _sys.exit(2)
