"""Optional keypoints backend: any mmpose top-down model through mmpose's own inference API.

``keypoints.backend: mmpose`` runs ``mmpose.apis.init_model`` + ``inference_topdown`` on the person
boxes instead of actparse's own HRNet (:mod:`actparse.hrnet`, the default). It needs the optional
install extra (``bash scripts/setup.sh mmpose``: mmengine, mmcv-lite, mmpose and their pins in
``requirements-mmpose.lock``).

mmcv-lite is the pure-Python build of mmcv: it has no compiled ``mmcv._ext``, and ``import mmpose.models``
imports ``mmcv.ops`` (for the EDPose / deformable-DETR heads), which loads its functions from that
extension. A top-down heatmap / SimCC model never calls them, so :func:`install_mmcv_ext_standin`
registers, only when the compiled extension is absent, a stand-in ``mmcv._ext`` module whose every
function raises :class:`MissingMmcvOp` when called. Its ``__spec__`` has no loader, so mmengine's
``mmcv_full_available()`` still reports that full mmcv is not installed. Nothing else is patched.

Weights are never unpickled freely: a checkpoint (mmpose's ``.pth`` is a pickle) is read with
``torch.load(weights_only=True)`` (:func:`actparse.hrnet._torch_load`) and its state dict handed to
the model built from the config; mmengine's own checkpoint loader is not used. The config is Python
code (an mmpose/mmengine config file) that the user names in params and that runs as mmpose would
run it; actparse never executes a config it finds in data.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import os
import sys
import types
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger("actparse.mmpose")

STANDIN_NAME = "mmcv._ext"
INSTALL_HINT = ("install the optional mmpose extra: `bash scripts/setup.sh mmpose` "
                "(pins in requirements-mmpose.lock)")


class MissingMmcvOp(RuntimeError):
    """A compiled mmcv op was called, but only mmcv-lite (no compiled ops) is installed."""


class MMPoseError(ValueError):
    """The mmpose backend cannot run with the given config / checkpoint; the message says why."""


class MMPoseNotInstalled(ImportError, ValueError):
    """keypoints.backend 'mmpose' without the optional extra (a ValueError too: stages exit 2 with it)."""


class _ExtStandIn(types.ModuleType):
    """Module object standing in for mmcv's compiled ``_ext``: every op name resolves to a function
    that raises :class:`MissingMmcvOp` (``mmcv.utils.ext_loader.load_ext`` only checks that the
    names exist)."""

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)

        def missing_op(*args, **kwargs):
            raise MissingMmcvOp(
                f"mmcv op {name!r} was called, but mmcv's compiled ops are not installed (mmcv-lite; "
                f"actparse registered a stand-in {STANDIN_NAME}). Top-down heatmap/SimCC models never call "
                f"them; for a model that does, install full mmcv built for this torch")

        missing_op.__name__ = missing_op.__qualname__ = name
        setattr(self, name, missing_op)  # cache: the same function object on every lookup
        return missing_op


def install_mmcv_ext_standin() -> bool:
    """Register the stand-in ``mmcv._ext`` if mmcv is installed without its compiled ops.

    Returns True when the stand-in is (now or already) registered, False when the real compiled
    extension exists (then nothing is done). MMPoseNotInstalled (with the install hint) without mmcv.
    """
    present = sys.modules.get(STANDIN_NAME)
    if present is not None:
        return isinstance(present, _ExtStandIn)
    try:
        import mmcv  # noqa: F401
    except ImportError as exc:
        raise MMPoseNotInstalled(f"keypoints.backend 'mmpose' needs mmcv (mmcv-lite): {INSTALL_HINT} ({exc})") from None
    if importlib.util.find_spec(STANDIN_NAME) is not None:
        return False  # full mmcv: its compiled ops are used as they are
    module = _ExtStandIn(STANDIN_NAME, "stand-in for mmcv's compiled ops, registered by actparse; "
                                       "every function raises MissingMmcvOp")
    # loader None: importlib/pkgutil find_loader() -> None, so mmcv_full_available() stays False
    module.__spec__ = importlib.machinery.ModuleSpec(STANDIN_NAME, None)
    module.__file__ = None
    sys.modules[STANDIN_NAME] = module
    log.debug("registered stand-in %s (mmcv-lite without compiled ops)", STANDIN_NAME)
    return True


def import_mmpose():
    """Import ``mmpose.apis`` (registering the stand-in first when needed); MMPoseNotInstalled if absent."""
    if importlib.util.find_spec("mmpose") is None:
        raise MMPoseNotInstalled(f"keypoints.backend 'mmpose' needs mmpose: {INSTALL_HINT}")
    install_mmcv_ext_standin()
    try:
        import mmpose.apis
    except ImportError as exc:  # a broken or partial install
        raise MMPoseNotInstalled(f"keypoints.backend 'mmpose': importing mmpose failed ({exc}); {INSTALL_HINT}") from None
    return mmpose.apis


# ------------------------------------------------------------------------------------- config

CONFIG_SUFFIXES = (".py", ".yml", ".yaml", ".json")
PACKAGE_PREFIX = "mmpose::"


def resolve_config_path(spec: str, root: str | os.PathLike = ".") -> Path:
    """``keypoints.mmpose_config`` -> a config file path.

    ``mmpose::<path>`` names a config shipped inside the installed mmpose package (its model-zoo
    configs, e.g. ``mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py``);
    any other value is a local path (relative to the project root).
    """
    if spec.startswith(PACKAGE_PREFIX):
        spec_mmpose = importlib.util.find_spec("mmpose")
        if spec_mmpose is None or not spec_mmpose.submodule_search_locations:
            raise MMPoseNotInstalled(f"keypoints.mmpose_config {spec!r} names a config of the mmpose package: "
                                     f"{INSTALL_HINT}")
        base = Path(list(spec_mmpose.submodule_search_locations)[0]) / ".mim" / "configs"
        path = base / spec[len(PACKAGE_PREFIX):]
    else:
        path = Path(spec)
        path = path if path.is_absolute() else Path(root) / path
    if path.suffix not in CONFIG_SUFFIXES:
        raise MMPoseError(f"{path}: keypoints.mmpose_config must be an mmpose config file "
                          f"({'/'.join(CONFIG_SUFFIXES)}), got {path.name!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mmpose config not found (keypoints.mmpose_config)")
    return path


def load_config(path: str | os.PathLike):
    """Read an mmpose top-down config with mmengine (``_base_`` files resolved); MMPoseError if unusable.

    A ``.py`` config is Python code that runs here, exactly as ``mmpose`` itself runs it: only name a
    config you would run with mmpose.
    """
    import_mmpose()
    from mmengine.config import Config

    path = Path(path)
    try:
        cfg = Config.fromfile(str(path))
    except Exception as exc:  # syntax error, missing _base_, ...
        raise MMPoseError(f"{path}: cannot read the mmpose config: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    model = cfg.get("model")
    if not isinstance(model, dict) or model.get("type") != "TopdownPoseEstimator":
        kind = model.get("type") if isinstance(model, dict) else None
        raise MMPoseError(f"{path}: not a top-down mmpose config (model.type is {kind!r}, "
                          f"'TopdownPoseEstimator' expected); keypoints.backend 'mmpose' runs top-down models "
                          f"on the detected person boxes")
    pipeline = ((cfg.get("test_dataloader") or {}).get("dataset") or {}).get("pipeline")
    if not pipeline:
        raise MMPoseError(f"{path}: the config has no test_dataloader.dataset.pipeline, which "
                          f"inference_topdown needs")
    return cfg


def load_weights(path: str | os.PathLike) -> tuple[dict, dict]:
    """(state_dict, meta) of an mmpose checkpoint, read with ``torch.load(weights_only=True)`` only."""
    from .hrnet import _torch_load, _unwrap_state_dict

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mmpose checkpoint not found (keypoints.checkpoint)")
    obj = _torch_load(path)
    sd, meta = _unwrap_state_dict(obj, path)
    meta = meta.get("meta") if isinstance(meta.get("meta"), dict) else {}
    return dict(sd), meta


def build_model(cfg, state_dict: dict, where: str | os.PathLike = "<state_dict>", device: str = "cpu"):
    """``init_model(cfg, checkpoint=None)`` + ``load_state_dict(state_dict, strict=True)``.

    mmpose's own load hooks convert mmpose 0.x head names (``keypoint_head.*``) as its checkpoint
    loader would. The dataset meta (keypoint names, flip pairs) comes from the config's dataset, as
    ``init_model`` takes it without a checkpoint. A state dict that does not fit raises MMPoseError naming ``where`` and the first
    missing / unexpected keys.
    """
    import copy

    apis = import_mmpose()
    cfg = copy.deepcopy(cfg)  # init_model edits it (drops init_cfg / train_cfg)
    try:
        model = apis.init_model(cfg, checkpoint=None, device="cpu")
    except Exception as exc:
        raise MMPoseError(f"{getattr(cfg, 'filename', None) or 'mmpose config'}: mmpose could not build the "
                          f"model: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    try:
        result = model.load_state_dict(sd, strict=False)
    except RuntimeError as exc:  # shape mismatch
        raise MMPoseError(f"{where}: the checkpoint does not fit the config's model: "
                          f"{str(exc).splitlines()[-1].strip()}") from None
    missing = [k for k in result.missing_keys]
    unexpected = [k for k in result.unexpected_keys]
    if missing or unexpected:
        raise MMPoseError(f"{where}: the checkpoint does not fit the config's model: "
                          f"{len(missing)} missing key(s) {missing[:3]}, {len(unexpected)} unexpected key(s) "
                          f"{unexpected[:3]}")
    return model.to(device).eval()


# ---------------------------------------------------------------------------------- inference

class MMPoseEstimator:
    """Top-down inference with mmpose's ``inference_topdown``: the same ``predict`` as
    :class:`actparse.pose.PoseEstimator` (RGB images, xyxy boxes -> (N, K, 3) x, y, score)."""

    def __init__(self, model, flip_test: bool | None = None, batch_size: int = 64):
        self.model = model
        if flip_test is not None:  # keypoints.flip_test overrides the config's test_cfg.flip_test
            model.test_cfg = dict(model.test_cfg or {}, flip_test=bool(flip_test))
            if getattr(model, "head", None) is not None and hasattr(model.head, "test_cfg"):
                model.head.test_cfg = dict(model.head.test_cfg or {}, flip_test=bool(flip_test))
        self.batch_size = max(1, int(batch_size))
        self.num_keypoints = int(model.dataset_meta["num_keypoints"])
        pipeline = model.cfg.test_dataloader.dataset.pipeline
        affine = [t for t in pipeline if t.get("type") == "TopdownAffine"]
        w, h = affine[0]["input_size"] if affine else (None, None)
        self.input_size = (int(h), int(w)) if h else None

    def _run(self, image: np.ndarray, boxes: np.ndarray):
        apis = import_mmpose()
        bgr = np.ascontiguousarray(np.asarray(image)[..., ::-1])  # mmpose's LoadImage gives BGR
        out = []
        for i in range(0, len(boxes), self.batch_size):
            out.extend(apis.inference_topdown(self.model, bgr, boxes[i:i + self.batch_size], bbox_format="xyxy"))
        return out

    def predict(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per image, keypoints (N_i, K, 3) (x, y in image pixels; score = mmpose's keypoint score,
        clipped at 0) for its boxes (N_i, 4) xyxy."""
        k = self.num_keypoints
        res = []
        for img, bx in zip(images, boxes):
            bx = np.asarray(bx, np.float32).reshape(-1, 4)
            if not len(bx):
                res.append(np.zeros((0, k, 3), np.float32))
                continue
            samples = self._run(img, bx)
            xy = np.stack([s.pred_instances.keypoints[0] for s in samples]).astype(np.float32)
            sc = np.stack([s.pred_instances.keypoint_scores[0] for s in samples]).astype(np.float32)
            res.append(np.concatenate([xy, np.maximum(sc, 0.0)[..., None]], -1))
        return res

    def heatmaps(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Heatmaps (N, K, h, w) the model outputs for ``boxes`` of one RGB image (heatmap heads only)."""
        old = self.model.test_cfg
        self.model.test_cfg = dict(old or {}, output_heatmaps=True)
        try:
            samples = self._run(image, np.asarray(boxes, np.float32).reshape(-1, 4))
        finally:
            self.model.test_cfg = old
        if samples and "heatmaps" not in samples[0].get("pred_fields", {}):
            raise MMPoseError("the mmpose model outputs no heatmaps (not a heatmap head)")
        return np.stack([s.pred_fields.heatmaps.detach().cpu().numpy() for s in samples]) if samples else \
            np.zeros((0, self.num_keypoints, 0, 0), np.float32)


def evaluate(estimator: MMPoseEstimator, samples) -> dict:
    """Pose metrics (:func:`actparse.pose.pose_metrics`) of ``estimator`` on ``samples``' (GT) boxes."""
    from .pose import pose_metrics

    if len(samples) == 0:
        k = estimator.num_keypoints
        return pose_metrics(np.zeros((0, k, 3)), np.zeros((0, k, 3)), np.zeros((0, 4)))
    pred = np.zeros((len(samples), estimator.num_keypoints, 3), np.float32)
    for img_i in np.unique(samples.image_index):
        sel = np.nonzero(samples.image_index == img_i)[0]
        pred[sel] = estimator.predict([samples.images[img_i]], [samples.boxes[sel]])[0]
    return pose_metrics(pred, samples.keypoints, samples.boxes)


# ------------------------------------------------------------------------ the pose model folder

CONFIG_FILE = "mmpose_config.py"
WEIGHTS_FILE = "mmpose_weights.pth"


def export(cfg, state_dict: dict, out_dir: str | os.PathLike, source: dict) -> None:
    """Write the resolved config (``_base_`` merged in) and the weights (state dict only) into the
    pose model folder, so that the keypoints stage depends on their content (DVC hashes the folder)."""
    from .atomic import save_torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (CONFIG_FILE + ".tmp")
    tmp.write_text(cfg.pretty_text)
    os.replace(tmp, out_dir / CONFIG_FILE)
    save_torch({"state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
                "source": dict(source)}, out_dir / WEIGHTS_FILE)


def load_exported(model_dir: str | os.PathLike, device: str = "cpu"):
    """The model :func:`export` wrote into ``model_dir`` (built with mmpose, weights loaded safely)."""
    model_dir = Path(model_dir)
    cfg_path, w_path = model_dir / CONFIG_FILE, model_dir / WEIGHTS_FILE
    if not cfg_path.is_file() or not w_path.is_file():
        raise FileNotFoundError(f"{model_dir}: no {CONFIG_FILE} + {WEIGHTS_FILE} (keypoints.backend is 'mmpose'): "
                                f"rerun train_pose with keypoints.backend 'mmpose'")
    cfg = load_config(cfg_path)
    sd, _ = load_weights(w_path)
    return build_model(cfg, sd, w_path, device)
