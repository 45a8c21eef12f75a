"""Synthetic part-level action videos with exact ground truth (Kinetics-TPS / MultiSports in miniature).

Each video shows 1..``max_people`` articulated figures on a textured, slowly drifting background
with small camera jitter and, in some videos, a moving occluder. A figure is a COCO 17-keypoint
skeleton driven by joint angles (roll in the image plane, pitch towards the camera rendered as
foreshortening) and drawn as filled shapes: head ellipse, torso and pelvis polygons, limbs as thick
capsules, hands and feet as blobs. Left and right limbs of one figure get similar colours, so left
versus right must be told from the pose, not the colour.

Every video has one action (``constants.ACTIONS``). Each figure performs it during an interval
and is idle (gentle sway) outside it; per frame and per body part a state from
``constants.PART_STATES`` follows from the motion. Ground truth is computed from the same
geometry that is drawn: boxes of the drawn shapes, keypoint visibility from a per-pixel owner map
(other figures and occluders hide keypoints and parts).

Public API: :class:`SynthConfig` (validated from params), :func:`plan_videos`,
:func:`render_video`, :func:`generate` (writes the whole data set), :func:`tubes_from_gt`,
:func:`tps_annotations`; for the seed 003 / 004 systems :func:`long_tail_counts` (``long_tail``:
a long-tailed train split) and :func:`finegym_annotations` (FineGym-layout event -> set -> element
labels derived from each figure's drawn variant; written on every run, no existing file changes).

``context`` (off by default; the default world is unchanged, byte for byte) makes some actions
depend on what is *around* a person, for seed 003's head that reads a 2x context box: for each pair
of :data:`CONTEXT_PAIRS` the second action's figures perform exactly the first action's body motion
(same poses, keypoints, boxes and per-part states, which follow from the motion: a ``kicking`` figure
then has the marching legs' ``step_on`` states) and a prop (ball, bag or board) is drawn beside each
of them for its whole action interval: outside its person box, inside the box enlarged 2x about its
centre. Props are scenery: drawn behind every figure and the occluder, they change no ground truth
(boxes, keypoints, visibility, part states); only the action label tells the pair apart. The FineGym
labels of such a figure still follow its drawn parameters and its label's set.
"""

from __future__ import annotations

import math
import os
import pickle
import tempfile
from dataclasses import dataclass, field, asdict
from pathlib import Path

import numpy as np

from .constants import ACTIONS, GROUP_OF_PART, KP, NUM_KEYPOINTS, NUM_PARTS, PART_INDEX, PART_STATES, PARTS, \
    TPS_SAMPLING, tps_frame_name
from .params import ParamError, get, where_of

# ----------------------------------------------------------------------------------------------
# configuration and plan
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthConfig:
    """The synthetic set: params section ``synth`` (:meth:`from_params`, every key required)."""

    seed: int
    n_train: int
    n_test: int
    width: int
    height: int
    fps: int
    min_seconds: float
    max_seconds: float
    max_people: int
    occluder_prob: float
    fourcc: str
    long_tail: float  # train-split imbalance factor: most / least frequent action (1.0 = balanced)
    workers: int  # processes rendering videos at once (0 = one per core); the output does not depend on it
    # context props for seed 003 (see the module docstring); a default only for configs built by hand
    context: bool = False

    @classmethod
    def from_params(cls, params: dict, **overrides) -> "SynthConfig":
        """Read section ``synth`` of params (every key required); overrides win (None ignored)."""
        sec = params.get("synth")
        if sec is not None and not isinstance(sec, dict):
            raise ParamError.of(params, "section 'synth' must be a mapping")
        p = {"_path": where_of(params), "synth": dict(sec or {})}
        unknown = sorted(set(p["synth"]) - set(cls.__dataclass_fields__))
        if unknown:
            raise ParamError(f"{p['_path']}: unknown parameter(s) {['synth.' + k for k in unknown]}; "
                             f"known: {sorted(cls.__dataclass_fields__)}")
        for k, v in overrides.items():
            if v is not None:
                p["synth"][k] = v
        cfg = cls(
            seed=get(p, "synth.seed", int),
            n_train=get(p, "synth.n_train", int, min_value=0, max_value=100000),
            n_test=get(p, "synth.n_test", int, min_value=0, max_value=100000),
            width=get(p, "synth.width", int, min_value=48, max_value=4096),
            height=get(p, "synth.height", int, min_value=48, max_value=4096),
            fps=get(p, "synth.fps", int, min_value=1, max_value=120),
            min_seconds=get(p, "synth.min_seconds", float, min_value=0.4, max_value=600.0),
            max_seconds=get(p, "synth.max_seconds", float, min_value=0.4, max_value=600.0),
            max_people=get(p, "synth.max_people", int, min_value=1, max_value=12),
            occluder_prob=get(p, "synth.occluder_prob", float, min_value=0.0, max_value=1.0),
            fourcc=get(p, "synth.fourcc", str),
            long_tail=get(p, "synth.long_tail", float, min_value=1.0, max_value=1000.0),
            workers=get(p, "synth.workers", int, min_value=0, max_value=256),
            context=get(p, "synth.context", bool),
        )
        where = p["_path"]
        if cfg.max_seconds < cfg.min_seconds:
            raise ParamError(f"{where}: parameter 'synth.max_seconds' ({cfg.max_seconds}) must be >= "
                             f"'synth.min_seconds' ({cfg.min_seconds})")
        if cfg.n_train + cfg.n_test < 1:
            raise ParamError(f"{where}: parameters 'synth.n_train' + 'synth.n_test' must be >= 1")
        if not isinstance(cfg.context, bool):
            raise ParamError(f"{where}: parameter 'synth.context' must be true or false, got {cfg.context!r}")
        if len(cfg.fourcc) != 4:
            raise ParamError(f"{where}: parameter 'synth.fourcc' must be 4 characters, got {cfg.fourcc!r}")
        return cfg


@dataclass(frozen=True)
class VideoSpec:
    index: int
    name: str
    split: str
    action: str
    n_frames: int


def long_tail_counts(n: int, imbalance: float, n_classes: int = len(ACTIONS)) -> list[int]:
    """Videos per class for a long-tailed split of ``n`` videos (classes in ``ACTIONS`` order).

    Class ``i`` gets a share proportional to ``imbalance ** (-i / (n_classes - 1))`` (the exponential
    profile of CIFAR-LT / ImageNet-LT), so the first class has ``imbalance`` times the videos of the
    last; counts are rounded by largest remainder and every class keeps at least one video when
    ``n >= n_classes``. ``imbalance`` 1.0 gives the balanced round-robin counts.
    """
    if n_classes < 1:
        raise ValueError("need at least one class")
    if imbalance <= 1.0 or n_classes == 1:
        return [n // n_classes + (1 if i < n % n_classes else 0) for i in range(n_classes)]
    w = imbalance ** (-np.arange(n_classes) / (n_classes - 1))
    share = w / w.sum() * n
    counts = np.floor(share).astype(int)
    rest = n - counts.sum()
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[:rest]] += 1
    if n >= n_classes:  # every class keeps a video, taken from the largest classes
        while (counts == 0).any():
            counts[int(np.argmax(counts))] -= 1
            counts[int(np.flatnonzero(counts == 0)[0])] += 1
    return [int(c) for c in counts]


def plan_videos(cfg: SynthConfig) -> list[VideoSpec]:
    """Names, splits, actions (round robin per split, shuffled; the train split long-tailed when
    ``long_tail`` > 1, see :func:`long_tail_counts`) and lengths of all videos."""
    rng = np.random.default_rng([cfg.seed, 7919])
    specs: list[VideoSpec] = []
    idx = 0
    for split, n in (("train", cfg.n_train), ("test", cfg.n_test)):
        if split == "train" and cfg.long_tail > 1.0:
            acts = [a for a, c in zip(ACTIONS, long_tail_counts(n, cfg.long_tail)) for _ in range(c)]
        else:
            acts = [ACTIONS[i % len(ACTIONS)] for i in range(n)]
        order = rng.permutation(n)
        for j in range(n):
            secs = rng.uniform(cfg.min_seconds, cfg.max_seconds)
            n_frames = max(2, int(round(secs * cfg.fps)))
            specs.append(VideoSpec(idx, f"synth_{idx:05d}", split, acts[order[j]], n_frames))
            idx += 1
    return specs


