"""Channel-Separated Networks (CSN) for video-level action and part-state recognition (seed 001 sec 1.3):
pretrained weights, training, inference, ensembling, checkpoints and model folders, params section ``csn``.

The networks (ir-CSN, ip-CSN, :class:`~actparse.models.csn.MultiTaskCSN` with its seven task heads)
are built in :mod:`actparse.models.csn`; seeding, the SGD optimizer and the learning-rate schedule
come from :mod:`actparse.train`. Pretrained backbone weights load from a local file in pytorchvideo's
key layout (``blocks.0.conv.weight``, ``blocks.1.res_blocks.0.branch2.conv_a...``) or, through
:data:`KEY_MAPS`, in VMZ's or mmaction2's CSN layout, checked strictly (docs/checkpoints.md).
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .models.csn import DEPTHS, TASKS, VARIANTS, CSNConfig, MultiTaskCSN
from .train import Schedule, make_optimizer, read_checkpoint, save_checkpoint as _save

log = logging.getLogger("actparse.csn")


# --------------------------------------------------------------------------------------------
# Pretrained weights
# --------------------------------------------------------------------------------------------
# The key maps and the safe reader live in actparse.weights (one mechanism for every backbone).
from .weights.core import KeyMapError, check_keys, short_list as _short_list  # noqa: E402
from .weights.csn import KEY_MAPS, LAYOUTS, _describe, _raw_state_dict  # noqa: E402,F401


def _blocks_per_stage(keys: Iterable[str]) -> list[int]:
    n = [0, 0, 0, 0]
    for k in keys:
        m = re.match(r"blocks\.([1-4])\.res_blocks\.(\d+)\.", k)
        if m:
            n[int(m[1]) - 1] = max(n[int(m[1]) - 1], int(m[2]) + 1)
    return n


def load_pretrained(model: MultiTaskCSN, path: str | os.PathLike, key_map: str = "pytorchvideo") -> int:
    """Load backbone weights into every backbone of ``model`` from ``path`` (strict).

    ``key_map`` names the file's key layout (:data:`KEY_MAPS`: ``pytorchvideo``, ``vmz``, ``mmaction2``);
    ``module.`` / ``backbone.`` prefixes and classifier heads are dropped (logged). After mapping, the
    file's keys must be exactly the backbone's keys with equal shapes (a missing BN
    ``num_batches_tracked`` counter, absent from converted checkpoints, is kept from the model);
    otherwise a ValueError names the file, the first mismatching key (with both shapes, and the file's
    own key name) and the layout expected. Returns the number of tensors loaded per backbone.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: pretrained CSN weights not found")
    if key_map not in KEY_MAPS:
        raise ValueError(f"unknown pretrained key_map {key_map!r}; known: {sorted(KEY_MAPS)}")
    raw = _raw_state_dict(path, key_map)
    try:
        src = KEY_MAPS[key_map](raw)
    except KeyMapError as exc:
        fits = []
        for other, fn in KEY_MAPS.items():
            if other != key_map:
                try:
                    fn(raw)
                    fits.append(other)
                except KeyMapError:
                    pass
        hint = f"; the file looks like key_map {' / '.join(map(repr, fits))}" if fits else ""
        raise ValueError(f"{path}: {exc}{hint}") from None
    origin = {id(v): k for k, v in raw.items()}

    def file_key(k: str) -> str:
        o = origin.get(id(src[k]))
        return f" (file key {o!r})" if o and o != k else ""

    cfg = model.cfg
    where = f"{cfg.variant}-CSN backbone (depth {cfg.depth}, blocks per stage {list(cfg.blocks_per_stage)})"
    fmt = f"read with {_describe(key_map)}"
    head_prefix = f"blocks.{len(model.backbones()[0].blocks)}."
    head = [k for k in src if k.startswith(head_prefix)]
    if head:
        log.info("%s: ignoring %d classifier key(s) (%s)", path, len(head), _short_list(head))
    src = {k: v for k, v in src.items() if not k.startswith(head_prefix)}
    in_file = f"the file has blocks per stage {_blocks_per_stage(src)}"
    if any(".conv_b.pointwise." in k for k in src) != (cfg.variant == "ip"):
        in_file += f" and holds {'ip' if cfg.variant == 'ir' else 'ir'}-CSN weights"
    want = model.backbones()[0].state_dict()
    check_keys(path, src, want, where, fmt, file_key, missing_hint=in_file,
               extra_hint=f"wrong variant or depth? {in_file}")
    for bb in model.backbones():
        sd = bb.state_dict()
        bb.load_state_dict({k: (src[k] if k in src else sd[k]).to(dtype=want[k].dtype) for k in want}, strict=True)
    return len(want)


