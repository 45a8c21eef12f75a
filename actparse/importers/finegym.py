"""Import FineGym as downloaded: the annotation JSON, the category and element lists, the videos.

Source layout (``SRC``; the annotation files may also sit in ``SRC/annotations/``)::

    finegym_annotation_info_v1.0.json   {video: {"E_<s>_<e>": {"event": n, "timestamps": [[start, end]],
                                         "segments": {"A_<s>_<e>": {"stages": k, "timestamps": [[s, e], ...]}}}}}
                                         (mmaction2's download names it annotation.json)
    gym99_categories.txt                "Clabel: 0; set: 1; Glabel: 1; (VT) name" per element class
    set_categories.txt                  "set: 1; vault" (optional: set names)
    gym99_train_element_v1.0.txt        "<video>_E_..._A_... <Clabel>" (v1.1 wins over v1.0 when both are
    gym99_val_element.txt                there; mmaction2 names them gym99_train_org.txt / gym99_val_org.txt)
    videos/<video>.mp4                  the full YouTube videos, or
    events/<video>_E_<s>_<e>.mp4        event clips (mmaction2's trim_event.py)

Traps handled: splits are per element, not per video (one video, even one event, has elements in both
lists), so the split of each element is in ``gym_elements.parquet``; ``videos.parquet`` marks a video
``test`` when any of its elements is in the val list (so no video-level model trains on it), else
``train``. Element times are relative to their event: start = event start + first stage start, end =
event start + last stage end, in seconds of the full video (of the event clip when only the clip is
there). FineGym has no boxes: no ``gt_persons.parquet`` is written; ``videos.action`` is null.
"""

from __future__ import annotations

import re
from pathlib import Path

from .common import ImportResult, OfficialFormatError, VideoPlacer, as_float, as_int, copy_file, load_json, need, \
    probe, write_text

_CAT = re.compile(r"Clabel:\s*(\d+);\s*set:\s*(\d+);\s*Glabel:\s*(\d+);\s*\((\w+)\)\s*(.*)$")
_SUBSET = re.compile(r"^(gym\w*?)_categories\.txt$")
VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi")


def _ann_dir(src: Path) -> Path:
    for d in (src / "annotations", src):
        if list(d.glob("finegym_annotation_info*.json")) or (d / "annotation.json").is_file():
            return d
    raise FileNotFoundError(f"{src}: no FineGym annotation JSON (finegym_annotation_info*.json or "
                            f"annotation.json, in {src} or {src / 'annotations'})")


def _pick(d: Path, patterns, what: str) -> Path:
    for pat in patterns:
        hits = sorted(p for p in d.glob(pat) if p.is_file())
        if hits:
            return hits[-1]
    raise FileNotFoundError(f"{d}: no {what} ({' or '.join(patterns)})")


def _subset(d: Path, subset: str | None) -> str:
    found = sorted(m.group(1) for p in d.glob("gym*_categories.txt") if (m := _SUBSET.match(p.name))
                   and "set" not in m.group(1))
    if subset:
        if subset not in found:
            raise FileNotFoundError(f"{d}: no {subset}_categories.txt (found: {found or 'none'})")
        return subset
    if not found:
        raise FileNotFoundError(f"{d}: no gym*_categories.txt (e.g. gym99_categories.txt)")
    if len(found) > 1:
        raise ValueError(f"{d}: several FineGym subsets {found}: choose one with --subset")
    return found[0]


def read_categories(path: Path) -> dict[int, tuple[int, str, str]]:
    """{Clabel: (set id, event, element name)}."""
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        m = _CAT.match(line.strip())
        if not m:
            raise OfficialFormatError(path, f"line {n}", f"expected 'Clabel: k; set: s; Glabel: g; (EV) name', got {line!r}")
        out[int(m.group(1))] = (int(m.group(2)), m.group(4), m.group(5).strip())
    return out


def _timestamps(value, path: Path, where: str) -> list[tuple[float, float]]:
    if not isinstance(value, (list, tuple)) or not value:
        raise OfficialFormatError(path, where, f"expected a list of [start, end] pairs, got {value!r}")
    out = []
    for i, pair in enumerate(value):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise OfficialFormatError(path, f"{where}[{i}]", f"expected [start, end], got {pair!r}")
        s, e = as_float(pair[0], path, f"{where}[{i}]"), as_float(pair[1], path, f"{where}[{i}]")
        if e < s:
            raise OfficialFormatError(path, f"{where}[{i}]", f"end {e} before start {s}")
        out.append((s, e))
    return out


def parse_clip(cid: str, info: dict) -> tuple[str, str, str] | None:
    """``<video>_E_..._A_...`` -> (video, event id, segment id); the video is the longest prefix in ``info``."""
    if "_A_" not in cid or "_E_" not in cid:
        return None
    head, seg = cid.rsplit("_A_", 1)
    parts = head.split("_E_")
    for k in range(len(parts) - 1, 0, -1):
        video, ev = "_E_".join(parts[:k]), "E_" + "_E_".join(parts[k:])
        if video in info:
            return video, ev, "A_" + seg
    return "_E_".join(parts[:1]), "E_" + "_E_".join(parts[1:]), "A_" + seg


def _find_video(src: Path, name: str, folder: str) -> Path | None:
    for ext in VIDEO_EXTS:
        p = src / folder / f"{name}{ext}"
        if p.is_file():
            return p
    return None


