"""Top-down HRNet keypoint model: timm HRNet backbone + mmpose-style simple heatmap head.

Model: the raw highest-resolution branch (stride 4) of HRNet stage 4, as mmpose's ``HRNet`` backbone
returns it for top-down pose (``feature_location=''`` in timm: no classification "incre" blocks; the
last stage-4 module keeps only the fuse layer of branch 0, mmpose's ``multiscale_output=False``),
followed by mmpose's ``TopdownHeatmapSimpleHead`` with no deconvolution and ``final_conv_kernel=1``:
one 1x1 convolution to K heatmaps at 1/4 of the input resolution.

Checkpoints: our own format (:func:`save_checkpoint`: a dict with ``format``, ``arch``,
``input_size`` (h, w), ``num_keypoints`` and ``state_dict``) and mmpose HRNet checkpoints (a ``.pth``
whose ``state_dict`` keys are ``backbone.*`` plus ``keypoint_head.final_layer.*`` (mmpose 0.x) or
``head.final_layer.*`` (mmpose 1.x)); both load with ``torch.load(weights_only=True)``.

Heatmaps: Gaussian targets (sigma 2 heatmap pixels) centred at the exact sub-pixel keypoint position
(heatmap pixel i <-> input pixel stride*i), decoded with argmax + the standard quarter-pixel shift
towards the higher neighbour (mmpose ``get_max_preds`` + post_process 'default', no UDP).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from .constants import FLIP_PAIRS, NUM_KEYPOINTS
from .atomic import save_torch

log = logging.getLogger("actparse.hrnet")

ARCHS: tuple[str, ...] = ("hrnet_w18_small", "hrnet_w18_small_v2", "hrnet_w18", "hrnet_w32", "hrnet_w48")
CHECKPOINT_FORMAT = "actparse-pose-v1"
HEATMAP_STRIDE = 4
# ImageNet RGB statistics (mmpose's data preprocessor uses the same on 0..255 RGB).
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0


class CheckpointError(ValueError):
    """A checkpoint file does not fit the model; the message names the file and the first mismatch."""


# --------------------------------------------------------------------------------------------- model

class PoseHRNet(nn.Module):
    """HRNet backbone (stride-4 branch of stage 4) + 1x1 conv heatmap head."""

    def __init__(self, arch: str = "hrnet_w18_small", num_keypoints: int = NUM_KEYPOINTS):
        super().__init__()
        import timm

        if arch not in ARCHS:
            raise ValueError(f"unknown pose arch {arch!r}; known: {list(ARCHS)}")
        self.arch = arch
        self.num_keypoints = int(num_keypoints)
        # feature_location='' -> raw HRNet branches (no "incre" classification blocks);
        # out_indices=(1,) -> the stride-4 branch only.
        self.backbone = timm.create_model(arch, pretrained=False, features_only=True,
                                          feature_location="", out_indices=(1,))
        last = self.backbone.stage4[-1]
        if isinstance(last.fuse_layers, nn.ModuleList) and len(last.fuse_layers) > 1:
            # mmpose multiscale_output=False: the last module fuses into branch 0 only.
            last.fuse_layers = last.fuse_layers[:1]
            last.multi_scale_output = False
        channels = self.backbone.feature_info.channels()[0]
        self.head = nn.Conv2d(channels, self.num_keypoints, kernel_size=1, stride=1, padding=0)
        nn.init.normal_(self.head.weight, std=0.001)  # mmpose init of the final layer
        nn.init.constant_(self.head.bias, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised RGB -> (B, K, H/4, W/4) heatmaps."""
        return self.head(self.backbone(x)[0])


def build_pose_model(arch: str = "hrnet_w18_small", num_keypoints: int = NUM_KEYPOINTS) -> PoseHRNet:
    """A randomly initialised :class:`PoseHRNet` (nothing is downloaded)."""
    return PoseHRNet(arch, num_keypoints)


