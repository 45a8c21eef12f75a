"""Seed 000 system: part-state network (part RoI features, human context, attention across parts, action
input), its ablation switches, the accuracy measure and the partattn stages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from _params import overlaid
from actparse.constants import NUM_PARTS, PART_INDEX, PART_STATES, PARTS
from actparse.models.partattn import PartAttnConfig, PartStateNet
from actparse.partattn import (PersonSample, fit, make_sample, part_accuracy, part_state_loss, person_crop_box,
                               settings_from_params, state_accuracy, state_targets, train_step)
from actparse.schemas import read_df

SMALL = dict(stem_dim=4, dim=16, heads=2, dropout=0.0, part_crop=16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(seed=0, B=3):
    g = torch.Generator().manual_seed(seed)
    clip = torch.randn(B, 3, 2, 96, 64, generator=g)
    xy = torch.rand(B, NUM_PARTS, 2, generator=g) * torch.tensor([40.0, 70.0])
    boxes = torch.cat([xy, xy + torch.tensor([16.0, 20.0])], dim=2)
    valid = torch.ones(B, NUM_PARTS, dtype=torch.bool)
    valid[0, 4] = False
    action = torch.arange(B) % 10
    tg = torch.zeros(B, NUM_PARTS, dtype=torch.long)
    tg[:, 1] = 2
    tg[0, 4] = -1
    return clip, boxes, valid, action, tg


@pytest.mark.parametrize("roi_mode", ["align", "crop"])
@pytest.mark.parametrize("use_action,use_attention", [(True, True), (False, False)])
def test_shapes_per_part_group(roi_mode, use_action, use_attention):
    torch.manual_seed(0)
    m = PartStateNet(PartAttnConfig(roi_mode=roi_mode, use_action=use_action, use_attention=use_attention, **SMALL))
    clip, boxes, valid, action, _ = _batch()
    out = m(clip, boxes, valid, action)
    from actparse.constants import GROUP_OF_PART

    assert len(out) == NUM_PARTS
    for p, lg in zip(PARTS, out):
        assert lg.shape == (3, len(PART_STATES[GROUP_OF_PART[p]])) and torch.isfinite(lg).all()
    assert hasattr(m, "part_backbone") == (roi_mode == "crop")
    with pytest.raises(ValueError, match="part_boxes"):
        m(clip, boxes[:, :5], valid, action)


def test_loss_ignores_missing_targets():
    logits = [torch.randn(2, 3) for _ in range(NUM_PARTS)]
    tg = torch.full((2, NUM_PARTS), -1, dtype=torch.long)
    tg[0, 0], tg[1, 5] = 2, 1
    want = (torch.nn.functional.cross_entropy(logits[0][:1], tg[:1, 0], reduction="sum")
            + torch.nn.functional.cross_entropy(logits[5][1:], tg[1:, 5], reduction="sum")) / 2
    assert torch.allclose(part_state_loss(logits, tg), want)
    assert float(part_state_loss(logits, torch.full((2, NUM_PARTS), -1))) == 0.0


@pytest.mark.parametrize("roi_mode", ["align", "crop"])
def test_training_steps_decrease_loss_on_fixed_batch(roi_mode):
    torch.manual_seed(1)
    m = PartStateNet(PartAttnConfig(roi_mode=roi_mode, **SMALL))
    clip, boxes, valid, action, tg = _batch(1)
    batch = dict(clip=clip, boxes=boxes, valid=valid, action=action, targets=tg)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    m.train()
    with torch.no_grad():
        before = float(part_state_loss(m(clip, boxes, valid, action), tg))
    for _ in range(4):
        train_step(m, batch, opt)
    with torch.no_grad():
        after = float(part_state_loss(m(clip, boxes, valid, action), tg))
    assert after < before


def test_switches_change_the_computation():
    clip, boxes, valid, action, _ = _batch(2, B=1)
    moved = boxes.clone()
    moved[0, PART_INDEX["right_foot"]] += 12.0  # move one part
    other = torch.tensor([(int(action[0]) + 3) % 10])
    res = {}
    for ua in (True, False):
        for at in (True, False):
            torch.manual_seed(3)
            m = PartStateNet(PartAttnConfig(use_action=ua, use_attention=at, **SMALL)).eval()
            with torch.no_grad():
                base = m(clip, boxes, valid, action)[PART_INDEX["head"]]
                act = m(clip, boxes, valid, other)[PART_INDEX["head"]]
                mov = m(clip, moved, valid, action)[PART_INDEX["head"]]
            res[ua, at] = (not torch.allclose(base, act), not torch.allclose(base, mov))
    # the action input reaches the output only when use_action
    assert res[True, True][0] and res[True, False][0] and not res[False, True][0] and not res[False, False][0]
    # another part's box changes the head's state only through attention across parts
    assert res[True, True][1] and res[False, True][1] and not res[True, False][1] and not res[False, False][1]


def test_masked_parts_do_not_leak_through_attention():
    torch.manual_seed(4)
    m = PartStateNet(PartAttnConfig(**SMALL)).eval()
    clip, boxes, valid, action, _ = _batch(5, B=1)
    valid[0, PART_INDEX["left_hand"]] = False
    moved = boxes.clone()
    moved[0, PART_INDEX["left_hand"]] += 15.0
    with torch.no_grad():
        a = m(clip, boxes, valid, action)[PART_INDEX["head"]]
        b = m(clip, moved, valid, action)[PART_INDEX["head"]]
    assert torch.allclose(a, b, atol=1e-6)


def test_sample_crop_and_flip_swap_left_right():
    video = np.zeros((10, 48, 64, 3), np.uint8)
    video[:, :, 40:] = 200  # bright right side of the image
    pb = np.tile(np.array([20.0, 10.0, 26.0, 16.0]), (NUM_PARTS, 1))
    pb[PART_INDEX["left_hand"]] = [40, 20, 46, 26]
    valid = np.ones(NUM_PARTS, bool)
    tg = np.arange(NUM_PARTS)
    box = person_crop_box(np.array([16.0, 6, 48, 40]), pb, valid, aspect=2 / 3)
    assert abs((box[2] - box[0]) / (box[3] - box[1]) - 2 / 3) < 1e-9
    clip, b, v, t = make_sample(video, 5, box, pb, valid, (48, 32), 2, 1, targets=tg)
    assert clip.shape == (3, 2, 48, 32) and b.shape == (NUM_PARTS, 4) and (t == tg).all()
    ok = False
    for seed in range(20):  # some seed flips
        rng = np.random.default_rng(seed)
        c2, b2, v2, t2 = make_sample(video, 5, box, pb, valid, (48, 32), 2, 1, rng=rng, augment=True, targets=tg)
        if t2[PART_INDEX["left_hand"]] == PART_INDEX["right_hand"]:
            ok = True
            lh = b2[PART_INDEX["right_hand"]]  # the left hand is now listed as the right hand, mirrored
            assert (b[PART_INDEX["left_hand"]][0] + b[PART_INDEX["left_hand"]][2]) / 2 > 16
            assert (lh[0] + lh[2]) / 2 < 16
            assert float(c2[:, :, :, :8].mean()) > float(c2[:, :, :, -8:].mean())  # bright side moved left
            break
    assert ok
    assert state_targets(["nod"] + ["none"] * 9, [True] + [False] * 9).tolist() == [2] + [-1] * 9


def test_state_accuracy_counts_matched_visible_parts():
    import pandas as pd

    vis = [True] * NUM_PARTS
    vis[3] = False
    gt = pd.DataFrame({"video": ["v", "v"], "frame": [0, 0], "person": [0, 1],
                       "box": [np.array([0, 0, 10, 20.]), np.array([30, 0, 40, 20.])],
                       "part_visible": [vis, [True] * NUM_PARTS],
                       "part_states": [["none"] * NUM_PARTS, ["none"] * NUM_PARTS]})
    right = {p: "none" for p in PARTS}
    wrong_head = dict(right, head="nod")
    pred = {("v", 0): [(np.array([0, 1, 10, 20.]), wrong_head)]}  # person 1 missed
    r = state_accuracy(pred, gt)
    assert r["n_parts"] == 19 and r["matched_persons"] == 1 and r["gt_persons"] == 2
    assert r["top1"] == round(100 * 8 / 19, 2)
    pred[("v", 0)].append((np.array([30, 0, 40, 21.]), right))
    assert state_accuracy(pred, gt)["top1"] == round(100 * 18 / 19, 2)
    assert state_accuracy(pred, gt)["per_group"]["head"] == 50.0


def test_per_epoch_validation_only_watches():
    """fit() with held-out persons records their part-state accuracy after every epoch; the weights
    (dropout and augmentation on) equal those of the same training without it."""
    rng = np.random.default_rng(6)
    videos = [rng.integers(0, 255, size=(10, 48, 64, 3), dtype=np.uint8) for _ in range(3)]
    pb = np.tile(np.array([20.0, 10.0, 30.0, 22.0]), (NUM_PARTS, 1)) + rng.uniform(-4, 4, (NUM_PARTS, 4))
    vis = np.ones(NUM_PARTS, bool)
    vis[3] = False

    def person(v, frame, states):
        return PersonSample(v, frame, np.array([12.0, 4, 44, 46]), pb, vis, v % 10, state_targets(states, vis))

    pools = [[person(v, f, ["none"] * NUM_PARTS) for f in (2, 6)] for v in range(2)]
    val = (videos[2:], [person(0, 4, ["none"] * NUM_PARTS), person(0, 8, ["nod"] + ["none"] * 9)])
    s = settings_from_params(overlaid({"partattn": dict(num_frames=2, interval=1, epochs=2, samples_per_video=2,
                                                         batch_size=2, augment=True)}))
    runs = []
    for held in (val, None):
        torch.manual_seed(0)
        m = PartStateNet(PartAttnConfig(**{**SMALL, "dropout": 0.5, "input_size": (48, 32)}))
        runs.append((fit(m, videos[:2], pools, s, seed=0, val=held), m.state_dict()))
    (watched, a), (plain, b) = runs
    assert len(watched["val_acc"]) == 2 and "val_acc" not in plain
    assert all(any(np.isclose(v, k / 18) for k in range(19)) for v in watched["val_acc"])  # 2 persons x 9 visible
    assert watched["loss"] == plain["loss"] and all(torch.equal(a[k], b[k]) for k in a)
    assert part_accuracy(np.array([[1, 2, 0]]), np.array([[1, 0, -1]])) == 0.5
    assert np.isnan(part_accuracy(np.zeros((1, 2)), np.full((1, 2), -1)))


# ------------------------------------------------------------------------------ stages
@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    from actparse.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("partattn")
    cfg = SynthConfig.from_params(overlaid({"synth": dict(
        seed=7, n_train=2, n_test=1, width=64, height=48, min_seconds=1.0, max_seconds=1.2, max_people=2, occluder_prob=0.0)}))
    generate(cfg, root / "artifacts" / "synth", progress=False)
    return root


def test_partattn_stages_end_to_end(tiny_root):
    from stages import partattn_predict, partattn_train

    p = overlaid({"seed": 0, "device": "cpu", "data": {"root": "artifacts/synth"},
         "partattn": {"enabled": True, "persons_source": "gt", "parts_source": "gt", "action_source": "gt", "stride": 5,
                      "input_size": [48, 32], "num_frames": 2, "epochs": 1, "samples_per_video": 2, "batch_size": 4,
                      **SMALL}})
    params = tiny_root / "params.yaml"
    params.write_text(yaml.safe_dump(p))
    for mod in (partattn_train, partattn_predict):
        assert mod.main(["--params", str(params), "--root", str(tiny_root)]) == 0
    m = json.loads((tiny_root / "metrics" / "partattn.json").read_text())
    assert m["enabled"] and m["config"]["roi_mode"] == "align"
    for k in ("model", "prior"):
        assert 0 <= m[k]["top1"] <= 100 and m[k]["matched_persons"] == m[k]["gt_persons"] > 0
    pred = read_df(tiny_root / "artifacts" / "partattn" / "part_states.parquet", "part_states")
    gt = read_df(tiny_root / "artifacts" / "synth" / "gt_persons.parquet", "gt_persons")
    videos = read_df(tiny_root / "artifacts" / "synth" / "videos.parquet", "videos")
    test = gt[gt.video.isin(videos.video[videos.split == "test"]) & (gt.frame % 5 == 0)]
    assert len(pred) == int(np.stack(test.part_visible.to_numpy()).sum())  # one state per visible GT part
    assert pred.score.between(0, 1).all()
    # the per-video counts behind the bootstrap intervals give back the metrics file's accuracies
    from actparse.metrics.bootstrap import count_replicates

    counts = read_df(tiny_root / "artifacts" / "partattn" / "video_counts.parquet", "video_counts")
    vids = sorted(set(test.video))
    assert sorted(set(counts.video)) == vids and set(counts.key) == {"model", "prior"}
    for k in ("model", "prior"):
        sub = counts[counts.key == k]
        assert sub.n.sum() == m[k]["n_parts"] and set(sub.cls) <= set(m[k]["per_group"])
        top1 = count_replicates(counts, k, "top1", np.ones((1, len(vids))), vids)[0]
        assert round(100 * top1, 2) == m[k]["top1"]
    # predicted actions are required when asked for and missing
    p["partattn"]["action_source"] = "predicted"
    params.write_text(yaml.safe_dump(p))
    assert partattn_predict.main(["--params", str(params), "--root", str(tiny_root)]) == 2


def test_a_given_partattn_model_is_used_as_is(tiny_root, tmp_path):
    """partattn.model: a trained folder is checked, copied in and predicts as the run that trained it
    (the same holds for stad.model and gym.model: actparse.stage.use_given_model)."""
    import shutil

    from stages import partattn_predict, partattn_train

    models = tiny_root / "artifacts" / "models" / "partattn"
    overlay = {"seed": 0, "device": "cpu", "data": {"root": "artifacts/synth"},
               "partattn": {"enabled": True, "persons_source": "gt", "parts_source": "gt", "action_source": "gt",
                            "stride": 5, "input_size": [48, 32], "num_frames": 2, "epochs": 1, "samples_per_video": 2,
                            "batch_size": 4, **SMALL}}
    params = tiny_root / "params.yaml"
    params.write_text(yaml.safe_dump(overlaid(overlay)))
    if not (models / "model.pt").exists():
        assert partattn_train.main(["--params", str(params), "--root", str(tiny_root)]) == 0
    assert partattn_predict.main(["--params", str(params), "--root", str(tiny_root)]) == 0
    before = read_df(tiny_root / "artifacts" / "partattn" / "part_states.parquet", "part_states")
    given = tmp_path / "partattn_model"
    shutil.copytree(models, given)
    overlay["partattn"]["model"] = str(given)
    params.write_text(yaml.safe_dump(overlaid(overlay)))
    assert partattn_train.main(["--params", str(params), "--root", str(tiny_root)]) == 0
    assert (models / "model.pt").read_bytes() == (given / "model.pt").read_bytes()
    info = json.loads((models / "train_info.json").read_text())
    assert info["trained"] is False and info["source"] == str(given) and info["actions"]
    assert partattn_predict.main(["--params", str(params), "--root", str(tiny_root)]) == 0
    after = read_df(tiny_root / "artifacts" / "partattn" / "part_states.parquet", "part_states")
    assert after.equals(before)
    # refused: a folder inside the one the stage writes, a folder without model.pt, a file that is no checkpoint
    for bad, why in ((models, "lies inside"), (tmp_path / "empty", "no model.pt"), (tmp_path / "junk", "junk")):
        bad.mkdir(exist_ok=True)
        if why == "junk":
            (bad / "model.pt").write_bytes(b"not a checkpoint")
        overlay["partattn"]["model"] = str(bad)
        params.write_text(yaml.safe_dump(overlaid(overlay)))
        assert partattn_train.main(["--params", str(params), "--root", str(tiny_root)]) == 2
        assert (models / "model.pt").read_bytes() == (given / "model.pt").read_bytes()  # the model stays


@pytest.fixture(scope="module")
def val_root(tmp_path_factory):
    """Three train videos, two of one action (the long tail), so partattn.val_fraction 0.5 holds one out."""
    from actparse.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("partattn_val")
    cfg = SynthConfig.from_params(overlaid({"synth": dict(
        seed=7, n_train=3, n_test=1, long_tail=1000.0, width=64, height=48, min_seconds=1.0, max_seconds=1.2,
        max_people=2, occluder_prob=0.0)}))
    generate(cfg, root / "artifacts" / "synth", progress=False)
    return root


def test_partattn_train_holds_out_videos_and_watches_them(val_root, caplog):
    import logging

    from actparse.curves import curve
    from stages import partattn_train

    overlay = {"seed": 0, "device": "cpu", "data": {"root": "artifacts/synth"},
               "partattn": {"enabled": True, "stride": 5, "input_size": [48, 32], "num_frames": 2, "epochs": 2,
                            "samples_per_video": 2, "batch_size": 4, "val_fraction": 0.5, **SMALL}}
    params = val_root / "params.yaml"
    params.write_text(yaml.safe_dump(overlaid(overlay)))
    with caplog.at_level(logging.INFO, logger="actparse"):
        assert partattn_train.main(["--params", str(params), "--root", str(val_root)]) == 0
    info = json.loads((val_root / "artifacts" / "models" / "partattn" / "train_info.json").read_text())
    gt = read_df(val_root / "artifacts" / "synth" / "gt_persons.parquet", "gt_persons")
    videos = read_df(val_root / "artifacts" / "synth" / "videos.parquet", "videos")
    # one of the two train videos of the long tail's first action is held out (an action keeps one)
    (held,) = info["val_videos"]
    action = dict(zip(videos.video, videos.action))
    train_actions = [action[v] for v in videos.video[videos.split == "train"]]
    assert info["train_videos"] == 2 and train_actions.count(action[held]) == 2
    assert info["val_persons"] == int((gt[gt.video == held].frame % 5 == 0).sum())  # its GT persons, every 5th frame
    assert len(info["val_acc"]) == len(info["loss"]) == 2 and all(0.0 <= v <= 1.0 for v in info["val_acc"])
    assert curve("partattn", info).val_acc.tolist() == info["val_acc"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert any("2/2 epochs" in ln and "val_acc=" in ln for ln in lines)
