"""Person / part detection: YOLO data export, crop painting and coordinate mapping, tiny train+predict
through the real stages, user checkpoints and bad checkpoint files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from _detection_data import make_project, write_params  # noqa: E402
from _params import overlaid  # noqa: E402

from actparse import yolo  # noqa: E402
from actparse.boxes import iou_matrix  # noqa: E402
from actparse.constants import NUM_KEYPOINTS, PARTS  # noqa: E402
from actparse.detector_data import match_greedy, voc_ap  # noqa: E402
from actparse.paint import KEYPOINT_COLORS, PaintConfig, crop, crop_transform, person_crop  # noqa: E402
from actparse.params import load_params  # noqa: E402
from actparse.paths import Paths  # noqa: E402
from actparse.schemas import read_df  # noqa: E402


# ------------------------------------------------------------------ dataset export

def test_export_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    images, boxes, classes = [], [], []
    for i in range(6):
        h, w = 40 + 8 * i, 64
        images.append(rng.integers(0, 255, (h, w, 3)).astype(np.uint8))
        n = i % 3
        b = np.sort(rng.uniform(0, [w, h, w, h], (n, 4)).reshape(n, 2, 2), axis=1).reshape(n, 4)
        b[:, 2:] += 3  # at least 3 px wide
        boxes.append(np.clip(b, 0, [w, h, w, h]))
        classes.append(rng.integers(0, 3, n))
    boxes[1] = np.array([[-10.0, -5.0, 20.0, 30.0]])  # sticks out of the image: clipped
    val = np.array([0, 1, 0, 0, 1, 0], bool)
    data = yolo.export_dataset(tmp_path / "ds", images, boxes, classes, ["a", "b", "c"], val_mask=val)
    import yaml

    meta = yaml.safe_load(data.read_text())
    assert meta["names"] == {0: "a", 1: "b", 2: "c"} and Path(meta["path"]).is_absolute()
    got = {}
    for split in ("train", "val"):
        for stem, img, b, c in yolo.read_dataset(data, split):
            got[int(stem)] = (split, img, b, c)
    assert sorted(got) == list(range(6))
    for i in range(6):
        split, img, b, c = got[i]
        assert split == ("val" if val[i] else "train")
        np.testing.assert_array_equal(img, images[i])  # PNG: lossless
        h, w = images[i].shape[:2]
        want = np.clip(np.asarray(boxes[i]).reshape(-1, 4), 0, [w, h, w, h])
        np.testing.assert_allclose(b, want, atol=1e-3 * max(w, h))
        np.testing.assert_array_equal(c, classes[i])


def test_export_rejects_bad_input(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="class ids"):
        yolo.export_dataset(tmp_path / "d", [img], [[[0, 0, 4, 4]]], [[5]], ["a"])
    with pytest.raises(ValueError, match="uint8"):
        yolo.export_dataset(tmp_path / "d", [img.astype(float)], [[[0, 0, 4, 4]]], [[0]], ["a"])


def test_split_by_group_keeps_groups_whole():
    groups = [f"v{i // 3}" for i in range(30)]
    mask = yolo.split_by_group(groups, 0.2, seed=3)
    per = {}
    for g, m in zip(groups, mask):
        per.setdefault(g, set()).add(bool(m))
    assert all(len(s) == 1 for s in per.values())
    assert sum(next(iter(s)) for s in per.values()) == 2  # 20% of 10 videos


# ------------------------------------------------------------------ crops and painting

@settings(max_examples=50, deadline=None)
@given(st.floats(-50, 300), st.floats(-50, 300), st.floats(2, 200), st.floats(2, 200), st.integers(16, 128),
       st.floats(0, 0.5))
def test_crop_transform_round_trip(x1, y1, w, h, size, margin):
    box = np.array([x1, y1, x1 + w, y1 + h])
    tf = crop_transform(box, size, margin)
    c = tf.boxes_to_crop(box)[0]
    # the person box lies inside the square crop, centred, with the margin on its longer side
    assert c[0] >= -1e-6 and c[1] >= -1e-6 and c[2] <= size + 1e-6 and c[3] <= size + 1e-6
    np.testing.assert_allclose((c[:2] + c[2:]) / 2, [size / 2, size / 2], atol=1e-6)
    np.testing.assert_allclose(max(c[2] - c[0], c[3] - c[1]), size / (1 + 2 * margin), rtol=1e-9)
    np.testing.assert_allclose(tf.boxes_to_frame(tf.boxes_to_crop(box)), box[None], atol=1e-9)
    pts = np.array([[x1, y1], [x1 + w / 3, y1 + h]])
    np.testing.assert_allclose(tf.points_to_frame(tf.points_to_crop(pts)), pts, atol=1e-9)


def test_crop_pixels_follow_the_transform():
    """A bright rectangle in the frame appears in the crop where the transform says it does."""
    img = np.zeros((100, 150, 3), np.uint8)
    rect = np.array([60.0, 20.0, 84.0, 70.0])  # x1 y1 x2 y2, continuous coordinates
    img[20:70, 60:84] = 255
    for box, size in (([50, 10, 95, 80], 96), ([55, 15, 90, 75], 40), ([-20, -30, 140, 120], 64)):
        tf = crop_transform(np.array(box, float), size, 0.1)
        out = crop(img, tf)
        assert out.shape == (size, size, 3)
        mask = out[..., 0] > 127
        ys, xs = np.nonzero(mask)
        got = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
        want = tf.boxes_to_crop(rect)[0]
        np.testing.assert_allclose(got, want, atol=1.0)


def test_crop_pads_outside_the_frame():
    img = np.full((20, 20, 3), 7, np.uint8)
    out = crop(img, crop_transform(np.array([-20.0, -20.0, 0.0, 0.0]), 16, 0.0))
    assert (out == 114).all()


def test_paint_changes_pixels_only_at_confident_keypoints():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (120, 160, 3)).astype(np.uint8)
    box = np.array([40.0, 10.0, 100.0, 110.0])
    kp = np.zeros((NUM_KEYPOINTS, 3))
    kp[:, 0] = rng.uniform(45, 95, NUM_KEYPOINTS)
    kp[:, 1] = np.linspace(15, 105, NUM_KEYPOINTS)
    kp[:, 2] = 0.9
    kp[[3, 8], 2] = 0.1  # not confident: not drawn
    radius = 2.0
    painted, tf = person_crop(img, box, kp, crop_size=96, margin=0.1, paint=True, kp_thr=0.3, radius=radius)
    plain, tf2 = person_crop(img, box, kp, crop_size=96, margin=0.1, paint=False, kp_thr=0.3, radius=radius)
    assert tf == tf2
    changed = np.any(painted != plain, axis=2)
    pts = tf.points_to_crop(kp[:, :2])
    yy, xx = np.mgrid[:96, :96] + 0.5
    dist = np.sqrt((xx[..., None] - pts[:, 0]) ** 2 + (yy[..., None] - pts[:, 1]) ** 2)  # (96, 96, 17)
    conf = kp[:, 2] > 0.3
    near_conf = (dist[..., conf] <= radius + 1.0).any(-1)
    assert changed.any()
    assert not (changed & ~near_conf).any(), "paint outside the dots of confident keypoints"
    for k in range(NUM_KEYPOINTS):
        cx, cy = np.clip(pts[k].astype(int), 0, 95)
        if conf[k]:
            # the dot's centre pixel carries the keypoint's own colour (unless a later dot covers it)
            later_close = [j for j in range(k + 1, NUM_KEYPOINTS)
                           if conf[j] and np.hypot(*(pts[j] - pts[k])) < 2 * radius + 1]
            if not later_close:
                assert tuple(painted[cy, cx]) == KEYPOINT_COLORS[k]
        else:
            alone = all(np.hypot(*(pts[j] - pts[k])) > radius + 2 for j in range(NUM_KEYPOINTS) if conf[j])
            if alone:
                assert not changed[cy, cx]


def test_keypoint_colours_tell_left_from_right():
    from actparse.constants import FLIP_PAIRS

    assert len(set(KEYPOINT_COLORS)) == NUM_KEYPOINTS
    for a, b in FLIP_PAIRS:
        assert np.abs(np.subtract(KEYPOINT_COLORS[a], KEYPOINT_COLORS[b])).sum() >= 200


def test_part_boxes_map_back_to_the_frame_exactly():
    """GT part boxes -> crop labels (training) and crop detections -> frame (detect_parts) agree."""
    from stages.detect_parts import parts_table
    from stages.train_part_detector import crop_labels

    from _detection_data import person_layout

    box = np.array([30.0, 12.0, 70.0, 100.0])
    _, parts = person_layout(box)
    scale = 0.5
    img = np.zeros((60, 80, 3), np.uint8)  # stored image, original is 160x120
    cfg = PaintConfig.from_params(overlaid({"parts": {"paint": True, "crop_size": 64, "crop_margin": 0.1}}))
    c, tf = cfg(img, box * scale, None)
    cb, k = crop_labels(tf, parts.reshape(-1), np.ones(10, bool), scale, 64)
    assert list(k) == list(range(10))
    dets = [(cb.astype(np.float32), np.linspace(0.9, 0.5, 10).astype(np.float32), k)]
    crops = [{"frame": 5, "person": 2, "box": box, "crop": c, "tf": tf, "scale": scale}]
    t = parts_table("v", crops, dets, {5: (160.0, 120.0)}, list(PARTS)).to_pandas()
    assert list(t["part"]) == list(PARTS) and set(t["person"]) == {2} and set(t["frame"]) == {5}
    np.testing.assert_allclose(np.stack(t["box"]), np.clip(parts, 0, [160, 120, 160, 120]), atol=1e-3)


def test_top1_per_class_and_matching():
    from stages.detect_parts import top1_per_class

    best = top1_per_class(np.arange(16).reshape(4, 4), np.array([0.9, 0.3, 0.95, 0.5]), np.array([1, 1, 2, 1]), 3)
    assert set(best) == {1, 2} and best[1][1] == pytest.approx(0.9) and best[2][1] == pytest.approx(0.95)
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    b = np.array([[21, 21, 30, 30], [50, 50, 60, 60], [0, 0, 9, 10]], float)
    assert sorted(match_greedy(a, b, 0.5)) == [(0, 2), (1, 0)]


def test_voc_ap():
    g = {"a": np.array([[0, 0, 10, 10]]), "b": np.array([[0, 0, 10, 10], [20, 20, 30, 30]])}
    perfect = {"a": (g["a"], [0.9]), "b": (g["b"], [0.8, 0.7])}
    assert voc_ap(perfect, g) == pytest.approx(1.0)
    # one GT missed: recall tops at 2/3; a high-scoring false positive lowers precision
    half = {"a": (np.array([[50, 50, 60, 60], [0, 0, 10, 10]]), [0.95, 0.9]), "b": (g["b"][:1], [0.8])}
    ap = voc_ap(half, g)
    assert 0.2 < ap < 2 / 3


# ------------------------------------------------------------------ tiny training through the stages

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train the person detector stage on a tiny project (64x64 stored frames, scale 0.5, imgsz 32)."""
    from stages import detect_persons, train_person_detector

    root = tmp_path_factory.mktemp("det")
    truth = make_project(root)
    params_path = write_params(root / "params.yaml", person={"val_fraction": 0.25})  # 1 of 4 train videos held out
    params = load_params(params_path)
    results = []
    real_train = yolo.train

    def spy(*args, **kwargs):
        results.append(real_train(*args, **kwargs))
        return results[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(yolo, "train", spy)
        train_person_detector.run(params, root)
    detect_persons.run(params, root)
    TRAIN_RESULTS[:] = results
    return root, truth, params_path


TRAIN_RESULTS: list = []


def test_training_reports_val_ap_per_class(trained):
    (result,) = TRAIN_RESULTS
    assert set(result.class_map50) == {"person"}
    assert result.class_map50["person"] == pytest.approx(result.map50, abs=1e-4)  # one class: AP = mAP
    assert result.class_map50["person"] > 0.5 and result.unlearned() == []
    assert result.unlearned(below=1.01) == ["person"]
    assert "class_map50" not in result.info()  # train_info.json keeps its fields


def test_class_map50_reads_the_validator():
    from types import SimpleNamespace

    box = SimpleNamespace(ap_class_index=np.array([0, 2]), ap50=np.array([0.75, 0.001]))
    v = SimpleNamespace(metrics=SimpleNamespace(box=box))
    assert yolo._class_map50(v, ["head", "hip", "left_foot"]) == {"head": 0.75, "left_foot": 0.001}
    assert yolo._class_map50(v, {0: "a", 2: "b"}) == {"a": 0.75, "b": 0.001}
    assert yolo._class_map50(None, ["a"]) == {} and yolo._class_map50(v, None) == {}


def test_tiny_train_finds_the_obvious_person(trained):
    root, truth, _ = trained
    paths = Paths(root)
    info = json.loads((paths.models / "person_detector" / "train_info.json").read_text())
    assert info["trained"] is True and info["epochs"] == 40 and info["train_images"] == 24
    assert not (paths.models / "person_detector" / "_work").exists()
    p = read_df(paths.persons, "persons")
    hits = 0
    test_keys = [k for k, v in truth.items() if v["split"] == "test"]
    for key in test_keys:
        rows = p[(p.video == key[0]) & (p.frame == key[1])]
        if len(rows):
            assert list(rows.person) == list(range(len(rows)))
            assert np.all(np.diff(rows.score.to_numpy()) <= 0)
            top = rows.iloc[0].box
            assert (top >= 0).all() and (top <= 128).all()  # original pixels (stored frames are 64 px)
            hits += iou_matrix(top, truth[key]["box"])[0, 0] >= 0.5
    assert hits >= len(test_keys) - 1, f"top box matched the person in {hits} of {len(test_keys)} test frames"


def test_training_records_per_epoch_losses_as_a_curve(trained, tmp_path):
    """ultralytics' per-epoch train losses reach train_info.json and the training_curves stage's CSV."""
    from actparse.curves import curve, write_curves

    root, _, _ = trained
    info = json.loads((Paths(root).models / "person_detector" / "train_info.json").read_text())
    hist = info["history"]
    val = hist["val_map50"]  # validated after every epoch on the held-out train videos
    losses = {k: v for k, v in hist.items() if k != "val_map50"}
    assert set(losses) == {"box_loss", "cls_loss", "dfl_loss"}
    assert all(len(v) == info["epochs"] == 40 for v in hist.values())
    assert all(np.isfinite(v).all() and min(v) > 0 for v in losses.values())
    assert all(len(set(v)) > 5 for v in hist.values())  # one value per epoch, not a repeated summary
    assert val[-1] == pytest.approx(info["val_map50"], abs=1e-4) and max(val[:10]) < 0.5 < val[-1]  # it learns
    df = curve("person_detector", info)
    assert list(df.columns) == ["epoch", "box_loss", "cls_loss", "dfl_loss", "val_map50"]
    assert list(df.epoch) == list(range(1, 41)) and list(df.val_map50) == pytest.approx(val)
    done = write_curves(Paths(root).models, tmp_path / "train")
    assert done["person_detector"] == 40 and done["pose"] == 0  # no pose model in this project: header only
    assert (tmp_path / "train" / "pose.csv").read_text().strip() == "epoch,loss,val_pck"


def test_user_weights_are_used_as_is(trained, tmp_path):
    from stages import detect_persons, train_person_detector

    root, truth, params_path = trained
    src = Paths(root).models / "person_detector" / "model.pt"
    root2 = tmp_path / "p2"
    make_project(root2)
    params = load_params(write_params(root2 / "params.yaml", person={"weights": str(src)}))
    train_person_detector.run(params, root2)
    info = json.loads((Paths(root2).models / "person_detector" / "train_info.json").read_text())
    assert info["trained"] is False and info["source_weights"] == str(src) and info["classes"] == ["person"]
    detect_persons.run(params, root2)
    a = read_df(Paths(root).persons, "persons")
    b = read_df(Paths(root2).persons, "persons")
    assert len(a) == len(b) and len(a) > 0  # same weights, same frames -> same detections
    np.testing.assert_allclose(np.stack(a.box), np.stack(b.box), atol=1e-3)
    # finetune: true trains further from the user's weights
    root3 = tmp_path / "p3"
    make_project(root3, n_videos=4, n_test=1)
    params = load_params(write_params(root3 / "params.yaml", person={"weights": str(src), "finetune": True,
                                                                     "epochs": 1}))
    train_person_detector.run(params, root3)
    info = json.loads((Paths(root3).models / "person_detector" / "train_info.json").read_text())
    assert info["trained"] is True and info["source_weights"] == str(src) and info["epochs"] == 1
    assert yolo.model_names(yolo.load_model(Paths(root3).models / "person_detector" / "model.pt")) == ["person"]


def test_missing_or_garbage_checkpoint_names_the_file(tmp_path):
    from stages import train_person_detector

    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        yolo.load_model(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match=str(garbage)):
        yolo.load_model(garbage)
    params = load_params(write_params(tmp_path / "params.yaml", person={"weights": str(garbage)}))
    with pytest.raises(ValueError, match=str(garbage)):
        train_person_detector.run(params, tmp_path)
    # the stage CLI prints one clear line and exits 2
    assert train_person_detector.main(["--params", str(tmp_path / "params.yaml"), "--root", str(tmp_path)]) == 2


def test_detect_persons_needs_a_model(tmp_path):
    from stages import detect_persons

    params = load_params(write_params(tmp_path / "params.yaml"))
    with pytest.raises(FileNotFoundError, match="model.pt"):
        detect_persons.run(params, tmp_path)


def test_per_epoch_validation_watches_without_changing_the_weights(tmp_path):
    """With a val split, every epoch gets its val AP@0.5 (the last one is ultralytics' own final
    validation); the weights are bit for bit those of the same training without the per-epoch runs."""
    import torch

    rng = np.random.default_rng(0)
    images, boxes, classes = [], [], []
    for i in range(16):
        img = np.full((64, 64, 3), 40, np.uint8)
        x, y = rng.integers(4, 30, 2)
        img[y:y + 28, x:x + 20] = 220
        images.append(img)
        boxes.append(np.array([[x, y, x + 20, y + 28]], float))
        classes.append(np.array([0]))
    val = np.arange(16) % 4 == 0
    data = yolo.export_dataset(tmp_path / "ds", images, boxes, classes, ["person"], val_mask=val)
    common = dict(epochs=3, imgsz=32, batch=4, seed=0, mosaic=0.0, threads=1)
    watched = yolo.train(data, tmp_path / "a", **common)
    plain = yolo.train(data, tmp_path / "b", monitor_val=False, **common)
    vals = watched.history["val_map50"]
    assert len(vals) == 3 and all(0.0 <= v <= 1.0 for v in vals)
    assert vals[-1] == pytest.approx(watched.map50, abs=1e-6)  # the last epoch: ultralytics' own validation
    assert "val_map50" not in plain.history
    assert watched.history["box_loss"] == plain.history["box_loss"]
    a = torch.load(watched.weights, map_location="cpu", weights_only=False)["model"].state_dict()
    b = torch.load(plain.weights, map_location="cpu", weights_only=False)["model"].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
