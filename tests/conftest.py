"""Fixtures shared by several test modules.

The tests run with the stages' CPU pinning (actparse/determinism.py): tests that train in this
process get the same code paths and thread count as ``python -m stages.<name>``, on any x86-64 CPU
with AVX2, and the processes they start inherit the settings. That needs the caps in the environment
before torch, numpy or OpenCV is imported, so this runs first, before any test module is collected.
"""

from __future__ import annotations

import sys

from actparse.determinism import pin_environment

_early = [m for m in ("torch", "numpy", "cv2") if m in sys.modules]
if _early:  # a pytest plugin imported them: their kernel choice may already be made
    raise RuntimeError(f"{', '.join(_early)} imported before tests/conftest.py could pin the CPU code paths")
pin_environment()

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: one thread is faster than two on a shared, loaded machine (no spin-waiting).

    Modules of small-model tests opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
