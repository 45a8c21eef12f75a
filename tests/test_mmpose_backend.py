"""keypoints.backend 'mmpose': mmpose's own init_model + inference_topdown against actparse's HRNet.

Runs with the optional mmpose extra installed (`bash scripts/setup.sh mmpose`); skipped without it unless
ACTPARSE_EXTRAS names it (CI: .ci/run sets ACTPARSE_EXTRAS=mmpose, so there it always runs).
The cross-check: an mmpose top-down HRNet config (written here, the architecture of timm's
hrnet_w18_small; and mmpose's published COCO HRNet-w32 config, used as is) and a checkpoint made from
actparse's own HRNet state dict in mmpose's key layout give the same heatmaps through mmpose as through
actparse's HRNet: equal up to float rounding (max |difference| <= 1e-4 x the heatmaps' peak; not
bit-equal: the convolutions sum in a different order), and the same decoded keypoints wherever both
decoders are defined alike (a positive, unique peak at least 2 heatmap pixels from the border). mmpose
builds the crop's affine matrix in float32, so for an arbitrary box a few crop pixels can round to the
neighbouring uint8 value: the stage test on jittered detections allows for that (5e-3 x the peak).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np
import pytest
import torch

from actparse import mmpose_backend as mb  # imports nothing of mmpose until it is used
from actparse.constants import NUM_KEYPOINTS
from actparse.hrnet import CheckpointError, build_pose_model, ours_to_mmpose
from actparse.params import ParamError
from actparse.pose import PoseEstimator, crop_people

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::UserWarning")]
# Skipped only where the extra is neither installed nor asked for: CI sets ACTPARSE_EXTRAS=mmpose (which
# scripts/setup.sh installs), and there a missing mmpose fails these tests instead.
needs_mmpose = pytest.mark.skipif(importlib.util.find_spec("mmpose") is None
                                  and "mmpose" not in os.environ.get("ACTPARSE_EXTRAS", "").replace(",", " ").split(),
                                  reason="the optional mmpose extra is not installed (bash scripts/setup.sh mmpose); "
                                         "CI installs it")

PUBLISHED_W32 = "mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py"


def _stage(d: dict) -> dict:
    return dict(num_modules=d["num_modules"], num_branches=d["num_branches"], block=d["block_type"],
                num_blocks=tuple(d["num_blocks"]), num_channels=tuple(d["num_channels"]))


def write_config(path, arch="hrnet_w18_small", input_hw=(96, 64), flip_test=False, model_type="TopdownPoseEstimator"):
    """An mmpose 1.x top-down HRNet config with the stage layout of timm's ``arch``."""
    from timm.models.hrnet import cfg_cls

    c = cfg_cls[arch]
    h, w = input_hw
    extra = {f"stage{i}": _stage(c[f"stage{i}"]) for i in range(1, 5)}
    path.write_text(f"""
codec = dict(type='MSRAHeatmap', input_size=({w}, {h}), heatmap_size=({w // 4}, {h // 4}), sigma=2)
model = dict(
    type='{model_type}',
    data_preprocessor=dict(type='PoseDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(type='HRNet', in_channels=3, extra={extra!r}),
    head=dict(type='HeatmapHead', in_channels={c['stage4']['num_channels'][0]}, out_channels=17,
              deconv_out_channels=None, loss=dict(type='KeypointMSELoss', use_target_weight=True), decoder=codec),
    test_cfg=dict(flip_test={flip_test}, flip_mode='heatmap', shift_heatmap=True))
test_pipeline = [dict(type='LoadImage'), dict(type='GetBBoxCenterScale'),
                 dict(type='TopdownAffine', input_size=codec['input_size']), dict(type='PackPoseInputs')]
train_dataloader = dict(dataset=dict(type='CocoDataset', pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(type='CocoDataset', pipeline=test_pipeline))
""")
    return path


