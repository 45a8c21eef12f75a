"""Training reproduces bit for bit across x86-64 instruction sets (actparse/determinism.py).

A machine with fewer instruction sets is emulated on this one: every library that picks its code by
the CPU (ATen, oneDNN, MKL, OpenBLAS, numpy, OpenCV, glibc's string and math functions) is made to
choose what it would choose on that machine, from outside, before the process starts. Tiny HRNet,
CSN and YOLO-network trainings run in fresh processes, once as this machine (everything it has beyond the pin still
there) and once as the emulated one, both with the stages' pinning; their weights must be equal bit
for bit. The pin sets some of the same variables as the emulation; what this catches is a library
the pin misses (numpy and OpenCV were, at first) or one whose cap does not hold. Without the
pinning the same pair differs on this machine (checked where the CPU has AVX-512), so the emulation
changes what runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from actparse import determinism
from benchmarks.repro_cost import CPU_VARS, run_worker

ROOT = Path(__file__).resolve().parents[1]


FLAGS = determinism.cpu_flags() or set()
pytestmark = pytest.mark.skipif(not {"avx2", "fma"} <= FLAGS, reason="needs an x86-64 CPU with AVX2 and FMA")


def _numpy_above(level: str) -> str:
    """numpy's dispatch targets beyond ``level`` (names differ between numpy versions)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__

    keep = {"avx2": ("X86_V2", "X86_V3", "SSE", "AVX", "AVX2", "FMA3", "F16C", "POPCNT"),
            "sse41": ("X86_V2", "SSE", "POPCNT")}[level]
    return " ".join(f for f in __cpu_dispatch__ if not f.startswith(keep) or f.startswith("AVX512"))


def older_cpu(level: str) -> dict[str, str]:
    """Environment that makes this machine's libraries run as on a CPU that has only ``level``."""
    env = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                    "OPENBLAS_CORETYPE": "Haswell", "OPENCV_CPU_DISABLE": "AVX512-SKX",
                    "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F,-AVX512CD,-AVX512BW,-AVX512DQ,-AVX512VL"},
           "sse41": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                     "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "OPENBLAS_CORETYPE": "Nehalem",
                     "OPENCV_CPU_DISABLE": "SSE4.2,AVX,FP16,AVX2,AVX512-SKX",
                     "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX,-AVX2,-FMA,-F16C,-AVX512F,-AVX512CD,-AVX512BW,"
                                       "-AVX512DQ,-AVX512VL"}}[level]
    above = _numpy_above(level)
    if above:
        env["NPY_DISABLE_CPU_FEATURES"] = above
    return env


def load(run_dir: Path, name: str = "state.pt") -> dict[str, torch.Tensor]:
    return torch.load(run_dir / name, map_location="cpu", weights_only=True)


def differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def assert_trained(run_dir: Path, state: dict[str, torch.Tensor]) -> None:
    """The weights moved: the comparison is not between two untrained models."""
    init = load(run_dir, "init.pt")
    assert len(differing(init, state)) > len(state) // 2


def train_pair(tmp_path: Path, model: str, isa: str, level: str, steps: int = 3) -> tuple[dict, dict, dict, dict]:
    """The same tiny training on this machine and on the emulated ``level`` CPU, both with ``isa``."""
    here = run_worker(model, "tiny", steps, tmp_path / "here", {"ACTPARSE_CPU_ISA": isa})
    older = run_worker(model, "tiny", steps, tmp_path / "older", {"ACTPARSE_CPU_ISA": isa, **older_cpu(level)})
    return load(tmp_path / "here"), load(tmp_path / "older"), here, older


@pytest.mark.parametrize("model", ["hrnet", "csn", "yolo"])
def test_pinned_training_is_bit_equal_on_an_avx2_only_cpu(tmp_path, model):
    a, b, here, older = train_pair(tmp_path, model, "avx2", "avx2")
    assert here["aten_capability"] == older["aten_capability"] == "AVX2"
    assert here["onednn_max_cpu_isa"] == "AVX2" and here["mkl_cbwr"] == "COMPATIBLE"
    assert here["openblas_coretype"] == "Haswell" and "AVX512" in here["npy_disable_cpu_features"]
    assert here["threads"] == older["threads"] == determinism.DEFAULT_THREADS
    assert len(a) > 50
    assert differing(a, b) == []
    assert_trained(tmp_path / "here", a)


@pytest.mark.skipif(not {"avx512f", "avx512bw"} <= FLAGS, reason="needs a CPU with AVX-512 to differ from AVX2")
def test_unpinned_training_differs_on_an_avx2_only_cpu(tmp_path):
    """The control: with every library free to use AVX-512, the emulated AVX2 CPU trains other weights."""
    a, b, here, older = train_pair(tmp_path, "hrnet", "native", "avx2")
    assert here["aten_capability"] == "AVX512" and older["aten_capability"] == "AVX2"
    assert here["openblas_coretype"] is None and here["npy_disable_cpu_features"] is None  # nothing inherited
    assert differing(a, b), "native AVX-512 and emulated AVX2 training gave equal weights: the emulation does nothing"


def test_sse41_pinning_is_bit_equal_on_an_sse41_cpu(tmp_path):
    a, b, here, older = train_pair(tmp_path, "hrnet", "sse41", "sse41", steps=2)
    assert here["aten_capability"] == older["aten_capability"] == "DEFAULT"
    assert here["openblas_coretype"] == "Nehalem"
    assert differing(a, b) == []
    assert_trained(tmp_path / "here", a)


