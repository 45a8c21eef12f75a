"""The decode stage (stages/decode.py) and the JPEG codec of the frames it stores (actparse.video)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from actparse.schemas import from_rows, read_table, write_table
from actparse.video import decode_jpeg, encode_jpeg


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