def import_finegym(src: Path, out: Path, placer: VideoPlacer, subset: str | None = None) -> ImportResult:
    from ..schemas import from_rows

    src = Path(src)
    d = _ann_dir(src)
    info_path = _pick(d, ["finegym_annotation_info*.json", "annotation.json"], "annotation JSON")
    sub = _subset(d, subset)
    cat_path = d / f"{sub}_categories.txt"
    set_path = next((p for p in (d / "set_categories.txt", d / "gym_set_categories.txt") if p.is_file()), None)
    lists = {"train": _pick(d, [f"{sub}_train_element*.txt", f"{sub}_train_org.txt", f"{sub}_train.txt"], "train element list"),
             "test": _pick(d, [f"{sub}_val_element*.txt", f"{sub}_val_org.txt", f"{sub}_val.txt"], "val element list")}
    cats = read_categories(cat_path)
    info = load_json(info_path)
    if not isinstance(info, dict):
        raise OfficialFormatError(info_path, "(top level)", f"expected {{video: {{event id: ...}}}}, got {type(info).__name__}")

    res = ImportResult("finegym")
    elements = []
    kept_lines = {"train": [], "test": []}
    placed: dict[str, str] = {}  # our video name -> path in the data root
    split_of: dict[str, set] = {}
    skipped: set = set()
    logged: set = set()
    for split, lp in lists.items():
        for n, line in enumerate(lp.read_text().splitlines(), 1):
            tok = line.split()
            if not tok:
                continue
            if len(tok) != 2:
                raise OfficialFormatError(lp, f"line {n}", f"expected '<clip id> <Clabel>', got {line!r}")
            cid = tok[0][:-4] if tok[0].endswith(".mp4") else tok[0]
            label = as_int(int(tok[1]) if tok[1].lstrip("-").isdigit() else tok[1], lp, f"line {n}")
            if label not in cats:
                raise OfficialFormatError(lp, f"line {n}", f"Clabel {label} not in {cat_path.name}")
            parsed = parse_clip(cid, info)
            if parsed is None:
                raise OfficialFormatError(lp, f"line {n}", f"clip id {cid!r} is not <video>_E_..._A_...")
            video, ev, seg = parsed
            where = f"{video}.{ev}"
            if video not in info or not isinstance(info[video], dict) or ev not in info[video]:
                raise OfficialFormatError(info_path, where, f"missing (clip {cid} of {lp.name} line {n})")
            event = info[video][ev]
            ev_ts = _timestamps(need(event, "timestamps", info_path, where), info_path, f"{where}.timestamps")
            as_int(need(event, "event", info_path, where), info_path, f"{where}.event")
            segs = need(event, "segments", info_path, where)
            if not isinstance(segs, dict) or seg not in segs:
                raise OfficialFormatError(info_path, f"{where}.segments.{seg}", f"missing (clip {cid} of {lp.name} line {n})")
            seg_ts = _timestamps(need(segs[seg], "timestamps", info_path, f"{where}.segments.{seg}"), info_path,
                                 f"{where}.segments.{seg}.timestamps")
            start, end = seg_ts[0][0], seg_ts[-1][1]
            full = _find_video(src, video, "videos")
            if full is not None:
                name, f, offset = video, full, ev_ts[0][0]
            else:
                clip = _find_video(src, f"{video}_{ev}", "events")
                name, f, offset = f"{video}_{ev}", clip, 0.0
            if name in skipped:
                continue
            if name not in placed:
                if f is None:
                    skipped.add(name)
                    if video not in logged:  # one skip row per missing video, however many events it has
                        logged.add(video)
                        res.skips.append({"video": video, "stage": "import", "error": f"{src}: neither "
                                          f"videos/{video}.mp4 nor events/{video}_{ev}.mp4 found (listed in {lp.name})"})
                    continue
                meta, err = probe(f)
                if meta is None:
                    skipped.add(name)
                    res.skips.append({"video": name, "stage": "import", "error": err})
                    continue
                placed[name] = placer.place(f, str(f.relative_to(src)))
                res.videos.append({"video": name, "path": placed[name], "split": "train", "action": None, **meta})
            split_of.setdefault(name, set()).add(split)
            set_id, event_name, element = cats[label]
            elements.append({"clip": cid, "video": name, "event_id": ev, "segment_id": seg, "split": split,
                             "start": offset + start, "end": offset + end, "label": label, "element": element,
                             "set": set_id, "event": event_name})
            kept_lines[split].append(line.strip())
    for row in res.videos:
        row["split"] = "test" if "test" in split_of.get(row["video"], ()) else "train"
    res.elements = from_rows(elements, "gym_elements")
    fg = out / "annotations" / "finegym"
    fg.mkdir(parents=True, exist_ok=True)
    copy_file(info_path, fg / "finegym_annotation_info.json")
    copy_file(cat_path, fg / cat_path.name)
    if set_path is not None:
        copy_file(set_path, fg / "gym_set_categories.txt")
    write_text(fg / f"{sub}_train_element.txt", "".join(x + "\n" for x in kept_lines["train"]))
    write_text(fg / f"{sub}_val_element.txt", "".join(x + "\n" for x in kept_lines["test"]))
    res.info = {"subset": sub, "elements": len(elements), "keypoints": False, "parts": False, "boxes": False}
    res.gt = None
    return res
