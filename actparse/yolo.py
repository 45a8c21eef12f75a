"""Everything ultralytics-specific: offline setup, YOLO dataset export, training, loading, prediction.

Nothing here downloads. :func:`configure` must run before ``ultralytics`` is first imported (every
function below calls it): it sets ``YOLO_OFFLINE=1``, points ``YOLO_CONFIG_DIR`` at a private
folder holding ``Arial.ttf`` (a copy of the DejaVuSans font matplotlib ships, so ultralytics
never fetches its font), and turns off hub sync and every logger integration in the settings.
Training always gets ``plots=False``, never ultralytics' fp16 AMP self-check (it would fetch a
checkpoint; ``amp`` means bf16 on CUDA, off on CPU), an explicit ``project=`` work folder, and a
data.yaml with an absolute ``path``.

Checkpoints never run code: :func:`configure` turns on ultralytics' restricted loading
(``ULTRALYTICS_SAFE_LOAD``: ``torch.load(weights_only=True)`` against its allow-list of model
classes, models rebuilt without ``eval``) for every ``.pt`` ultralytics opens in this process, and
:func:`load_model` first scans a user's file for the globals its pickle names (nothing is
unpickled) and refuses any that a YOLO checkpoint does not hold (:func:`check_checkpoint`).

Images handed to this module are uint8 RGB numpy arrays; boxes are ``[x1, y1, x2, y2]`` pixels
of those images.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger("actparse.yolo")

# Idle OpenMP threads sleep instead of spinning. With busy-waiting, two torch threads on a 2-core
# machine that is also running anything else ran training steps ~10x and inference ~7x slower than
# one thread; with passive waiting they are as fast as (or faster than) one. Only takes effect if
# torch is not loaded yet (the stages import torch through ultralytics, after this module).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_SETTINGS_OFF = {
    "sync": False, "clearml": False, "comet": False, "dvc": False, "hub": False, "mlflow": False,
    "neptune": False, "raytune": False, "tensorboard": False, "wandb": False, "vscode_msg": False,
    "openvino_msg": False,
}
_configured: Path | None = None


def _font_source() -> Path:
    import matplotlib

    src = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not src.exists():
        raise FileNotFoundError(f"{src}: font shipped with matplotlib not found (needed offline by ultralytics)")
    return src


def configure(config_dir: str | os.PathLike | None = None) -> Path:
    """Make ultralytics fully offline and quiet; return its settings folder.

    ``config_dir`` (default: a private per-user temp folder, so a user's own ultralytics settings are
    neither used nor changed) only takes effect when ultralytics is not imported yet in this process.
    """
    global _configured
    if _configured is not None and "ultralytics" in sys.modules:
        return _configured
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"  # weights_only checkpoint loading (read at import)
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    if "ultralytics" not in sys.modules:
        if config_dir is None:
            config_dir = Path(tempfile.gettempdir()) / f"actparse-ultralytics-{os.getuid()}"
        os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
        # ultralytics appends "Ultralytics" to YOLO_CONFIG_DIR; put the font there before import
        sub = Path(config_dir) / "Ultralytics"
        sub.mkdir(parents=True, exist_ok=True)
        _install_font(sub)
    import ultralytics  # noqa: F401  (import after the environment is set)
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR

    _install_font(Path(USER_CONFIG_DIR))
    changes = {k: v for k, v in _SETTINGS_OFF.items() if k in SETTINGS and SETTINGS.get(k) != v}
    if changes:
        SETTINGS.update(changes)
    for name in ("ultralytics", "Ultralytics"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _safe_load_on()
    _configured = Path(USER_CONFIG_DIR)
    return _configured


def _safe_load_on() -> None:
    """Make ultralytics load every checkpoint with its restricted (weights_only) loader, also when
    ultralytics was imported before :func:`configure` set ``ULTRALYTICS_SAFE_LOAD``."""
    import ultralytics.utils
    from ultralytics.nn import tasks

    if not (hasattr(tasks, "SAFE_LOAD") and getattr(getattr(tasks, "_SafeLoad", None), "SUPPORTED", False)):
        raise RuntimeError(f"ultralytics {ultralytics.__version__} with this torch cannot load checkpoints "
                           "safely (no ULTRALYTICS_SAFE_LOAD / torch.load weights_only support); "
                           "install the pinned versions")
    ultralytics.utils.SAFE_LOAD = True
    tasks.SAFE_LOAD = True


def set_threads(threads: int = 0) -> int:
    """CPU threads for torch inside ultralytics (0 = :func:`actparse.determinism.cores`: 2, or
    ``ACTPARSE_CPU_THREADS``); returns the number used.

    ultralytics resets torch to ``cpu_count - 1`` threads on CPU (one thread on a 2-core machine);
    this overrides that choice for the following train / predict calls.
    """
    configure()
    import torch
    from ultralytics.utils import torch_utils

    from .determinism import cores

    n = int(threads) if threads and threads > 0 else cores()
    torch_utils.NUM_THREADS = n
    torch.set_num_threads(n)
    return n


def _install_font(folder: Path) -> None:
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        dst = folder / name
        if not dst.exists():
            tmp = folder / f".{name}.{os.getpid()}.tmp"
            shutil.copyfile(_font_source(), tmp)
            os.replace(tmp, dst)


# --------------------------------------------------------------------------------------------
# Dataset export
# --------------------------------------------------------------------------------------------

def boxes_to_yolo(boxes, width: int, height: int) -> np.ndarray:
    """``[x1,y1,x2,y2]`` pixels -> normalised ``[cx, cy, w, h]`` (clipped to the image)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, width)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, height)
    cx = (b[:, 0] + b[:, 2]) / 2 / width
    cy = (b[:, 1] + b[:, 3]) / 2 / height
    w = (b[:, 2] - b[:, 0]) / width
    h = (b[:, 3] - b[:, 1]) / height
    return np.stack([cx, cy, w, h], axis=1)


