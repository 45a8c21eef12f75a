"""The schema of ``params.yaml``: one pydantic model per section.

The schema (names, types, bounds, choices) lives here; the values live only in ``params.yaml``.
No field has a default: a key missing from the file is an error, as is an unknown (e.g. misspelt)
key, a value of the wrong type, a value out of bounds, NaN / inf, or a section left empty.
:func:`actparse.params.load_params` validates the whole file against :class:`Params` once, so every
stage, the Prefect flow and the ``actparse`` CLI see a checked file; docs/params.md has the rules.

Choices that other modules also define (HRNet archs, CSN depths, ...) are spelt out here so that
importing the schema stays cheap (no torch); tests/test_params.py checks they match those modules.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .constants import GROUPS

# ------------------------------------------------------------------------------ shared types
NonNegInt = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]
NonNegFloat = Annotated[float, Field(ge=0.0)]
Prob = Annotated[float, Field(ge=0.0, le=1.0)]
Pair = Annotated[list[int], Field(min_length=2, max_length=2)]
Quad = Annotated[list[int], Field(min_length=4, max_length=4)]

YOLO_OPTIMIZERS = ("auto", "SGD", "Adam", "AdamW", "NAdam", "RAdam", "RMSprop")
HRNET_ARCHS = ("hrnet_w18_small", "hrnet_w18_small_v2", "hrnet_w18", "hrnet_w32", "hrnet_w48")
POSE_BACKENDS = ("hrnet", "mmpose")  # stages.train_pose.BACKENDS
DECODE_BACKENDS = ("decord", "pyav", "torchcodec")  # actparse.video.BACKENDS
CSN_VARIANTS = ("ip", "ir")
CSN_DEPTHS = (50, 101, 152)
CSN_KEY_MAPS = ("pytorchvideo", "vmz", "mmaction2")
CSN_TASKS = ("action",) + GROUPS
BACKGROUND_MODES = ("none", "clip_mean", "clip_median", "frame_diff")
BOX_SOURCES = ("refined", "detected", "gt")
INPUT_NORMS = ("vmz", "kinetics", "imagenet")  # actparse.clips.NORMS
GYM_LEVELS = ("event", "set", "element")


class Section(BaseModel):
    """A params.yaml section: every key required, no unknown keys, strict types, finite floats."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


# ------------------------------------------------------------------------------ sections
class Data(Section):
    root: str


class Synth(Section):
    seed: int
    n_train: Annotated[int, Field(ge=0, le=100000)]
    n_test: Annotated[int, Field(ge=0, le=100000)]
    width: Annotated[int, Field(ge=48, le=4096)]
    height: Annotated[int, Field(ge=48, le=4096)]
    fps: Annotated[int, Field(ge=1, le=120)]
    min_seconds: Annotated[float, Field(ge=0.4, le=600.0)]
    max_seconds: Annotated[float, Field(ge=0.4, le=600.0)]
    max_people: Annotated[int, Field(ge=1, le=12)]
    occluder_prob: Prob
    fourcc: str
    long_tail: Annotated[float, Field(ge=1.0, le=1000.0)]
    workers: Annotated[int, Field(ge=0, le=256)]
    context: bool

    @model_validator(mode="after")
    def _durations(self):
        if self.max_seconds < self.min_seconds:
            raise ValueError(f"synth.max_seconds ({self.max_seconds}) must be >= synth.min_seconds "
                             f"({self.min_seconds})")
        return self


class Decode(Section):
    stride: PosInt
    short_side: NonNegInt
    jpeg_quality: Annotated[int, Field(ge=1, le=100)]
    backend: Literal[DECODE_BACKENDS]  # type: ignore[valid-type]


class Yolo(Section):
    """Keys shared by the two ultralytics YOLO sections (person_detector, parts)."""

    model: str
    weights: Optional[str]
    finetune: bool
    imgsz: Annotated[int, Field(ge=32)]
    epochs: PosInt
    batch: PosInt
    lr0: NonNegFloat
    optimizer: Literal[YOLO_OPTIMIZERS]  # type: ignore[valid-type]
    warmup_epochs: NonNegFloat
    mosaic: Prob
    close_mosaic: NonNegInt
    fliplr: Prob
    frame_step: PosInt
    val_fraction: Annotated[float, Field(ge=0.0, le=0.9)]
    workers: NonNegInt
    threads: NonNegInt
    amp: bool
    conf: Prob
    iou: Prob
    predict_batch: PosInt