# ----------------------------------------------------------------------------------------------
# pose model
# ----------------------------------------------------------------------------------------------
# Absolute segment angles in degrees. roll: in the image plane, 0 = pointing down, 90 = pointing
# away from the body midline, 180 = up. pitch: towards the camera; drawn length = L * cos(pitch).
SEGMENTS = ("l_ua", "l_fa", "r_ua", "r_fa", "l_th", "l_sh", "r_th", "r_sh")
POSE_KEYS = tuple(f"{s}_{a}" for s in SEGMENTS for a in ("roll", "pitch")) + (
    "torso_pitch", "tilt", "twist", "yaw", "head_pitch", "jump", "bob")
PK = {k: i for i, k in enumerate(POSE_KEYS)}
N_POSE = len(POSE_KEYS)

# Body proportions as fractions of the figure height H.
SEG_LEN = {"ua": 0.16, "fa": 0.15, "th": 0.23, "sh": 0.23}
TORSO_LEN = 0.30
SHOULDER_HALF = 0.11
HIP_HALF = 0.065
HEAD_RX, HEAD_RY = 0.058, 0.072
NECK_LEN = 0.085
ARM_T, LEG_T, NECK_T = 0.06, 0.08, 0.045
HAND_R = 0.032
FOOT_RX, FOOT_RY = 0.05, 0.026

RAMP_S = 0.3  # seconds to blend between idle and the action


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@dataclass
class Figure:
    """One person: appearance, placement and action timing (all drawn from the video's rng)."""

    pid: int
    size: float  # height H in pixels
    x0: float  # midline x at t=0
    vx: float  # px / s drift
    ground: float  # y of the standing ankles
    colors: dict
    start: int  # first frame of the action interval (inclusive)
    end: int  # last frame of the action interval (inclusive)
    side: int  # 0 = left, 1 = right (waving / kicking side)
    freq: float  # speed in [0, 1], mapped to a per-action frequency range
    amp: float
    phase: float
    style: int
    idle_phase: float
    nod_cycles: tuple = field(default_factory=tuple)
    build: tuple = (1.0, 1.0)  # (shoulder/hip width factor, limb thickness factor)


def _hsv_color(h, s, v):
    import cv2

    px = np.uint8([[[int(h) % 180, int(np.clip(s, 0, 255)), int(np.clip(v, 0, 255))]]])
    return tuple(int(c) for c in cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0])


def _make_colors(rng) -> dict:
    skin_tones = [(224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172), (241, 194, 125), (110, 70, 40)]
    skin = skin_tones[rng.integers(len(skin_tones))]
    shirt_h = rng.uniform(0, 180)
    arm_h = shirt_h + rng.uniform(-8, 8)
    d_arm = rng.choice([-1, 1]) * rng.uniform(5, 12)  # small left/right hue offset
    pants_h = rng.uniform(0, 180)
    d_leg = rng.choice([-1, 1]) * rng.uniform(5, 12)
    s1, v1 = rng.uniform(140, 255), rng.uniform(140, 255)
    s2, v2 = rng.uniform(100, 255), rng.uniform(70, 200)
    return {
        "skin": skin,
        "shirt": _hsv_color(shirt_h, s1, v1),
        "l_arm": _hsv_color(arm_h, s1, v1 * 0.95),
        "r_arm": _hsv_color(arm_h + d_arm, s1, v1 * 0.95),
        "pelvis": _hsv_color(pants_h, s2, v2 * 0.85),
        "l_leg": _hsv_color(pants_h, s2, v2),
        "r_leg": _hsv_color(pants_h + d_leg, s2, v2),
        "shoe": _hsv_color(rng.uniform(0, 180), rng.uniform(0, 120), rng.uniform(20, 90)),
        "eye": (20, 20, 20),
        "nose": tuple(int(c * 0.72) for c in skin),
        "hair": _hsv_color(rng.uniform(5, 25), rng.uniform(60, 200), rng.uniform(15, 140)),
    }


def _idle_pose(t: np.ndarray, fig: Figure) -> np.ndarray:
    """Gentle breathing sway; arms hang, legs straight."""
    P = np.zeros((len(t), N_POSE))
    w = 2 * np.pi * 0.3 * t + fig.idle_phase
    for s in ("l", "r"):
        P[:, PK[f"{s}_ua_roll"]] = 8 + 2.5 * np.sin(w)
        P[:, PK[f"{s}_fa_roll"]] = 5 + 3.0 * np.sin(w + 0.5)
        P[:, PK[f"{s}_fa_pitch"]] = 10
        P[:, PK[f"{s}_th_roll"]] = 4
        P[:, PK[f"{s}_sh_roll"]] = 2
    P[:, PK["tilt"]] = 1.5 * np.sin(0.8 * w)
    P[:, PK["bob"]] = 0.004 * np.sin(2 * w)
    return P


def _set(P, key, val):
    P[:, PK[key]] = val