def yolo_to_boxes(xywhn, width: int, height: int) -> np.ndarray:
    """Inverse of :func:`boxes_to_yolo`."""
    a = np.asarray(xywhn, dtype=np.float64).reshape(-1, 4)
    cx, cy, w, h = a[:, 0] * width, a[:, 1] * height, a[:, 2] * width, a[:, 3] * height
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def split_by_group(groups: Sequence, val_fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean val mask choosing whole groups (e.g. videos) for validation.

    At least one group goes to validation and at least one stays for training whenever there are
    two or more groups; with one group, every ``round(1/val_fraction)``-th item is validation.
    """
    groups = np.asarray([str(g) for g in groups])
    n = len(groups)
    if n == 0 or val_fraction <= 0:
        return np.zeros(n, bool)
    uniq = np.unique(groups)
    if len(uniq) < 2:
        step = max(2, int(round(1 / val_fraction)))
        mask = np.zeros(n, bool)
        mask[step - 1::step] = True
        return mask
    rng = np.random.default_rng(seed)
    k = int(np.clip(round(len(uniq) * val_fraction), 1, len(uniq) - 1))
    val = set(rng.choice(uniq, size=k, replace=False).tolist())
    return np.array([g in val for g in groups])


def export_dataset(work_dir: str | os.PathLike, images: Sequence[np.ndarray], boxes: Sequence, classes: Sequence,
                   names: Sequence[str], val_mask: Sequence[bool] | None = None,
                   stems: Sequence[str] | None = None, min_size: float = 1.0) -> Path:
    """Write a YOLO detection data set; return the path of its ``data.yaml``.

    ``images[i]`` is uint8 RGB (H, W, 3); ``boxes[i]`` (n, 4) pixels and ``classes[i]`` (n,) ints
    are its objects (n may be 0: a background image). ``val_mask[i]`` puts the image in the
    validation split (default: none; then validation reuses the training images). Boxes are
    clipped to the image; boxes thinner than ``min_size`` pixels after clipping are dropped.
    """
    import cv2
    import yaml

    work = Path(work_dir).resolve()
    n = len(images)
    if len(boxes) != n or len(classes) != n:
        raise ValueError(f"export_dataset: {n} images but {len(boxes)} box lists and {len(classes)} class lists")
    if n == 0:
        raise ValueError("export_dataset: no images to export")
    val_mask = np.zeros(n, bool) if val_mask is None else np.asarray(val_mask, bool)
    if len(val_mask) != n:
        raise ValueError(f"export_dataset: val_mask has {len(val_mask)} entries for {n} images")
    stems = [f"{i:06d}" for i in range(n)] if stems is None else [str(s) for s in stems]
    if len(set(stems)) != n:
        raise ValueError("export_dataset: image stems must be unique")
    for stem in stems:  # stems become file names under work: nothing may point outside it
        if not stem or "\x00" in stem or "/" in stem or "\\" in stem or ".." in stem:
            raise ValueError(f"export_dataset: unsafe image stem {stem!r} (a file name under {work} "
                             "may not be empty or hold '/', '\\', '..' or NUL)")
    for sub in ("images", "labels"):
        shutil.rmtree(work / sub, ignore_errors=True)
    splits = {"train": ~val_mask, "val": val_mask}
    for split in splits:
        (work / "images" / split).mkdir(parents=True, exist_ok=True)
        (work / "labels" / split).mkdir(parents=True, exist_ok=True)
    nc = len(names)
    for i in range(n):
        img = np.asarray(images[i])
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"export_dataset: image {stems[i]} must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
        h, w = img.shape[:2]
        b = np.asarray(boxes[i], dtype=np.float64).reshape(-1, 4)
        c = np.asarray(classes[i], dtype=np.int64).reshape(-1)
        if len(b) != len(c):
            raise ValueError(f"export_dataset: image {stems[i]} has {len(b)} boxes but {len(c)} classes")
        if len(c) and (c.min() < 0 or c.max() >= nc):
            raise ValueError(f"export_dataset: image {stems[i]} has class ids outside 0..{nc - 1}")
        xywh = boxes_to_yolo(b, w, h)
        keep = (xywh[:, 2] * w >= min_size) & (xywh[:, 3] * h >= min_size)
        split = "val" if val_mask[i] else "train"
        # BMP: lossless like PNG, but read back by a copy instead of inflate (read every epoch)
        if not cv2.imwrite(str(work / "images" / split / f"{stems[i]}.bmp"), img[..., ::-1]):
            raise ValueError(f"export_dataset: cannot write image {stems[i]} under {work}")
        lines = [f"{int(k)} {x:.6f} {y:.6f} {ww:.6f} {hh:.6f}" for k, (x, y, ww, hh) in zip(c[keep], xywh[keep])]
        (work / "labels" / split / f"{stems[i]}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    data = {
        "path": str(work),
        "train": "images/train",
        "val": "images/val" if val_mask.any() else "images/train",
        "nc": nc,
        "names": {i: str(nm) for i, nm in enumerate(names)},
    }
    out = work / "data.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def read_dataset(data_yaml: str | os.PathLike, split: str = "train"):
    """Read back an exported split: list of (stem, RGB image, boxes (n,4) pixels, classes (n,))."""
    import cv2
    import yaml

    data = yaml.safe_load(Path(data_yaml).read_text())
    root = Path(data["path"])
    img_dir = root / data[split]
    lbl_dir = root / str(data[split]).replace("images", "labels", 1)
    out = []
    for img_path in sorted(img_dir.glob("*.bmp")):
        img = cv2.imread(str(img_path), cv2.IMREAD_COLOR)[..., ::-1]
        h, w = img.shape[:2]
        txt = (lbl_dir / f"{img_path.stem}.txt").read_text().split()
        arr = np.asarray(txt, dtype=np.float64).reshape(-1, 5)
        out.append((img_path.stem, np.ascontiguousarray(img), yolo_to_boxes(arr[:, 1:], w, h), arr[:, 0].astype(int)))
    return out


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

# Globals a YOLO checkpoint's pickle may name, besides those torch.load(weights_only=True) admits
# by itself (tensors, containers, OrderedDict, ...): layer classes (any torch.nn.Module subclass
# defined in these modules), loss / assigner classes of older checkpoints, and a few data types.
_LAYER_MODULES = ("torch.nn.modules.", "ultralytics.nn.modules.")
_LAYER_MODULES_EXACT = ("torch.nn", "torch.nn.modules", "ultralytics.nn.modules", "ultralytics.nn.tasks")
_CLASS_MODULES = ("ultralytics.utils.loss", "ultralytics.utils.tal")
_DATA_GLOBALS = frozenset({
    "ultralytics.utils.IterableSimpleNamespace", "ultralytics.yolo.utils.IterableSimpleNamespace",
    "numpy.dtype", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib._local.PosixPath", "pathlib._local.WindowsPath",
    "builtins.getattr",  # Detect.forward & co.; ultralytics' loader admits it for nn.Module attributes only
    # renamed classes of older releases, which ultralytics' loader maps to their current ones
    "ultralytics.nn.modules.block.Silence", "ultralytics.nn.tasks.YOLOv10DetectionModel",
    "ultralytics.utils.loss.v10DetectLoss",
})


def _admitted(name: str) -> bool:
    import importlib

    import torch

    if name in _DATA_GLOBALS:
        return True
    module, _, attr = name.rpartition(".")
    layer = module in _LAYER_MODULES_EXACT or module.startswith(_LAYER_MODULES)
    if not (layer or module in _CLASS_MODULES) or not attr.isidentifier():
        return False
    try:  # only modules of torch.nn / ultralytics are imported here, never one the file names freely
        obj = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return False
    if not isinstance(obj, type):
        return False
    return issubclass(obj, torch.nn.Module) if layer else obj.__module__ == module


def check_checkpoint(path: str | os.PathLike) -> list[str]:
    """Refuse a ``.pt`` whose pickle names anything a YOLO checkpoint does not hold.

    Scans the pickle's opcodes for the globals it would import or call (torch's
    ``get_unsafe_globals_in_checkpoint``; nothing in the file is run) and raises ValueError naming
    the file and the refused globals. Returns the admitted globals beyond those torch's weights-only
    loader admits already (which include the classes ultralytics' loader has registered so far).
    """
    import torch

    path = Path(path)
    try:
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception as exc:  # not a torch.save zip archive (garbage, legacy or TorchScript file)
        raise ValueError(f"{path}: not a usable ultralytics YOLO checkpoint (not a torch.save archive: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})") from None
    refused = [n for n in names if not _admitted(n)]
    if refused:
        raise ValueError(f"{path}: refused to load this checkpoint: its pickle calls or imports {refused[:5]}"
                         f"{' ...' if len(refused) > 5 else ''}, which a YOLO checkpoint does not hold "
                         "(only torch / ultralytics layers and plain data); nothing in the file was run")
    return names


def load_model(path: str | os.PathLike, task: str = "detect"):
    """Load a YOLO ``.pt`` checkpoint safely; clear errors naming the file when missing, unusable or
    refused (:func:`check_checkpoint`, then ultralytics' weights_only loader)."""
    configure()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: YOLO model file not found")
    if path.suffix != ".pt":
        raise ValueError(f"{path}: expected an ultralytics YOLO checkpoint ending in .pt")
    check_checkpoint(path)
    _safe_load_on()
    from ultralytics import YOLO

    try:
        model = YOLO(str(path), task=task)
    except Exception as exc:  # torch.load / unpickling / checkpoint layout errors
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if _unpickling_refused(exc):
            msg = msg.removeprefix("ERROR ❌️ ").strip()
            raise ValueError(f"{path}: refused to load this checkpoint: ultralytics' restricted (weights_only) "
                             f"loader blocked it ({msg}); nothing in the file was run") from None
        raise ValueError(f"{path}: not a usable ultralytics YOLO checkpoint ({type(exc).__name__}: {msg})") from None
    if getattr(model, "task", task) != task:
        raise ValueError(f"{path}: checkpoint is a YOLO {model.task!r} model, expected {task!r}")
    return model


def _unpickling_refused(exc: BaseException) -> bool:
    import pickle

    while exc is not None:
        if isinstance(exc, pickle.UnpicklingError) or "blocked during restricted model load" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def model_names(model) -> list[str]:
    names = model.names
    return [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)


def keep_classes(model, ids: Sequence[int], names: Sequence[str]):
    """A copy of a loaded YOLO's detection network whose head predicts only the classes ``ids``, renamed
    ``names`` (e.g. COCO's person as the single class ``person``): the class convolutions of the
    head keep the rows of those classes, every other weight is unchanged. Fine-tuning from it on a
    one-class data set starts from the detector's own person classifier (ultralytics alone would
    re-initialise the class outputs, whose shape no longer fits)."""
    import copy

    import torch
    import torch.nn as nn

    if len(ids) != len(names) or not len(ids):
        raise ValueError(f"keep_classes: {len(ids)} class ids for {len(names)} names")
    net = copy.deepcopy(model.model).float()
    head = net.model[-1]
    idx = torch.as_tensor([int(i) for i in ids])
    for attr in ("cv3", "one2one_cv3"):
        for seq in getattr(head, attr, None) or []:
            conv = seq[-1]
            if not isinstance(conv, nn.Conv2d) or conv.out_channels != head.nc or conv.bias is None:
                raise ValueError(f"keep_classes: unexpected YOLO head ({type(head).__name__}.{attr}); "
                                 "cannot select classes")
            new = nn.Conv2d(conv.in_channels, len(ids), conv.kernel_size, conv.stride, conv.padding, bias=True)
            with torch.no_grad():
                new.weight.copy_(conv.weight[idx])
                new.bias.copy_(conv.bias[idx])
            seq[-1] = new
    head.nc = len(ids)
    head.no = head.nc + head.reg_max * 4
    net.nc = head.nc
    if isinstance(getattr(net, "yaml", None), dict):
        net.yaml["nc"] = head.nc
    net.names = {i: str(n) for i, n in enumerate(names)}
    return net


def save_detection_checkpoint(net, path: str | os.PathLike) -> Path:
    """Save a detection network as an ultralytics checkpoint (``{"model": ..., "train_args": ...}``) that
    :func:`load_model` and ultralytics' trainer read."""
    import copy

    import torch
    import ultralytics

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"epoch": -1, "best_fitness": None, "model": copy.deepcopy(net).half(), "ema": None, "updates": None,
                "optimizer": None, "train_args": {"task": "detect"}, "version": ultralytics.__version__}, tmp)
    os.replace(tmp, path)
    return path