class PersonDetector(Yolo):
    max_det: PosInt
    classes: Optional[list[Annotated[str, Field(min_length=1)]]]


class Parts(Yolo):
    train_persons: Literal["detected", "gt"]
    paint: bool
    dot_radius: Annotated[float, Field(ge=0.5)]
    kp_thr: float
    crop_size: Annotated[int, Field(ge=16)]
    crop_margin: Annotated[float, Field(ge=0.0, le=2.0)]
    hsv_h: Annotated[float, Field(ge=0.0, le=0.5)]


class Keypoints(Section):
    backend: Literal[POSE_BACKENDS]  # type: ignore[valid-type]
    arch: Literal[HRNET_ARCHS]  # type: ignore[valid-type]
    input_size: Pair
    checkpoint: Optional[str]
    mmpose_config: Optional[str]
    epochs: NonNegInt
    batch_size: Annotated[int, Field(ge=2)]
    lr: NonNegFloat
    weight_decay: NonNegFloat
    sigma: Annotated[float, Field(ge=0.1)]
    val_fraction: Annotated[float, Field(ge=0.0, le=0.9)]
    aug_scale: Annotated[float, Field(ge=0.0, le=0.9)]
    aug_rotation: NonNegFloat
    aug_shift: NonNegFloat
    aug_flip: bool
    flip_test: bool
    infer_batch: PosInt
    eval_test: bool
    refine: bool
    refine_thr: NonNegFloat
    refine_margin: NonNegFloat

    @model_validator(mode="after")
    def _mmpose_backend(self):
        if self.backend == "mmpose":
            if not self.mmpose_config or not self.checkpoint:
                raise ValueError("keypoints.backend 'mmpose' needs keypoints.mmpose_config (an mmpose top-down "
                                 "config) and keypoints.checkpoint (its weights, a local .pth)")
            if self.epochs != 0:
                raise ValueError(f"keypoints.backend 'mmpose' uses keypoints.checkpoint as it is: keypoints.epochs "
                                 f"must be 0, got {self.epochs}")
        return self

    @field_validator("input_size")
    @classmethod
    def _multiple_of_32(cls, v):
        if not all(x >= 32 and x % 32 == 0 for x in v):
            raise ValueError("must be [h, w], two positive multiples of 32 (HRNet's coarsest branch is 1/32)")
        return v


class PartLabels(Section):
    mode: Literal["video_label", "baseline"]
    parts_source: Literal["detected", "gt"]


class CsnPretrained(Section):
    ip: Optional[str]
    ir: Optional[str]
    key_map: Literal[CSN_KEY_MAPS]  # type: ignore[valid-type]


