"""Bit-for-bit reproducible CPU training across x86-64 machines.

torch's CPU numerics depend on the machine in three places, each of which picks its code by the
instruction set it finds at run time, and each sums in another order on another path:

- ATen's vectorised kernels (batch norm, reductions, element-wise ops, the optimisers): AVX-512 or
  AVX2 or the baseline build, chosen once per process (``ATEN_CPU_CAPABILITY`` caps it);
- oneDNN, which runs the convolutions (``ONEDNN_MAX_CPU_ISA`` caps the ISA of its JIT kernels);
- MKL, which runs the matrix products (``MKL_CBWR``, conditional numerical reproducibility; on
  non-Intel CPUs only ``COMPATIBLE`` is honoured, any other branch falls back to ``AUTO``).

And on the thread count: a parallel reduction splits its work by threads, so the same kernel on 2 and
on 16 threads sums in another order.

:func:`pin_environment` caps all three at one level, and fixes the thread count, before torch is
imported; ``stages/__init__.py`` calls it, so every ``python -m stages.<name>`` (and every process a
stage spawns, which inherits the environment) runs pinned. :func:`cores` is the thread count the
stages use where their params say 0 ("every core"): fixed, not the machine's. The training stages'
seeding also turns on torch's deterministic algorithms (:func:`deterministic_algorithms`).

Environment (read at stage start-up):

``ACTPARSE_CPU_ISA``
    ``avx2`` (default): ATen AVX2 kernels, oneDNN AVX2, MKL ``COMPATIBLE``. The same bits on every
    x86-64 CPU with AVX2 and FMA (Intel since 2013, AMD since 2015), whatever it has beyond.
    ``sse41``: the baseline kernels, oneDNN SSE4.1, MKL ``COMPATIBLE``: also older CPUs; slower.
    ``native``: no caps (each library uses everything the CPU has; fastest, not reproducible
    across CPUs); the thread count is then every core unless ``ACTPARSE_CPU_THREADS`` is set.
``ACTPARSE_CPU_THREADS``
    torch threads of a stage whose params say 0 (default 2 when pinned).

The pins (and ``OMP_NUM_THREADS``) overwrite any value already in the environment; with ``native``
they are left as they are.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import MutableMapping

log = logging.getLogger("actparse.determinism")

ISA_ENV = "ACTPARSE_CPU_ISA"
THREADS_ENV = "ACTPARSE_CPU_THREADS"
DEFAULT_LEVEL = "avx2"
DEFAULT_THREADS = 2

#: library settings per level (environment variables read when each library starts)
LEVELS: dict[str, dict[str, str]] = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"},
    "sse41": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"},
    "native": {},
}
#: what torch.backends.cpu.get_cpu_capability() reports when a level's cap is in force
CAPABILITY = {"avx2": "AVX2", "sse41": "DEFAULT"}
#: cuBLAS needs a fixed workspace for deterministic matrix products on CUDA
CUDA_ENV = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def level(environ: MutableMapping[str, str] | None = None) -> str:
    """The pinning level from ``ACTPARSE_CPU_ISA`` (``avx2`` when unset); a bad value is an error."""
    environ = os.environ if environ is None else environ
    value = environ.get(ISA_ENV, "").strip().lower() or DEFAULT_LEVEL
    if value not in LEVELS:
        raise ValueError(f"environment variable {ISA_ENV}={environ.get(ISA_ENV)!r}: choose one of {', '.join(LEVELS)}")
    return value


def cores(environ: MutableMapping[str, str] | None = None) -> int:
    """Torch threads for a stage whose params ask for "every core" (0).

    ``ACTPARSE_CPU_THREADS`` if set; else 2 when pinned, so that machines with other core counts
    sum in the same order; else (``native``) every core.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get(THREADS_ENV, "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"environment variable {THREADS_ENV}={raw!r}: must be a positive integer")
        return n
    return (os.cpu_count() or 1) if level(environ) == "native" else DEFAULT_THREADS


def pin_environment(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the library caps of the current level and the thread count; returns what it set.

    Must run before torch is imported (ATen reads its cap once, oneDNN and MKL when first used);
    if torch is already imported it still sets the variables, for the processes this one starts.
    ``OMP_NUM_THREADS`` (torch's and MKL's thread count at start-up) becomes :func:`cores`; with
    ``native`` only if ``ACTPARSE_CPU_THREADS`` is set. ``CUBLAS_WORKSPACE_CONFIG`` (deterministic
    cuBLAS) is set unless already set.
    """
    environ = os.environ if environ is None else environ
    lvl = level(environ)
    settings = dict(LEVELS[lvl])
    if lvl != "native" or environ.get(THREADS_ENV, "").strip():
        settings["OMP_NUM_THREADS"] = str(cores(environ))
    environ.update(settings)
    for key, value in CUDA_ENV.items():
        environ.setdefault(key, value)
    if "torch" in sys.modules and environ is os.environ:
        log.debug("torch was imported before the CPU caps were set; this process may not honour them")
    return settings


def deterministic_algorithms() -> None:
    """torch's deterministic algorithms (on CUDA, ops without one warn instead of failing)."""
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)


def report() -> dict:
    """What this process runs with (recorded in the models' train_info.json)."""
    import torch

    lvl = level()
    out = {"cpu_isa": lvl, "aten_capability": torch.backends.cpu.get_cpu_capability(),
           "threads": torch.get_num_threads(),
           "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}
    for key in ("ONEDNN_MAX_CPU_ISA", "MKL_CBWR"):
        out[key.lower()] = os.environ.get(key)
    expected = CAPABILITY.get(lvl)
    if expected and out["aten_capability"] != expected:
        log.warning("%s=%s but torch runs %s kernels (the CPU lacks them, or torch was imported before the "
                    "caps were set): results will not match other machines", ISA_ENV, lvl, out["aten_capability"])
    return out
