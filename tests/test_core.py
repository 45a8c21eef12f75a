"""Schemas, atomic writes, params checking, box geometry, the decode stage."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actparse import boxes as B
from actparse.params import ParamError, get, load_params
from actparse.schemas import (ParquetStreamWriter, SchemaError, from_rows, iter_row_groups, read_table,
                              write_table)
from actparse.video import decode_jpeg, encode_jpeg


def _person_row(**over):
    row = {"video": "v", "frame": 0, "person": 0, "box": [0, 0, 10, 10], "score": 0.9}
    row.update(over)
    return row


def test_schema_roundtrip_and_atomic_write(tmp_path):
    path = tmp_path / "p.parquet"
    write_table(from_rows([_person_row(), _person_row(person=1, score=0.5)], "persons"), path, "persons")
    t = read_table(path, "persons")
    assert t.num_rows == 2 and t.column("score").to_pylist() == pytest.approx([0.9, 0.5])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_schema_rejects_wrong_shape_missing_and_extra(tmp_path):
    with pytest.raises(SchemaError, match="box"):
        from_rows([_person_row(box=[0, 0, 10])], "persons")
    with pytest.raises(SchemaError, match="missing column"):
        from_rows([{k: v for k, v in _person_row().items() if k != "score"}], "persons")
    with pytest.raises(SchemaError, match="unexpected"):
        from_rows([_person_row(extra=1)], "persons")
    # A file written by someone else with a wrong column type is rejected on read, naming the file.
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"video": ["v"], "frame": [0], "person": [0], "box": [[0.0, 0, 1, 1]],
                             "score": ["high"]}), bad)
    with pytest.raises(SchemaError, match="bad.parquet.*score"):
        read_table(bad, "persons")


def test_stream_writer_keeps_old_artifact_on_failure(tmp_path):
    path = tmp_path / "p.parquet"
    write_table(from_rows([_person_row()], "persons"), path, "persons")
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with ParquetStreamWriter(path, "persons") as w:
            w.write(from_rows([_person_row(video="a")], "persons"))
            raise RuntimeError("crash mid-stage")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.parquet"]
    with ParquetStreamWriter(path, "persons") as w:
        w.write(from_rows([_person_row(video="a")], "persons"))
        w.write(from_rows([_person_row(video="b"), _person_row(video="b", person=1)], "persons"))
    groups = list(iter_row_groups(path, "persons"))
    assert [g.num_rows for g in groups] == [1, 2]


def test_params_errors_name_the_key(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("decode:\n  stride: 0\n  short_side: abc\n")
    with pytest.raises(ParamError, match="decode.stride' must be >= 1, got 0"):
        load_params(p)  # the loader checks the whole file; get checks again (dicts built in code)
    params = {"_path": str(p), "decode": {"stride": 0, "short_side": "abc"}}
    with pytest.raises(ParamError, match="decode.stride.*>= 1"):
        get(params, "decode.stride", int, min_value=1)
    with pytest.raises(ParamError, match="decode.short_side.*int"):
        get(params, "decode.short_side", int)
    with pytest.raises(ParamError, match="missing parameter 'decode.jpeg'"):
        get(params, "decode.jpeg", int)
    assert get(params, "decode.jpeg", int, default=90) == 90
    with pytest.raises(ParamError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_box_geometry():
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]])
    m = B.iou_matrix(a, a)
    assert np.allclose(np.diag(m), 1) and m[0, 1] == pytest.approx(25 / 175)
    assert B.iou_matrix(a, np.zeros((0, 4))).shape == (2, 0)
    e = B.expand([[0, 0, 10, 20]], 2.0)[0]
    assert e.tolist() == [-5, -10, 15, 30]
    r = B.to_aspect([[0, 0, 10, 20]], 1.0)[0]
    assert r[2] - r[0] == pytest.approx(20) and r[3] - r[1] == pytest.approx(20)
    with pytest.raises(ValueError, match="shape"):
        B.as_boxes([[1, 2, 3]])


def test_jpeg_roundtrip():
    img = np.zeros((24, 32, 3), np.uint8)
    img[:, :16] = (200, 30, 30)
    out = decode_jpeg(encode_jpeg(img, 95))
    assert out.shape == img.shape and np.abs(out.astype(int) - img).mean() < 6
    assert out[12, 4, 0] > 150 and out[12, 4, 2] < 80  # RGB order kept
    with pytest.raises(ValueError, match="corrupt"):
        decode_jpeg(b"not a jpeg")


def write_video(path: Path, n: int, w: int = 64, h: int = 48, fps: int = 25) -> None:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(n):
        frame = np.full((h, w, 3), (i * 5) % 255, np.uint8)
        cv2.rectangle(frame, (i % w, 10), (i % w + 8, 30), (0, 0, 255), -1)
        vw.write(frame)
    vw.release()


def make_data_root(tmp_path: Path, videos: dict[str, int]) -> Path:
    """A minimal data root: videos.parquet + mp4 files (n frames each; n=0 -> empty file)."""
    root = tmp_path / "data"
    (root / "videos").mkdir(parents=True)
    rows = []
    for name, n in videos.items():
        path = root / "videos" / f"{name}.mp4"
        if n > 0:
            write_video(path, n)
        elif n == 0:
            path.write_bytes(b"")
        else:
            path.write_bytes(os.urandom(2048))  # corrupt
        rows.append({"video": name, "path": f"videos/{name}.mp4", "split": "test", "action": "idle",
                     "n_frames": max(n, 0), "fps": 25.0, "width": 64, "height": 48})
    write_table(from_rows(rows, "videos"), root / "videos.parquet", "videos")
    return root


def _params(tmp_path: Path, data: Path, **decode) -> Path:
    import yaml

    d = {"stride": 5, "short_side": 0, "jpeg_quality": 90}
    d.update(decode)
    from _params import write_params

    return write_params(tmp_path / "params.yaml", {"data": {"root": str(data)}, "decode": d})


def test_decode_stage_samples_frames_and_records_skips(tmp_path):
    from stages import decode

    data = make_data_root(tmp_path, {"a": 23, "b": 10, "empty": 0, "corrupt": -1})
    rc = decode.main(["--params", str(_params(tmp_path, data, short_side=24)), "--root", str(tmp_path)])
    assert rc == 0
    frames = read_table(tmp_path / "artifacts/frames.parquet", "frames")
    by_video = {}
    for v, f in zip(frames.column("video").to_pylist(), frames.column("frame").to_pylist()):
        by_video.setdefault(v, []).append(f)
    assert by_video == {"a": [0, 5, 10, 15, 20], "b": [0, 5]}
    assert pq.ParquetFile(tmp_path / "artifacts/frames.parquet").num_row_groups == 2  # one per video
    assert set(frames.column("height").to_pylist()) == {24}
    assert frames.column("scale").to_pylist()[0] == pytest.approx(0.5)
    img = decode_jpeg(frames.column("jpeg")[0].as_py())
    assert img.shape == (24, 32, 3)
    skips = read_table(tmp_path / "artifacts/skips/decode.parquet", "skips").to_pylist()
    assert {s["video"] for s in skips} == {"empty", "corrupt"}
    assert any("empty file" in s["error"] for s in skips)
    assert all("corrupt.mp4" in s["error"] for s in skips if s["video"] == "corrupt")


def test_decode_stage_bad_param_and_all_broken(tmp_path, capsys):
    from stages import decode

    data = make_data_root(tmp_path, {"empty": 0})
    assert decode.main(["--params", str(_params(tmp_path, data, stride=0)), "--root", str(tmp_path)]) == 2
    assert "decode.stride" in capsys.readouterr().err
    assert decode.main(["--params", str(_params(tmp_path, data)), "--root", str(tmp_path)]) == 2
    assert "none of the 1 videos" in capsys.readouterr().err
    assert not (tmp_path / "artifacts/frames.parquet").exists()
