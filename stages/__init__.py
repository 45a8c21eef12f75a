# Imported before any stage module (and before torch): pin the CPU math libraries' code paths.
from actparse.determinism import pin_environment as _pin_environment

_pin_environment()