def _build(model_cfg: str):
    """A fresh (untrained) YOLO from a model yaml shipped with ultralytics or a local yaml path."""
    configure()
    from ultralytics import YOLO

    if not str(model_cfg).endswith((".yaml", ".yml")):
        raise ValueError(f"model {model_cfg!r}: expected a YOLO model yaml such as 'yolo11n.yaml'")
    try:
        return YOLO(str(model_cfg), task="detect")
    except FileNotFoundError:
        raise FileNotFoundError(f"{model_cfg}: YOLO model yaml not found "
                                "(neither a file nor shipped with ultralytics)") from None


@dataclass
class TrainResult:
    weights: Path  # best.pt (or last.pt) inside the run folder
    epochs: int
    train_images: int
    val_images: int
    seconds: float
    map50: float
    map50_95: float
    extra: dict = field(default_factory=dict)
    class_map50: dict = field(default_factory=dict)  # {class name: val AP@0.5} of the final validation
    history: dict = field(default_factory=dict)  # per-epoch train losses from ultralytics' results.csv

    def unlearned(self, below: float = 0.01) -> list[str]:
        """Classes whose final val AP@0.5 is below ``below``: in practice, never detected at all."""
        return [name for name, ap in self.class_map50.items() if ap < below]

    def info(self) -> dict:
        return {
            "epochs": self.epochs, "train_images": self.train_images, "val_images": self.val_images,
            "train_seconds": round(self.seconds, 2), "val_map50": round(self.map50, 4),
            "val_map50_95": round(self.map50_95, 4), "history": self.history, **self.extra,
        }