def _action_pose(action: str, ts: np.ndarray, fig: Figure, base: np.ndarray) -> tuple[np.ndarray, dict]:
    """Pose while performing ``action`` (``ts`` = seconds since the interval start) and the per-part
    states it implies, as {part: array of state names}."""
    n = len(ts)
    P = base.copy()
    st = {p: np.full(n, "none", dtype=object) for p in PARTS}
    f, A, ph = fig.freq, fig.amp, fig.phase
    side = "lr"[fig.side]
    other = "lr"[1 - fig.side]
    sname = {"l": "left", "r": "right"}

    if action == "idle":
        pass
    elif action == "waving":
        ua = 95 + 50 * A  # upper arm out / up
        _set(P, f"{side}_ua_roll", ua)
        _set(P, f"{side}_ua_pitch", 0)
        osc = np.sin(2 * np.pi * (1.4 + 1.2 * f) * ts + ph)
        _set(P, f"{side}_fa_roll", 180 + (25 + 15 * A) * osc)
        _set(P, f"{side}_fa_pitch", 0)
        st[f"{sname[side]}_arm"][:] = "raise"
        st[f"{sname[side]}_hand"][:] = "wave"
    elif action == "raising_arms":
        top = 130 + 45 * A
        ff = 0.35 + 0.25 * f
        c = (1 - np.cos(2 * np.pi * ff * ts + ph)) / 2
        dc = np.sin(2 * np.pi * ff * ts + ph)
        for s, off in (("l", 0.0), ("r", 0.06)):
            cc = (1 - np.cos(2 * np.pi * ff * ts + ph + off)) / 2
            _set(P, f"{s}_ua_roll", 8 + (top - 8) * cc)
            _set(P, f"{s}_fa_roll", 8 + (top + 5 - 8) * cc)
            _set(P, f"{s}_fa_pitch", 10 * (1 - cc))
        state = np.where(dc >= 0, "raise", "lower")
        st["left_arm"][:] = state
        st["right_arm"][:] = state
    elif action == "punching":
        T = 0.5 + 0.3 * (1 - f)
        k = np.floor((ts + ph / (2 * np.pi) * T) / T).astype(int)
        frac = ((ts + ph / (2 * np.pi) * T) / T) % 1.0
        pulse = np.sin(np.pi * frac) ** 0.7
        forward = fig.style == 1
        for s, parity in (("l", 0), ("r", 1)):
            active = (k % 2) == parity
            p = np.where(active, pulse, 0.0)
            # guard: upper arm down/out, forearm up towards the chin
            g_ua, g_fa = 25.0, 200.0
            e_ua, e_fa = (70.0, 70.0) if forward else (88.0, 90.0)
            e_pitch = 65.0 if forward else 0.0
            _set(P, f"{s}_ua_roll", g_ua + p * (e_ua - g_ua))
            _set(P, f"{s}_fa_roll", g_fa + p * (e_fa - g_fa))
            _set(P, f"{s}_ua_pitch", 30 * (1 - p) + p * e_pitch)
            _set(P, f"{s}_fa_pitch", 20 * (1 - p) + p * e_pitch)
            st[f"{sname[s]}_arm"][:] = np.where(p > 0.15, "stretch", "none")
            st[f"{sname[s]}_hand"][:] = np.where(p > 0.15, "punch", "none")
        sign = np.where(k % 2 == 0, 1.0, -1.0)
        _set(P, "twist", 0.25 * sign * pulse)
        st["hip"][:] = "turn"
    elif action == "kicking":
        T = 0.9 + 0.5 * (1 - f)
        t2 = ts + ph / (2 * np.pi) * T
        frac = (t2 / T) % 1.0
        pulse = np.where(frac < 0.6, np.sin(np.pi * np.clip(frac / 0.6, 0, 1)), 0.0)
        if fig.style == 1:  # forward kick: thigh and shin pitch towards the camera
            _set(P, f"{side}_th_pitch", 80 * pulse)
            _set(P, f"{side}_sh_pitch", (60 + 60 * A) * pulse)
            _set(P, f"{side}_th_roll", 4 + 8 * pulse)
            _set(P, f"{side}_sh_roll", 2 + 8 * pulse)
        else:  # sideways kick
            lift = 45 + 35 * A
            _set(P, f"{side}_th_roll", 4 + lift * pulse)
            _set(P, f"{side}_sh_roll", 2 + (lift + 10) * pulse)
        # arms out a little for balance, torso leans away
        for s in ("l", "r"):
            _set(P, f"{s}_ua_roll", 8 + 22 * pulse)
            _set(P, f"{s}_fa_roll", 10 + 30 * pulse)
        _set(P, f"{other}_th_roll", 2 - 4 * pulse)
        _set(P, "tilt", (-1 if side == "l" else 1) * 8 * pulse)
        kick = np.where(pulse > 0.08, "kick", "none")
        st[f"{sname[side]}_leg"][:] = kick
        st[f"{sname[side]}_foot"][:] = kick
    elif action == "squatting":
        T = 1.5 + 1.0 * (1 - f)
        c = (1 - np.cos(2 * np.pi * ts / T + ph)) / 2
        dc = np.sin(2 * np.pi * ts / T + ph)
        D = 0.65 + 0.35 * A
        d = c * D
        for s in ("l", "r"):
            _set(P, f"{s}_th_pitch", 78 * d)
            _set(P, f"{s}_th_roll", 4 + 22 * d)
            _set(P, f"{s}_sh_pitch", -25 * d)
            _set(P, f"{s}_sh_roll", 2 - 12 * d)
            _set(P, f"{s}_ua_pitch", 82 * d)
            _set(P, f"{s}_fa_pitch", 86 * d)
            _set(P, f"{s}_ua_roll", 8 + 4 * d)
            _set(P, f"{s}_fa_roll", 5 + 4 * d)
        _set(P, "torso_pitch", 30 * d)
        down = dc >= 0
        st["hip"][:] = "bend"
        for s in ("left", "right"):
            st[f"{s}_leg"][:] = np.where(down, "bend", "unbend")
            st[f"{s}_arm"][:] = np.where(down, "raise", "lower")
    elif action == "jumping_jacks":
        T = 0.7 + 0.35 * (1 - f)
        a = 2 * np.pi * ts / T + ph
        c = (1 - np.cos(a)) / 2
        dc = np.sin(a)
        for s in ("l", "r"):
            _set(P, f"{s}_ua_roll", 10 + (140 + 25 * A) * c)
            _set(P, f"{s}_fa_roll", 8 + (150 + 25 * A) * c)
            _set(P, f"{s}_fa_pitch", 0)
            _set(P, f"{s}_th_roll", 3 + (16 + 10 * A) * c)
            _set(P, f"{s}_sh_roll", 2 + (16 + 10 * A) * c)
        _set(P, "jump", (0.05 + 0.03 * A) * np.abs(np.sin(a)))
        arm = np.where(dc >= 0, "raise", "lower")
        st["left_arm"][:] = arm
        st["right_arm"][:] = arm
        for p in ("hip", "left_leg", "right_leg", "left_foot", "right_foot"):
            st[p][:] = "jump"
    elif action == "turning_head":
        ff = 0.45 + 0.35 * f
        a = 2 * np.pi * ff * ts + ph
        cyc = np.floor(a / (2 * np.pi)).astype(int)
        nod = np.isin(cyc, np.asarray(fig.nod_cycles, dtype=int))
        s = np.sin(a)
        _set(P, "yaw", np.where(nod, 0.0, (0.6 + 0.35 * A) * s))
        _set(P, "head_pitch", np.where(nod, (0.5 + 0.3 * A) * s, 0.0))
        st["head"][:] = np.where(nod, "nod", "turn")
    elif action == "marching":
        T = 0.8 + 0.4 * (1 - f)
        a = 2 * np.pi * ts / T + ph
        lift = 55 + 30 * A
        for s, off in (("l", 0.0), ("r", np.pi)):
            up = np.maximum(0.0, np.sin(a + off))
            _set(P, f"{s}_th_pitch", lift * up)
            _set(P, f"{s}_sh_pitch", 0.0)
            swing = np.sin(a + off + np.pi)  # arm opposite to the leg
            _set(P, f"{s}_ua_pitch", 35 * swing)
            _set(P, f"{s}_fa_pitch", 35 * swing + 25 + 15 * np.maximum(0, swing))
            _set(P, f"{s}_ua_roll", 10 + 4 * swing)
            _set(P, f"{s}_fa_roll", 8 + 4 * swing)
        _set(P, "bob", 0.015 * np.abs(np.sin(a)))
        for p in ("left_leg", "right_leg", "left_foot", "right_foot"):
            st[p][:] = "step_on"
        st["left_arm"][:] = "swing"
        st["right_arm"][:] = "swing"
    elif action == "clapping":
        T = 0.42 + 0.3 * (1 - f)
        a = 2 * np.pi * ts / T + ph
        openness = (1 + np.cos(a)) / 2  # 1 open, 0 hands together
        for s in ("l", "r"):
            _set(P, f"{s}_ua_roll", -8 + 14 * openness)
            _set(P, f"{s}_ua_pitch", 40)
            _set(P, f"{s}_fa_roll", -48 + (60 + 20 * A) * openness)
            _set(P, f"{s}_fa_pitch", 30)
        for p in ("left_hand", "right_hand"):
            st[p][:] = "clap"
        st["left_arm"][:] = "swing"
        st["right_arm"][:] = "swing"
    else:
        raise ValueError(f"unknown synthetic action {action!r}; known: {list(ACTIONS)}")
    for p in PARTS:
        bad = set(st[p]) - set(PART_STATES[GROUP_OF_PART[p]])
        if bad:
            raise AssertionError(f"action {action!r} gives part {p!r} unknown state(s) {sorted(bad)}")
    return P, st


def figure_motion(fig: Figure, action: str, n_frames: int, fps: float, motion: str | None = None):
    """Per-frame pose vectors (n, N_POSE), per-part states {part: (n,) str} and per-frame action.

    The figure performs ``motion`` (default: ``action``; see :func:`context_motion`) and the
    per-frame action label is ``action``; poses and states depend on ``motion`` only."""
    motion = action if motion is None else motion
    t = np.arange(n_frames) / fps
    idle = _idle_pose(t, fig)
    ts = t - fig.start / fps
    act, states = _action_pose(motion, ts, fig, idle)
    t_s, t_e = fig.start / fps, fig.end / fps
    w_in = np.ones(n_frames) if fig.start == 0 else _smoothstep((t - t_s) / RAMP_S + 1e-9)
    w_out = np.ones(n_frames) if fig.end >= n_frames - 1 else _smoothstep((t_e - t) / RAMP_S)
    inside = (np.arange(n_frames) >= fig.start) & (np.arange(n_frames) <= fig.end)
    w = np.where(inside, np.minimum(w_in, w_out), 0.0)
    pose = idle + w[:, None] * (act - idle)
    per_frame_action = np.where(inside, action, "none").astype(object)
    for p in PARTS:
        states[p] = np.where(inside, states[p], "none")
    # arms blending in / out of a raised pose are raising / lowering
    if motion in ("waving",):
        part = f"{'left' if fig.side == 0 else 'right'}_arm"
        dw = np.gradient(w) if n_frames > 1 else np.zeros(n_frames)
        states[part] = np.where(inside & (dw < -1e-6), "lower", states[part])
    return pose, states, per_frame_action


# ----------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------


def _dir(roll_deg, outward):
    r = np.deg2rad(roll_deg)
    return np.array([outward * np.sin(r), np.cos(r)])