def _stage_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CPU_VARS}
    env.update(extra, PYTHONPATH=str(ROOT))
    return env


REPORT = ("import json, stages.train_pose; from actparse import determinism; "
          "print(json.dumps(determinism.report()))")


def test_a_stage_process_runs_pinned_whatever_the_environment_said():
    """``python -m stages.<name>`` imports the stages package first: the caps hold before torch loads."""
    env = _stage_env(ATEN_CPU_CAPABILITY="avx512", ONEDNN_MAX_CPU_ISA="ALL", MKL_CBWR="AUTO", OMP_NUM_THREADS="1",
                     OPENBLAS_CORETYPE="SkylakeX")
    out = subprocess.run([sys.executable, "-c", REPORT], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    rep = json.loads(out.stdout.strip().splitlines()[-1])
    expected = {"cpu_isa": "avx2", "aten_capability": "AVX2", "threads": 2, "deterministic_algorithms": False,
                "onednn_max_cpu_isa": "AVX2", "mkl_cbwr": "COMPATIBLE", "openblas_coretype": "Haswell"}
    assert {k: rep[k] for k in expected} == expected
    assert rep["npy_disable_cpu_features"] == determinism.settings("avx2")["NPY_DISABLE_CPU_FEATURES"]
    if {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"} <= FLAGS:
        assert "AVX512-SKX" in rep["opencv_cpu_disable"].split(",")
    native = subprocess.run([sys.executable, "-c", REPORT], cwd=ROOT, env=_stage_env(ACTPARSE_CPU_ISA="native"),
                            capture_output=True, text=True, check=True)
    rep = json.loads(native.stdout.strip().splitlines()[-1])
    assert rep["cpu_isa"] == "native" and rep["onednn_max_cpu_isa"] is None and rep["mkl_cbwr"] is None
    assert rep["openblas_coretype"] is None and rep["npy_disable_cpu_features"] is None


def test_bad_settings_stop_the_stage_with_one_line(tmp_path):
    for var, value in (("ACTPARSE_CPU_ISA", "avx9"), ("ACTPARSE_CPU_THREADS", "many")):
        proc = subprocess.run([sys.executable, "-m", "stages.train_pose", "--help"], cwd=ROOT,
                              env=_stage_env(**{var: value}), capture_output=True, text=True)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
        assert var in proc.stderr and value in proc.stderr


def test_threads_and_levels():
    assert determinism.cores({}) == 2
    assert determinism.cores({"ACTPARSE_CPU_THREADS": "3"}) == 3
    assert determinism.cores({"ACTPARSE_CPU_ISA": "native"}) == (os.cpu_count() or 1)
    env: dict[str, str] = {"ATEN_CPU_CAPABILITY": "avx512", "CUBLAS_WORKSPACE_CONFIG": ":16:8"}
    determinism.pin_environment(env)
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["OMP_NUM_THREADS"] == "2"
    assert env["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"  # the user's CUDA setting is kept
    env = {"ACTPARSE_CPU_ISA": "native", "ATEN_CPU_CAPABILITY": "avx512"}
    determinism.pin_environment(env)
    assert env["ATEN_CPU_CAPABILITY"] == "avx512" and "OMP_NUM_THREADS" not in env
    with pytest.raises(ValueError, match="ACTPARSE_CPU_ISA"):
        determinism.level({"ACTPARSE_CPU_ISA": "avx9"})
    assert determinism.level({"ACTPARSE_CPU_ISA": " SSE41 "}) == "sse41"
    for bad in ("0", "-2", "two"):
        with pytest.raises(ValueError, match="ACTPARSE_CPU_THREADS"):
            determinism.cores({"ACTPARSE_CPU_THREADS": bad})


def test_library_caps_follow_the_level_and_the_cpu():
    import cv2
    import numpy as np

    avx2_only = {"sse4_2", "avx", "f16c", "avx2", "fma"}
    avx512 = avx2_only | {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
    assert "OPENCV_CPU_DISABLE" not in determinism.settings("avx2", avx2_only)  # nothing above AVX2 to switch off
    assert determinism.settings("avx2", avx512)["OPENCV_CPU_DISABLE"].split(",") == ["AVX512-COMMON", "AVX512-SKX"]
    assert determinism.settings("sse41", avx2_only)["OPENCV_CPU_DISABLE"] == "SSE4.2,AVX,FP16,AVX2"
    assert determinism.settings("native", avx512) == {}
    # the numpy names are those this numpy dispatches: each one it builds above AVX2 is switched off
    from numpy._core._multiarray_umath import __cpu_dispatch__

    off = set(determinism.settings("avx2", avx512)["NPY_DISABLE_CPU_FEATURES"].split())
    assert {f for f in __cpu_dispatch__ if f.startswith(("X86_V4", "AVX512"))} <= off
    assert not off & {"X86_V2", "X86_V3", "AVX2", "FMA3"}
    # and this (pinned) test process runs with them: numpy has no AVX-512 loop on, OpenCV none either
    features = np._core._multiarray_umath.__cpu_features__
    assert not any(features.get(f) for f in off)
    if {"avx512f", "avx512bw"} <= FLAGS:
        assert "*AVX512-SKX?" in cv2.getCPUFeaturesLine()