# --------------------------------------------------------------------------------------------
# Optimisation (seed 001 recipe: SGD Nesterov 0.9, wd 1e-4, linear warm-up, step decay: actparse.train)
# --------------------------------------------------------------------------------------------
def multitask_loss(logits: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sum over tasks of the mean cross-entropy."""
    return sum(F.cross_entropy(logits[t], targets[t]) for t in targets)


def train_step(model: MultiTaskCSN, clips: torch.Tensor, targets: Mapping[str, torch.Tensor],
               optimizer: torch.optim.Optimizer) -> float:
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = multitask_loss(model(clips), targets)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


# --------------------------------------------------------------------------------------------
# Inference and ensembling
# --------------------------------------------------------------------------------------------
def memory_format(device: str) -> torch.memory_format:
    """Layout of clips and weights: channels-last on the CPU (about 30% faster convolutions there);
    contiguous on CUDA, where cuDNN's depthwise 3D convolutions of CSN-152 run faster in it
    (a bf16 training step at 32x224x224: 150 ms against 192 ms on an H200, benchmarks/csn_step.py)."""
    return torch.channels_last_3d if str(device) == "cpu" else torch.contiguous_format


def _cuda_setup(device: str) -> None:
    """Fixed clip shapes: let cuDNN time its algorithms once (its heuristics pick slow ones for
    depthwise 3D convolutions: a CSN-152 step took 1.4 s instead of 0.15-0.19 s)."""
    if str(device).startswith("cuda"):
        torch.backends.cudnn.benchmark = True


@torch.no_grad()
def clip_probs(model: MultiTaskCSN, clips: torch.Tensor, device: str = "cpu",
               batch_size: int = 16) -> dict[str, np.ndarray]:
    """Per-clip softmax scores: ``{task: probs (N, n_classes)}`` for ``clips`` (N, C, T, H, W)."""
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    use_amp = device.startswith("cuda")
    _cuda_setup(device)
    mem = memory_format(device)
    for s in range(0, len(clips), batch_size):
        x = clips[s:s + batch_size].to(device, non_blocking=True).contiguous(memory_format=mem)
        with torch.autocast("cuda", enabled=use_amp):
            out = model(x)
        for t, logits in out.items():
            parts.setdefault(t, []).append(logits.float().softmax(dim=1).cpu())
    return {t: torch.cat(v).numpy() for t, v in parts.items()}


def predict_clips(model: MultiTaskCSN, clips: torch.Tensor, device: str = "cpu",
                  batch_size: int = 16) -> dict[str, np.ndarray]:
    """Softmax over classes averaged over the N clips of one video: ``{task: probs (n_classes,)}``."""
    return {t: p.mean(0) for t, p in clip_probs(model, clips, device, batch_size).items()}


def ensemble(probs: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Weighted average of per-model probability vectors (seed 001 Tables 2-3 fusion)."""
    names = [m for m in probs if weights.get(m, 0.0) > 0]
    if not names:
        raise ValueError(f"ensemble weights {dict(weights)} give no positive weight to any of {list(probs)}")
    w = np.array([float(weights[m]) for m in names])
    p = np.stack([np.asarray(probs[m], dtype=np.float64) for m in names])
    return (w[:, None] * p).sum(0) / w.sum()


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def save_checkpoint(model: MultiTaskCSN, path: str | os.PathLike, classes: Mapping[str, Sequence[str]],
                    extra: Mapping | None = None) -> Path:
    """Atomically save weights + architecture + class lists."""
    return _save({"config": model.cfg.to_dict(), "classes": {t: list(c) for t, c in classes.items()},
                       "model_state": model.state_dict(), "extra": dict(extra or {})}, path)


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[MultiTaskCSN, dict]:
    """Rebuild a model saved by :func:`save_checkpoint`; returns (model in eval mode, checkpoint dict)."""
    model, ck = read_checkpoint(path, "CSN", "train_csn", lambda ck: MultiTaskCSN(
        CSNConfig(**ck["config"]), {t: len(c) for t, c in ck["classes"].items()}))
    model.load_state_dict(ck["model_state"], strict=True)
    return model.to(device).eval(), ck


# --------------------------------------------------------------------------------------------
# A trained CSN model folder (artifacts/models/csn): one checkpoint per variant + model.json
# --------------------------------------------------------------------------------------------
MODEL_MANIFEST = "model.json"
MODEL_FORMAT = "actparse-csn"
MODEL_FORMAT_VERSION = 2


@dataclass
class CSNModelDir:
    """A whole trained CSN (every variant with its seven heads) as :func:`load_model_dir` returns it."""

    path: Path
    variants: list[str]
    models: dict[str, MultiTaskCSN]
    specs: dict                           # {variant: clips.ClipSpec} the variant was trained with
    classes: dict[str, list[str]]         # {task: labels}: the order of every head's outputs
    baseline: dict[str, dict[str, str]]  # {action: {part: state}} (seed 001 submission 1), may be {}
    manifest: dict
    extras: dict = field(default_factory=dict)  # {variant: the checkpoint's ``extra`` (clip, val_videos...)}


def write_model_manifest(model_dir: str | os.PathLike, variants: Sequence[str], classes: Mapping[str, Sequence[str]],
                         clip: Mapping, baseline: Mapping | None = None, extra: Mapping | None = None) -> Path:
    """``model.json`` of a CSN model folder: what inference needs besides the weights (which live,
    with each variant's architecture, class lists and clip settings, in ``<variant>.pt``)."""
    from .clips import CSN_MEAN, CSN_STD
    from .atomic import write_json

    manifest = {"format": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION, "variants": list(variants),
                "files": {v: f"{v}.pt" for v in variants}, "tasks": list(classes),
                "classes": {t: list(c) for t, c in classes.items()},
                "clip": dict(clip), "normalisation": {"mean": list(CSN_MEAN), "std": list(CSN_STD), "scale": 255},
                "baseline": dict(baseline or {}), **dict(extra or {})}
    return write_json(manifest, Path(model_dir) / MODEL_MANIFEST)


def read_model_manifest(model_dir: str | os.PathLike) -> dict:
    """``model.json`` of a CSN model folder; a folder written before it existed (checkpoints only)
    gets one built from its ``<variant>.pt`` files."""
    import json

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: CSN model folder not found")
    path = model_dir / MODEL_MANIFEST
    if not path.exists():
        found = [v for v in VARIANTS if (model_dir / f"{v}.pt").exists()]
        if not found:
            raise FileNotFoundError(f"{model_dir}: not a CSN model folder (no {MODEL_MANIFEST} and no "
                                    f"{' / '.join(v + '.pt' for v in VARIANTS)})")
        return {"format": MODEL_FORMAT, "version": 1, "variants": found, "files": {v: f"{v}.pt" for v in found}}
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not an actparse CSN model manifest (format {MODEL_FORMAT!r} expected)")
    if int(manifest.get("version", 0)) > MODEL_FORMAT_VERSION:
        raise ValueError(f"{path}: model format version {manifest.get('version')} is newer than this actparse "
                         f"reads ({MODEL_FORMAT_VERSION}); update actparse")
    variants = manifest.get("variants")
    if not isinstance(variants, list) or not variants or any(v not in VARIANTS for v in variants):
        raise ValueError(f"{path}: 'variants' must be a non-empty list from {list(VARIANTS)}, got {variants!r}")
    files = manifest.get("files") or {v: f"{v}.pt" for v in variants}
    bad = [f for f in files.values() if not isinstance(f, str) or Path(f).name != f]
    if bad:
        raise ValueError(f"{path}: checkpoint file names must be plain names inside the folder, got {bad}")
    manifest["files"] = files
    return manifest


def clip_spec_of(ck: Mapping, path: Path):
    """The :class:`~actparse.clips.ClipSpec` a checkpoint was trained with (stored under extra.clip)."""
    from dataclasses import fields

    from .clips import ClipSpec

    clip = (ck.get("extra") or {}).get("clip")
    if not clip:
        raise ValueError(f"{path}: checkpoint has no clip settings; rerun train_csn")
    known = {f.name for f in fields(ClipSpec)}
    try:
        return ClipSpec(**{k: tuple(x) if isinstance(x, list) else x for k, x in clip.items() if k in known})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: bad clip settings in the checkpoint: {exc}") from None


def load_model_dir(model_dir: str | os.PathLike, device: str = "cpu",
                   variants: Sequence[str] | None = None) -> CSNModelDir:
    """Load a whole trained CSN folder: every variant (or ``variants``) with its heads, class lists,
    clip settings, and the baseline table. The variants must agree on their class lists."""
    model_dir = Path(model_dir)
    manifest = read_model_manifest(model_dir)
    want = list(variants) if variants else list(manifest["variants"])
    missing = [v for v in want if v not in manifest["files"]]
    if missing:
        raise FileNotFoundError(f"{model_dir}: no CSN variant(s) {missing} in this model folder "
                                f"(it has {list(manifest['files'])}); set csn.variants to those")
    models, specs, extras, classes = {}, {}, {}, None
    for v in want:
        path = model_dir / manifest["files"][v]
        model, ck = load_checkpoint(path, device)
        if model.cfg.variant != v:
            raise ValueError(f"{path}: checkpoint holds a {model.cfg.variant}-CSN, expected {v}")
        if classes is None:
            classes = ck["classes"]
        elif ck["classes"] != classes:
            raise ValueError(f"{path}: class lists differ from those of the other variants in {model_dir}")
        models[v] = model
        specs[v] = clip_spec_of(ck, path)
        extras[v] = dict(ck.get("extra") or {})
    if manifest.get("classes") not in (None, classes):
        raise ValueError(f"{model_dir / MODEL_MANIFEST}: class lists differ from those in the checkpoints")
    if "action" not in classes:
        raise ValueError(f"{model_dir}: the checkpoints have no 'action' head")
    return CSNModelDir(path=model_dir, variants=want, models=models, specs=specs,
                       classes={t: list(c) for t, c in classes.items()},
                       baseline=dict(manifest.get("baseline") or {}), manifest=manifest, extras=extras)


# --------------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------------
@dataclass
class TrainSettings:
    """Training settings: params section ``csn`` (:func:`train_settings_from_params`); no defaults here."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    nesterov: bool
    warmup_iters: int
    lr_steps: tuple[float, ...]
    lr_gamma: float
    mixup_alpha: float  # > 0: mix pairs of clips (and their targets) with Beta(a, a) weights

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr_steps"] = list(self.lr_steps)
        return d


def fit(model: MultiTaskCSN, videos: Sequence[np.ndarray], targets: Mapping[str, np.ndarray], spec,
        settings: TrainSettings, seed: int = 0, device: str = "cpu", desc: str = "train",
        position: int | None = None, val: tuple[Sequence[np.ndarray], Mapping[str, np.ndarray]] | None = None
        ) -> dict:
    """Train ``model`` on one random clip per video per epoch; returns the per-epoch history.

    ``val`` (videos, targets; the held-out train videos of ``csn.val_fraction``): after every epoch,
    the top-1 of each head on one centre clip per video goes into ``history["val_acc"]``. It only
    watches (:func:`actparse.train.monitoring`): the weights are those of a training without it.

    On CUDA the forward pass runs under bf16 autocast (no loss scaling is needed for bf16); the
    losses are computed in float32. On the CPU everything stays float32.

    ``videos`` are uint8 frame sources: decoded videos (:func:`actparse.clips.load_video`) or
    :class:`actparse.video.LazyVideo` (frames decoded on demand, same clips), ``targets`` maps
    each task to an int array of class indices aligned with ``videos``. ``position``: tqdm line of
    the progress bar (several variants training at once).
    """
    from tqdm import tqdm

    from .clips import train_clip

    n = len(videos)
    if n == 0:
        raise ValueError("no training videos")
    rng = np.random.default_rng(seed)
    maker = _ClipMaker(videos, spec, settings.batch_size) if str(device).startswith("cuda") else None
    optimizer = make_optimizer(model, settings.lr, settings.momentum, settings.weight_decay, settings.nesterov)
    sched = Schedule(settings.lr, settings.warmup_iters, 0.1, tuple(settings.lr_steps), settings.lr_gamma)
    iters_per_epoch = math.ceil(n / settings.batch_size)
    mem = memory_format(device)
    _cuda_setup(device)
    model.to(device).to(memory_format=mem)
    tgt = {t: torch.as_tensor(np.asarray(v), dtype=torch.long) for t, v in targets.items()}
    history = {"loss": [], "train_acc": [], "lr": []}
    val_clips = None
    if val is not None and len(val[0]):
        from .clips import test_clips

        val_clips = torch.cat([test_clips(v, spec, 1) for v in val[0]])
        val_tgt = {t: np.asarray(v) for t, v in val[1].items()}
        history["val_acc"] = []
    it = 0
    bar = tqdm(range(settings.epochs), desc=desc, unit="epoch", disable=None, position=position)
    for epoch in bar:
        order = rng.permutation(n)
        tot_loss, hits, seen = 0.0, {t: 0 for t in tgt}, 0
        if maker is not None:  # CUDA: this epoch's clips are made by threads, ahead of the GPU
            maker.start_epoch(order, rng)
        for b in range(iters_per_epoch):
            idx = order[b * settings.batch_size:(b + 1) * settings.batch_size]
            lr = sched.lr(it, epoch + b / iters_per_epoch)
            for g in optimizer.param_groups:
                g["lr"] = lr
            if maker is not None:
                x = maker.batch(b)
            else:
                x = torch.stack([train_clip(videos[i], spec, rng) for i in idx])
            x = x.to(device, non_blocking=True).contiguous(memory_format=mem)
            y = {t: v[idx].to(device) for t, v in tgt.items()}
            model.train()
            optimizer.zero_grad(set_to_none=True)
            if settings.mixup_alpha > 0 and len(idx) > 1:
                lam = float(rng.beta(settings.mixup_alpha, settings.mixup_alpha))
                perm = torch.as_tensor(rng.permutation(len(idx)), device=x.device)
                x = lam * x + (1 - lam) * x[perm]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda):  # bf16 on CUDA only
                out = {t: o.float() for t, o in model(x).items()}
            if settings.mixup_alpha > 0 and len(idx) > 1:
                loss = lam * multitask_loss(out, y) + (1 - lam) * multitask_loss(out, {t: v[perm] for t, v in y.items()})
            else:
                loss = multitask_loss(out, y)
            if not torch.isfinite(loss):
                raise ValueError(f"{desc}: loss became {float(loss)} at epoch {epoch}; lower csn.lr")
            loss.backward()
            optimizer.step()
            it += 1
            tot_loss += float(loss.detach()) * len(idx)
            seen += len(idx)
            for t in tgt:
                hits[t] += int((out[t].argmax(1) == y[t]).sum())
        history["loss"].append(tot_loss / seen)
        history["train_acc"].append({t: hits[t] / seen for t in tgt})
        history["lr"].append(lr)
        shown = ""
        if val_clips is not None:
            from .train import monitoring

            with monitoring(model):
                probs = clip_probs(model, val_clips, device, settings.batch_size)
            history["val_acc"].append({t: float((probs[t].argmax(1) == val_tgt[t]).mean()) for t in val_tgt})
            shown = f" val_action_acc={history['val_acc'][-1].get('action', float('nan')):.2f}"
        bar.set_postfix(loss=f"{tot_loss / seen:.3f}", acc=f"{hits.get('action', 0) / seen:.2f}")
        if bar.disable:  # the stage kit's progress line (the Prefect flow shows it as progress)
            log.info("progress: %d/%d epochs loss=%.3f train_action_acc=%.2f%s lr=%.3g (%s)", epoch + 1,
                     settings.epochs, tot_loss / seen, hits.get("action", 0) / seen, shown, lr, desc)
    if maker is not None:
        maker.close()
    model.eval()
    return history


class _ClipMaker:
    """Training clips made by a thread pool, a batch ahead of the training step (CUDA only).

    Clip making (resize, crop, flip, colour jitter of T frames; OpenCV and NumPy release the GIL)
    takes about as long on one core as a CSN-152 step on a GPU. Each clip gets its own generator,
    seeded from the training generator in batch order, so the clips do not depend on the threads'
    timing. (The CPU path keeps drawing from the training generator itself.)"""

    def __init__(self, videos, spec, batch_size: int):
        from concurrent.futures import ThreadPoolExecutor

        self.videos, self.spec, self.batch_size = videos, spec, batch_size
        self.pool = ThreadPoolExecutor(max(1, min(batch_size, (os.cpu_count() or 2) - 1)))
        self.pending: dict = {}

    def _submit(self, b: int) -> None:
        if b >= len(self.batches):
            return
        idx, seeds = self.batches[b]
        self.pending[b] = [self.pool.submit(self._one, int(i), int(s)) for i, s in zip(idx, seeds)]

    def _one(self, i: int, seed: int) -> torch.Tensor:
        from .clips import train_clip

        return train_clip(self.videos[i], self.spec, np.random.default_rng(seed))

    def start_epoch(self, order: np.ndarray, rng: np.random.Generator) -> None:
        k = self.batch_size
        self.batches = [(order[s:s + k], rng.integers(0, 2 ** 63 - 1, size=len(order[s:s + k])))
                        for s in range(0, len(order), k)]
        self.pending = {}
        self._submit(0)
        self._submit(1)

    def batch(self, b: int) -> torch.Tensor:
        clips = [f.result() for f in self.pending.pop(b)]
        self._submit(b + 2)
        return torch.stack(clips)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------------
# params.yaml section ``csn``
# --------------------------------------------------------------------------------------------
def _int_list(params: dict, key: str, n: int | None = None) -> tuple[int, ...] | None:
    from .params import ParamError, get, where_of

    val = get(params, key, (list, int, type(None)))
    if val is None:
        return None
    vals = [val] * (n or 1) if isinstance(val, int) and not isinstance(val, bool) else val
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in vals) or (n and len(vals) != n):
        where = where_of(params)
        raise ParamError(f"{where}: parameter {key!r} must be {'an int or ' if n == 2 else ''}a list of "
                         f"{n or 'some'} ints, got {val!r}")
    return tuple(vals)


def variants_from_params(params: dict) -> list[str]:
    from .params import ParamError, get

    vs = get(params, "csn.variants", list)
    if not vs or any(v not in VARIANTS for v in vs) or len(set(vs)) != len(vs):
        raise ParamError.of(params, f"parameter 'csn.variants' must be a non-empty list of "
                         f"distinct names from {list(VARIANTS)}, got {vs!r}")
    return list(vs)


def model_config_from_params(params: dict, variant: str) -> CSNConfig:
    """The architecture of ``variant`` from ``csn.*`` (``freeze_bn: auto`` -> on iff pretrained)."""
    from .params import ParamError, get

    freeze = get(params, "csn.freeze_bn", (bool, str))
    if isinstance(freeze, str):
        if freeze != "auto":
            raise ParamError.of(params, f"parameter 'csn.freeze_bn' must be true, false "
                             f"or auto, got {freeze!r}")
        freeze = pretrained_path(params, variant) is not None
    try:
        return CSNConfig(variant=variant,
                         depth=get(params, "csn.depth", int, choices=tuple(DEPTHS)),
                         stage_depths=_int_list(params, "csn.stage_depths", 4),
                         stem_dim=get(params, "csn.stem_dim", int, min_value=4),
                         stem_pool=get(params, "csn.stem_pool", bool),
                         dropout=get(params, "csn.dropout", float, min_value=0.0, max_value=0.99),
                         shared_backbone=get(params, "csn.shared_backbone", bool),
                         freeze_bn=bool(freeze))
    except ValueError as exc:
        if isinstance(exc, ParamError):
            raise
        raise ParamError.of(params, f"csn: {exc}") from None


def pretrained_path(params: dict, variant: str) -> Path | None:
    from .params import get

    p = get(params, f"csn.pretrained.{variant}", str)
    return Path(p) if p else None


def given_model_dir(params: dict, root: str | os.PathLike = ".") -> Path | None:
    """``csn.model``: a trained CSN model folder to use as is (no training), relative to ``root``."""
    from .params import get

    p = get(params, "csn.model", str)
    if not p:
        return None
    path = Path(p)
    return path if path.is_absolute() else Path(root) / path


def clip_spec_from_params(params: dict):
    from .clips import BACKGROUND_MODES, NORMS, ClipSpec
    from .params import ParamError, get

    short = get(params, "csn.short_side", int, min_value=8)
    crop = _int_list(params, "csn.crop", 2)
    jitter = _int_list(params, "csn.train_short_side", 2)
    try:
        return ClipSpec(num_frames=get(params, "csn.num_frames", int, min_value=1),
                        interval=get(params, "csn.interval", int, min_value=1),
                        short_side=short, crop=crop, train_short_side=jitter,
                        flip=get(params, "csn.flip", bool),
                        color_jitter=get(params, "csn.color_jitter", float, min_value=0.0, max_value=1.0),
                        grayscale_prob=get(params, "csn.grayscale_prob", float, min_value=0.0,
                                           max_value=1.0),
                        background=get(params, "csn.background", str, choices=BACKGROUND_MODES),
                        train_interval=_int_list(params, "csn.train_interval", 2),
                        reverse_prob=get(params, "csn.reverse_prob", float, min_value=0.0,
                                         max_value=1.0),
                        input_norm=get(params, "csn.input_norm", str, choices=tuple(NORMS)))
    except ValueError as exc:
        raise ParamError.of(params, f"csn: {exc}") from None


def train_settings_from_params(params: dict) -> TrainSettings:
    from .params import ParamError, get

    epochs = get(params, "csn.epochs", int, min_value=1)
    steps = get(params, "csn.lr_steps", list)
    if not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in steps):
        raise ParamError.of(params, f"parameter 'csn.lr_steps' must be a list of epochs, got {steps!r}")
    return TrainSettings(epochs=epochs,
                         batch_size=get(params, "csn.batch_size", int, min_value=1),
                         lr=get(params, "csn.lr", float, min_value=0.0),
                         momentum=get(params, "csn.momentum", float, min_value=0.0, max_value=1.0),
                         weight_decay=get(params, "csn.weight_decay", float, min_value=0.0),
                         nesterov=get(params, "csn.nesterov", bool),
                         warmup_iters=get(params, "csn.warmup_iters", int, min_value=0),
                         lr_steps=tuple(float(s) for s in steps),
                         lr_gamma=get(params, "csn.lr_gamma", float, min_value=0.0),
                         mixup_alpha=get(params, "csn.mixup_alpha", float, min_value=0.0))


SEARCH = "search"  # csn.ensemble_weights: search -> per-task weights chosen on the validation split


def ensemble_search_enabled(params: dict) -> bool:
    """``csn.ensemble_weights: search`` (weights chosen on the validation split); needs ``csn.val_fraction`` > 0."""
    from .params import ParamError, get, where_of

    cfg = get(params, "csn.ensemble_weights", (dict, str))
    if not isinstance(cfg, str):
        return False
    where = where_of(params)
    if cfg != SEARCH:
        raise ParamError(f"{where}: parameter 'csn.ensemble_weights' must be a mapping of per-task weights or "
                         f"{SEARCH!r}, got {cfg!r}")
    if val_fraction_from_params(params) <= 0:
        raise ParamError(f"{where}: parameter 'csn.ensemble_weights' is {SEARCH!r} but 'csn.val_fraction' is 0: "
                         f"the search needs a validation split of the train videos")
    return True


def ensemble_weights_from_params(params: dict, variants: Sequence[str], tasks: Iterable[str]) -> dict[str, dict[str, float]]:
    """{task: {variant: weight}} from ``csn.ensemble_weights`` ({default: {...}, <task>: {...}}).

    With ``csn.ensemble_weights: search`` this returns equal weights (the starting point); the
    searched weights come from :func:`search_ensemble_weights` on the validation split."""
    from .params import ParamError, get, where_of

    where = where_of(params)
    if ensemble_search_enabled(params):
        return {t: {v: 1.0 for v in variants} for t in tasks}
    cfg = get(params, "csn.ensemble_weights", dict) or {}
    unknown = [k for k in cfg if k != "default" and k not in TASKS]
    if unknown:
        raise ParamError(f"{where}: parameter 'csn.ensemble_weights' has unknown task(s) {unknown}; "
                         f"use 'default' or one of {list(TASKS)}")
    out = {}
    for task in tasks:
        w = cfg.get(task, cfg.get("default", {})) or {}
        if not isinstance(w, dict):
            raise ParamError(f"{where}: parameter 'csn.ensemble_weights.{task}' must map variants to weights")
        ws = {}
        for v in variants:
            x = w.get(v, 1.0)
            if not isinstance(x, (int, float)) or isinstance(x, bool) or x < 0:
                raise ParamError(f"{where}: ensemble weight of {v!r} for {task!r} must be a number >= 0, got {x!r}")
            ws[v] = float(x)
        if sum(ws.values()) <= 0:
            raise ParamError(f"{where}: ensemble weights for {task!r} are all zero")
        out[task] = ws
    return out


# --------------------------------------------------------------------------------------------
# Validation split of the train videos and the ensemble-weight search (seed 001 Table 2)
# --------------------------------------------------------------------------------------------
def val_fraction_from_params(params: dict) -> float:
    from .params import ParamError, get

    fraction = get(params, "csn.val_fraction", float, min_value=0.0)
    if fraction >= 1.0:  # the schema's bound: < 1 (at least one video of each class stays in training)
        raise ParamError.of(params, f"parameter 'csn.val_fraction' must be < 1.0, "
                         f"got {fraction!r}")
    return fraction


def weight_grid(variants: Sequence[str], steps: int) -> list[dict[str, float]]:
    """Weight vectors on the simplex with ``steps`` points per axis (for ip + ir: ip share 0, 1/(steps-1),
    ..., 1), scaled so that the largest weight is 1.0 (seed 001 writes its weights as ip:ir = w:1)."""
    import itertools

    if steps < 2:
        raise ValueError(f"ensemble search grid needs >= 2 steps, got {steps}")
    n = len(variants)
    k = steps - 1
    out = []
    for combo in itertools.product(range(k + 1), repeat=n):
        if sum(combo) != k:
            continue
        top = max(combo)
        out.append({v: c / top for v, c in zip(variants, combo)})
    return out


def search_ensemble_weights(probs: Mapping[str, np.ndarray], truth: np.ndarray, steps: int = 21) -> dict:
    """The weights of a weighted-average ensemble that maximise top-1 accuracy on a validation set.

    ``probs``: {variant: (N, C) class probabilities}; ``truth``: (N,) class indices. Every weight
    vector of :func:`weight_grid` is scored; among equal accuracies the one with the lowest mean
    negative log-likelihood wins, then the one nearest equal weights (so a tie never favours one
    variant by accident). Returns {"weights", "accuracy", "nll", "single": {variant: accuracy},
    "candidates": number scored}.
    """
    variants = list(probs)
    truth = np.asarray(truth, dtype=np.int64)
    if not variants:
        raise ValueError("ensemble search needs at least one variant")
    stack = np.stack([np.asarray(probs[v], dtype=np.float64) for v in variants])  # (M, N, C)
    if stack.ndim != 3 or stack.shape[1] != len(truth) or len(truth) == 0:
        raise ValueError(f"ensemble search: probabilities {stack.shape[1:]} do not match {len(truth)} labels")
    best = None
    grid = weight_grid(variants, steps) if len(variants) > 1 else [{variants[0]: 1.0}]
    for w in grid:
        wv = np.array([w[v] for v in variants])
        p = np.tensordot(wv / wv.sum(), stack, axes=1)
        acc = float((p.argmax(1) == truth).mean())
        nll = float(-np.log(np.clip(p[np.arange(len(truth)), truth], 1e-12, None)).mean())
        spread = float(np.abs(wv / wv.sum() - 1.0 / len(variants)).sum())
        key = (-acc, round(nll, 12), spread)
        if best is None or key < best[0]:
            best = (key, w, acc, nll)
    single = {v: float((stack[i].argmax(1) == truth).mean()) for i, v in enumerate(variants)}
    return {"weights": dict(best[1]), "accuracy": best[2], "nll": best[3], "single": single,
            "candidates": len(grid)}