def _count(folder: Path) -> int:
    return len(list(folder.glob("*.bmp"))) if folder.exists() else 0


def _log_epoch(trainer) -> None:
    """ultralytics callback: one ``progress: <epoch>/<epochs> epochs loss=...`` line per epoch (YOLO itself
    is quiet, YOLO_VERBOSE=False); the Prefect flow shows these lines as progress."""
    done = min(int(trainer.epoch) + 1, int(trainer.epochs))
    if getattr(trainer, "_actparse_logged", None) == done:  # a redone epoch (ultralytics' NaN recovery)
        return
    trainer._actparse_logged = done
    tloss = getattr(trainer, "tloss", None)
    try:
        parts = tloss.values() if isinstance(tloss, dict) else ([] if tloss is None else [tloss])
        loss = sum(float(v.sum()) if hasattr(v, "sum") else float(v) for v in parts) if parts else None
    except (TypeError, ValueError):
        loss = None
    extra = "" if loss is None or not math.isfinite(loss) else f" loss={loss:.4g}"
    fit = (getattr(trainer, "_actparse_val", None) or {}).get(done)
    extra += f" val_map50={fit:.4g}" if fit is not None else ""
    log.info("progress: %d/%d epochs%s", done, trainer.epochs, extra)


def _validate_epoch(trainer) -> None:
    """ultralytics callback: the val AP@0.5 of this epoch's EMA model, kept in ``trainer._actparse_val``
    ({epoch: mAP50}) for the training curves. actparse trains with ``val=False``, so ultralytics itself
    validates only after the last epoch (and keeps that model); the other epochs are validated here,
    outside the trainer's bookkeeping (its fitness, best.pt and early stopping are untouched) and with
    the random states put back, so the weights are those of a run without it."""
    from .train import monitoring

    done = int(trainer.epoch) + 1
    vals = trainer.__dict__.setdefault("_actparse_val", {})
    validated = bool(trainer.args.val) or done >= int(trainer.epochs)
    if validated:
        metrics = trainer.metrics or {}
    else:
        with monitoring():
            metrics = trainer.validator(trainer) or {}
    fit = metrics.get("metrics/mAP50(B)")
    if fit is not None and math.isfinite(float(fit)):
        vals[done] = round(float(fit), 6)