def _fused(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=True).to(conv.weight.device)
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    out.weight.data.copy_(conv.weight.data * (gamma / std).reshape(-1, 1, 1, 1))
    bias = conv.bias.data if conv.bias is not None else torch.zeros_like(std)
    out.bias.data.copy_(beta + (bias - bn.running_mean) * gamma / std)
    return out


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a Conv2d into it (inference only, in place).

    Pairs are consecutive entries of an ``nn.Sequential`` and ``conv{i}``/``bn{i}`` attributes (the
    HRNet stem and ResNet blocks). Returns ``model`` (in eval mode); outputs are unchanged up to rounding.
    """
    model.eval()
    with torch.no_grad():
        for module in list(model.modules()):
            if isinstance(module, nn.Sequential):
                names = list(module._modules)
                for a, b in zip(names, names[1:]):
                    conv, bn = module._modules[a], module._modules[b]
                    if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                        module._modules[a] = _fused(conv, bn)
                        module._modules[b] = nn.Identity()
            for i in (1, 2, 3):
                conv, bn = getattr(module, f"conv{i}", None), getattr(module, f"bn{i}", None)
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    setattr(module, f"conv{i}", _fused(conv, bn))
                    setattr(module, f"bn{i}", nn.Identity())
    return model


def normalize_images(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB (B, H, W, 3) -> normalised float tensor (B, 3, H, W)."""
    x = (np.asarray(images, np.float32) - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


# ------------------------------------------------------------------------------------- checkpoints

def save_checkpoint(model: PoseHRNet, path: str | os.PathLike, input_size: tuple[int, int],
                    extra: Mapping | None = None) -> Path:
    """Write our checkpoint format atomically: {format, arch, input_size (h, w), num_keypoints, state_dict}."""
    obj = {"format": CHECKPOINT_FORMAT, "arch": model.arch, "input_size": [int(input_size[0]), int(input_size[1])],
           "num_keypoints": model.num_keypoints,
           "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}}
    if extra:
        obj["extra"] = dict(extra)
    return save_torch(obj, path)


def _torch_load(path: Path):
    """``torch.load(weights_only=True)``; numpy objects in mmpose ``meta`` are allowed, nothing else."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as first:
        allowed = []
        try:
            import numpy.core.multiarray as ma

            allowed = [ma._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.float64)),
                       type(np.dtype(np.float32)), type(np.dtype(np.int64)), type(np.dtype(np.int32))]
            if hasattr(ma, "scalar"):
                allowed.append(ma.scalar)
        except Exception:  # numpy layout changed: report the first error
            pass
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            raise CheckpointError(
                f"{path}: cannot be loaded safely with torch.load(weights_only=True) ({str(first).splitlines()[0]}); "
                f"re-save just the weights, e.g. torch.save({{'state_dict': ckpt['state_dict']}}, path)") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable torch checkpoint: {str(exc).splitlines()[0]}") from None


EXPECTED_FORMATS = ("our format: dict(format='actparse-pose-v1', arch, input_size, num_keypoints, state_dict); "
                    "mmpose 0.x: dict(state_dict={'backbone.*', 'keypoint_head.final_layer.weight/bias'}); "
                    "mmpose 1.x: dict(state_dict={'backbone.*', 'head.final_layer.weight/bias'})")

_MMPOSE_HEADS = ("keypoint_head.final_layer.", "head.final_layer.")
_IGNORED_PREFIXES = ("data_preprocessor.",)  # buffers without learnable state in mmpose 1.x


def mmpose_to_ours(key: str) -> str | None:
    """Map one mmpose state-dict key to ours (None for keys that carry nothing we use).

    The mmpose HRNet backbone uses the same module names as timm's (conv1/bn1/conv2/bn2, layer1,
    transition1-3, stage2-4 with branches / fuse_layers), so ``backbone.*`` maps 1:1.
    """
    if key.startswith("module."):  # DataParallel-saved weights
        key = key[len("module."):]
    if key.startswith(_IGNORED_PREFIXES):
        return None
    if key.startswith("backbone."):
        return key
    for prefix in _MMPOSE_HEADS:
        if key.startswith(prefix):
            return "head." + key[len(prefix):]
    raise KeyError(key)


def ours_to_mmpose(key: str, version: int = 1) -> str:
    """Our state-dict key -> mmpose's (``version`` 0 = mmpose 0.x head name, 1 = mmpose 1.x)."""
    if key.startswith("backbone."):
        return key
    if key.startswith("head."):
        return ("keypoint_head.final_layer." if version == 0 else "head.final_layer.") + key[len("head."):]
    raise KeyError(f"not a PoseHRNet key: {key!r}")


# Module names of mmpose's HRNet (mmpose/models/backbones/hrnet.py + resnet blocks), as a grammar;
# tests check every timm backbone key is one of these (so the 1:1 backbone mapping is complete).
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_BLOCK = rf"(conv[123]\.weight|bn[123]\.{_BN}|downsample\.0\.weight|downsample\.1\.{_BN})"
MMPOSE_BACKBONE_KEY = re.compile(
    rf"^backbone\.("
    rf"conv[12]\.weight|bn[12]\.{_BN}"
    rf"|layer1\.\d+\.{_BLOCK}"
    rf"|transition[123]\.\d+\.(0\.weight|1\.{_BN}|\d+\.0\.weight|\d+\.1\.{_BN})"
    rf"|stage[234]\.\d+\.branches\.\d+\.\d+\.{_BLOCK}"
    rf"|stage[234]\.\d+\.fuse_layers\.\d+\.\d+\.(0\.weight|1\.{_BN}|\d+\.0\.weight|\d+\.1\.{_BN})"
    rf")$")


def _unwrap_state_dict(obj, path: Path) -> tuple[dict, dict]:
    """Return (state_dict, meta) from a loaded checkpoint object."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: checkpoint is a {type(obj).__name__}, expected a dict. "
                              f"Expected formats: {EXPECTED_FORMATS}")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        return obj["state_dict"], obj
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}
    raise CheckpointError(f"{path}: no 'state_dict' in checkpoint (keys: {sorted(obj)[:8]}). "
                          f"Expected formats: {EXPECTED_FORMATS}")


def _first_mismatch(have: Mapping[str, torch.Tensor], model: nn.Module, rename=None) -> str | None:
    """Describe the first key/shape mismatch between a (mapped) state dict and ``model``, or None."""
    want = model.state_dict()
    rename = rename or (lambda k: k)
    for key, tensor in want.items():
        if key not in have:
            return f"missing key {rename(key)!r} (shape {tuple(tensor.shape)})"
        if tuple(have[key].shape) != tuple(tensor.shape):
            return (f"key {rename(key)!r} has shape {tuple(have[key].shape)}, "
                    f"the model expects {tuple(tensor.shape)}")
    extra = [k for k in have if k not in want]
    if extra:
        return f"unexpected key {rename(extra[0])!r}"
    return None


def _infer_num_keypoints(sd: Mapping[str, torch.Tensor], default: int) -> int:
    w = sd.get("head.weight")
    return int(w.shape[0]) if w is not None and w.ndim == 4 else default


def _candidate_archs(sd: Mapping[str, torch.Tensor]) -> list[str]:
    """Known archs, those whose first stage-2 branch width matches the state dict first."""
    from timm.models.hrnet import cfg_cls

    w = sd.get("backbone.stage2.0.branches.0.0.conv1.weight")
    if w is None:
        return list(ARCHS)
    width = int(w.shape[0])
    match = [a for a in ARCHS if cfg_cls[a]["stage2"]["num_channels"][0] == width]
    return match or list(ARCHS)


def load_mmpose_state_dict(sd: Mapping[str, torch.Tensor], path: str | os.PathLike = "<state_dict>",
                           arch: str | None = None, num_keypoints: int | None = None) -> PoseHRNet:
    """Build a :class:`PoseHRNet` from an mmpose HRNet state dict (0.x or 1.x head names).

    ``arch`` None tries every known arch and takes the one that fits exactly. Raises
    :class:`CheckpointError` naming ``path``, the expected format and the first mismatching key/shape.
    """
    path = Path(path)
    version = 0 if any(k.startswith("keypoint_head.") for k in sd) else 1
    mapped: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        try:
            new = mmpose_to_ours(key)
        except KeyError:
            raise CheckpointError(f"{path}: unexpected key {key!r} for an mmpose top-down HRNet checkpoint. "
                                  f"Expected formats: {EXPECTED_FORMATS}") from None
        if new is not None:
            mapped[new] = value
    if "head.weight" not in mapped:
        raise CheckpointError(f"{path}: no heatmap head ('keypoint_head.final_layer.weight' or "
                              f"'head.final_layer.weight') in the state dict; a TopdownHeatmapSimpleHead "
                              f"with final_conv_kernel=1 and no deconv layers is expected. "
                              f"Expected formats: {EXPECTED_FORMATS}")
    k = num_keypoints or _infer_num_keypoints(mapped, NUM_KEYPOINTS)
    candidates = [arch] if arch else _candidate_archs(mapped)
    first_problem = None
    for name in candidates:
        model = build_pose_model(name, k)
        problem = _first_mismatch(mapped, model, rename=lambda key: ours_to_mmpose(key, version))
        if problem is None:
            model.load_state_dict(mapped, strict=True)
            log.info("loaded mmpose %s.x checkpoint %s as %s (%d keypoints)", version, path, name, k)
            return model
        first_problem = first_problem or f"as {name}: {problem}"
    raise CheckpointError(f"{path}: mmpose HRNet checkpoint does not fit {'arch ' + arch if arch else 'any of ' + str(candidates)} "
                          f"with {k} keypoints; first mismatch {first_problem}. Expected formats: {EXPECTED_FORMATS}")


def load_checkpoint(path: str | os.PathLike, arch: str | None = None,
                    num_keypoints: int | None = None) -> tuple[PoseHRNet, dict]:
    """Load our checkpoint or an mmpose HRNet one; returns (model in eval mode, info).

    ``info`` has ``format`` ('actparse' | 'mmpose'), ``arch``, ``num_keypoints`` and ``input_size``
    ((h, w), None for mmpose checkpoints, which do not record it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pose checkpoint not found")
    obj = _torch_load(path)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        ck_arch = obj.get("arch")
        if arch and ck_arch != arch:
            raise CheckpointError(f"{path}: checkpoint arch is {ck_arch!r}, params ask for {arch!r}")
        k = int(obj.get("num_keypoints", NUM_KEYPOINTS))
        if num_keypoints and k != num_keypoints:
            raise CheckpointError(f"{path}: checkpoint has {k} keypoints, expected {num_keypoints}")
        try:
            model = build_pose_model(ck_arch, k)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        sd = obj.get("state_dict")
        if not isinstance(sd, dict):
            raise CheckpointError(f"{path}: 'state_dict' missing. Expected formats: {EXPECTED_FORMATS}")
        problem = _first_mismatch(sd, model)
        if problem:
            raise CheckpointError(f"{path}: does not fit {ck_arch}: {problem}. Expected formats: {EXPECTED_FORMATS}")
        model.load_state_dict(sd, strict=True)
        info = {"format": "actparse", "arch": ck_arch, "num_keypoints": k,
                "input_size": tuple(obj.get("input_size") or ()) or None, "extra": obj.get("extra", {})}
    else:
        sd, _meta = _unwrap_state_dict(obj, path)
        model = load_mmpose_state_dict(sd, path, arch=arch, num_keypoints=num_keypoints)
        info = {"format": "mmpose", "arch": model.arch, "num_keypoints": model.num_keypoints,
                "input_size": None, "extra": {}}
    model.eval()
    return model, info


# ----------------------------------------------------------------------------------------- heatmaps

def encode_heatmaps(keypoints: np.ndarray, weights: np.ndarray, heatmap_size: tuple[int, int],
                    sigma: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian target heatmaps.

    keypoints: (N, K, 2) in heatmap pixels (x, y); weights: (N, K) visibility (0/1 or soft).
    Returns (targets (N, K, H, W) float32, target weights (N, K) float32); a keypoint whose 3-sigma
    patch lies outside the heatmap gets weight 0 (as in mmpose).
    """
    h, w = heatmap_size
    kp = np.asarray(keypoints, np.float32)
    wt = np.asarray(weights, np.float32).copy()
    ys = np.arange(h, dtype=np.float32)[None, None, :, None]
    xs = np.arange(w, dtype=np.float32)[None, None, None, :]
    mx = kp[..., 0][..., None, None]
    my = kp[..., 1][..., None, None]
    g = np.exp(-((xs - mx) ** 2 + (ys - my) ** 2) / (2 * sigma ** 2)).astype(np.float32)
    r = 3 * sigma
    outside = (kp[..., 0] + r < 0) | (kp[..., 1] + r < 0) | (kp[..., 0] - r > w - 1) | (kp[..., 1] - r > h - 1)
    outside |= ~np.isfinite(kp).all(-1)
    wt[outside] = 0.0
    g = np.where(wt[..., None, None] > 0, g, 0.0).astype(np.float32)
    return g, wt


def decode_heatmaps(heatmaps) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, H, W) heatmaps -> (coords (N, K, 2) heatmap pixels x, y; maxvals (N, K)).

    argmax, then +-0.25 px towards the higher neighbour on each axis (interior pixels only).
    """
    hm = heatmaps.detach().cpu().numpy() if isinstance(heatmaps, torch.Tensor) else np.asarray(heatmaps)
    hm = hm.astype(np.float32, copy=False)
    n, k, h, w = hm.shape
    flat = hm.reshape(n, k, -1)
    idx = flat.argmax(-1)
    maxvals = np.take_along_axis(flat, idx[..., None], -1)[..., 0]
    px = (idx % w).astype(np.int64)
    py = (idx // w).astype(np.int64)
    coords = np.stack([px, py], -1).astype(np.float32)
    inner = (px > 0) & (px < w - 1) & (py > 0) & (py < h - 1)
    ni, ki = np.nonzero(inner)
    if len(ni):
        x, y = px[ni, ki], py[ni, ki]
        dx = hm[ni, ki, y, x + 1] - hm[ni, ki, y, x - 1]
        dy = hm[ni, ki, y + 1, x] - hm[ni, ki, y - 1, x]
        coords[ni, ki, 0] += 0.25 * np.sign(dx)
        coords[ni, ki, 1] += 0.25 * np.sign(dy)
    return coords, np.maximum(maxvals, 0.0)


def flip_back(heatmaps: torch.Tensor, flip_pairs=FLIP_PAIRS, shift: bool = True) -> torch.Tensor:
    """Heatmaps of a horizontally flipped input -> heatmaps of the original input.

    Flips along x, swaps left/right channels, and (``shift``) moves one pixel right like mmpose's
    ``shift_heatmap`` (the flip maps heatmap x to W - 1/stride - x, not W - 1 - x).
    """
    out = heatmaps.flip(-1).clone()
    k = out.shape[1]
    perm = list(range(k))
    for a, b in flip_pairs:
        if a < k and b < k:
            perm[a], perm[b] = b, a
    out = out[:, perm]
    if shift:
        out[..., 1:] = out[..., :-1].clone()
    return out


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """mmpose JointsMSELoss with target weights: mean over joints of 0.5 * MSE(pred*w, target*w)."""
    w = weight[..., None, None]
    return 0.5 * ((pred * w - target * w) ** 2).mean()
