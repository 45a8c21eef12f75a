"""Shared pieces of the official-data-set importers: strict field checks, video placement, writing a data root.

A malformed official file stops the import with :class:`OfficialFormatError`, whose one-line message
names the file and the field (``actparse import`` exits 2 on it). A video listed by the annotations but
absent from the download (or unreadable) is not an error: it becomes a row of ``skips.parquet`` in the
data root and is left out of every table.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

VIDEO_MODES = ("symlink", "copy", "hardlink", "reference")


class OfficialFormatError(ValueError):
    """An official annotation file does not have the expected shape; the message names file and field."""

    def __init__(self, path, field: str, problem: str):
        self.path, self.field, self.problem = str(path), field, problem
        super().__init__(f"{path}: field {field!r}: {problem}")


def load_json(path: Path):
    """Parse a JSON file; bad JSON raises :class:`OfficialFormatError` (field = the position)."""
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError as exc:
        raise OfficialFormatError(path, "(file)", f"not UTF-8 text: {exc.reason}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise OfficialFormatError(path, f"(line {exc.lineno} column {exc.colno})", f"not valid JSON: {exc.msg}") from None


def need(obj, key: str, path, where: str):
    """``obj[key]``, or an :class:`OfficialFormatError` naming ``where.key``."""
    name = f"{where}.{key}" if where else key
    if not isinstance(obj, dict):
        raise OfficialFormatError(path, where or "(top level)", f"expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise OfficialFormatError(path, name, "missing")
    return obj[key]


def as_box(value, path, where: str) -> list[float]:
    """Four finite numbers x1 y1 x2 y2 (a one-element list of boxes gives its box)."""
    if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], (list, tuple)):
        value = value[0]
    if not isinstance(value, (list, tuple)) or len(value) != 4 or \
            not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
        raise OfficialFormatError(path, where, f"expected a box of 4 numbers, got {_short(value)}")
    box = [float(v) for v in value]
    if not all(math.isfinite(v) for v in box):
        raise OfficialFormatError(path, where, f"box has a non-finite number: {_short(value)}")
    return box


def as_str(value, path, where: str) -> str:
    if isinstance(value, (list, tuple)) and len(value) >= 1:  # official verbs: a one-element list
        value = value[0]
    if not isinstance(value, str):
        raise OfficialFormatError(path, where, f"expected a string, got {_short(value)}")
    return value


def as_int(value, path, where: str) -> int:
    """An integer (Python or NumPy; a float with no fraction is accepted)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) \
            or float(value) != int(value):
        raise OfficialFormatError(path, where, f"expected an integer, got {_short(value)}")
    return int(value)


def as_float(value, path, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise OfficialFormatError(path, where, f"expected a number, got {_short(value)}")
    return float(value)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class VideoPlacer:
    """Puts the official video files into the data root without re-encoding them.

    ``symlink`` (default): ``<out>/<rel>`` links to the downloaded file; ``copy`` / ``hardlink``: a copy /
    hard link there; ``reference``: nothing is written and ``videos.parquet`` holds the absolute path.
    """

    out: Path
    mode: str = "symlink"
    placed: int = 0

    def __post_init__(self):
        if self.mode not in VIDEO_MODES:
            raise ValueError(f"--videos must be one of {list(VIDEO_MODES)}, got {self.mode!r}")

    def place(self, src: Path, rel: str) -> str:
        """Make ``src`` available as ``rel`` under the data root; return the path for videos.parquet."""
        src = Path(src).resolve()
        if self.mode == "reference":
            return str(src)
        dst = self.out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        if self.mode == "symlink":
            os.symlink(src, dst)
        elif self.mode == "hardlink":
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)
        self.placed += 1
        return rel


def probe(path: Path) -> tuple[dict | None, str | None]:
    """(n_frames, fps, width, height) of a video, or (None, reason) when it cannot be read."""
    from ..video import VideoError, video_info

    if not Path(path).exists():
        return None, f"{path}: listed in the annotations but not found"
    try:
        info = video_info(path)
    except VideoError as exc:
        return None, str(exc)
    return {"n_frames": info.n_frames, "fps": info.fps, "width": info.width, "height": info.height}, None


@dataclass
class ImportResult:
    """What an importer collected; :func:`write_root` turns it into the data root."""

    dataset: str
    videos: list = field(default_factory=list)  # rows of schema "videos"
    skips: list = field(default_factory=list)  # rows of schema "skips"
    gt: pa.Table | None = None  # schema "gt_persons" (None: the data set has no boxes)
    elements: pa.Table | None = None  # schema "gym_elements" (FineGym)
    info: dict = field(default_factory=dict)


def write_root(result: ImportResult, out: Path, src: Path, mode: str) -> dict:
    """Write videos.parquet, skips.parquet, gt_persons.parquet / gym_elements.parquet and import_info.json."""
    from ..atomic import write_json
    from ..schemas import from_rows, write_table

    videos = from_rows(sorted(result.videos, key=lambda r: r["video"]), "videos")
    write_table(videos, out / "videos.parquet", "videos")
    write_table(from_rows(result.skips, "skips"), out / "skips.parquet", "skips")
    if result.gt is not None:
        write_table(result.gt, out / "gt_persons.parquet", "gt_persons", row_group_size=65536)
    if result.elements is not None:
        write_table(result.elements, out / "gym_elements.parquet", "gym_elements")
    splits = videos.column("split").to_pylist()
    summary = {"dataset": result.dataset, "source": str(Path(src).resolve()), "videos_mode": mode,
               "videos": len(splits), "train": splits.count("train"), "test": splits.count("test"),
               "skipped": len(result.skips), "gt_rows": result.gt.num_rows if result.gt is not None else 0,
               **result.info}
    write_json(summary, out / "import_info.json")
    return summary


def copy_file(src: Path, dst: Path) -> None:
    """Copy one official annotation file into the data root (atomically)."""
    from ..atomic import write_atomically

    write_atomically(dst, lambda tmp: shutil.copyfile(src, tmp))


def write_text(dst: Path, text: str) -> None:
    from ..atomic import write_text as write

    write(dst, text)
