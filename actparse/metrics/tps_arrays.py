"""The flat arrays that Kinetics-TPS scoring works on, shared by the two readers of part-result files:
:func:`actparse.metrics.tps.flatten_frames` (loaded JSON dicts) and :mod:`actparse.metrics.tps_scan`
(the file's bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# State ids from OTHER up: part states that are neither one string nor a one-string list (Vocab.verb_ids).
OTHER = 1 << 40


@dataclass
class PartFrames:
    """Frames of an official part-result file as flat arrays (frames in the order given).

    Frame f has humans ``frame_h0[f] : frame_h0[f] + frame_nh[f]``; human h has parts
    ``human_p0[h] : human_p0[h] + human_np[h]`` (a human's parts in dict order)."""

    frame_h0: np.ndarray
    frame_nh: np.ndarray
    human_box: np.ndarray  # float32, as np.float32(list of boxes)
    human_p0: np.ndarray
    human_np: np.ndarray
    part_name: np.ndarray
    part_box: np.ndarray  # float64 (the JSON numbers); nan where 'box' is not one flat box
    part_box_ok: np.ndarray
    part_verb: np.ndarray  # state ids (Vocab): equal ids <=> equal JSON values
    part_verb_len: np.ndarray  # len(verb) (-1 where it has no len), the official "proposals" count


def run_starts(counts: np.ndarray) -> np.ndarray:
    """Start offset of each run of ``counts`` in the flat arrays (exclusive cumulative sum)."""
    return np.cumsum(counts) - counts


@dataclass
class TPSInputs:
    """Ground truth and prediction of a set of videos as arrays, ready for :func:`psc_from_inputs`.

    ``frame_video[f]``: video index of ground-truth frame f (official frame order); ``pred_of[f]``:
    index of the same frame in ``pred`` or -1 when the prediction lacks it."""

    videos: list
    frame_video: np.ndarray
    pred_of: np.ndarray
    gt: PartFrames
    pred: PartFrames
    n_names: int
