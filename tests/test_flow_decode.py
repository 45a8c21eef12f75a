"""The flow's per-video decode (one task per video, then a merge) writes what `python -m stages.decode` writes."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from _params import overlaid
from actparse.schemas import from_rows, read_table, write_table
from actparse.params import ParamError
from flows.mapped import DecodeMapper, get_mapper, mapped_stages


def _video(path: Path, n: int, w: int = 64, h: int = 48) -> None:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (w, h))
    for i in range(n):
        frame = np.full((h, w, 3), (i * 9) % 255, np.uint8)
        cv2.circle(frame, (i % w, h // 2), 4, (0, 255, 0), -1)
        vw.write(frame)
    vw.release()


def _project(root: Path, videos: dict[str, int]) -> Path:
    data = root / "data"
    (data / "videos").mkdir(parents=True)
    rows = []
    for name, n in videos.items():
        path = data / "videos" / f"{name}.mp4"
        if n > 0:
            _video(path, n)
        else:
            path.write_bytes(os.urandom(1024))  # corrupt
        rows.append({"video": name, "path": f"videos/{name}.mp4", "split": "test", "action": None,
                     "n_frames": max(n, 0), "fps": 25.0, "width": 64, "height": 48})
    write_table(from_rows(rows, "videos"), data / "videos.parquet", "videos")
    (root / "params.yaml").write_text(yaml.safe_dump(overlaid({
        "data": {"root": str(data)}, "decode": {"stride": 4, "short_side": 16, "jpeg_quality": 80}})))
    return root


def _run_mapped(root: Path) -> dict:
    """What the flow does: items -> one run_item per item (failures collected) -> merge."""
    mapper = get_mapper(root, "params.yaml", "decode", "stages.decode")
    assert isinstance(mapper, DecodeMapper)
    work = root / "work"
    work.mkdir()
    items = mapper.items()
    errors = {}
    for item in reversed(items):  # completion order must not matter
        try:
            mapper.run_item(item, work)
        except Exception as exc:  # noqa: BLE001 - the flow records any failure of a task
            errors[mapper.item_name(item)] = {"type": type(exc).__name__, "message": str(exc)}
    return mapper.merge(items, errors, work)


def test_mapped_decode_equals_the_decode_stage(tmp_path):
    from stages import decode

    videos = {"v1": 13, "broken": -1, "v2": 9}
    stage_root = _project(tmp_path / "stage", videos)
    flow_root = _project(tmp_path / "flow", videos)
    assert decode.main(["--params", str(stage_root / "params.yaml"), "--root", str(stage_root)]) == 0
    info = _run_mapped(flow_root)
    assert info == {"videos": 2, "frames": 4 + 3, "skipped": 1}
    for rel, name in (("artifacts/frames.parquet", "frames"), ("artifacts/skips/decode.parquet", "skips")):
        a = read_table(stage_root / rel, name)
        b = read_table(flow_root / rel, name)
        if name == "skips":  # the error names the file, which lives under a different root
            a, b = a.drop(["error"]), b.drop(["error"])
        assert a.equals(b), rel
    # one row group per video, in data-set order, as the stage streams them
    assert pq.ParquetFile(flow_root / "artifacts/frames.parquet").num_row_groups == 2
    assert read_table(flow_root / "artifacts/frames.parquet", "frames").column("video").to_pylist()[0] == "v1"
    skip = read_table(flow_root / "artifacts/skips/decode.parquet", "skips").to_pylist()
    assert skip[0]["video"] == "broken" and "broken.mp4" in skip[0]["error"]


def test_mapped_decode_fails_like_the_stage(tmp_path):
    root = _project(tmp_path / "p", {"broken": -1})
    with pytest.raises(ValueError, match="none of the 1 videos"):
        _run_mapped(root)
    assert not (root / "artifacts/frames.parquet").exists()
    mapper = get_mapper(root, "params.yaml", "decode", "stages.decode")
    with pytest.raises(RuntimeError, match="KeyError"):  # an unexpected error is not a skip
        mapper.merge(mapper.items(), {"broken": {"type": "KeyError", "message": "x"}}, root)


def test_map_stage_names_and_missing_mapper(tmp_path):
    with pytest.raises(ParamError, match="p.yaml: missing parameter 'flow.map_stages'"):
        mapped_stages({"_path": "p.yaml"})  # no default: the value lives only in the params file
    assert mapped_stages({"flow": {"map_stages": []}}) == ()
    (tmp_path / "params.yaml").write_text("x: 1\n")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "plain.py").write_text("print('no mapper here')\n")
    with pytest.raises(ValueError, match="FLOW_MAPPER"):
        get_mapper(tmp_path, "params.yaml", "plain", "stages.plain")
