"""Bit-for-bit reproducible CPU training across x86-64 machines.

torch's CPU numerics depend on the machine in three places, each of which picks its code by the
instruction set it finds at run time, and each sums in another order on another path:

- ATen's vectorised kernels (batch norm, reductions, element-wise ops, the optimisers): AVX-512 or
  AVX2 or the baseline build, chosen once per process (``ATEN_CPU_CAPABILITY`` caps it);
- oneDNN, which runs the convolutions (``ONEDNN_MAX_CPU_ISA`` caps the ISA of its JIT kernels);
- MKL, which runs the matrix products (``MKL_CBWR``, conditional numerical reproducibility; on
  non-Intel CPUs only ``COMPATIBLE`` is honoured, any other branch falls back to ``AUTO``).

The data side does the same: numpy picks its SIMD loops (``exp``, sums, sorting) by the CPU
(``NPY_DISABLE_CPU_FEATURES`` switches targets off), so does OpenCV (the affine warps of the crops;
``OPENCV_CPU_DISABLE``), and numpy's OpenBLAS picks its matrix kernels by CPU model
(``OPENBLAS_CORETYPE``). Without these caps, tiny trainings on an AVX-512 machine and on the same
machine made to look like an older CPU differ (``tests/test_reproducible.py``).

And on the thread count: a parallel reduction splits its work by threads, so the same kernel on 2 and
on 16 threads sums in another order.

:func:`pin_environment` caps all three at one level, and fixes the thread count, before torch is
imported; ``stages/__init__.py`` calls it, so every ``python -m stages.<name>`` (and every process a
stage spawns, which inherits the environment) runs pinned. :func:`cores` is the thread count the
stages use where their params say 0 ("every core"): fixed, not the machine's. The training stages'
seeding also turns on torch's deterministic algorithms (:func:`deterministic_algorithms`).

Environment (read at stage start-up):

``ACTPARSE_CPU_ISA``
    ``avx2`` (default): ATen AVX2 kernels, oneDNN AVX2, MKL ``COMPATIBLE``, OpenBLAS Haswell,
    numpy and OpenCV without their AVX-512 loops. The same bits on every x86-64 CPU with AVX2 and
    FMA (Intel since 2013, AMD since 2015), whatever it has beyond.
    ``sse41``: the baseline ATen kernels, oneDNN SSE4.1, MKL ``COMPATIBLE``, OpenBLAS Nehalem,
    numpy at its baseline (x86-64-v2 for numpy 2.4: SSE4.2 and POPCNT), OpenCV up to SSE4.1: also
    CPUs without AVX2; several times slower.
    ``native``: no caps (each library uses everything the CPU has; fastest, not reproducible
    across CPUs); the thread count is then every core unless ``ACTPARSE_CPU_THREADS`` is set.
``ACTPARSE_CPU_THREADS``
    torch threads of a stage whose params say 0 (default 2 when pinned).
``OMP_WAIT_POLICY``
    not set by the pins: left as the launcher has it. Under OpenMP's default a thread that waits at a
    barrier spins a while first, the fastest on a machine of its own. With two torch threads on two
    cores and one other busy process, though, the spinning threads take the core from the thread they
    wait for: a training step then took 3.4x (HRNet, CSN) to 4.3x (YOLO) its time alone, against 1.3x
    to 1.6x with ``PASSIVE`` (sleep at once), which costs 20-39% per step and about 20% of the person
    detector's inference on an idle machine (``python -m benchmarks.contention``, docs/benchmarks.md).
    So the Prefect flow, which runs stages and shards side by side, gives its stages ``PASSIVE``
    (``flows.dvcstate.FLOW_WAIT_POLICY``), as does ``make test``; ``dvc repro`` runs one stage at a time
    and keeps the default (set ``OMP_WAIT_POLICY=PASSIVE`` yourself on a shared machine). No result
    depends on it.

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

#: library settings per level (environment variables read when each library starts); numpy's and
#: OpenCV's are added by :func:`settings`, which depend on the numpy version and on the CPU
LEVELS: dict[str, dict[str, str]] = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE",
             "OPENBLAS_CORETYPE": "Haswell"},
    "sse41": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE",
              "OPENBLAS_CORETYPE": "Nehalem"},
    "native": {},
}
#: numpy's dispatch targets above each level; numpy 2.4 groups them by x86-64 micro-architecture
#: level, older versions name single features (a name numpy did not build is ignored by it)
NUMPY_ABOVE = {
    "new": {"avx2": "X86_V4 AVX512_ICL AVX512_SPR", "sse41": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"},
    "old": {"avx2": "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR",
            "sse41": "AVX F16C FMA3 AVX2 AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL "
                     "AVX512_ICL AVX512_SPR"},
}
#: OpenCV's optimisation targets above each level, with the /proc/cpuinfo flags each needs (OpenCV
#: complains about switching off one the CPU lacks, so only those it has are listed)
_AVX512 = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
OPENCV_TARGETS = {"SSE4.2": {"sse4_2"}, "AVX": {"avx"}, "FP16": {"f16c"}, "AVX2": {"avx2", "fma"},
                  "AVX512-COMMON": {"avx512f", "avx512cd"}, "AVX512-SKX": _AVX512,
                  "AVX512-CLX": _AVX512 | {"avx512_vnni"}, "AVX512-CNL": _AVX512 | {"avx512ifma", "avx512vbmi"},
                  "AVX512-ICL": _AVX512 | {"avx512_vnni", "avx512_vbmi2", "avx512_bitalg", "avx512_vpopcntdq"}}
OPENCV_ABOVE = {"avx2": [t for t in OPENCV_TARGETS if t.startswith("AVX512")], "sse41": list(OPENCV_TARGETS)}
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

    Must run before torch, numpy or OpenCV is imported (ATen reads its cap once, oneDNN and MKL
    when first used, numpy, OpenBLAS and OpenCV when loaded); if they are already imported it still
    sets the variables, for the processes this one starts.
    ``OMP_NUM_THREADS`` (torch's and MKL's thread count at start-up) becomes :func:`cores`; with
    ``native`` only if ``ACTPARSE_CPU_THREADS`` is set. ``CUBLAS_WORKSPACE_CONFIG`` (deterministic
    cuBLAS) is set unless already set.
    """
    environ = os.environ if environ is None else environ
    lvl = level(environ)
    out = settings(lvl)
    if lvl != "native" or environ.get(THREADS_ENV, "").strip():
        out["OMP_NUM_THREADS"] = str(cores(environ))
    environ.update(out)
    for key, value in CUDA_ENV.items():
        environ.setdefault(key, value)
    if environ is os.environ and any(m in sys.modules for m in ("torch", "numpy", "cv2")):
        log.debug("torch, numpy or OpenCV was imported before the CPU caps were set; this process may not "
                  "honour them")
    return out


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (None where there is none to read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def _numpy_generation() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(p) for p in version("numpy").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return "new"
    return "new" if (major, minor) >= (2, 4) else "old"


def settings(lvl: str, flags: set[str] | None = None) -> dict[str, str]:
    """Every library cap of level ``lvl`` (no thread count), for this CPU's ``flags`` (read if None)."""
    out = dict(LEVELS[lvl])
    if lvl == "native":
        return out
    out["NPY_DISABLE_CPU_FEATURES"] = NUMPY_ABOVE[_numpy_generation()][lvl]
    flags = cpu_flags() if flags is None else flags
    off = [t for t in OPENCV_ABOVE[lvl] if flags is None or OPENCV_TARGETS[t] <= flags]
    if off:
        out["OPENCV_CPU_DISABLE"] = ",".join(off)
    return out


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
    for key in ("ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES",
                "OPENCV_CPU_DISABLE", "OMP_WAIT_POLICY"):
        out[key.lower()] = os.environ.get(key)
    expected = CAPABILITY.get(lvl)
    if expected and out["aten_capability"] != expected:
        log.warning("%s=%s but torch runs %s kernels (the CPU lacks them, or torch was imported before the "
                    "caps were set): results will not match other machines", ISA_ENV, lvl, out["aten_capability"])
    return out
