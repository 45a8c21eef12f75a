"""What every training shares: seeding, optimizers, learning-rate schedules, checkpoint files, the
held-out validation split and the per-epoch validation that only watches (:func:`monitoring`).

Used by the CSN trainer (:mod:`actparse.csn`), the seed systems (:mod:`actparse.stad`,
:mod:`actparse.gym`, :mod:`actparse.partattn`) and the pose trainer (``stages/train_pose.py``).

Schedules: four learning-rate curves are in use, and they stay four. Each is written here with the
exact arithmetic its trainer has always used: two curves that agree on paper (a linear warm-up
written ``0.1 * (1 - a) + a`` or ``0.1 + 0.9 * a``; ``pi * t / T`` or ``pi * (t / T)``) differ in
the last bit of some learning rates, and so in the trained weights, which must stay equal bit for
bit to those of earlier runs (docs/reproducibility.md).
"""

from __future__ import annotations

import math
import os
import random
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from .atomic import save_torch


# --------------------------------------------------------------------------------------------
# Seeding
# --------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators and turn on deterministic algorithms."""
    from .determinism import deterministic_algorithms

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    deterministic_algorithms()


@contextmanager
def monitoring(model: nn.Module | None = None):
    """Run a per-epoch validation that only watches the training: the Python, NumPy and torch random
    states (CUDA's too) are put back afterwards and ``model`` (if given) goes back to its train/eval
    mode, so the trained weights are the same with or without the validation (tested)."""
    py, npst, th = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    was_training = model.training if model is not None else None
    try:
        with torch.no_grad():
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npst)
        torch.set_rng_state(th)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        if model is not None:
            model.train(was_training)


def val_split(videos: Sequence[str], labels: Sequence[str], fraction: float, seed: int = 0) -> list[str]:
    """The validation videos (or clips) held out of a training set: per class (``labels[i]`` is the class of ``videos[i]``), a seeded random
    ``round(fraction * n)`` of its ``n`` videos, keeping at least one of each class for training
    (a class with one video stays in training). Deterministic in (videos, labels, fraction, seed)
    and independent of the input order; returned sorted. ``fraction`` 0 -> no validation videos."""
    if len(videos) != len(labels):
        raise ValueError(f"val_split: {len(videos)} videos but {len(labels)} labels")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_split: fraction must be in [0, 1), got {fraction}")
    if fraction == 0 or not len(videos):
        return []
    by_class: dict[str, list[str]] = {}
    for v, c in zip(videos, labels):
        by_class.setdefault(str(c), []).append(str(v))
    out: list[str] = []
    for k, c in enumerate(sorted(by_class)):
        names = sorted(by_class[c])
        n_val = min(int(round(fraction * len(names))), len(names) - 1)
        if n_val <= 0:
            continue
        rng = np.random.default_rng([int(seed) % 2**32, k])
        out.extend(names[i] for i in rng.permutation(len(names))[:n_val])
    return sorted(out)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Optimizers
# --------------------------------------------------------------------------------------------
def make_optimizer(model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 1e-4,
                   nesterov: bool = True) -> torch.optim.SGD:
    """SGD over the trainable parameters; no weight decay on BN / bias parameters (seed 001 recipe)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)


def adamw(params: nn.Module | Iterable[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over ``params`` (a module: its trainable parameters)."""
    if isinstance(params, nn.Module):
        params = [p for p in params.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# --------------------------------------------------------------------------------------------
# Learning-rate schedules
# --------------------------------------------------------------------------------------------
@dataclass
class Schedule:
    """Step decay (``gamma`` at each epoch of ``steps``) after a linear warm-up over ``warmup_iters``
    iterations from ``warmup_factor`` (CSN, seed 001)."""

    base_lr: float
    warmup_iters: int = 0
    warmup_factor: float = 0.1
    steps: tuple[float, ...] = ()   # epochs at which lr is multiplied by gamma
    gamma: float = 0.1

    def lr(self, iteration: int, epoch: float) -> float:
        lr = self.base_lr * self.gamma ** sum(1 for s in self.steps if epoch >= s)
        if self.warmup_iters and iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            lr *= self.warmup_factor * (1 - alpha) + alpha
        return lr


def step_lr(base: float, epoch: float, steps: Iterable[float], gamma: float, warmup_epochs: float) -> float:
    """Step decay after a linear warm-up from 0.1 over ``warmup_epochs`` (fractional) epochs (seed 003)."""
    lr = base * gamma ** sum(1 for e in steps if epoch >= e)
    if warmup_epochs > 0 and epoch < warmup_epochs:
        lr *= 0.1 + 0.9 * epoch / warmup_epochs
    return lr


def warmup_cosine(step: int, total: int, warm: int) -> float:
    """Factor of the base rate: linear warm-up from 0.1 over ``warm`` steps, then cosine decay to 0
    at ``total`` (seed 004)."""
    if warm and step < warm:
        return 0.1 + 0.9 * step / warm
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(total - warm, 1))))


def warmup_cosine_partattn(step: int, total: int, warm: int) -> float:
    """:func:`warmup_cosine` as seed 000's trainer computes it (the angle as ``pi * t / T``)."""
    if step < warm:
        return 0.1 + 0.9 * step / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))


def cosine(epoch: int, epochs: int) -> float:
    """Factor of the base rate: cosine decay per epoch, no warm-up (seed 003's decoupled phase)."""
    return 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def save_checkpoint(obj: Mapping, path: str | os.PathLike) -> Path:
    """Atomically write a checkpoint dict (tensors, lists, dicts, numbers, strings) with ``torch.save``."""
    return save_torch(dict(obj), path)


def read_checkpoint(path: str | os.PathLike, what: str, stage: str,
                    build: Callable[[dict], nn.Module]) -> tuple[nn.Module, dict]:
    """``(build(checkpoint), checkpoint)`` of the file at ``path``, read with ``weights_only``.

    A missing file is a ``FileNotFoundError`` that names the ``stage`` that writes it; a file that is
    not a ``what`` checkpoint (unreadable, keys missing, shapes not matching what ``build`` makes) a
    one-line ``ValueError`` naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} checkpoint not found (has {stage} run?)")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        model = build(ck)
    except Exception as exc:
        raise ValueError(f"{path}: not a {what} checkpoint: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    return model, ck