def ours_model(arch="hrnet_w18_small", seed=0):
    """actparse's HRNet with random weights, BatchNorm statistics and a head scaled up so the heatmaps
    have clear peaks (a random model's heatmaps are otherwise almost flat)."""
    torch.manual_seed(seed)
    model = build_pose_model(arch).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.head.weight, std=0.05)
        model.head.bias.fill_(0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def save_mmpose_checkpoint(model, path, version=0):
    """The state dict in mmpose's key layout (0.x: keypoint_head.*, as the published COCO files), with a
    ``meta`` holding numpy data, as mmpose writes it."""
    sd = {ours_to_mmpose(k, version): v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "meta": {"epoch": 210, "hist": np.arange(3.0)}}, path)
    return path


def comparable(hm: np.ndarray, margin: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) masks (defined, alike): a positive peak clearly above the second-highest pixel (mmpose
    puts a non-positive peak at -1); of those, the ones >= 2 px from the border, where mmpose's
    quarter-pixel shift (x only for 1 < x < W-1, y for 1 < y < H-1) and actparse's (0 < x < W-1 and
    0 < y < H-1 together) agree."""
    n, k, h, w = hm.shape
    flat = hm.reshape(n, k, -1)
    top2 = np.sort(flat, -1)[..., -2:]
    idx = flat.argmax(-1)
    x, y = idx % w, idx // w
    defined = (top2[..., 1] > 0) & (top2[..., 1] - top2[..., 0] > margin * np.abs(hm).max())
    return defined, defined & (x >= 2) & (x <= w - 3) & (y >= 2) & (y <= h - 3)


def assert_same_keypoints(theirs, ours, hm, quarter_px, margin=1e-3):
    """Keypoints (N, K, 3) in image pixels: equal where both decoders agree; within the quarter-pixel
    shift (``quarter_px`` (N,) image pixels per quarter heatmap pixel) at the border."""
    defined, alike = comparable(hm, margin)
    assert alike.sum() >= 0.3 * alike.size and defined.sum() >= 0.6 * defined.size
    assert np.abs(theirs[alike, :2] - ours[alike, :2]).max() <= 1e-3
    border = np.abs(theirs[..., :2] - ours[..., :2]).max(-1)
    assert (border[defined] <= np.broadcast_to(quarter_px[:, None], defined.shape)[defined] * 1.415 + 1e-3).all()


def _image(seed=0):
    from test_pose import _make_samples

    return _make_samples(1, seed=seed).images[0]


# ------------------------------------------------------------------------------------ stand-in

@needs_mmpose
def test_standin_registered_without_compiled_mmcv_ops_and_raises_when_called():
    from mmcv.utils import ext_loader
    from mmengine.utils.dl_utils import mmcv_full_available

    mb.import_mmpose()
    ext = sys.modules["mmcv._ext"]
    if not isinstance(ext, mb._ExtStandIn):
        pytest.skip("full mmcv with compiled ops is installed: no stand-in is registered")
    assert ext.__spec__.loader is None and not mmcv_full_available()
    import mmcv.ops

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]])
    with pytest.raises(mb.MissingMmcvOp, match="mmcv op 'nms' was called.*mmcv-lite"):
        mmcv.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
    with pytest.raises(mb.MissingMmcvOp, match="roi_align"):
        ext_loader.load_ext("_ext", ["roi_align_forward"]).roi_align_forward(None)
    assert mb.install_mmcv_ext_standin() is True  # idempotent


@needs_mmpose
def test_standin_not_registered_when_the_compiled_extension_exists(monkeypatch):
    import importlib.machinery
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.delitem(sys.modules, "mmcv._ext", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: importlib.machinery.ModuleSpec(name, object())
                        if name == "mmcv._ext" else real_find_spec(name, *a))
    assert mb.install_mmcv_ext_standin() is False
    assert "mmcv._ext" not in sys.modules


# ------------------------------------------------------------------------------ cross-check

@needs_mmpose
@pytest.mark.parametrize("flip_test", [False, True])
def test_mmpose_heatmaps_and_keypoints_equal_actparse_hrnet(tmp_path, flip_test):
    ours = ours_model()
    ck = save_mmpose_checkpoint(ours, tmp_path / "hrnet.pth")
    cfg = mb.load_config(write_config(tmp_path / "td-hm_hrnet-w18-small.py"))
    sd, meta = mb.load_weights(ck)
    assert meta["epoch"] == 210
    est = mb.MMPoseEstimator(mb.build_model(cfg, sd, ck), flip_test=flip_test)
    assert est.input_size == (96, 64) and est.num_keypoints == NUM_KEYPOINTS

    img = _image()
    # boxes whose padded 3:4 regions are exact in float32: mmpose's crops are then the same pixels as
    # ours (see test_keypoints_stage_... for arbitrary boxes)
    boxes = np.array([[10, 8, 62, 113], [70.3, 5.7, 150.2, 100.1], [90, 30, 150, 118], [0, 0, 40, 30]], np.float32)
    theirs_hm = est.heatmaps(img, boxes)
    ref = PoseEstimator(ours, (96, 64), flip_test=flip_test, fuse=False)
    crops, mats = crop_people(img, boxes, (96, 64))
    ours_hm = ref.heatmaps(crops).numpy()
    assert theirs_hm.shape == ours_hm.shape == (4, NUM_KEYPOINTS, 24, 16)
    peak = np.abs(ours_hm).max()
    assert peak > 1.0
    assert np.abs(theirs_hm - ours_hm).max() <= 1e-4 * peak

    theirs_kp = est.predict([img], [boxes])[0]
    ours_kp = ref.predict([img], [boxes])[0]
    quarter_px = 0.25 * 4 * np.abs(mats[:, 0, 0]) ** -1  # a quarter heatmap pixel in image pixels
    assert_same_keypoints(theirs_kp, ours_kp, ours_hm, quarter_px)
    assert np.abs(theirs_kp[..., 2] - ours_kp[..., 2]).max() <= 1e-4 * peak  # scores = heatmap peaks


@needs_mmpose
def test_published_coco_hrnet_w32_config_as_is_matches_actparse_hrnet_w32(tmp_path):
    """mmpose's model-zoo config for COCO HRNet-w32 256x192, as shipped (its _base_ resolved, its
    ImageNet init_cfg URL never fetched), with a checkpoint in the published layout."""
    ours = ours_model("hrnet_w32", seed=1)
    ck = save_mmpose_checkpoint(ours, tmp_path / "hrnet_w32_coco_256x192.pth", version=0)
    cfg_path = mb.resolve_config_path(PUBLISHED_W32)
    cfg = mb.load_config(cfg_path)
    sd, _ = mb.load_weights(ck)
    model = mb.build_model(cfg, sd, ck)
    est = mb.MMPoseEstimator(model, flip_test=False)
    assert est.input_size == (256, 192) and model.dataset_meta["dataset_name"] == "coco"
    img = _image(3)
    box = np.array([[20, 6, 70, 110]], np.float32)
    theirs = est.heatmaps(img, box)
    crops, _ = crop_people(img, box, (256, 192))
    mine = PoseEstimator(ours, (256, 192), flip_test=False, fuse=False).heatmaps(crops).numpy()
    assert theirs.shape == mine.shape == (1, NUM_KEYPOINTS, 64, 48)
    assert np.abs(theirs - mine).max() <= 1e-4 * np.abs(mine).max()

    # the exported model folder (resolved config + weights only) rebuilds the same model
    mb.export(cfg, model.state_dict(), tmp_path / "pose", {"config": PUBLISHED_W32})
    assert "_base_" not in (tmp_path / "pose" / mb.CONFIG_FILE).read_text()
    again = mb.MMPoseEstimator(mb.load_exported(tmp_path / "pose"), flip_test=False)
    assert np.array_equal(again.heatmaps(img, box), theirs)


# ------------------------------------------------------------------------------------- stages

@needs_mmpose
def test_keypoints_stage_mmpose_backend_writes_the_same_keypoints_as_hrnet(tmp_path):
    from test_pose import _params, _write_project

    from actparse.schemas import read_df
    from stages import keypoints as kp_stage
    from stages import train_pose

    paths = _write_project(tmp_path)
    ours = ours_model()
    save_mmpose_checkpoint(ours, tmp_path / "coco_hrnet.pth", version=1)
    write_config(tmp_path / "td-hm.py", flip_test=True)
    common = dict(epochs=0, checkpoint="coco_hrnet.pth", flip_test=True, val_fraction=0.34)

    train_pose.run(_params(**common), tmp_path)
    kp_stage.run(_params(**common), tmp_path)
    a = read_df(paths.keypoints, "keypoints")

    params = _params(backend="mmpose", mmpose_config="td-hm.py", **common)
    train_pose.run(params, tmp_path)
    pose_dir = paths.models / "pose"
    assert sorted(p.name for p in pose_dir.iterdir()) == ["mmpose_config.py", "mmpose_weights.pth", "train_info.json"]
    info = json.loads((pose_dir / "train_info.json").read_text())
    assert info["backend"] == "mmpose" and info["epochs"] == 0 and info["flip_test"] is True
    assert info["input_size"] == [96, 64] and info["test_gt_boxes"]["n_persons"] == 4 and "val" in info
    kp_stage.run(params, tmp_path)
    b = read_df(paths.keypoints, "keypoints")  # read_df checks the declared schema

    assert len(b) == len(a) > 0
    for col in ("video", "frame", "person"):
        assert b[col].tolist() == a[col].tolist()
    for col in ("det_box", "box"):
        assert np.array_equal(np.stack(b[col].to_numpy()), np.stack(a[col].to_numpy()))
    assert np.array_equal(b["score"].to_numpy(), a["score"].to_numpy())
    ka = np.stack(a["keypoints"].to_numpy()).reshape(len(a), NUM_KEYPOINTS, 3)
    kb = np.stack(b["keypoints"].to_numpy()).reshape(len(b), NUM_KEYPOINTS, 3)
    # which keypoints both decoders treat alike: from actparse's heatmaps of the same crops
    from actparse.video import decode_jpeg

    frames = read_df(paths.frames, "frames")
    ref = PoseEstimator(ours, (96, 64), flip_test=True, fuse=False)
    hms, quarter_px = [], []
    for v, f, box in zip(a["video"], a["frame"], a["box"]):
        jpeg = frames[(frames["video"] == v) & (frames["frame"] == f)]["jpeg"].iloc[0]
        crops, mats = crop_people(decode_jpeg(jpeg), np.asarray(box)[None], (96, 64))
        hms.append(ref.heatmaps(crops).numpy())
        quarter_px.append(1.0 / abs(mats[0, 0, 0]))
    hm = np.concatenate(hms)
    # arbitrary (jittered) boxes: a few crop pixels may round differently (module docstring)
    assert_same_keypoints(kb, ka, hm, np.array(quarter_px), margin=5e-3)
    assert np.abs(kb[..., 2] - ka[..., 2]).max() <= 5e-3 * np.abs(hm).max()


@needs_mmpose
def test_train_pose_mmpose_refuses_training_and_missing_or_bad_inputs(tmp_path):
    from test_pose import _params, _write_project

    from stages import train_pose

    _write_project(tmp_path)
    save_mmpose_checkpoint(ours_model(), tmp_path / "w.pth")
    write_config(tmp_path / "td-hm.py")
    with pytest.raises(ParamError, match="keypoints.epochs must be 0 .got 2"):
        train_pose.run(_params(backend="mmpose", mmpose_config="td-hm.py", checkpoint="w.pth", epochs=2), tmp_path)
    with pytest.raises(ParamError, match="needs keypoints.mmpose_config"):
        train_pose.run(_params(backend="mmpose", checkpoint="w.pth", epochs=0), tmp_path)
    with pytest.raises(ParamError, match="must be one of"):
        train_pose.run(_params(backend="mmpos", epochs=0), tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.py: mmpose config not found"):
        train_pose.run(_params(backend="mmpose", mmpose_config="nope.py", checkpoint="w.pth", epochs=0), tmp_path)

    write_config(tmp_path / "bottomup.py", model_type="BottomupPoseEstimator")
    with pytest.raises(mb.MMPoseError, match="bottomup.py: not a top-down mmpose config"):
        mb.load_config(tmp_path / "bottomup.py")
    (tmp_path / "broken.py").write_text("model = dict(type=\n")
    with pytest.raises(mb.MMPoseError, match="broken.py: cannot read the mmpose config"):
        mb.load_config(tmp_path / "broken.py")

    # a checkpoint of another architecture: named, with the mismatch
    w18 = tmp_path / "w18.pth"
    save_mmpose_checkpoint(build_pose_model("hrnet_w18"), w18)
    cfg = mb.load_config(tmp_path / "td-hm.py")
    sd, _ = mb.load_weights(w18)
    with pytest.raises(mb.MMPoseError, match="w18.pth: the checkpoint does not fit the config's model"):
        mb.build_model(cfg, sd, w18)
    # weights only: a pickle that would run code is refused before anything of it runs
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(1)}, "meta": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="evil.pth: cannot be loaded safely"):
        train_pose.run(_params(backend="mmpose", mmpose_config="td-hm.py", checkpoint="evil.pth", epochs=0), tmp_path)
    assert not marker.exists()


def test_keypoints_stage_without_exported_mmpose_model_says_what_to_run(tmp_path):
    from test_pose import _params, _write_project

    from stages import keypoints as kp_stage

    _write_project(tmp_path)
    with pytest.raises(FileNotFoundError, match="rerun train_pose with keypoints.backend 'mmpose'"):
        kp_stage.run(_params(backend="mmpose"), tmp_path)


def test_backend_mmpose_without_the_extra_fails_with_the_install_command(tmp_path, monkeypatch, capsys):
    """Runs with or without mmpose installed: the stage exits 2 with a one-line error naming the extra."""
    from _params import write_params
    from test_pose import _write_project

    from stages import train_pose

    _write_project(tmp_path)
    write_config(tmp_path / "td-hm.py")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] in ("mmpose", "mmcv") else real_find_spec(name, *a))
    params = write_params(tmp_path / "params.yaml", {"keypoints": {
        "backend": "mmpose", "mmpose_config": "td-hm.py", "checkpoint": "w.pth", "epochs": 0}})
    assert train_pose.main(["--params", str(params), "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train_pose: error: keypoints.backend 'mmpose' needs mmpose")
    assert "bash scripts/setup.sh mmpose" in err and len(err.splitlines()) == 1


def test_params_schema_checks_the_backend_before_any_stage_runs(tmp_path):
    from _params import write_params

    from actparse import param_models
    from actparse.params import load_params
    from stages import train_pose

    assert param_models.POSE_BACKENDS == train_pose.BACKENDS
    mm = {"backend": "mmpose", "mmpose_config": "td-hm.py", "checkpoint": "w.pth", "epochs": 0}
    assert load_params(write_params(tmp_path / "ok.yaml", {"keypoints": mm}))["keypoints"]["backend"] == "mmpose"
    for over, msg in [({"epochs": 3}, "keypoints.epochs must be 0, got 3"),
                      ({"mmpose_config": None}, "needs keypoints.mmpose_config"),
                      ({"backend": "mmpos"}, "keypoints.backend")]:
        with pytest.raises(ParamError, match=msg):
            load_params(write_params(tmp_path / "bad.yaml", {"keypoints": dict(mm, **over)}))
