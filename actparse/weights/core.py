"""Reading weight files safely and unwrapping them to a flat state dict (shared by every key map).

* :func:`read_state_dict` loads with ``torch.load(weights_only=True)``; a Caffe2 ``.pkl`` (PySlowFast's
  model zoo: ``{"blobs": {name: numpy array}}``) is read by a restricted unpickler that only rebuilds
  numpy arrays. No file can run code while being read.
* :func:`strip_wrappers` drops ``module.`` prefixes and keeps the ``backbone.`` part of a whole
  recognizer; :func:`drop_head` drops classifier keys (both log what they ignore).
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from .. import safe_pickle

log = logging.getLogger("actparse.weights")


class KeyMapError(ValueError):
    """A checkpoint key that the chosen layout cannot place in our model's naming."""


def short_list(keys: Sequence[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


# --------------------------------------------------------------------------------------------
# Caffe2 pickles: the project's allow-listed unpickler (containers, numbers, strings, numpy arrays)
# --------------------------------------------------------------------------------------------
def read_caffe2_pickle(path: Path) -> dict:
    """A Caffe2 checkpoint (Python 2 pickle of ``{"blobs": {...}}``) read without running code."""
    return safe_pickle.load(path, kind="Caffe2 blob files")


# --------------------------------------------------------------------------------------------
# Reading and unwrapping
# --------------------------------------------------------------------------------------------
def read_state_dict(path: Path, what: str, expected: str) -> dict[str, torch.Tensor]:
    """Flat ``{key: tensor}`` of a weight file, read safely.

    ``torch.load(weights_only=True)`` first; a non-zip file that torch cannot read is tried as a
    Caffe2 pickle of numpy arrays (its non-array blobs are dropped). The dict may sit under
    ``state_dict``, ``model_state``, ``model`` or ``blobs`` (two levels deep at most).
    ``what`` / ``expected`` only word the error messages (file, model, layout).
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        obj = None
        if not zipfile.is_zipfile(path):
            try:
                obj = read_caffe2_pickle(path)
            except Exception as c2_exc:
                if isinstance(c2_exc, safe_pickle.RefusedPickle):  # a pickle with other globals: say which one
                    raise ValueError(f"{path}: cannot load {what}: the pickle is neither a torch file nor a "
                                     f"Caffe2 blob file: {c2_exc} ({expected} expected)") from None
                obj = None
            if not (isinstance(obj, dict) and isinstance(obj.get("blobs"), dict)):
                obj = None
        if obj is None:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [repr(exc)]
            detail = next((ln for ln in lines if "Unsupported global" in ln), lines[0])
            detail = detail.split(" Please use")[0].rstrip(".")  # torch's allow-listing advice is not ours
            hint = ""
            if "weights_only" in str(exc) or "Unsupported global" in str(exc):
                hint = ("; the file holds Python objects besides tensors: save its state dict alone "
                        "(see docs/checkpoints.md)")
            raise ValueError(f"{path}: cannot load {what} with torch.load(weights_only=True) "
                             f"({expected} expected): {detail}{hint}") from None
    for _ in range(2):  # {"state_dict": ...}, {"model_state": ...}, {"model": {"state_dict": ...}}, {"blobs": ...}
        for key in ("state_dict", "model_state", "model", "blobs"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if isinstance(obj, dict) and obj and any(isinstance(v, np.ndarray) for v in obj.values()):
        skipped = [k for k, v in obj.items() if not isinstance(v, np.ndarray)]
        if skipped:
            log.info("%s: ignoring %d non-array blob(s) (%s)", path, len(skipped), short_list(skipped))
        obj = {str(k): torch.from_numpy(np.ascontiguousarray(v)) for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state dict of tensors ({expected} expected)")
    return obj


def strip_wrappers(state: Mapping[str, torch.Tensor], name: str,
                   logger: logging.Logger | None = None) -> dict[str, torch.Tensor]:
    """Drop ``module.`` (DataParallel / DDP) prefixes; with ``backbone.*`` keys (a whole recognizer, as
    mmaction2 saves it) keep only those, without the prefix, and log what else is ignored."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    if any(k.startswith("backbone.") for k in out):
        other = [k for k in out if not k.startswith("backbone.")]
        if other:
            (logger or log).info("%s layout: ignoring %d non-backbone key(s) (%s)", name, len(other),
                                 short_list(other))
        out = {k[len("backbone."):]: v for k, v in out.items() if k.startswith("backbone.")}
    return out


def drop_head(state: dict[str, torch.Tensor], name: str, prefixes: tuple[str, ...],
              logger: logging.Logger | None = None) -> dict[str, torch.Tensor]:
    head = [k for k in state if k.startswith(prefixes)]
    if head:
        (logger or log).info("%s layout: ignoring %d classifier key(s) (%s)", name, len(head), short_list(head))
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}


def check_keys(path, src: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor], where: str, note: str,
               file_key=lambda k: "", missing_hint: str = "", shape_hint: str = "", extra_hint: str = "") -> list[str]:
    """Check a renamed state dict ``src`` against the model's ``want``: the first missing key, shape
    mismatch or unexpected key is a ``ValueError`` naming ``path`` and the key (``file_key(k)`` adds the
    name the file gives it, the hints say what the file holds; ``note`` ends every message). Returns the
    BN ``num_batches_tracked`` counters the file lacks (the model keeps its own; logged)."""
    filled = []
    for k, v in want.items():
        if k not in src:
            if k.endswith(".num_batches_tracked"):
                filled.append(k)
                continue
            raise ValueError(f"{path}: first mismatching key {k!r}: missing from the file, needed by the {where}; "
                             f"{missing_hint}; {note}")
        if tuple(src[k].shape) != tuple(v.shape):
            raise ValueError(f"{path}: first mismatching key {k!r}: shape {tuple(src[k].shape)} in file, "
                             f"{tuple(v.shape)} in the {where}{file_key(k)}{shape_hint}; {note}")
    extra = [k for k in src if k not in want]
    if extra:
        raise ValueError(f"{path}: first mismatching key {extra[0]!r}{file_key(extra[0])}: not in the {where} "
                         f"({len(extra)} unexpected key(s); {extra_hint}); {note}")
    if filled:
        log.info("%s: %d BN num_batches_tracked counter(s) absent from the file; kept the model's", path, len(filled))
    return filled