def skeleton(pose: np.ndarray, H: float, cx: float, ground: float, build: tuple = (1.0, 1.0)):
    """Keypoints (17, 2) and the drawable shapes of one figure for one pose vector.

    Person's left is on the image right (figures face the camera). Returns (kps, shapes) where
    shapes is a list of (kind, part_label, colour_key, geometry) in drawing order.
    """
    g = lambda k: pose[PK[k]]  # noqa: E731
    wf, tf = build
    out = {"l": 1.0, "r": -1.0}
    hip_c = np.array([0.0, 0.0])
    tilt = np.deg2rad(g("tilt"))
    up = np.array([np.sin(tilt), -np.cos(tilt)])
    torso_len = TORSO_LEN * H * np.cos(np.deg2rad(g("torso_pitch")))
    neck = hip_c + up * torso_len
    twist = g("twist")
    sh_half = SHOULDER_HALF * wf * H * (1 - 0.35 * abs(twist))
    side_v = np.array([np.cos(tilt), np.sin(tilt)])
    sh_c = neck + 0.03 * H * (-up) + side_v * twist * 0.05 * H
    joints = {}
    joints["l_sh"] = sh_c + side_v * sh_half
    joints["r_sh"] = sh_c - side_v * sh_half
    joints["l_hip"] = hip_c + side_v * HIP_HALF * wf * H
    joints["r_hip"] = hip_c - side_v * HIP_HALF * wf * H
    for s in ("l", "r"):
        o = out[s]
        ua = SEG_LEN["ua"] * H * np.cos(np.deg2rad(g(f"{s}_ua_pitch")))
        fa = SEG_LEN["fa"] * H * np.cos(np.deg2rad(g(f"{s}_fa_pitch")))
        joints[f"{s}_el"] = joints[f"{s}_sh"] + ua * _dir(g(f"{s}_ua_roll"), o)
        joints[f"{s}_wr"] = joints[f"{s}_el"] + fa * _dir(g(f"{s}_fa_roll"), o)
        joints[f"{s}_hand"] = joints[f"{s}_wr"] + 0.018 * H * _dir(g(f"{s}_fa_roll"), o) * np.sign(fa + 1e-9)
        th = SEG_LEN["th"] * H * np.cos(np.deg2rad(g(f"{s}_th_pitch")))
        sh = SEG_LEN["sh"] * H * np.cos(np.deg2rad(g(f"{s}_sh_pitch")))
        joints[f"{s}_kn"] = joints[f"{s}_hip"] + th * _dir(g(f"{s}_th_roll"), o)
        joints[f"{s}_an"] = joints[f"{s}_kn"] + sh * _dir(g(f"{s}_sh_roll"), o)
    head_c = neck + up * (NECK_LEN * H)
    # place on the ground: the lowest ankle stands on `ground` (minus the jump height)
    low = max(joints["l_an"][1], joints["r_an"][1])
    shift = np.array([cx, ground - low - (g("jump") + g("bob")) * H])
    for k in joints:
        joints[k] = joints[k] + shift
    neck = neck + shift
    head_c = head_c + shift
    hip_c = hip_c + shift

    rx, ry = HEAD_RX * H, HEAD_RY * H
    yaw, hp = g("yaw"), g("head_pitch")
    kps = np.zeros((NUM_KEYPOINTS, 2))
    kps[KP["nose"]] = head_c + [yaw * 0.55 * rx, 0.18 * ry + hp * 0.35 * ry]
    kps[KP["left_eye"]] = head_c + [0.38 * rx + yaw * 0.45 * rx, -0.15 * ry + hp * 0.3 * ry]
    kps[KP["right_eye"]] = head_c + [-0.38 * rx + yaw * 0.45 * rx, -0.15 * ry + hp * 0.3 * ry]
    kps[KP["left_ear"]] = head_c + [0.8 * rx - max(yaw, 0) * 0.35 * rx, -0.02 * ry]
    kps[KP["right_ear"]] = head_c + [-0.8 * rx - min(yaw, 0) * 0.35 * rx, -0.02 * ry]
    for s, name in (("l", "left"), ("r", "right")):
        kps[KP[f"{name}_shoulder"]] = joints[f"{s}_sh"]
        kps[KP[f"{name}_elbow"]] = joints[f"{s}_el"]
        kps[KP[f"{name}_wrist"]] = joints[f"{s}_wr"]
        kps[KP[f"{name}_hip"]] = joints[f"{s}_hip"]
        kps[KP[f"{name}_knee"]] = joints[f"{s}_kn"]
        kps[KP[f"{name}_ankle"]] = joints[f"{s}_an"]

    pi = PART_INDEX
    shapes = []
    # legs behind the torso, feet, torso, pelvis, neck, head, arms, hands
    for s, name in (("l", "left"), ("r", "right")):
        shapes.append(("line", pi[f"{name}_leg"], f"{s}_leg", (joints[f"{s}_hip"], joints[f"{s}_kn"], LEG_T * tf * H)))
        shapes.append(("line", pi[f"{name}_leg"], f"{s}_leg", (joints[f"{s}_kn"], joints[f"{s}_an"], LEG_T * tf * H * 0.9)))
    for s, name in (("l", "left"), ("r", "right")):
        fc = joints[f"{s}_an"] + [out[s] * 0.012 * H, 0.014 * H]
        shapes.append(("ellipse", pi[f"{name}_foot"], "shoe", (fc, FOOT_RX * H, FOOT_RY * H)))
    torso = np.array([joints["l_sh"] + side_v * 0.02 * H, joints["r_sh"] - side_v * 0.02 * H,
                      joints["r_hip"] - side_v * 0.01 * H, joints["l_hip"] + side_v * 0.01 * H])
    shapes.append(("poly", 11, "shirt", torso))
    pelvis = np.array([joints["l_hip"] + side_v * 0.02 * H + up * 0.07 * H,
                       joints["r_hip"] - side_v * 0.02 * H + up * 0.07 * H,
                       joints["r_hip"] - side_v * 0.02 * H - up * 0.035 * H,
                       joints["l_hip"] + side_v * 0.02 * H - up * 0.035 * H])
    shapes.append(("poly", pi["hip"], "pelvis", pelvis))
    shapes.append(("line", 12, "skin", (neck, head_c, NECK_T * H)))
    shapes.append(("ellipse", pi["head"], "skin", (head_c, rx, ry)))
    # hair cap on the back/top of the head: moves against the face when the head turns or nods
    hair_c = head_c + [-yaw * 0.3 * rx, -0.5 * ry + hp * 0.25 * ry]
    shapes.append(("ellipse", pi["head"], "hair", (hair_c, 0.92 * rx, 0.55 * ry)))
    shapes.append(("circle", pi["head"], "nose", (kps[KP["nose"]], max(0.6, 0.16 * rx))))
    for k in ("left_eye", "right_eye"):
        shapes.append(("circle", pi["head"], "eye", (kps[KP[k]], max(0.5, 0.11 * rx))))
    for s, name in (("l", "left"), ("r", "right")):
        shapes.append(("line", pi[f"{name}_arm"], f"{s}_arm", (joints[f"{s}_sh"], joints[f"{s}_el"], ARM_T * tf * H)))
        shapes.append(("line", pi[f"{name}_arm"], f"{s}_arm", (joints[f"{s}_el"], joints[f"{s}_wr"], ARM_T * tf * H * 0.85)))
    for s, name in (("l", "left"), ("r", "right")):
        shapes.append(("circle", pi[f"{name}_hand"], "skin", (joints[f"{s}_hand"], HAND_R * H)))
    return kps, shapes


def shape_box(kind: str, geom) -> np.ndarray:
    """Exact extent [x1, y1, x2, y2] of a drawn shape (continuous pixel coordinates)."""
    if kind == "line":
        a, b, t = geom
        r = t / 2
        return np.array([min(a[0], b[0]) - r, min(a[1], b[1]) - r, max(a[0], b[0]) + r, max(a[1], b[1]) + r])
    if kind == "circle":
        c, r = geom
        return np.array([c[0] - r, c[1] - r, c[0] + r, c[1] + r])
    if kind == "ellipse":
        c, rx, ry = geom
        return np.array([c[0] - rx, c[1] - ry, c[0] + rx, c[1] + ry])
    if kind == "poly":
        p = np.asarray(geom)
        return np.array([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()])
    raise ValueError(kind)


_SHIFT = 4
_ONE = 1 << _SHIFT


def _fx(p):
    """Continuous coordinate -> cv2 fixed point (pixel i covers [i, i+1), centre i + 0.5)."""
    return (math.floor((float(p[0]) - 0.5) * _ONE + 0.5), math.floor((float(p[1]) - 0.5) * _ONE + 0.5))


def _fr(v) -> int:
    """Length -> cv2 fixed point."""
    return math.floor(float(v) * _ONE + 0.5)