def train(data_yaml: str | os.PathLike, run_dir: str | os.PathLike, *, model: str = "yolo11n.yaml",
          weights: str | os.PathLike | None = None, epochs: int = 10, imgsz: int = 160, batch: int = 16,
          lr0: float = 0.01, optimizer: str = "auto", device: str = "cpu", seed: int = 0, workers: int = 0,
          patience: int = 100, threads: int = 0, amp: bool = False, monitor_val: bool = True,
          **overrides) -> TrainResult:
    """Train a detector; ``weights`` (a ``.pt``) fine-tunes it, else a fresh ``model`` yaml is trained.

    The ultralytics run goes to ``run_dir/train`` (overwritten). Extra keyword arguments are
    passed on as ultralytics train arguments (e.g. ``mosaic=0.5``, ``hsv_h=0.0``, ``fliplr=0``).
    ``threads``: torch CPU threads (0 = the default), see :func:`set_threads`. ``amp``: bf16 autocast
    on a CUDA device that supports it (ultralytics' fp16 AMP self-check would download a checkpoint,
    bf16 skips it); ignored on CPU. ``monitor_val``: when the data set has its own val split, also
    validate after every epoch (val AP@0.5 per epoch in ``history["val_map50"]``, the training curves);
    the trained weights are the same either way.
    """
    set_threads(threads)
    data_yaml = Path(data_yaml).resolve()
    if not data_yaml.is_file():
        raise FileNotFoundError(f"{data_yaml}: data set yaml not found")
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run_dir / "train", ignore_errors=True)
    yolo = load_model(weights) if weights else _build(model)
    args = dict(
        data=str(data_yaml), epochs=int(epochs), imgsz=int(imgsz), batch=int(batch), lr0=float(lr0),
        optimizer=optimizer, device=device, seed=int(seed), deterministic=True, workers=int(workers),
        project=str(run_dir), name="train", exist_ok=True, plots=False, amp=_amp_arg(amp, device),
        verbose=False,
        val=False, patience=int(patience), cache=False, save=True,
        # ultralytics builds the trained model from the architecture and copies in the weights of the
        # loaded model only with pretrained=True (False: a fresh model, even when fine-tuning a .pt)
        pretrained=weights is not None,
    )
    args.update(overrides)
    t0 = time.time()
    cwd = os.getcwd()
    try:
        os.chdir(run_dir)  # anything ultralytics writes relative to the cwd stays in the run folder
        if monitor_val and _has_val_split(data_yaml):
            yolo.add_callback("on_fit_epoch_end", _validate_epoch)
        yolo.add_callback("on_fit_epoch_end", _log_epoch)
        yolo.train(**args)
    finally:
        os.chdir(cwd)
    seconds = time.time() - t0
    trainer = yolo.trainer
    wdir = Path(trainer.save_dir) / "weights"
    best = wdir / "best.pt" if (wdir / "best.pt").exists() else wdir / "last.pt"
    if not best.exists():
        raise RuntimeError(f"{wdir}: training finished without writing best.pt or last.pt")
    metrics = getattr(trainer, "metrics", None) or {}
    import yaml

    data = yaml.safe_load(data_yaml.read_text())
    root = Path(data["path"])
    return TrainResult(
        weights=best, epochs=int(getattr(trainer, "epoch", int(epochs) - 1)) + 1,
        train_images=_count(root / data["train"]),
        val_images=_count(root / data["val"]), seconds=seconds,
        map50=float(metrics.get("metrics/mAP50(B)", float("nan"))),
        map50_95=float(metrics.get("metrics/mAP50-95(B)", float("nan"))),
        class_map50=_class_map50(getattr(trainer, "validator", None), data.get("names")),
        history=_with_val(_loss_history(Path(trainer.save_dir) / "results.csv"),
                          getattr(trainer, "_actparse_val", None)),
    )


