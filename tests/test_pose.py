"""HRNet keypoint model, top-down crops and the pose stages, on data made here."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from _params import overlaid
from actparse.constants import FLIP_PAIRS, NUM_KEYPOINTS, SKELETON
from actparse.hrnet import (MMPOSE_BACKBONE_KEY, CheckpointError, build_pose_model, decode_heatmaps,
                            encode_heatmaps, flip_back, heatmap_loss, load_checkpoint, save_checkpoint)
from actparse.pose import (AugmentConfig, PoseSamples, affine_matrices, apply_affine, back_project,
                           PoseEstimator, box_to_center_size, crop_people, evaluate_samples, make_batch, pose_metrics,
                           train_step)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return build_pose_model("hrnet_w18_small")


# ---------------------------------------------------------------------------------------- model

def test_model_output_shape_is_quarter_resolution(small_model):
    small_model.eval()
    with torch.no_grad():
        for h, w in [(128, 96), (96, 64)]:
            out = small_model(torch.randn(2, 3, h, w))
            assert out.shape == (2, NUM_KEYPOINTS, h // 4, w // 4)
    assert build_pose_model("hrnet_w18_small", num_keypoints=5)(torch.randn(2, 3, 64, 64)).shape == (2, 5, 16, 16)


def test_backbone_is_raw_stage4_branch_not_incre(small_model):
    keys = small_model.state_dict().keys()
    assert not any(p in k for k in keys for p in ("incre_modules", "downsamp_modules", "final_layer", "classifier"))
    # mmpose multiscale_output=False: the last stage-4 module fuses into branch 0 only.
    last = max(int(m.group(1)) for k in keys if (m := re.match(r"backbone\.stage4\.(\d+)\.", k)))
    fused = {int(m.group(1)) for k in keys if (m := re.match(rf"backbone\.stage4\.{last}\.fuse_layers\.(\d+)\.", k))}
    assert fused == {0}
    # the head is one 1x1 conv from the 16-channel stride-4 branch of hrnet_w18_small
    assert small_model.head.weight.shape == (NUM_KEYPOINTS, 16, 1, 1)


# ------------------------------------------------------------------------------------- heatmaps

def test_heatmap_encode_decode_round_trip():
    rng = np.random.default_rng(1)
    kp = np.stack([rng.uniform(1, 23, (6, NUM_KEYPOINTS)), rng.uniform(1, 31, (6, NUM_KEYPOINTS))], -1)
    hm, w = encode_heatmaps(kp, np.ones((6, NUM_KEYPOINTS)), (32, 24), sigma=2.0)
    assert hm.shape == (6, NUM_KEYPOINTS, 32, 24) and (w == 1).all()
    coords, maxvals = decode_heatmaps(hm)
    err = np.abs(coords - kp)
    assert err.max() <= 0.5, err.max()
    assert err.mean() < 0.2
    assert (maxvals > 0.8).all()


def test_heatmap_encode_zero_weight_for_invisible_or_far_outside():
    kp = np.array([[[5.0, 5.0], [5.0, 5.0], [-20.0, 5.0]]])
    hm, w = encode_heatmaps(kp, np.array([[1.0, 0.0, 1.0]]), (16, 12), sigma=2.0)
    assert w.tolist() == [[1.0, 0.0, 0.0]]
    assert hm[0, 1].max() == 0 and hm[0, 2].max() == 0 and hm[0, 0].max() == pytest.approx(1.0)


def test_flip_back_swaps_pairs_and_mirrors():
    hm = torch.zeros(1, NUM_KEYPOINTS, 8, 6)
    hm[0, 5, 2, 1] = 1.0  # left shoulder at x=1 in the flipped image
    out = flip_back(hm, FLIP_PAIRS, shift=False)
    assert out[0, 6, 2, 6 - 1 - 1] == 1.0 and out[0, 5].sum() == 0


# ----------------------------------------------------------------------------------------- crops

def test_crop_back_projection_is_exact_with_rotation_and_flip():
    rng = np.random.default_rng(2)
    boxes = np.array([[10, 20, 40, 90], [100, 5, 130, 60], [3, 3, 80, 30]], float)
    c, s = box_to_center_size(boxes, 96 / 128)
    assert np.allclose(s[:, 0] / s[:, 1], 0.75)
    assert (s[:, 0] >= (boxes[:, 2] - boxes[:, 0]) * 1.25 - 1e-9).all()
    mats = affine_matrices(c, s, (128, 96), rotation=[0, 25, -40], flip=[False, True, False])
    pts = rng.uniform(0, 150, (3, NUM_KEYPOINTS, 2))
    crop_pts = apply_affine(pts, mats)
    assert np.allclose(back_project(crop_pts, mats), pts, atol=1e-9)
    assert np.allclose(back_project(crop_pts / 4, mats, stride=4), pts, atol=1e-9)
    # the box centre lands at the crop centre, the padded box width spans the crop
    m0 = affine_matrices(c[:1], s[:1], (128, 96))
    assert np.allclose(apply_affine(c[None, :1], m0), [[[48, 64]]])


def test_crop_people_finds_a_drawn_dot_back_in_the_image():
    import cv2

    img = np.zeros((120, 160, 3), np.uint8)
    cv2.circle(img, (70, 40), 2, (255, 255, 255), -1)
    crops, mats = crop_people(img, np.array([[50, 20, 90, 100.0]]), (128, 96))
    assert crops.shape == (1, 128, 96, 3)
    ys, xs = np.nonzero(crops[0, ..., 0] > 128)
    found = back_project(np.array([[[xs.mean(), ys.mean()]]]), mats)[0, 0]
    assert np.abs(found - [70, 40]).max() < 0.6


# ---------------------------------------------------------------------------------- checkpoints

def _to_mmpose(sd: dict, version: int) -> dict:
    """Rename our keys the way mmpose names them (written independently of actparse.hrnet)."""
    head = "keypoint_head.final_layer." if version == 0 else "head.final_layer."
    return {(k if k.startswith("backbone.") else head + k[len("head."):]): v for k, v in sd.items()}


@pytest.mark.parametrize("version", [0, 1])
def test_load_mmpose_checkpoint_both_layouts(tmp_path, small_model, version):
    sd = _to_mmpose(small_model.state_dict(), version)
    assert any(k.startswith("keypoint_head." if version == 0 else "head.final_layer.") for k in sd)
    path = tmp_path / f"mmpose{version}.pth"
    torch.save({"meta": {"epoch": 210, "mmpose_version": f"{version}.x"}, "state_dict": sd}, path)
    model, info = load_checkpoint(path)
    assert info["format"] == "mmpose" and info["arch"] == "hrnet_w18_small" and info["num_keypoints"] == 17
    x = torch.randn(2, 3, 64, 64)
    small_model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), small_model(x))


def test_mmpose_checkpoint_wrong_shape_and_bad_files(tmp_path, small_model):
    sd = _to_mmpose(small_model.state_dict(), 1)
    sd["backbone.stage3.0.branches.1.0.conv2.weight"] = torch.zeros(32, 32, 5, 5)
    bad = tmp_path / "bad_shape.pth"
    torch.save({"state_dict": sd}, bad)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(bad)
    msg = str(exc.value)
    assert "bad_shape.pth" in msg and "backbone.stage3.0.branches.1.0.conv2.weight" in msg
    assert "(32, 32, 5, 5)" in msg and "(32, 32, 3, 3)" in msg and "head.final_layer" in msg  # format named

    sd = _to_mmpose(small_model.state_dict(), 0)
    sd["keypoint_head.deconv_layers.0.weight"] = torch.zeros(3)
    extra = tmp_path / "extra.pth"
    torch.save({"state_dict": sd}, extra)
    with pytest.raises(CheckpointError, match="keypoint_head.deconv_layers.0.weight"):
        load_checkpoint(extra)

    sd = _to_mmpose(small_model.state_dict(), 1)
    del sd["backbone.stage2.0.fuse_layers.0.1.1.running_var"]
    missing = tmp_path / "missing.pth"
    torch.save({"state_dict": sd}, missing)
    with pytest.raises(CheckpointError, match="missing key 'backbone.stage2.0.fuse_layers.0.1.1.running_var'"):
        load_checkpoint(missing, arch="hrnet_w18_small")

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_checkpoint(junk)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")


def test_own_checkpoint_round_trip(tmp_path, small_model):
    path = save_checkpoint(small_model, tmp_path / "m" / "model.pt", (96, 64), extra={"epochs": 1})
    model, info = load_checkpoint(path)
    assert info["format"] == "actparse" and tuple(info["input_size"]) == (96, 64)
    for k, v in small_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    with pytest.raises(CheckpointError, match="hrnet_w32"):
        load_checkpoint(path, arch="hrnet_w32")


@pytest.mark.parametrize("arch", ["hrnet_w18_small", "hrnet_w32"])
def test_every_timm_backbone_key_has_an_mmpose_name(arch):
    import timm

    # timm's own parameter names for the raw-feature HRNet (before our trimming) ...
    timm_keys = timm.create_model(arch, pretrained=False, features_only=True, feature_location="",
                                  out_indices=(1,)).state_dict().keys()
    ours = build_pose_model(arch).state_dict()
    backbone = [k for k in ours if k.startswith("backbone.")]
    assert {k[len("backbone."):] for k in backbone} <= set(timm_keys)
    # ... and every one we keep is a key mmpose's HRNet would have.
    bad = [k for k in backbone if not MMPOSE_BACKBONE_KEY.match(k)]
    assert not bad, bad[:5]
    assert set(ours) - set(backbone) == {"head.weight", "head.bias"}


# ------------------------------------------------------------------------------------- training

def _stick_figure(img, cx, top, h, color):
    """Draw a figure; returns 17 COCO keypoints (x, y, visible)."""
    import cv2

    u = h / 8
    k = np.zeros((NUM_KEYPOINTS, 3))
    k[:, 2] = 1
    k[0] = [cx, top + 0.6 * u, 1]
    k[1], k[2] = [cx + 0.25 * u, top + 0.4 * u, 1], [cx - 0.25 * u, top + 0.4 * u, 1]
    k[3], k[4] = [cx + 0.5 * u, top + 0.6 * u, 1], [cx - 0.5 * u, top + 0.6 * u, 1]
    k[5], k[6] = [cx + u, top + 1.6 * u, 1], [cx - u, top + 1.6 * u, 1]
    k[7], k[8] = [cx + 1.5 * u, top + 2.8 * u, 1], [cx - 1.5 * u, top + 2.8 * u, 1]
    k[9], k[10] = [cx + 1.8 * u, top + 4.0 * u, 1], [cx - 1.4 * u, top + 1.0 * u, 1]
    k[11], k[12] = [cx + 0.6 * u, top + 4.2 * u, 1], [cx - 0.6 * u, top + 4.2 * u, 1]
    k[13], k[14] = [cx + 0.8 * u, top + 6.0 * u, 1], [cx - 0.8 * u, top + 6.0 * u, 1]
    k[15], k[16] = [cx + 0.9 * u, top + 7.8 * u, 1], [cx - 1.2 * u, top + 7.8 * u, 1]
    for a, b in SKELETON:
        cv2.line(img, tuple(int(v) for v in k[a, :2]), tuple(int(v) for v in k[b, :2]), color, 2)
    for i, (x, y, _) in enumerate(k):
        cv2.circle(img, (int(x), int(y)), 2, (40 + 12 * i, 255 - 10 * i, 90), -1)
    return k


def _make_samples(n_images=4, seed=0):
    rng = np.random.default_rng(seed)
    images, idx, boxes, kps = [], [], [], []
    for i in range(n_images):
        img = np.full((120, 160, 3), 60, np.uint8)
        for cx in (40 + rng.uniform(-5, 5), 110 + rng.uniform(-5, 5)):
            k = _stick_figure(img, cx, rng.uniform(5, 20), rng.uniform(70, 95), (200, 180, 40))
            idx.append(i)
            kps.append(k)
            boxes.append([k[:, 0].min() - 4, k[:, 1].min() - 4, k[:, 0].max() + 4, k[:, 1].max() + 4])
        images.append(img)
    return PoseSamples(images, np.array(idx), np.array(boxes), np.array(kps))


def test_make_batch_targets_follow_the_keypoints():
    s = _make_samples(2)
    x, y, w = make_batch(s, np.arange(len(s)), (96, 64), sigma=1.5, aug=None)
    assert x.shape == (4, 3, 96, 64) and y.shape == (4, NUM_KEYPOINTS, 24, 16) and w.shape == (4, NUM_KEYPOINTS)
    coords, _ = decode_heatmaps(y)
    aspect = 64 / 96
    c, sz = box_to_center_size(s.boxes, aspect)
    back = back_project(coords, affine_matrices(c, sz, (96, 64)), stride=4)
    assert np.abs(back - s.keypoints[..., :2]).max() < 0.5 * 4 * sz[:, 0].max() / 64 + 1e-6
    # flipped augmentation swaps left and right: targets still decode to the true keypoints
    rng = np.random.default_rng(0)
    aug = AugmentConfig(scale=0.0, rotation=0.0, shift=0.0, flip=True)
    _, y2, w2 = make_batch(s, np.arange(len(s)), (96, 64), 1.5, aug, rng)
    assert (w2 == 1).all()
    c2, _ = decode_heatmaps(y2)
    flipped = np.abs(c2[..., 0] - coords[..., 0]).max(1) > 1
    assert flipped.any()


def test_one_training_step_decreases_the_loss():
    torch.manual_seed(0)
    model = build_pose_model("hrnet_w18_small")
    s = _make_samples(3)
    x, y, w = make_batch(s, np.arange(len(s)), (96, 64), sigma=1.5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = train_step(model, opt, x, y, w)
    model.train()
    with torch.no_grad():
        after = float(heatmap_loss(model(x), y, w))
    assert after < before


def test_per_epoch_validation_only_watches():
    """A per-epoch validation (that itself draws random numbers, as augmentations would) is called once
    per epoch in eval mode, and the trained weights equal those of the same training without it."""
    from actparse.pose import train

    fit, held = _make_samples(4, seed=0), _make_samples(2, seed=1)
    aug = AugmentConfig(scale=0.2, rotation=10.0, shift=0.05, flip=True)
    calls = []

    def watch():
        calls.append(model.training)
        torch.rand(5), np.random.rand(3)  # noqa: B018 - random draws the training must not see
        est = PoseEstimator(model, (96, 64), "cpu", flip_test=False, batch_size=8)
        return evaluate_samples(est, held)["pck"]

    weights = []
    for validate in (watch, None):
        torch.manual_seed(0)
        model = build_pose_model("hrnet_w18_small")
        train(model, fit, 2, (96, 64), batch_size=4, aug=aug, seed=0, validate=validate)
        weights.append(model.state_dict())
    assert calls == [False, False]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_pose_metrics_perfect_and_shifted():
    gt = np.zeros((2, NUM_KEYPOINTS, 3))
    gt[..., :2] = np.random.default_rng(0).uniform(10, 50, (2, NUM_KEYPOINTS, 2))
    gt[..., 2] = 1
    gt[1, 3, 2] = 0
    boxes = np.array([[0, 0, 50, 100], [0, 0, 50, 100]], float)
    m = pose_metrics(gt, gt, boxes)
    assert m["pck"] == 1.0 and m["mean_error_px"] == 0 and m["oks"] == pytest.approx(1.0)
    shifted = gt.copy()
    shifted[0, :, 0] += 30  # 0.3 of the box's longer side: wrong at 0.2
    m = pose_metrics(shifted, gt, boxes)
    assert m["pck"] == pytest.approx(16 / 33) and m["n_keypoints"] == 33


# --------------------------------------------------------------------------------------- stages

def _write_project(root, scale=1.0):
    """A tiny project: 3 train + 1 test 'videos' of 2 frames each, GT persons and jittered detections."""
    from actparse.constants import NUM_PARTS
    from actparse.paths import Paths
    from actparse.schemas import from_rows, write_table
    from actparse.video import encode_jpeg

    import cv2

    paths = Paths(root)
    rng = np.random.default_rng(5)
    frames, gts, dets, videos = [], [], [], []
    for vi in range(4):
        video = f"vid{vi}"
        videos.append({"video": video, "path": f"videos/{video}.mp4", "split": "train" if vi < 3 else "test",
                       "action": "idle", "n_frames": 10, "fps": 25.0, "width": 160, "height": 120})
        for f in (0, 5):
            s = _make_samples(1, seed=vi * 10 + f)
            img = s.images[0]
            stored = cv2.resize(img, (round(160 * scale), round(120 * scale))) if scale != 1 else img
            frames.append({"video": video, "frame": f, "pts": f / 25, "width": stored.shape[1],
                           "height": stored.shape[0], "scale": scale, "jpeg": encode_jpeg(stored)})
            for p, (box, kp) in enumerate(zip(s.boxes, s.keypoints)):
                gts.append({"video": video, "frame": f, "person": p, "box": box.tolist(),
                            "keypoints": kp.ravel().tolist(), "part_boxes": [0.0] * (4 * NUM_PARTS),
                            "part_visible": [True] * NUM_PARTS, "part_states": ["none"] * NUM_PARTS,
                            "action": "idle"})
                det = box + rng.uniform(-3, 3, 4)
                det[1] += 12  # detections that cut off the head: refinement should grow them back
                dets.append({"video": video, "frame": f, "person": p, "box": det.tolist(), "score": 0.9 - 0.1 * p})
    # a detection on a video without decoded frames -> recorded skip
    dets.append({"video": "ghost", "frame": 0, "person": 0, "box": [1, 1, 20, 40], "score": 0.5})
    write_table(from_rows(videos, "videos"), paths.synth / "videos.parquet", "videos")
    write_table(from_rows(gts, "gt_persons"), paths.synth / "gt_persons.parquet", "gt_persons")
    write_table(from_rows(frames, "frames"), paths.frames, "frames")
    write_table(from_rows(dets, "persons"), paths.persons, "persons")
    return paths


def _params(**over):
    kp = {"arch": "hrnet_w18_small", "input_size": [96, 64], "checkpoint": None, "epochs": 2, "batch_size": 8,
          "lr": 0.002, "sigma": 1.5, "val_fraction": 0.34, "flip_test": True, "infer_batch": 16, "eval_test": True,
          "refine": True, "refine_thr": 0.0, "refine_margin": 0.0}
    kp.update(over)
    return overlaid({"seed": 0, "device": "cpu", "data": {"root": "artifacts/synth"}, "keypoints": kp})


def test_pose_stages_end_to_end(tmp_path):
    import json

    from actparse.schemas import read_df
    from stages import keypoints as kp_stage
    from stages import refine_boxes, train_pose

    paths = _write_project(tmp_path)
    params = _params()
    train_pose.run(params, tmp_path)
    info = json.loads((paths.models / "pose" / "train_info.json").read_text())
    assert info["epochs"] == 2 and len(info["loss"]) == 2 and info["n_train_persons"] == 8
    assert 0 <= info["val"]["pck"] <= 1 and info["test_gt_boxes"]["n_persons"] == 4
    assert len(info["val_pck"]) == 2 and info["val_pck"][-1] == pytest.approx(info["val"]["pck"], abs=1e-6)
    _, ck = load_checkpoint(paths.models / "pose" / "model.pt")
    assert tuple(ck["input_size"]) == (96, 64)

    kp_stage.run(params, tmp_path)
    out = read_df(paths.keypoints, "keypoints")
    persons = read_df(paths.persons, "persons")
    assert len(out) == len(persons) - 1  # all but the ghost video's box
    skips = read_df(paths.skips / "keypoints.parquet", "skips")
    assert skips["video"].tolist() == ["ghost"] and "no decoded frames" in skips["error"][0]
    det = np.stack(out["det_box"].to_numpy())
    assert np.allclose(det, np.stack(out["box"].to_numpy()))
    merged = out.merge(persons, on=["video", "frame", "person"], suffixes=("", "_p"))
    assert np.allclose(det, np.stack(merged["box_p"].to_numpy()), atol=1e-4)
    assert np.allclose(merged["score"], merged["score_p"])
    k = np.stack(out["keypoints"].to_numpy()).reshape(len(out), NUM_KEYPOINTS, 3)
    # every keypoint lies in the padded crop region of its box
    c, s = box_to_center_size(det, 64 / 96)
    assert (np.abs(k[..., :2] - c[:, None]) <= s[:, None] / 2 + 1e-3).all()
    assert ((k[..., 2] >= 0) & (k[..., 2] <= 2)).all()

    refine_boxes.run(params, tmp_path)
    ref = read_df(paths.refined, "keypoints")
    box = np.stack(ref["box"].to_numpy())
    assert (box[:, :2] <= det[:, :2] + 1e-4).all() and (box[:, 2:] >= det[:, 2:] - 1e-4).all()
    assert (box[:, :2] >= -1e-4).all() and (box[:, 2] <= 160 + 1e-4).all() and (box[:, 3] <= 120 + 1e-4).all()
    inside = ((k[..., 0] >= box[:, None, 0] - 1e-3) & (k[..., 0] <= box[:, None, 2] + 1e-3)
              & (k[..., 1] >= box[:, None, 1] - 1e-3) & (k[..., 1] <= box[:, None, 3] + 1e-3))
    assert inside.all()  # refine_thr 0: every keypoint
    refine_boxes.run(_params(refine=False), tmp_path)
    off = read_df(paths.refined, "keypoints")
    assert np.allclose(np.stack(off["box"].to_numpy()), det)

    # epochs 0 + a checkpoint: the given weights are used as they are
    start = tmp_path / "start.pth"
    model, _ = load_checkpoint(paths.models / "pose" / "model.pt")
    torch.save({"state_dict": _to_mmpose(model.state_dict(), 0)}, start)
    train_pose.run(_params(epochs=0, checkpoint=str(start), eval_test=False, val_fraction=0.0), tmp_path)
    again, _ = load_checkpoint(paths.models / "pose" / "model.pt")
    assert all(torch.equal(again.state_dict()[n], v) for n, v in model.state_dict().items())


def test_keypoints_come_back_in_original_pixels_when_frames_are_resized(tmp_path):
    from actparse.schemas import read_df, read_table
    from stages.keypoints import video_keypoints

    paths = _write_project(tmp_path, scale=0.5)

    class CentreEstimator:  # "predicts" every keypoint at the box centre, in the stored image
        model = type("M", (), {"num_keypoints": NUM_KEYPOINTS})()

        def predict(self, images, boxes):
            assert all(img.shape[:2] == (60, 80) for img in images)
            out = []
            for b in boxes:
                c = (b[:, :2] + b[:, 2:]) / 2
                out.append(np.concatenate([np.repeat(c[:, None], NUM_KEYPOINTS, 1),
                                           np.ones((len(b), NUM_KEYPOINTS, 1))], -1))
            return out

    frames = read_table(paths.frames, "frames")
    persons = read_df(paths.persons, "persons")
    v = persons[persons["video"] == "vid1"]
    sub = frames.filter(np.asarray([x == "vid1" for x in frames.column("video").to_pylist()]))
    cols, missing = video_keypoints(CentreEstimator(), sub, v)
    assert missing == 0
    centre = (np.stack(v["box"].to_numpy())[:, :2] + np.stack(v["box"].to_numpy())[:, 2:]) / 2
    kp = np.asarray(cols["keypoints"]).reshape(len(v), NUM_KEYPOINTS, 3)
    assert np.allclose(kp[..., :2], centre[:, None], atol=1e-3)