class Csn(Section):
    model: Optional[str]
    variants: Annotated[list[Literal[CSN_VARIANTS]], Field(min_length=1)]  # type: ignore[valid-type]
    depth: Literal[CSN_DEPTHS]  # type: ignore[valid-type]
    stage_depths: Optional[Union[PosInt, Quad]]
    stem_dim: Annotated[int, Field(ge=4)]
    stem_pool: bool
    dropout: Annotated[float, Field(ge=0.0, le=0.99)]
    shared_backbone: bool
    freeze_bn: Union[bool, Literal["auto"]]
    pretrained: CsnPretrained
    num_frames: PosInt
    interval: PosInt
    short_side: Annotated[int, Field(ge=8)]
    crop: Union[int, Pair]
    train_short_side: Union[int, Pair]
    flip: bool
    color_jitter: Prob
    grayscale_prob: Prob
    background: Literal[BACKGROUND_MODES]  # type: ignore[valid-type]
    train_interval: Optional[Union[int, Pair]]
    reverse_prob: Prob
    epochs: PosInt
    batch_size: PosInt
    lr: NonNegFloat
    momentum: Prob
    weight_decay: NonNegFloat
    nesterov: bool
    warmup_iters: NonNegInt
    lr_steps: list[float]
    lr_gamma: NonNegFloat
    mixup_alpha: NonNegFloat
    train_workers: Annotated[int, Field(ge=0, le=64)]
    train_threads: Annotated[int, Field(ge=0, le=256)]
    test_clips: PosInt
    test_batch: PosInt
    ensemble_weights: Union[Literal["search"], dict[str, dict[Literal[CSN_VARIANTS], float]]]  # type: ignore[valid-type]
    input_norm: Literal[INPUT_NORMS]  # type: ignore[valid-type]
    val_fraction: Annotated[float, Field(ge=0.0, lt=1.0)]
    ensemble_grid: Annotated[int, Field(ge=2, le=1001)]

    @field_validator("variants")
    @classmethod
    def _distinct(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("must list distinct variants")
        return v

    @field_validator("ensemble_weights")
    @classmethod
    def _tasks(cls, v):
        if isinstance(v, str):
            return v
        unknown = [k for k in v if k != "default" and k not in CSN_TASKS]
        if unknown:
            raise ValueError(f"has unknown task(s) {unknown}; use 'default' or one of {list(CSN_TASKS)}")
        return v


class Link(Section):
    nms_iou: Prob
    top_k: PosInt
    link_iou: Prob
    min_score: NonNegFloat
    min_length: PosInt
    k: PosInt
    tube_nms_iou: Prob
    interpolate: bool
    top_k_classes: PosInt
    min_person_score: NonNegFloat


class Evaluate(Section):
    split: str
    iou: Prob
    stride: NonNegInt
    tps_human_iou: Prob
    tps_part_iou: Prob
    multisports_variant: Literal["multisports", "act", "moc"]


class Flow(Section):
    gpu_stages: Optional[list[str]]
    map_stages: list[str]
    shard_videos: PosInt
    scheduler: Optional[str]
    tls: Optional[dict[str, str]]  # {ca_file, cert, key}; flows/cluster.security checks the keys and files
    n_workers: NonNegInt
    processes: bool
    workdir: str
    ui_host: str
    ui_port: Annotated[int, Field(ge=1, le=65535)]


class Pretrained3d(Section):
    """SlowFast / SlowOnly weights to start from (actparse.weights.resnet3d)."""

    path: Optional[str]
    format: Literal["pytorchvideo", "pyslowfast", "mmaction2"]


class Stad(Section):
    enabled: bool
    model: Optional[str]
    seed: Optional[int]
    head: Literal["pcca", "linear"]
    boxes: Literal[BOX_SOURCES]  # type: ignore[valid-type]
    min_score: NonNegFloat
    stride: PosInt
    short_side: Annotated[int, Field(ge=16)]
    depth: Literal[50, 101]
    stage_depths: Optional[Quad]
    stem_dim: Annotated[int, Field(ge=2)]
    beta_inv: PosInt
    alpha: PosInt
    output_stride: Literal[16, 32]
    fusion_kernel: PosInt
    lateral_norm: bool
    pretrained: Pretrained3d
    train_scales: Optional[list[Annotated[int, Field(ge=16)]]]
    scale_batch_sizes: Optional[list[PosInt]]
    test_scales: Optional[list[Annotated[int, Field(ge=16)]]]
    test_flip: bool
    input_norm: Literal[INPUT_NORMS]  # type: ignore[valid-type]
    num_frames: PosInt
    interval: PosInt
    roi_size: PosInt
    context_scale: Annotated[float, Field(ge=1.0)]
    dim: Annotated[int, Field(ge=8)]
    heads: PosInt
    layers: PosInt
    dropout: Annotated[float, Field(ge=0.0, le=0.95)]
    epochs: NonNegInt
    samples_per_video: PosInt
    batch_size: PosInt
    optimizer: Literal["adamw", "sgd"]
    lr: NonNegFloat
    momentum: NonNegFloat
    weight_decay: NonNegFloat
    warmup_epochs: NonNegFloat
    lr_steps: list[float]
    lr_gamma: NonNegFloat
    flip: bool
    color_jitter: Annotated[float, Field(ge=0.0, le=0.9)]
    channel_shuffle: bool
    decoupled: bool
    decoupled_epochs: NonNegInt
    decoupled_lr: NonNegFloat
    decoupled_reinit: bool
    decoupled_keyframes: PosInt
    val_fraction: Annotated[float, Field(ge=0.0, lt=1.0)]


def _levels(v, positive: bool):
    if isinstance(v, dict):
        if sorted(v) != sorted(GYM_LEVELS):
            raise ValueError(f"must map exactly the levels {list(GYM_LEVELS)}")
        vals = list(v.values())
    else:
        vals = [v]
    if positive and min(vals) < 1:
        raise ValueError("must be >= 1 per level")
    return v


class Gym(Section):
    enabled: bool
    model: Optional[str]
    seed: Optional[int]
    depth: Literal[50, 101]
    stage_depths: Optional[list[int]]
    stem_dim: Annotated[int, Field(ge=2)]
    pretrained: Pretrained3d
    input_norm: Literal[INPUT_NORMS]  # type: ignore[valid-type]
    size: Annotated[int, Field(ge=16)]
    crop: Annotated[int, Field(ge=16)]
    margin: Annotated[float, Field(ge=1.0)]
    num_frames: Union[int, dict[str, int]]
    interval: PosInt
    epochs: NonNegInt
    views_per_clip: PosInt
    batch_size: PosInt
    lr: NonNegFloat
    weight_decay: NonNegFloat
    dropout: Annotated[float, Field(ge=0.0, le=0.95)]
    color_aug: bool
    joint_epochs: NonNegInt
    joint_views: PosInt
    joint_hidden: PosInt
    joint_lr: NonNegFloat
    loss_weights: Union[float, dict[str, float]]
    val_fraction: Annotated[float, Field(ge=0.0, lt=1.0)]

    @field_validator("num_frames")
    @classmethod
    def _num_frames(cls, v):
        return _levels(v, positive=True)

    @field_validator("loss_weights")
    @classmethod
    def _loss_weights(cls, v):
        return _levels(v, positive=False)

    @model_validator(mode="after")
    def _crop_fits(self):
        if self.crop > self.size:
            raise ValueError(f"gym.crop ({self.crop}) must be <= gym.size ({self.size})")
        return self


class PartAttn(Section):
    enabled: bool
    model: Optional[str]
    seed: Optional[int]
    roi_mode: Literal["align", "crop"]
    use_action: bool
    use_attention: bool
    use_context: bool
    augment: bool
    persons_source: Literal[BOX_SOURCES]  # type: ignore[valid-type]
    parts_source: Literal["detected", "gt"]
    action_source: Literal["predicted", "gt"]
    min_score: NonNegFloat
    stride: PosInt
    input_size: Pair
    num_frames: PosInt
    interval: PosInt
    dim: Annotated[int, Field(ge=8)]
    heads: PosInt
    roi_size: PosInt
    part_crop: Annotated[int, Field(ge=8)]
    dropout: Annotated[float, Field(ge=0.0, le=0.95)]
    stem_dim: Annotated[int, Field(ge=2)]
    stage_depths: list[int]
    pretrained: Pretrained3d
    margin: Annotated[float, Field(ge=1.0)]
    epochs: NonNegInt
    samples_per_video: PosInt
    batch_size: PosInt
    lr: NonNegFloat
    weight_decay: NonNegFloat
    val_fraction: Annotated[float, Field(ge=0.0, lt=1.0)]


class Params(Section):
    """The whole of ``params.yaml``."""

    seed: int
    device: Literal["auto", "cpu", "cuda"]
    data: Data
    synth: Synth
    decode: Decode
    person_detector: PersonDetector
    keypoints: Keypoints
    parts: Parts
    part_labels: PartLabels
    csn: Csn
    link: Link
    evaluate: Evaluate
    flow: Flow
    stad: Stad
    gym: Gym
    partattn: PartAttn


def all_keys(model: type[BaseModel] = Params, prefix: str = "") -> list[str]:
    """Every dotted key of ``model`` (sections and their keys, nested sections included)."""
    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        out.append(key)
        sub = section_model(field.annotation)
        if sub is not None:
            out.extend(all_keys(sub, key + "."))
    return out


def section_model(annotation) -> type[BaseModel] | None:
    """The :class:`Section` subclass an annotation names (``Optional[...]`` unwrapped), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