def _has_val_split(data_yaml: Path) -> bool:
    """Whether the data set's val images are not its train images (see :func:`export_dataset`)."""
    import yaml

    data = yaml.safe_load(Path(data_yaml).read_text())
    return bool(data.get("val")) and data.get("val") != data.get("train")


def _with_val(history: dict, vals: dict | None) -> dict:
    """``history`` plus ``val_map50`` (one value per epoch) when every epoch was validated."""
    n = len(next(iter(history.values()))) if history else 0
    if vals and n and all(e in vals for e in range(1, n + 1)):
        history = {**history, "val_map50": [vals[e] for e in range(1, n + 1)]}
    return history


#: the per-epoch columns of ultralytics' results.csv kept in train_info.json (its "time" column is left
#: out so that the same training writes the same file; its val columns are 0 on epochs without a
#: validation: ultralytics validates only after the last epoch, the per-epoch val AP@0.5 comes from
#: :func:`_validate_epoch` instead)
HISTORY_COLUMNS = {"train/box_loss": "box_loss", "train/cls_loss": "cls_loss", "train/dfl_loss": "dfl_loss"}


def _loss_history(results_csv: Path) -> dict:
    """{box_loss: [...], cls_loss: [...], dfl_loss: [...]} per epoch from ultralytics' results.csv;
    {} when the file is missing or holds none of these columns."""
    import csv

    if not results_csv.is_file():
        return {}
    with open(results_csv, newline="") as fh:
        rows = [{k.strip(): v for k, v in r.items() if k} for r in csv.DictReader(fh)]
    out = {}
    for src, name in HISTORY_COLUMNS.items():
        try:
            vals = [round(float(r[src]), 6) for r in rows]
        except (KeyError, TypeError, ValueError):
            continue
        out[name] = vals
    return out


