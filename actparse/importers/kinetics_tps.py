"""Import Kinetics-TPS as downloaded: ``<split>_videos/``, ``list/*.txt`` and per-frame annotation JSONs.

Source layout (``SRC``)::

    train_videos/<class>/<video>.mp4        test_videos/<class>/<video>.mp4 (or test_videos/<video>.mp4)
    list/*.txt                              optional; a file whose name holds train / val / test lists
                                            that split (other files there are ignored), one video a line (<class>/<video>.mp4, <video>.mp4
                                            or <video>, anything after a space ignored)
    train_annotations/<class>/<video>/<video>/img_00001.json   one JSON per annotated frame (numbered
                                            from 1: img_00001 is our frame 0); the doubled <video> folder
                                            is optional

The per-frame JSON was never documented by the organisers; two shapes are read:

* parts keyed by part name, as the official evaluation's ground truth: ``{"humans": [{"number", "box",
  "parts": {"head": {"box", "verb", ...}, ...}}]}`` (``verb`` a string or a one-element list);
* parts as a list of objects: ``{"humans": [{"box" | "bbox" | "obj_bbox", "parts": [{"obj_class":
  "head", "obj_bbox": [...], "verb" | "state": ...}]}]}``.

A human's ``number`` (1-based) becomes ``person`` (number - 1) when the numbers of a frame are distinct
positive integers, else its position in the list. Interacting objects are not imported.

Splits: ``train`` stays train; ``val`` and ``test`` become our ``test`` (the scored split). Kinetics-TPS
has no keypoints: ``gt_persons.keypoints`` is null on every row; parts not annotated on a person are
``part_visible`` False with a zero box and state "none". Person ``action`` = the video's class.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..constants import NUM_PARTS, PART_INDEX, PARTS, tps_frame_index, tps_frame_name
from ..dataset import VIDEO_SUFFIXES
from .common import ImportResult, OfficialFormatError, VideoPlacer, as_box, as_str, copy_file, load_json, need, probe

SPLITS = {"train": "train", "val": "test", "test": "test"}
_FRAME = re.compile(r"^img_(\d+)\.json$")
BOX_KEYS = ("box", "bbox", "obj_bbox", "human_bbox")
STATE_KEYS = ("verb", "state", "part_state")


def _split_of_list(path: Path) -> str | None:
    """The split a list file names (train / val / test), None for another file (a class index, ...)."""
    name = path.stem.lower()
    hits = [s for s in ("train", "val", "test") if s in name]
    if len(hits) > 1:
        raise OfficialFormatError(path, "(file name)", f"names several splits {hits}")
    return hits[0] if hits else None


def _video_files(src: Path) -> dict[str, dict[str, tuple[Path, str | None]]]:
    """{official split: {video: (file, class or None)}} from ``<split>_videos/``."""
    out: dict = {}
    for split in SPLITS:
        root = src / f"{split}_videos"
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("*")):
            if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file():
                cls = p.parent.name if p.parent != root else None
                seen = out.setdefault(split, {})
                if p.stem in seen:
                    raise OfficialFormatError(p, "(file name)", f"video {p.stem!r} is also {seen[p.stem][0]}")
                seen[p.stem] = (p, cls)
    return out


def _annotation_dirs(src: Path) -> dict[str, dict[str, tuple[Path, str]]]:
    """{official split: {video: (folder of img_*.json, class)}} from ``<split>_annotations/``."""
    out: dict = {}
    for split in SPLITS:
        root = src / f"{split}_annotations"
        if not root.is_dir():
            continue
        for cdir in sorted(p for p in root.iterdir() if p.is_dir()):
            for vdir in sorted(p for p in cdir.iterdir() if p.is_dir()):
                inner = vdir / vdir.name
                out.setdefault(split, {})[vdir.name] = (inner if inner.is_dir() else vdir, cdir.name)
    return out


def _lists(src: Path) -> dict[str, dict[str, str | None]]:
    """{official split: {video: class or None}} from ``list/*.txt`` (empty when there is no list/)."""
    out: dict = {}
    ldir = src / "list"
    if not ldir.is_dir():
        return out
    for lp in sorted(ldir.glob("*.txt")):
        split = _split_of_list(lp)
        if split is None:
            continue
        for n, line in enumerate(lp.read_text().splitlines(), 1):
            tok = line.strip().split()
            if not tok:
                continue
            rel = Path(tok[0])
            video = rel.stem if rel.suffix.lower() in VIDEO_SUFFIXES else rel.name
            if not video:
                raise OfficialFormatError(lp, f"line {n}", f"no video name in {line!r}")
            cls = rel.parent.name if str(rel.parent) not in ("", ".") else None
            out.setdefault(split, {})[video] = cls
    return out


def _person_ids(humans: list, path: Path) -> list[int]:
    nums = [h.get("number") if isinstance(h, dict) else None for h in humans]
    if all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in nums) and len(set(nums)) == len(nums):
        return [x - 1 for x in nums]
    return list(range(len(humans)))


def _part_name(name, path: Path, where: str) -> str:
    if not isinstance(name, str):
        raise OfficialFormatError(path, where, f"expected a part name, got {name!r}")
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    if key not in PART_INDEX:
        raise OfficialFormatError(path, where, f"unknown body part {name!r}; known: {list(PARTS)}")
    return key


def _first_key(obj: dict, keys, path: Path, where: str):
    for k in keys:
        if k in obj:
            return k, obj[k]
    raise OfficialFormatError(path, f"{where}.{keys[0]}", f"missing (also looked for {list(keys[1:])})")


def read_frame(path: Path) -> list[dict]:
    """One per-frame JSON -> [{"person", "box", "parts": {part: (box, state)}}] (either shape)."""
    data = load_json(path)
    humans = data if isinstance(data, list) else need(data, "humans", path, "")
    if not isinstance(humans, list):
        raise OfficialFormatError(path, "humans", f"expected a list, got {type(humans).__name__}")
    pids = _person_ids(humans, path)
    out = []
    for i, (h, pid) in enumerate(zip(humans, pids)):
        where = f"humans[{i}]"
        if not isinstance(h, dict):
            raise OfficialFormatError(path, where, f"expected an object, got {type(h).__name__}")
        key, val = _first_key(h, BOX_KEYS, path, where)
        box = as_box(val, path, f"{where}.{key}")
        parts_in = h.get("parts", {})
        parts: dict = {}
        if isinstance(parts_in, dict):  # keyed by part name (official ground truth shape)
            for name, p in parts_in.items():
                pw = f"{where}.parts.{name}"
                part = _part_name(name, path, pw)
                if not isinstance(p, dict):
                    raise OfficialFormatError(path, pw, f"expected an object, got {type(p).__name__}")
                pbox = as_box(need(p, "box", path, pw), path, f"{pw}.box")
                skey, sval = _first_key(p, STATE_KEYS, path, pw)
                parts[part] = (pbox, as_str(sval, path, f"{pw}.{skey}"))
        elif isinstance(parts_in, list):  # list of {"obj_class", "obj_bbox", verb}
            for j, p in enumerate(parts_in):
                pw = f"{where}.parts[{j}]"
                if not isinstance(p, dict):
                    raise OfficialFormatError(path, pw, f"expected an object, got {type(p).__name__}")
                ckey, cval = _first_key(p, ("obj_class", "name", "part"), path, pw)
                part = _part_name(cval, path, f"{pw}.{ckey}")
                bkey, bval = _first_key(p, ("obj_bbox", "box", "bbox"), path, pw)
                pbox = as_box(bval, path, f"{pw}.{bkey}")
                skey, sval = _first_key(p, STATE_KEYS, path, pw)
                if part in parts:
                    raise OfficialFormatError(path, f"{pw}.{ckey}", f"part {part!r} given twice for this human")
                parts[part] = (pbox, as_str(sval, path, f"{pw}.{skey}"))
        else:
            raise OfficialFormatError(path, f"{where}.parts", f"expected an object or a list, got {type(parts_in).__name__}")
        out.append({"person": pid, "box": box, "parts": parts})
    return out


def read_video_annotations(folder: Path) -> dict[int, list[dict]]:
    """{frame (0-based): humans} of one video's annotation folder."""
    frames = {}
    for p in sorted(folder.iterdir()):
        m = _FRAME.match(p.name)
        if m:
            frames[tps_frame_index(p.name)] = read_frame(p)
    return frames


def import_kinetics_tps(src: Path, out: Path, placer: VideoPlacer) -> ImportResult:
    """Collect videos, ground truth and the official-evaluation ground-truth files (written here)."""
    from ..atomic import write_json
    from ..schemas import from_columns, schema

    src = Path(src)
    files = _video_files(src)
    anns = _annotation_dirs(src)
    lists = _lists(src)
    if not files and not anns and not lists:
        raise FileNotFoundError(f"{src}: no Kinetics-TPS layout found (expected train_videos/, test_videos/, "
                                f"train_annotations/ or list/)")
    # which videos, in which split, with which class
    plan: dict[str, tuple[str, str | None]] = {}  # video -> (official split, class)
    sources = lists if lists else {s: {**{v: c for v, (_, c) in files.get(s, {}).items()},
                                       **{v: c for v, (_, c) in anns.get(s, {}).items()}} for s in SPLITS}
    for split, vids in sources.items():
        for v, cls in vids.items():
            if v in plan and plan[v][0] != split:
                raise OfficialFormatError(src / "list" if lists else src, v,
                                          f"video listed in both {plan[v][0]} and {split}")
            known = anns.get(split, {}).get(v, (None, None))[1] or files.get(split, {}).get(v, (None, None))[1]
            plan[v] = (split, cls or known)
    res = ImportResult("kinetics-tps")
    cols = {k: [] for k in ("video", "frame", "person", "box", "keypoints", "part_boxes", "part_visible",
                            "part_states", "action")}
    gt_part: dict = {"train": {}, "test": {}}
    gt_vid: dict = {"train": {}, "test": {}}
    n_frames_annotated = 0
    for v in sorted(plan):
        split, cls = plan[v]
        ours = SPLITS[split]
        hit = files.get(split, {}).get(v) or next((f[v] for f in files.values() if v in f), None)
        if hit is None:
            res.skips.append({"video": v, "stage": "import", "error": f"{src / f'{split}_videos'}: video {v!r} "
                                                                      f"listed but not found"})
            continue
        meta, err = probe(hit[0])
        if meta is None:
            res.skips.append({"video": v, "stage": "import", "error": err})
            continue
        ann = anns.get(split, {}).get(v)
        frames = read_video_annotations(ann[0]) if ann else {}
        rel = placer.place(hit[0], str(hit[0].relative_to(src)))
        res.videos.append({"video": v, "path": rel, "split": ours, "action": cls, **meta})
        if not ann:
            continue
        if cls is None:
            raise OfficialFormatError(ann[0], "class", f"no class folder for annotated video {v!r}")
        gt_vid[ours][v] = cls
        vframes = {}
        for f in sorted(frames):
            humans_out = []
            for h in sorted(frames[f], key=lambda h: h["person"]):
                pb = np.zeros((NUM_PARTS, 4), np.float32)
                vis = [False] * NUM_PARTS
                st = ["none"] * NUM_PARTS
                parts_out = {}
                for name in PARTS:
                    if name in h["parts"]:
                        j = PART_INDEX[name]
                        box, state = h["parts"][name]
                        pb[j], vis[j], st[j] = box, True, state
                        parts_out[name] = {"number": len(parts_out) + 1, "box": box, "verb": [state], "name": name}
                cols["video"].append(v), cols["frame"].append(f), cols["person"].append(h["person"])
                cols["box"].append(h["box"]), cols["keypoints"].append(None)
                cols["part_boxes"].append(pb.reshape(-1)), cols["part_visible"].append(vis)
                cols["part_states"].append(st), cols["action"].append(cls)
                humans_out.append({"number": h["person"] + 1, "box": h["box"], "parts": parts_out})
            vframes[tps_frame_name(f)] = {"humans": humans_out}
            n_frames_annotated += 1
        gt_part[ours][v] = vframes
    res.gt = from_columns(cols, "gt_persons") if cols["video"] else schema("gt_persons").empty_table()
    ann_dir = out / "annotations" / "tps"
    for split in ("train", "test"):
        if gt_part[split]:
            write_json(gt_part[split], ann_dir / split / "gt_part_result.json", indent=None)
            write_json(gt_vid[split], ann_dir / split / "gt_vid_result.json")
    if (src / "list").is_dir():
        for lp in sorted((src / "list").glob("*.txt")):
            (out / "annotations" / "kinetics_tps" / "list").mkdir(parents=True, exist_ok=True)
            copy_file(lp, out / "annotations" / "kinetics_tps" / "list" / lp.name)
    res.info = {"annotated_frames": n_frames_annotated, "keypoints": False, "parts": True,
                "classes": sorted({c for _, c in plan.values() if c})}
    return res
