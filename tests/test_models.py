"""actparse.models: the shared 3D-ResNet base and the keyword-only builders of every network."""

from __future__ import annotations

import pytest
import torch

from actparse.models import video_resnet as V
from actparse.models.csn import CSNConfig, MultiTaskCSN, create_multitask_csn
from actparse.models.gym import JointModel, LevelModel, create_joint_model, create_level_model
from actparse.models.partattn import PartAttnConfig, PartStateNet, create_part_state_net
from actparse.models.slowfast import SlowFastBackbone, SlowFastConfig, create_slowfast
from actparse.models.slowonly import SlowOnlyBackbone, SlowOnlyConfig, create_slowonly
from actparse.models.stad import STADModel, create_stad_model


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _seeded(make):
    torch.manual_seed(7)
    return make()


@pytest.mark.parametrize("name", ["csn", "slowonly", "slowfast", "stad", "level", "partattn"])
def test_builder_gives_the_class_built_network_weight_for_weight(name):
    sf = SlowFastConfig(stem_dim=4)
    pairs = {
        "csn": (lambda: MultiTaskCSN(CSNConfig(variant="ip", stage_depths=(1, 1, 1, 1), stem_dim=8), {"action": 3}),
                lambda: create_multitask_csn(num_classes={"action": 3}, variant="ip", stage_depths=(1, 1, 1, 1),
                                             stem_dim=8)),
        "slowonly": (lambda: SlowOnlyBackbone(SlowOnlyConfig(stem_dim=4)), lambda: create_slowonly(stem_dim=4)),
        "slowfast": (lambda: SlowFastBackbone(sf), lambda: create_slowfast(stem_dim=4)),
        "stad": (lambda: STADModel(sf, 3, head="pcca", dim=16, heads=2),
                 lambda: create_stad_model(backbone=sf, num_classes=3, dim=16, heads=2)),
        "level": (lambda: LevelModel(SlowOnlyConfig(stem_dim=4), 5, 0.5),
                  lambda: create_level_model(backbone=SlowOnlyConfig(stem_dim=4), num_classes=5)),
        "partattn": (lambda: PartStateNet(PartAttnConfig(num_actions=3, dim=16, heads=2)),
                     lambda: create_part_state_net(num_actions=3, dim=16, heads=2)),
    }
    by_class, by_builder = pairs[name]
    _same(_seeded(by_class), _seeded(by_builder))


def test_builders_take_keywords_only():
    with pytest.raises(TypeError):
        create_slowonly(50)  # type: ignore[misc]
    with pytest.raises(TypeError):
        create_multitask_csn({"action": 3})  # type: ignore[misc]


def test_joint_model_builder_freezes_the_pathways():
    paths = [create_level_model(backbone=SlowOnlyConfig(stem_dim=4), num_classes=n) for n in (2, 3)]
    joint = create_joint_model(pathways=paths, num_classes={"event": 2, "set": 3}, hidden=8)
    assert isinstance(joint, JointModel) and joint.fusion.in_features == 2 * paths[0].classifier.in_features
    assert not any(p.requires_grad for p in joint.pathways.parameters())
    out = joint(torch.randn(2, 3, 4, 32, 32))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"event": (2, 2), "set": (2, 3)}


def test_stage_depths_are_checked_against_the_depth_table():
    assert V.check_depths("SlowOnly", 50, None, (50, 101)) is None
    assert V.check_depths("SlowOnly", 101, [3, 4, 23, 3], (50, 101)) == (3, 4, 23, 3)
    with pytest.raises(ValueError, match="SlowOnly depth must be one of \\[50, 101\\], got 152"):
        V.check_depths("SlowOnly", 152, None, (50, 101))
    with pytest.raises(ValueError, match=r"each 1..\[3, 4, 6, 3\] \(depth 50\), got \[1, 5, 1, 1\]"):
        CSNConfig(depth=50, stage_depths=(1, 5, 1, 1))
    with pytest.raises(ValueError, match="got \\[1, 1, 1\\]"):
        SlowFastConfig(stage_depths=(1, 1, 1))


@pytest.mark.parametrize("make, blocks", [
    (lambda sd: SlowOnlyBackbone(SlowOnlyConfig(stem_dim=4, stage_depths=sd)).blocks[1:],
     lambda stage: [len(stage.res_blocks)]),
    (lambda sd: SlowFastBackbone(SlowFastConfig(stem_dim=4, stage_depths=sd)).blocks[1:5],
     lambda stage: [len(p.res_blocks) for p in stage.multipathway_blocks]),
])
def test_slim_variants_keep_the_first_blocks_of_each_stage(make, blocks):
    stages = make((1, 2, 3, 1))
    assert [blocks(s)[0] for s in stages] == [1, 2, 3, 1]
    assert all(len(set(blocks(s))) == 1 for s in stages)  # every pathway cut alike
    cfg = SlowOnlyConfig(stem_dim=4, stage_depths=None)
    assert cfg.blocks_per_stage == V.STAGE_DEPTHS[50] and cfg.to_dict()["temporal_stages"] == [0, 0, 1, 1]