def _class_map50(validator, names) -> dict:
    """{class name: AP@0.5} of the trainer's last validation, for each class with val instances;
    {} when the validator kept no per-class results."""
    box = getattr(getattr(validator, "metrics", None), "box", None)
    if box is None or names is None:
        return {}
    names = names if isinstance(names, dict) else dict(enumerate(names))
    try:
        pairs = zip(box.ap_class_index, box.ap50)
        return {str(names[int(c)]): round(float(a), 4) for c, a in pairs}
    except (AttributeError, TypeError, KeyError):
        return {}


def _amp_arg(amp: bool, device: str):
    """``"bf16"`` on a bf16-capable CUDA device when asked for, else False (never the fp16 self-check)."""
    if not amp or not str(device).startswith("cuda"):
        return False
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else False


def save_final(result_weights: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a trained ``.pt`` to ``dst`` atomically."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(result_weights, tmp)
    os.replace(tmp, dst)
    return dst


def class_ids(model, wanted: Sequence[str] | None = None, source: str | os.PathLike = "model") -> list[int]:
    """Indices of the classes named in ``wanted`` (default ``["person"]``; case-insensitive) among the
    model's class names. A name the model lacks is a ValueError naming ``source`` and its classes."""
    names = model_names(model)
    wanted = ["person"] if wanted is None else list(wanted)
    if not wanted:
        raise ValueError(f"{source}: no detector classes asked for (an empty class list)")
    lower = [str(n).lower() for n in names]
    ids, missing = [], []
    for w in wanted:
        if str(w).lower() in lower:
            ids.append(lower.index(str(w).lower()))
        else:
            missing.append(str(w))
    if missing:
        shown = ", ".join(map(repr, names[:12])) + (f", ... ({len(names)} classes)" if len(names) > 12 else "")
        raise ValueError(f"{source}: detector has no class named {', '.join(map(repr, missing))} "
                         f"(its classes: {shown}); set person_detector.classes to the class name(s) to keep")
    return sorted(set(ids))


def predict(model, images: Sequence[np.ndarray], *, imgsz: int = 160, conf: float = 0.25, iou: float = 0.7,
            max_det: int = 300, batch: int = 32, device: str = "cpu", agnostic_nms: bool = False, threads: int = 0,
            classes: Sequence[int] | None = None):
    """Batched prediction on RGB images.

    Returns one ``(boxes (n,4) float32 pixels, scores (n,) float32, classes (n,) int64)`` per image,
    sorted by score (descending). ``threads``: torch CPU threads (0 = the default, see :func:`set_threads`).
    ``classes``: keep only detections of these class indices (filtered before NMS and ``max_det``); None
    keeps all.
    """
    set_threads(threads)
    out = []
    batch = max(1, int(batch))
    for start in range(0, len(images), batch):
        chunk = [np.ascontiguousarray(np.asarray(im)[..., ::-1]) for im in images[start:start + batch]]  # RGB -> BGR
        results = model.predict(chunk, imgsz=int(imgsz), conf=float(conf), iou=float(iou), max_det=int(max_det),
                                device=device, verbose=False, save=False, agnostic_nms=agnostic_nms,
                                classes=None if classes is None else [int(c) for c in classes])
        for r in results:
            bx = r.boxes
            boxes = bx.xyxy.cpu().numpy().astype(np.float32).reshape(-1, 4)
            scores = bx.conf.cpu().numpy().astype(np.float32).reshape(-1)
            classes = bx.cls.cpu().numpy().astype(np.int64).reshape(-1)
            order = np.argsort(-scores, kind="stable")
            out.append((boxes[order], scores[order], classes[order]))
    return out


# --------------------------------------------------------------------------------------------
# Stage helpers
# --------------------------------------------------------------------------------------------

def train_args(params: dict, section: str) -> dict:
    """Keyword arguments for :func:`train` from a detector section of params (e.g. ``person_detector``)."""
    from .params import get, resolve_device

    s = section
    return dict(
        model=get(params, f"{s}.model", str),
        imgsz=get(params, f"{s}.imgsz", int, min_value=32),
        epochs=get(params, f"{s}.epochs", int, min_value=1),
        batch=get(params, f"{s}.batch", int, min_value=1),
        lr0=get(params, f"{s}.lr0", float, min_value=0.0),
        optimizer=get(params, f"{s}.optimizer", str,
                      choices=("auto", "SGD", "Adam", "AdamW", "NAdam", "RAdam", "RMSprop")),
        warmup_epochs=get(params, f"{s}.warmup_epochs", float, min_value=0.0),
        mosaic=get(params, f"{s}.mosaic", float, min_value=0.0, max_value=1.0),
        close_mosaic=get(params, f"{s}.close_mosaic", int, min_value=0),
        fliplr=get(params, f"{s}.fliplr", float, min_value=0.0, max_value=1.0),
        workers=get(params, f"{s}.workers", int, min_value=0),
        threads=get(params, f"{s}.threads", int, min_value=0),
        amp=get(params, f"{s}.amp", bool),
        seed=get(params, "seed", int),
        device=resolve_device(params),
    )


def person_class_ids(params: dict, model, source: str | os.PathLike = "model") -> list[int]:
    """Indices of the detector classes that count as persons (``person_detector.classes``, default
    the class named "person"), so that a COCO-pretrained ``.pt`` yields person boxes only; logs
    what is kept when the model has other classes."""
    from .params import ParamError, get

    key = "person_detector.classes"
    wanted = get(params, key, (list, type(None)))
    if wanted is not None and not all(isinstance(w, str) and w for w in wanted):
        raise ParamError.of(params, f"parameter {key!r} must be a list of class names "
                         f"or null, got {wanted!r}")
    ids = class_ids(model, wanted, source)
    names = model_names(model)
    if len(names) > len(ids):
        log.info("%s: keeping %d of the detector's %d classes as persons: %s", source, len(ids), len(names),
                 ", ".join(f"{i} {names[i]!r}" for i in ids))
    return ids


def finish_model_dir(model_dir: str | os.PathLike, result: TrainResult | None, weights: str | None,
                     extra: dict) -> None:
    """Copy the final weights (trained, or the user's) to ``model.pt``; write ``train_info.json``."""
    from .atomic import write_json

    model_dir = Path(model_dir)
    src = result.weights if result is not None else Path(weights)
    save_final(src, model_dir / "model.pt")
    info = {"trained": result is not None, "source_weights": str(weights) if weights else None}
    if result is not None:
        info.update(result.info())
    info.update(extra)
    write_json(info, model_dir / "train_info.json")
