"""actparse.train: seeding, optimizers, learning-rate schedules, checkpoint files."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn as nn

from actparse import train as T


def test_seed_everything_repeats_every_generator():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    T.seed_everything(3)
    a = draw()
    T.seed_everything(3)
    assert draw() == a
    T.seed_everything(2 ** 32 + 3)  # numpy's seed is taken modulo 2**32, the others whole
    assert draw()[1] == a[1]


def test_sgd_leaves_biases_and_norms_undecayed_and_skips_frozen():
    m = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    m[2].weight.requires_grad_(False)
    opt = T.make_optimizer(m, lr=0.1, weight_decay=1e-3)
    decay, no_decay = opt.param_groups
    assert [p.shape for p in decay["params"]] == [m[0].weight.shape] and decay["weight_decay"] == 1e-3
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0 and opt.defaults["nesterov"]
    assert len(T.adamw(m, 1e-3, 0.0).param_groups[0]["params"]) == 5  # trainable only
    T.set_lr(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5]


def test_schedules():
    s = T.Schedule(base_lr=1.0, warmup_iters=10, warmup_factor=0.1, steps=(5, 8), gamma=0.1)
    assert s.lr(0, 0.0) == pytest.approx(0.1) and s.lr(10, 1.0) == 1.0 and s.lr(99, 6.0) == pytest.approx(0.1)
    assert T.step_lr(1.0, 0.0, (9, 11), 0.1, 1.0) == pytest.approx(0.1)
    assert T.step_lr(1.0, 0.5, (9, 11), 0.1, 1.0) == pytest.approx(0.55)
    assert T.step_lr(1.0, 11.0, (9, 11), 0.1, 1.0) == pytest.approx(0.01)
    for f in (T.warmup_cosine, T.warmup_cosine_partattn):
        assert f(0, 100, 10) == pytest.approx(0.1) and f(10, 100, 10) == 1.0
        assert f(55, 100, 10) == pytest.approx(0.5) and f(99, 100, 10) < 0.01
    assert T.cosine(0, 4) == 1.0 and T.cosine(2, 4) == pytest.approx(0.5)


def test_checkpoint_round_trip_and_errors(tmp_path):
    m = nn.Linear(3, 2)
    path = T.save_checkpoint({"state": m.state_dict(), "n": 2}, tmp_path / "m.pt")

    def build(ck):
        out = nn.Linear(3, ck["n"])
        out.load_state_dict(ck["state"])
        return out

    got, ck = T.read_checkpoint(path, "toy", "train_toy", build)
    assert torch.equal(got.weight, m.weight) and ck["n"] == 2
    with pytest.raises(FileNotFoundError, match=r"nope.pt: toy checkpoint not found \(has train_toy run\?\)"):
        T.read_checkpoint(tmp_path / "nope.pt", "toy", "train_toy", build)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt: not a toy checkpoint: "):
        T.read_checkpoint(tmp_path / "bad.pt", "toy", "train_toy", build)
    T.save_checkpoint({"state": m.state_dict(), "n": 5}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a toy checkpoint: .Error.s. in loading state_dict for Linear"):
        T.read_checkpoint(tmp_path / "other.pt", "toy", "train_toy", build)
