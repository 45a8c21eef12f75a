"""Fixed vocabularies shared by every stage.

Keypoints follow the 17-point COCO order used by HRNet / mmpose. Body parts are the ten
Kinetics-TPS parts, grouped into the six groups of seed 001 section 1.3 (head, hand, arm, hip,
leg, foot). Actions and part states are those of the embedded synthetic data set; a user's data
set brings its own class lists (written by the ``part_labels`` stage), these are only defaults.
"""

from __future__ import annotations

COCO_KEYPOINTS: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_KEYPOINTS = len(COCO_KEYPOINTS)
KP = {name: i for i, name in enumerate(COCO_KEYPOINTS)}

# Left/right pairs, for horizontal-flip augmentation.
FLIP_PAIRS: tuple[tuple[int, int], ...] = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))

# Skeleton edges (COCO), used for drawing.
SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
    (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

# The ten Kinetics-TPS body parts, with their official names.
PARTS: tuple[str, ...] = (
    "head", "left_arm", "right_arm", "left_hand", "right_hand",
    "hip", "left_leg", "right_leg", "left_foot", "right_foot",
)
NUM_PARTS = len(PARTS)
PART_INDEX = {name: i for i, name in enumerate(PARTS)}

# Seed 001 section 1.3: six part groups, each one video-level classifier.
PART_GROUPS: dict[str, tuple[str, ...]] = {
    "head": ("head",),
    "hand": ("left_hand", "right_hand"),
    "arm": ("left_arm", "right_arm"),
    "hip": ("hip",),
    "leg": ("left_leg", "right_leg"),
    "foot": ("left_foot", "right_foot"),
}
GROUP_OF_PART = {part: group for group, parts in PART_GROUPS.items() for part in parts}
GROUPS: tuple[str, ...] = tuple(PART_GROUPS)

# Keypoints that define each part's box (the synthetic ground truth uses the drawn limb shapes).
PART_KEYPOINTS: dict[str, tuple[int, ...]] = {
    "head": (0, 1, 2, 3, 4),
    "left_arm": (5, 7, 9),
    "right_arm": (6, 8, 10),
    "left_hand": (9,),
    "right_hand": (10,),
    "hip": (11, 12),
    "left_leg": (11, 13, 15),
    "right_leg": (12, 14, 16),
    "left_foot": (15,),
    "right_foot": (16,),
}

# Part states of the synthetic set (Kinetics-TPS style verbs); "none" = the part does not move.
PART_STATES: dict[str, tuple[str, ...]] = {
    "head": ("none", "turn", "nod"),
    "hand": ("none", "wave", "punch", "clap"),
    "arm": ("none", "raise", "lower", "swing", "stretch"),
    "hip": ("none", "bend", "turn", "jump"),
    "leg": ("none", "kick", "bend", "unbend", "step_on", "jump"),
    "foot": ("none", "step_on", "kick", "jump"),
}

# Video-level actions of the synthetic set.
ACTIONS: tuple[str, ...] = (
    "idle", "waving", "raising_arms", "punching", "kicking",
    "squatting", "jumping_jacks", "turning_head", "marching", "clapping",
)

TPS_SAMPLING = 5  # Kinetics-TPS evaluates every 5th frame: img_00001, img_00006, ...


def tps_frame_name(frame: int) -> str:
    """Official Kinetics-TPS per-frame file name for a 0-based frame index (``img_00001.json``)."""
    return f"img_{frame + 1:05d}.json"


def tps_frame_index(name: str) -> int:
    """Inverse of :func:`tps_frame_name`: ``img_00006.json`` -> 5."""
    stem = name.rsplit("/", 1)[-1].split(".")[0]
    if not stem.startswith("img_"):
        raise ValueError(f"not a Kinetics-TPS frame name: {name!r}")
    return int(stem[4:]) - 1
