"""The 3D ResNet that CSN, SlowOnly and SlowFast share: stage depths, their checks, input statistics.

All three are built with pytorchvideo's factories (``create_csn``, ``create_resnet``,
``create_slowfast``) from the same bottleneck ResNet: a stem and four residual stages whose block
counts follow the model depth (:data:`STAGE_DEPTHS`). A slim CPU variant keeps only the first
``stage_depths[i]`` blocks of each stage (:func:`truncate_stages`), so block structure, strides and
key names stay those of the published model and its checkpoints still map onto it.

:class:`ResNetConfig` is the part of every backbone configuration that concerns the ResNet itself
(``depth``, ``stage_depths``) and is mixed into each model's dataclass.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Sequence

import torch.nn as nn

# Blocks per residual stage (res2..res5) for each model depth, as pytorchvideo builds them.
STAGE_DEPTHS: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}

# Kinetics input mean / std of pytorchvideo's and PySlowFast's SlowOnly and SlowFast models (RGB, [0, 1]).
MEAN = (0.45, 0.45, 0.45)
STD = (0.225, 0.225, 0.225)


def check_depths(model: str, depth: int, stage_depths: Sequence[int] | None, depths: Sequence[int],
                 say_depth: bool = False) -> tuple[int, ...] | None:
    """``stage_depths`` as a tuple (or None: full depth) once ``depth`` is one of ``depths`` and each
    stage keeps between 1 and all of its blocks; ``ValueError`` naming ``model`` otherwise."""
    if depth not in depths:
        raise ValueError(f"{model} depth must be one of {sorted(depths)}, got {depth}")
    if stage_depths is None:
        return None
    sd = tuple(int(d) for d in stage_depths)
    full = STAGE_DEPTHS[depth]
    if len(sd) != 4 or any(d < 1 or d > f for d, f in zip(sd, full)):
        where = f" (depth {depth})" if say_depth else ""
        raise ValueError(f"stage_depths must be 4 ints, each 1..{list(full)}{where}, got {list(sd)}")
    return sd


def truncate_stages(stages: Sequence[nn.Module], stage_depths: Sequence[int] | None) -> None:
    """Keep the first ``stage_depths[i]`` residual blocks of stage ``i`` (no-op for None).

    A stage is a pytorchvideo ``ResStage`` or, in SlowFast, a multi-pathway block whose pathways
    are ``ResStage`` s (each pathway is cut the same way)."""
    if stage_depths is None:
        return
    for stage, keep in zip(stages, stage_depths):
        for path in getattr(stage, "multipathway_blocks", [stage]):
            path.res_blocks = path.res_blocks[:keep]


class ResNetConfig:
    """Mixin of the backbone dataclasses (fields ``depth`` and ``stage_depths``)."""

    depth: int
    stage_depths: tuple[int, ...] | None

    @property
    def blocks_per_stage(self) -> tuple[int, ...]:
        return self.stage_depths or STAGE_DEPTHS[self.depth]

    def to_dict(self) -> dict:
        """The fields as plain JSON values (tuples as lists), as checkpoints store them."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