def draw_shape(img, kind: str, geom, color, line_type) -> None:
    import cv2

    if kind == "line":
        a, b, t = geom
        # a capsule: a rectangle plus two round caps (cv2.line's thick lines are biased by ~1 px)
        a, b = np.asarray(a, float), np.asarray(b, float)
        d = b - a
        n = np.array([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-9) * (t / 2)
        quad = np.array([_fx(a + n), _fx(b + n), _fx(b - n), _fx(a - n)], dtype=np.int32)
        cv2.fillConvexPoly(img, quad, color, line_type, _SHIFT)
        r = _fr(t / 2)
        cv2.circle(img, _fx(a), r, color, -1, line_type, _SHIFT)
        cv2.circle(img, _fx(b), r, color, -1, line_type, _SHIFT)
    elif kind == "circle":
        c, r = geom
        cv2.circle(img, _fx(c), _fr(r), color, -1, line_type, _SHIFT)
    elif kind == "ellipse":
        c, rx, ry = geom
        cv2.ellipse(img, _fx(c), (_fr(rx), _fr(ry)), 0, 0, 360, color, -1, line_type, _SHIFT)
    elif kind == "poly":
        pts = np.array([_fx(p) for p in geom], dtype=np.int32)
        cv2.fillPoly(img, [pts], color, line_type, _SHIFT)


# ----------------------------------------------------------------------------------------------
# scene
# ----------------------------------------------------------------------------------------------


def _background(rng, width: int, height: int, pad: int, extra: int) -> np.ndarray:
    """A textured canvas larger than the frame: smooth colour noise, stripes, blobs and a floor."""
    import cv2

    W, Hh = width + 2 * pad + extra, height + 2 * pad
    base = rng.uniform(50, 200, size=3)
    low = rng.uniform(-1, 1, size=(max(2, Hh // 12), max(2, W // 12), 3))
    tex = cv2.resize(low.astype(np.float32), (W, Hh), interpolation=cv2.INTER_CUBIC) * rng.uniform(20, 45)
    fine = rng.uniform(-1, 1, size=(max(2, Hh // 3), max(2, W // 3), 3)).astype(np.float32)
    tex += cv2.resize(fine, (W, Hh), interpolation=cv2.INTER_LINEAR) * rng.uniform(4, 12)
    yy, xx = np.mgrid[0:Hh, 0:W].astype(np.float32)
    ang = rng.uniform(0, np.pi)
    period = rng.uniform(6, 30)
    stripes = np.sin((xx * np.cos(ang) + yy * np.sin(ang)) * 2 * np.pi / period)
    tex += (stripes[..., None] * rng.uniform(5, 22) * rng.uniform(0.3, 1.0, size=3)).astype(np.float32)
    img = np.clip(base + tex, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 7))):
        c = (int(rng.integers(0, W)), int(rng.integers(0, Hh)))
        ax = (int(rng.integers(4, max(5, W // 6))), int(rng.integers(4, max(5, Hh // 5))))
        col = tuple(int(v) for v in rng.integers(30, 230, size=3))
        cv2.ellipse(img, c, ax, float(rng.uniform(0, 180)), 0, 360, col, -1, cv2.LINE_AA)
    # floor below a horizon
    horizon = pad + int(height * rng.uniform(0.4, 0.62))
    floor_col = rng.uniform(40, 190, size=3)
    floor = img[horizon:].astype(np.float32) * 0.35 + floor_col * 0.65
    tile = rng.uniform(10, 26)
    fy = yy[horizon:]
    floor += (np.sin(fy * 2 * np.pi / tile)[..., None] * 8).astype(np.float32)
    img[horizon:] = np.clip(floor, 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(img, (3, 3), 0)


@dataclass
class Occluder:
    x0: float
    vx: float
    y1: float
    w: float
    h: float
    color: tuple
    stripe: tuple


def _make_scene(spec: VideoSpec, cfg: SynthConfig):
    rng = np.random.default_rng([cfg.seed, 104729, spec.index])
    W, Hh, fps, n = cfg.width, cfg.height, cfg.fps, spec.n_frames
    n_people = int(rng.integers(1, cfg.max_people + 1))
    unit = Hh / 120.0
    figs = []
    slots = rng.permutation(n_people)
    for pid in range(n_people):
        size = rng.uniform(45, 90) * unit
        frac = (size / unit - 45) / 45
        ground = Hh * (0.64 + 0.31 * frac) + rng.uniform(-3, 3) * unit
        x0 = W * (slots[pid] + 0.5 + rng.uniform(-0.3, 0.3)) / n_people
        vx = rng.uniform(-6, 6) * unit
        # action interval: whole clip for about half the figures; idle videos: whole clip
        mode = int(rng.integers(0, 4)) if spec.action != "idle" else 0
        start, end = 0, n - 1
        min_len = max(2, int(0.35 * n))
        if mode in (1, 3):
            start = int(rng.uniform(0.1, 0.4) * n)
        if mode in (2, 3):
            end = int(rng.uniform(0.6, 0.92) * n)
        if end - start + 1 < min_len:
            end = min(n - 1, start + min_len - 1)
        if mode != 0 and rng.random() < 0.34:
            mode = 0  # -> ~half of the figures act for the whole clip
            start, end = 0, n - 1
        nod = tuple(int(c) for c in np.nonzero(rng.random(8) < 0.35)[0])
        figs.append(Figure(
            pid=pid, size=size, x0=x0, vx=vx, ground=ground, colors=_make_colors(rng),
            start=start, end=end, side=int(rng.integers(0, 2)), freq=rng.uniform(0.0, 1.0),
            amp=rng.uniform(0.0, 1.0), phase=(rng.uniform(0, 2 * np.pi) if start == 0 else 0.0),
            style=int(rng.integers(0, 2)), idle_phase=rng.uniform(0, 2 * np.pi), nod_cycles=nod,
            build=(float(rng.uniform(0.85, 1.2)), float(rng.uniform(0.8, 1.2)))))
    pad, bg_v = 4, rng.uniform(-6, 6) * unit
    extra = int(abs(bg_v) * n / fps) + 2
    bg = _background(rng, W, Hh, pad, extra)
    # camera jitter: a damped random walk, integer pixels (background and figures move together)
    jit = np.zeros((n, 2))
    for i in range(1, n):
        jit[i] = 0.8 * jit[i - 1] + rng.normal(0, 0.6, size=2)
    jit = np.clip(np.round(jit), -pad, pad)
    occ = None
    if rng.random() < cfg.occluder_prob:
        w = rng.uniform(0.08, 0.18) * W
        h = rng.uniform(0.3, 0.7) * Hh
        going_right = rng.random() < 0.5
        span = W + w
        dur = n / fps
        vx = span / dur * rng.uniform(0.6, 1.2) * (1 if going_right else -1)
        x0 = (-w + rng.uniform(0, 0.3) * W) if going_right else (W - rng.uniform(0, 0.3) * W)
        occ = Occluder(x0=x0, vx=vx, y1=rng.uniform(0.2, 1.0) * (Hh - h), w=w, h=h,
                       color=tuple(int(v) for v in rng.integers(30, 230, size=3)),
                       stripe=tuple(int(v) for v in rng.integers(30, 230, size=3)))
    return figs, bg, bg_v, pad, jit, occ


# ----------------------------------------------------------------------------------------------
# context props (synth.context)
# ----------------------------------------------------------------------------------------------
# (body motion, the action that copies it when synth.context is on, the prop beside its figures)
CONTEXT_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("waving", "punching", "bag"),
    ("marching", "kicking", "ball"),
    ("raising_arms", "jumping_jacks", "board"),
)
# prop -> (width, height, centre height above the figure's ground line), as fractions of the figure height
PROP_SIZE = {"ball": (0.13, 0.13, 0.025), "bag": (0.11, 0.26, 0.58), "board": (0.14, 0.14, 0.88)}
PROP_GAP = 1.0  # px kept free between the prop and both the person box and the 2x context box's edge


def context_motion(action: str) -> str:
    """The body motion a figure labelled ``action`` performs when ``synth.context`` is on."""
    return next((m for m, a, _ in CONTEXT_PAIRS if a == action), action)


def context_prop(action: str) -> str | None:
    """The prop drawn beside figures labelled ``action`` when ``synth.context`` is on (None: none)."""
    return next((p for _, a, p in CONTEXT_PAIRS if a == action), None)


def shapes_box(shapes) -> np.ndarray:
    """Box [x1, y1, x2, y2] of all of a figure's drawn shapes (unclipped)."""
    sb = np.array([shape_box(kind, g) for kind, _, _, g in shapes])
    return np.concatenate([sb[:, :2].min(0), sb[:, 2:].max(0)])


def prop_box(prop: str, person_box, ground: float, size: float, side: int, width: int, height: int):
    """Where ``prop`` goes in one frame: (box [x1, y1, x2, y2], pixel window (x1, y1, x2, y2)), or
    None when there is no room.

    The box lies beside the (image-clipped) ``person_box`` on ``side`` (1 = right; the other side
    when the prop would leave the frame there and fits on the other), ``PROP_GAP`` px away from it
    and ``PROP_GAP`` px inside that box enlarged 2x about its centre: at most a quarter of the box
    width wide, scaled down uniformly on narrower boxes. ``ground`` and ``size`` (the figure's
    height) set its height in the frame: a ball on the floor, a bag at chest height, a board at head
    height. The window holds the frame pixels wholly outside the person box and wholly inside the
    2x box on that side: the prop (anti-aliased edges included) changes no other pixel.
    """
    b0, b1, b2, b3 = (float(v) for v in person_box)
    w, h = b2 - b0, b3 - b1
    fw, fh, up = PROP_SIZE[prop]
    pw, ph = fw * size, fh * size
    k = min(1.0, (0.5 * w - 2 * PROP_GAP) / pw)
    pw, ph = pw * k, ph * k
    lo, hi = b1 - 0.5 * h + PROP_GAP + 0.5 * ph, b3 + 0.5 * h - PROP_GAP - 0.5 * ph
    if pw < 2.0 or lo > hi:
        return None
    cy = float(np.clip(ground - up * size, lo, hi))
    right, left = (b2 + PROP_GAP, b2 + PROP_GAP + pw), (b0 - PROP_GAP - pw, b0 - PROP_GAP)
    x = (right, left) if side == 1 else (left, right)
    xa, xb = x[0] if (x[0][0] >= 0 and x[0][1] <= width) or not (x[1][0] >= 0 and x[1][1] <= width) else x[1]
    wx = (math.ceil(b2), math.floor(b2 + 0.5 * w)) if xa >= b2 else (math.ceil(b0 - 0.5 * w), math.floor(b0))
    window = (max(0, wx[0]), max(0, math.ceil(b1 - 0.5 * h)), min(width, wx[1]), min(height, math.floor(b3 + 0.5 * h)))
    return np.array([xa, cy - 0.5 * ph, xb, cy + 0.5 * ph]), window


def draw_prop(img, prop: str, box) -> None:
    """Draw ``prop`` (anti-aliased) inside ``box``: a white ball with a dark patch, a red punching
    bag with a yellow band, a blue board with a white centre."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    c = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    import cv2

    aa = cv2.LINE_AA
    if prop == "ball":
        r = min(w, h) / 2
        draw_shape(img, "circle", (c, r), (245, 245, 240), aa)
        draw_shape(img, "circle", (c + [0.2 * r, -0.2 * r], 0.3 * r), (30, 30, 30), aa)
    elif prop == "bag":
        draw_shape(img, "line", (c - [0, h / 2 - w / 2], c + [0, h / 2 - w / 2], w), (170, 25, 20), aa)
        band = max(1.0, 0.12 * h)
        draw_shape(img, "line", ((x1 + band / 2, y1 + 0.3 * h), (x2 - band / 2, y1 + 0.3 * h), band), (240, 205, 40), aa)
    elif prop == "board":
        draw_shape(img, "poly", np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]), (35, 85, 225), aa)
        draw_shape(img, "circle", (c, 0.2 * min(w, h)), (245, 245, 245), aa)
    else:
        raise ValueError(f"unknown context prop {prop!r}; known: {sorted(PROP_SIZE)}")


def render_video(spec: VideoSpec, cfg: SynthConfig):
    """Yield (rgb frame, gt list) per frame; gt entries are dicts with person/box/keypoints/parts.

    With ``cfg.context`` the figures of a context action perform their pair's motion and get a prop
    (:data:`CONTEXT_PAIRS`), drawn onto the background before any figure; the ground truth is what
    the same figures give without it."""
    import cv2

    figs, bg, bg_v, pad, jit, occ = _make_scene(spec, cfg)
    W, Hh, fps, n = cfg.width, cfg.height, cfg.fps, spec.n_frames
    motion = context_motion(spec.action) if cfg.context else spec.action
    prop = context_prop(spec.action) if cfg.context else None
    motions = [figure_motion(f, spec.action, n, fps, motion) for f in figs]
    order = sorted(range(len(figs)), key=lambda i: figs[i].ground)  # far (small y) first
    for fi in range(n):
        t = fi / fps
        jx, jy = jit[fi]
        ox = int(round(pad + abs(bg_v) * t)) if bg_v >= 0 else int(round(pad + abs(bg_v) * (n / fps - t)))
        ox = int(np.clip(ox + jx, 0, bg.shape[1] - W))
        oy = int(np.clip(pad + jy, 0, bg.shape[0] - Hh))
        frame = np.ascontiguousarray(bg[oy:oy + Hh, ox:ox + W])
        owner = np.zeros((Hh, W), np.uint8)  # 0 = background, 16*(slot+1) + label
        own_counts = {}
        geo = {}
        posed = {}
        for i in order:
            f = figs[i]
            posed[i] = skeleton(motions[i][0][fi], f.size, f.x0 + f.vx * t - jx, f.ground - jy, f.build)
        if prop is not None:  # scenery: behind every figure, outside the owner map
            for i in order:
                f = figs[i]
                pb = _clip_box(shapes_box(posed[i][1]), W, Hh)
                if f.start <= fi <= f.end and pb[2] - pb[0] >= 4 and pb[3] - pb[1] >= 4:
                    placed = prop_box(prop, pb, f.ground - jy, f.size, int(f.x0 < W / 2), W, Hh)
                    if placed is not None:
                        (x1, y1, x2, y2), canvas = placed[1], frame.copy()
                        draw_prop(canvas, prop, placed[0])
                        frame[y1:y2, x1:x2] = canvas[y1:y2, x1:x2]
        for slot, i in enumerate(order):
            f = figs[i]
            kps, shapes = posed[i]
            own = np.zeros((Hh, W), np.uint8)
            for kind, label, ckey, g in shapes:
                draw_shape(frame, kind, g, f.colors[ckey], cv2.LINE_AA)
                draw_shape(own, kind, g, int(label + 1), cv2.LINE_8)
            mask = own > 0
            owner[mask] = 16 * (slot + 1) + own[mask]
            own_counts[i] = np.bincount(own.ravel(), minlength=16)
            geo[i] = (kps, shapes, slot)
        if occ is not None:
            x1 = occ.x0 + occ.vx * t - jx
            box = np.array([x1, occ.y1 - jy, x1 + occ.w, occ.y1 - jy + occ.h])
            xa, ya = int(np.clip(round(box[0]), 0, W)), int(np.clip(round(box[1]), 0, Hh))
            xb, yb = int(np.clip(round(box[2]), 0, W)), int(np.clip(round(box[3]), 0, Hh))
            if xb > xa and yb > ya:
                frame[ya:yb, xa:xb] = occ.color
                frame[ya:yb:4, xa:xb] = occ.stripe
                owner[ya:yb, xa:xb] = 255
        counts = np.bincount(owner.ravel(), minlength=256)
        gts = []
        for i in range(len(figs)):
            kps, shapes, slot = geo[i]
            sb = np.array([shape_box(kind, g) for kind, _, _, g in shapes])
            labels = np.array([lab for _, lab, _, _ in shapes])
            all_box = np.concatenate([sb[:, :2].min(0), sb[:, 2:].max(0)])
            part_box = np.empty((NUM_PARTS, 4))
            for j in range(NUM_PARTS):
                pb = sb[labels == j]
                part_box[j, :2] = pb[:, :2].min(0)
                part_box[j, 2:] = pb[:, 2:].max(0)
            box = _clip_box(all_box, W, Hh)
            vis_px = counts[16 * (slot + 1) + 1: 16 * (slot + 1) + 16]
            if box[2] - box[0] < 4 or box[3] - box[1] < 4 or vis_px.sum() == 0:
                continue
            own_px = own_counts[i][1:16]
            part_visible = np.array([own_px[j] > 0 and vis_px[j] >= max(2, 0.2 * own_px[j]) for j in range(NUM_PARTS)])
            part_box = _clip_box(part_box, W, Hh)
            xi = np.floor(kps[:, 0]).astype(int)
            yi = np.floor(kps[:, 1]).astype(int)
            inside = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < Hh)
            vis = np.zeros(NUM_KEYPOINTS, bool)
            vis[inside] = (owner[yi[inside], xi[inside]] >> 4) == slot + 1
            _, states, acts = motions[i]
            gts.append({
                "person": figs[i].pid,
                "box": box,
                "keypoints": np.concatenate([kps, vis[:, None].astype(float)], axis=1).ravel(),
                "part_boxes": part_box.ravel(),
                "part_visible": part_visible,
                "part_states": [str(states[p][fi]) for p in PARTS],
                "action": str(acts[fi]),
            })
        gts.sort(key=lambda g: g["person"])
        yield frame, gts


def _clip_box(b, W, Hh):
    """Clip box(es) [..., 4] to the image."""
    return np.clip(b, 0, np.array([W, Hh, W, Hh], dtype=float))


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------


def write_video(frames_iter, path: Path, fps: float, width: int, height: int, fourcc: str = "mp4v"):
    """Write RGB frames with cv2.VideoWriter to a temp name beside ``path``, then rename.

    Returns the list of whatever the iterator yielded besides the frame (the GT per frame)."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*fourcc), float(fps), (width, height))
    extras = []
    try:
        if not writer.isOpened():
            raise ValueError(f"{path}: cv2.VideoWriter cannot open fourcc {fourcc!r} for this container")
        for frame, extra in frames_iter:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
            extras.append(extra)
        writer.release()
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        writer.release()
        if os.path.exists(tmp):
            os.unlink(tmp)
    return extras


def tubes_from_gt(gt) -> dict:
    """MultiSports ``gttubes`` of one data set from a gt_persons DataFrame.

    One tube per person per contiguous run of frames in which the person performs an action
    (action != "none") and is present in the ground truth: {video: {label_idx: [array (n, 5)]}},
    columns frame (1-based), x1, y1, x2, y2 (float32).
    """
    out: dict = {}
    for video, g in gt.groupby("video", sort=True):
        vt = out.setdefault(video, {})
        for _, gp in g.groupby("person", sort=True):
            gp = gp[gp["action"] != "none"].sort_values("frame")
            if gp.empty:
                continue
            frames = gp["frame"].to_numpy()
            labels = gp["action"].to_numpy()
            boxes = np.stack(gp["box"].to_numpy()).astype(np.float32)
            cut = np.nonzero((np.diff(frames) != 1) | (labels[1:] != labels[:-1]))[0] + 1
            for seg in np.split(np.arange(len(frames)), cut):
                lab = ACTIONS.index(labels[seg[0]])
                arr = np.concatenate([(frames[seg] + 1)[:, None].astype(np.float32), boxes[seg]], axis=1)
                vt.setdefault(lab, []).append(arr.astype(np.float32))
    return out


def tps_annotations(gt, videos, split: str, sampling: int = TPS_SAMPLING):
    """Kinetics-TPS ``gt_part_result`` and ``gt_vid_result`` dicts of one split.

    Frames 0, sampling, 2*sampling, ... of each video (``img_00001.json``, ``img_00006.json``, ...);
    humans are listed in person order with ``number`` 1..k; only visible parts are listed.
    """
    part_res: dict = {}
    vid_res: dict = {}
    vids = videos[videos["split"] == split]
    gt = gt[gt["frame"] % sampling == 0]
    by_video = {v: g for v, g in gt.groupby("video", sort=False)}
    for row in vids.itertuples(index=False):
        vid_res[row.video] = row.action
        frames = {}
        g = by_video.get(row.video)
        by_frame = {} if g is None else {int(f): gf.sort_values("person") for f, gf in g.groupby("frame")}
        for fr in range(0, int(row.n_frames), sampling):
            humans = []
            gf = by_frame.get(fr)
            if gf is not None:
                for k, h in enumerate(gf.itertuples(index=False), start=1):
                    pb = np.asarray(h.part_boxes, dtype=float).reshape(NUM_PARTS, 4)
                    parts = {}
                    for j, part in enumerate(PARTS):
                        if h.part_visible[j]:
                            parts[part] = {"number": j + 1, "box": [round(float(v), 2) for v in pb[j]],
                                           "verb": str(h.part_states[j]), "name": part}
                    humans.append({"number": k, "box": [round(float(v), 2) for v in h.box], "parts": parts})
            frames[tps_frame_name(fr)] = {"humans": humans}
        part_res[row.video] = frames
    return part_res, vid_res


# ----------------------------------------------------------------------------------------------
# FineGym-style three-level labels (seed 004): event (body region) -> set (action) -> element
# (action variant by side, style, amplitude or speed of the performing figure)
# ----------------------------------------------------------------------------------------------
FINEGYM_EVENTS: tuple[str, ...] = ("REST", "HEAD", "ARMS", "LEGS", "BODY")  # FineGym's VT / FX / BB / UB
FINEGYM_SETS: dict[str, tuple[int, str]] = {  # action -> (set id = 10 * event number + k, event)
    "idle": (11, "REST"),
    "turning_head": (21, "HEAD"),
    "waving": (31, "ARMS"), "raising_arms": (32, "ARMS"), "punching": (33, "ARMS"), "clapping": (34, "ARMS"),
    "kicking": (41, "LEGS"), "squatting": (42, "LEGS"), "marching": (43, "LEGS"),
    "jumping_jacks": (51, "BODY"),
}
# action -> element names, in Clabel order; the variant of a figure is chosen by finegym_element().
FINEGYM_ELEMENTS: dict[str, tuple[str, ...]] = {
    "idle": ("idle",),
    "turning_head": ("turning_head_slow", "turning_head_fast"),
    "waving": ("waving_left", "waving_right"),
    "raising_arms": ("raising_arms_low", "raising_arms_high"),
    "punching": ("punching_sideways", "punching_forward"),
    "clapping": ("clapping_slow", "clapping_fast"),
    "kicking": ("kicking_sideways_left", "kicking_sideways_right", "kicking_forward_left", "kicking_forward_right"),
    "squatting": ("squatting_shallow", "squatting_deep"),
    "marching": ("marching_slow", "marching_fast"),
    "jumping_jacks": ("jumping_jacks_slow", "jumping_jacks_fast"),
}


def finegym_element(action: str, fig: Figure) -> str:
    """Element (finest label) of a figure performing ``action``: the action plus the variant its
    drawn parameters give (side: 0 = the person's left; style 1 = forward; amp / freq halves)."""
    names = FINEGYM_ELEMENTS.get(action)
    if names is None:
        raise ValueError(f"unknown synthetic action {action!r}; known: {list(FINEGYM_ELEMENTS)}")
    if action == "idle":
        k = 0
    elif action == "waving":
        k = int(fig.side)
    elif action in ("raising_arms", "squatting"):
        k = int(fig.amp >= 0.5)
    elif action == "punching":
        k = int(fig.style == 1)
    elif action == "kicking":
        k = 2 * int(fig.style == 1) + int(fig.side)
    else:  # speed variants
        k = int(fig.freq >= 0.5)
    return names[k]


def finegym_hierarchy() -> dict:
    """{"events": [...], "sets": [{"id", "name", "event"}], "elements": [{"label", "name", "set", "event"}]}
    (element ``label`` = FineGym's Clabel, in set-id order)."""
    sets = sorted(((sid, a, ev) for a, (sid, ev) in FINEGYM_SETS.items()), key=lambda t: t[0])
    elements = []
    for sid, action, ev in sets:
        for name in FINEGYM_ELEMENTS[action]:
            elements.append({"label": len(elements), "name": name, "set": sid, "event": ev})
    return {"events": list(FINEGYM_EVENTS),
            "sets": [{"id": sid, "name": a, "event": ev} for sid, a, ev in sets],
            "elements": elements}


def finegym_annotations(specs, cfg: SynthConfig, gt) -> dict[str, str | dict]:
    """The FineGym annotation files of the data set, {file name: text or JSON dict}.

    One FineGym *event* per figure and video (its action interval, restricted to frames where the
    figure is in the ground truth), holding one *element* segment spanning the event; the element
    label follows from the figure's drawn variant (:func:`finegym_element`). Layout as FineGym v1.x:

    * ``finegym_annotation_info.json``: {video: {"E_<first>_<last>_P<person>": {"event": event
      number (1-based), "timestamps": [[start s, end s]], "segments": {"A_0000_<frames>": {"stages": 1,
      "timestamps": [[start s, end s] relative to the event]}}, "person": track id}}}; ``person`` (the
      ``gt_persons`` track to crop) is our addition, the ids count frames where FineGym counts seconds;
    * ``gym_categories.txt``: ``Clabel: k; set: s; Glabel: k; (EVENT) element name`` per element;
    * ``gym_set_categories.txt``: ``set: s; (EVENT) set name`` per set;
    * ``gym_train_element.txt`` / ``gym_val_element.txt``: ``<video>_<event id>_<segment id> <Clabel>``
      for the train / test split.
    """
    h = finegym_hierarchy()
    label_of = {e["name"]: e["label"] for e in h["elements"]}
    info: dict = {}
    lines = {"train": [], "test": []}
    present = {}
    if len(gt):
        for (v, pid), g in gt.groupby(["video", "person"], sort=False):
            present[(v, int(pid))] = np.sort(g["frame"].to_numpy())
    for spec in specs:
        figs = _make_scene(spec, cfg)[0]
        events = {}
        for fig in figs:
            fr = present.get((spec.name, fig.pid))
            if fr is None:
                continue
            fr = fr[(fr >= fig.start) & (fr <= fig.end)]
            if len(fr) == 0:
                continue
            s, e = int(fr[0]), int(fr[-1])
            element = finegym_element(spec.action, fig)
            _, ev = FINEGYM_SETS[spec.action]
            eid = f"E_{s:06d}_{e:06d}_P{fig.pid}"
            sid = f"A_0000_{e - s:04d}"
            events[eid] = {"event": FINEGYM_EVENTS.index(ev) + 1,
                           "timestamps": [[round(s / cfg.fps, 4), round((e + 1) / cfg.fps, 4)]],
                           "segments": {sid: {"stages": 1, "timestamps": [[0.0, round((e + 1 - s) / cfg.fps, 4)]]}},
                           "person": int(fig.pid)}
            lines[spec.split].append(f"{spec.name}_{eid}_{sid} {label_of[element]}")
        if events:
            info[spec.name] = events
    cats = [f"Clabel: {e['label']}; set: {e['set']}; Glabel: {e['label']}; ({e['event']}) {e['name']}"
            for e in h["elements"]]
    sets = [f"set: {x['id']}; ({x['event']}) {x['name']}" for x in h["sets"]]
    return {"finegym_annotation_info.json": info,
            "gym_categories.txt": "\n".join(cats) + "\n",
            "gym_set_categories.txt": "\n".join(sets) + "\n",
            "gym_train_element.txt": "".join(x + "\n" for x in lines["train"]),
            "gym_val_element.txt": "".join(x + "\n" for x in lines["test"])}


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def multisports_gt(gt, videos) -> dict:
    """The MultiSports / MOC ground-truth dict (as pickled to ``multisports_gt.pkl``)."""
    return {
        "labels": list(ACTIONS),
        "train_videos": [sorted(videos.loc[videos["split"] == "train", "video"].tolist())],
        "test_videos": [sorted(videos.loc[videos["split"] == "test", "video"].tolist())],
        "nframes": {r.video: int(r.n_frames) for r in videos.itertuples(index=False)},
        "resolution": {r.video: (int(r.height), int(r.width)) for r in videos.itertuples(index=False)},
        "gttubes": tubes_from_gt(gt),
    }


def _gt_columns(video: str, per_frame: list[list[dict]]) -> dict:
    cols = {k: [] for k in ("video", "frame", "person", "box", "keypoints", "part_boxes", "part_visible",
                            "part_states", "action")}
    for fi, gts in enumerate(per_frame):
        for g in gts:
            cols["video"].append(video)
            cols["frame"].append(fi)
            cols["person"].append(int(g["person"]))
            cols["box"].append(np.asarray(g["box"], np.float32))
            cols["keypoints"].append(np.asarray(g["keypoints"], np.float32))
            cols["part_boxes"].append(np.asarray(g["part_boxes"], np.float32))
            cols["part_visible"].append([bool(v) for v in g["part_visible"]])
            cols["part_states"].append(list(g["part_states"]))
            cols["action"].append(g["action"])
    return cols


def _render_one(spec: VideoSpec, cfg: SynthConfig, out: Path) -> list:
    """Render one video to ``out/videos/<name>.mp4``; return its per-frame ground truth."""
    return write_video(render_video(spec, cfg), out / "videos" / f"{spec.name}.mp4", cfg.fps, cfg.width,
                       cfg.height, cfg.fourcc)


def _render_all(specs: list[VideoSpec], cfg: SynthConfig, out: Path):
    """Yield (spec, per-frame GT) in plan order, rendering in ``cfg.workers`` processes.

    Every video draws from its own random generator (seeded by ``cfg.seed`` and its index), so
    files and ground truth are identical whatever the number of processes.
    """
    from .parallel import map_jobs

    workers = cfg.workers or os.cpu_count() or 1
    yield from zip(specs, map_jobs(_render_one, specs, workers, cfg, out))


def generate(cfg: SynthConfig, out_dir: str | os.PathLike, progress: bool | None = None) -> dict:
    """Render the whole data set into ``out_dir``; return a small summary dict.

    Writes ``videos/<name>.mp4``, ``videos.parquet``, ``gt_persons.parquet``,
    ``annotations/tps/<split>/gt_part_result.json`` + ``gt_vid_result.json`` and
    ``annotations/multisports_gt.pkl``, and the FineGym-layout three-level labels under
    ``annotations/finegym/`` (:func:`finegym_annotations`).
    """
    import pyarrow as pa
    from tqdm import tqdm

    from .atomic import write_json
    from .schemas import from_columns, from_rows, write_table

    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    specs = plan_videos(cfg)
    keep = {f"{s.name}.mp4" for s in specs}
    for old in (out / "videos").glob("synth_*.mp4"):  # stale clips of an earlier, bigger set
        if old.name not in keep:
            old.unlink()
    video_rows = []
    tables = []
    n_rows = 0
    bar = tqdm(total=len(specs), desc="synth", unit="video", disable=None if progress is None else not progress)
    for spec, per_frame in _render_all(specs, cfg, out):
        rel = f"videos/{spec.name}.mp4"
        bar.update(1)
        video_rows.append({"video": spec.name, "path": rel, "split": spec.split, "action": spec.action,
                           "n_frames": len(per_frame), "fps": float(cfg.fps), "width": cfg.width,
                           "height": cfg.height})
        t = from_columns(_gt_columns(spec.name, per_frame), "gt_persons")
        n_rows += t.num_rows
        tables.append(t)
    bar.close()
    videos_t = from_rows(video_rows, "videos")
    gt_t = pa.concat_tables(tables) if tables else from_rows([], "gt_persons")
    write_table(videos_t, out / "videos.parquet", "videos")
    write_table(gt_t, out / "gt_persons.parquet", "gt_persons", row_group_size=65536)

    videos_df = videos_t.to_pandas()
    gt_df = gt_t.to_pandas()
    ann = out / "annotations"
    for split in ("train", "test"):
        part_res, vid_res = tps_annotations(gt_df, videos_df, split)
        write_json(part_res, ann / "tps" / split / "gt_part_result.json", indent=None)
        write_json(vid_res, ann / "tps" / split / "gt_vid_result.json")
    ms = multisports_gt(gt_df, videos_df)
    pkl = ann / "multisports_gt.pkl"
    fd, tmp = tempfile.mkstemp(prefix=f".{pkl.name}.", suffix=".tmp", dir=ann)
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(ms, fh, protocol=4)
        os.replace(tmp, pkl)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    for name, content in finegym_annotations(specs, cfg, gt_df).items():
        if isinstance(content, str):
            _write_text(ann / "finegym" / name, content)
        else:
            write_json(content, ann / "finegym" / name, indent=None)
    n_tubes = sum(len(v) for d in ms["gttubes"].values() for v in d.values())
    return {"videos": len(specs), "train": cfg.n_train, "test": cfg.n_test, "frames": int(videos_df["n_frames"].sum()),
            "gt_rows": n_rows, "tubes": n_tubes, "out": str(out), "config": asdict(cfg)}
