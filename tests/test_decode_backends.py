"""decode.backend: decord, PyAV and torchcodec give the same frames, times and skips.

The videos are synthetic renders encoded with FFmpeg's encoders through PyAV (and one through
OpenCV, as the synth stage writes them): H.264 at an odd size with B-frames, HEVC, VP9 in WebM,
MPEG-4 part 2, H.264 with a +90 and a -90 degree display rotation, H.264 with a variable frame
rate, and H.264 tagged BT.709. torchcodec needs FFmpeg's shared libraries; where the system has
none, its checks run in a child process that is lent the FFmpeg libraries bundled in PyAV's wheel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import yaml

from actparse import video as V

ROOT = Path(__file__).resolve().parents[1]

# name -> (encoder, width, height, fps, frames, display rotation, options)
VIDEOS = {
    "h264_bframes.mp4": ("libx264", 150, 90, 25, 36, None, {"preset": "medium", "bf": "3", "g": "12"}),
    "hevc.mp4": ("libx265", 160, 96, 6, 12, None, {"preset": "ultrafast", "x265-params": "log-level=error"}),
    "vp9.webm": ("libvpx-vp9", 160, 120, 60, 20, None, {"deadline": "realtime", "cpu-used": "8"}),
    "rot90.mp4": ("libx264", 128, 96, 30, 10, 90, {"preset": "ultrafast"}),
    "rot270.mp4": ("libx264", 128, 96, 30, 10, -90, {"preset": "ultrafast"}),
    "bt709.mp4": ("libx264", 96, 64, 25, 8, None, {"preset": "ultrafast"}),
}


def _render(w: int, h: int, n: int, seed: int) -> list[np.ndarray]:
    """Moving textured frames (something for the codecs to predict)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h + n * 2, w + n * 3, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    out = []
    for i in range(n):
        f = base[i * 2:i * 2 + h, i * 3:i * 3 + w].copy()
        f[(yy - h // 2) ** 2 + (xx - (i * 5) % w) ** 2 < (h // 4) ** 2] = (250, 40, 40)
        out.append(f)
    return out


def _encode(path: Path, encoder: str, w: int, h: int, fps: int, n: int, rotation, options) -> None:
    import av

    with av.open(str(path), "w") as out:
        st = out.add_stream(encoder, rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.options = dict(options)
        if rotation is not None:
            st.set_display_rotation(rotation)
        if path.stem == "bt709":
            st.codec_context.colorspace = 1  # AVCOL_SPC_BT709
            st.codec_context.color_range = 1  # MPEG (limited) range
        for img in _render(w, h, n, seed=len(path.stem)):
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


def _vfr(path: Path) -> None:
    """20 frames 40 ms apart, then 20 frames 100 ms apart."""
    import av

    times = [0.04 * i for i in range(20)] + [0.8 + 0.1 * i for i in range(20)]
    frames = _render(64, 48, 40, seed=3)
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        st.codec_context.time_base = Fraction(1, 1000)
        for img, t in zip(frames, times):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = round(t * 1000), Fraction(1, 1000)
            for pkt in st.encode(f):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)


def _mp4v(path: Path) -> None:
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (80, 60))
    for img in _render(80, 60, 15, seed=5):
        w.write(np.ascontiguousarray(img[..., ::-1]))
    w.release()


def write_videos(folder: Path) -> None:
    import av

    for name, (enc, w, h, fps, n, rot, opts) in VIDEOS.items():
        if enc in av.codecs_available:
            _encode(folder / name, enc, w, h, fps, n, rot, opts)
    _vfr(folder / "vfr.mp4")
    _mp4v(folder / "mp4v.mp4")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """The test videos, encoded in a fresh process: once decord is imported (earlier tests do), PyAV's
    libvpx-vp9 encoder refuses its options (EINVAL) in that process, since decord's bundled FFmpeg
    libraries are loaded first."""
    folder = tmp_path_factory.mktemp("backend_videos")
    code = ("import sys; from pathlib import Path; import test_decode_backends as t; "
            "t.write_videos(Path(sys.argv[1]))")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parents[1]),
                                         env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    out = {Path(name).stem: folder / name for name in VIDEOS if (folder / name).exists()}
    out.update(vfr=folder / "vfr.mp4", mp4v=folder / "mp4v.mp4")
    assert {"h264_bframes", "rot90", "vfr", "mp4v"} <= set(out)
    return out


def _read_all(path: Path, backend: str) -> dict:
    """Every frame in order, a scattered read (back and forth, repeats), times and fps."""
    vr = V.open_video(path, backend=backend)
    n = len(vr)
    scattered = np.array([n - 1, 0, n // 2, 3 % n, 3 % n, n - 2, 1 % n])
    return {"n": n, "fps": vr.get_avg_fps(), "frames": V.read_frames(path, np.arange(n), vr=vr),
            "times": vr.timestamps(np.arange(n)), "scattered": V.read_frames(path, scattered, vr=vr),
            "scattered_idx": scattered}


def _assert_same(ref: dict, got: dict, what: str) -> None:
    assert got["n"] == ref["n"], what
    assert got["frames"].shape == ref["frames"].shape, what
    diff = np.abs(got["frames"].astype(np.int16) - ref["frames"]).max()
    assert diff == 0, f"{what}: max abs pixel difference {diff}"
    assert np.array_equal(got["times"], ref["times"]), what
    assert np.array_equal(got["scattered"], ref["frames"][got["scattered_idx"]]), what
    assert abs(got["fps"] - ref["fps"]) < 1e-6, what


def test_pyav_gives_decords_frames_and_times(videos):
    for name, path in videos.items():
        ref = _read_all(path, "decord")
        _assert_same(ref, _read_all(path, "pyav"), f"{name} pyav")
        if name == "rot90":
            assert ref["frames"].shape[1:3] == (128, 96)  # the display rotation is applied
        if name == "vfr":  # the container's times, not index / fps
            assert np.allclose(ref["times"], [0.04 * i for i in range(20)] + [0.8 + 0.1 * i for i in range(20)],
                               atol=1e-6)


def test_pyav_random_access_matches_sequential(videos):
    """Reads in any order (seeks back, jumps over keyframes) give the frames a single pass gives."""
    path = videos["h264_bframes"]
    whole = V.read_frames(path, np.arange(36), backend="pyav")
    vr = V.open_video(path, backend="pyav")
    rng = np.random.default_rng(0)
    for _ in range(5):
        idx = rng.integers(0, 36, 9)
        assert np.array_equal(V.read_frames(path, idx, vr=vr), whole[idx])


def test_lazy_video_on_pyav_equals_decord_and_pickles_its_backend(videos):
    import pickle

    from actparse.clips import load_video

    path = videos["h264_bframes"]
    lazy = V.LazyVideo(path, 48, cache=V.ReaderCache(2), backend="pyav")
    whole = load_video(path, 48)  # decord
    assert lazy.shape == whole.shape
    idx = np.array([5, 0, 35, 17, 17])
    assert np.array_equal(lazy[idx], whole[idx]) and np.array_equal(lazy[3:9], whole[3:9])
    back = pickle.loads(pickle.dumps(lazy))
    assert back.backend == "pyav" and np.array_equal(back[[1, 30]], whole[[1, 30]])
    assert np.array_equal(load_video(path, 48, backend="pyav"), whole)


# ------------------------------------------------------------------------------------ the stage
def _data_root(tmp_path: Path, videos: dict[str, Path]) -> Path:
    from actparse.schemas import from_rows, write_table

    droot = tmp_path / "data"
    (droot / "videos").mkdir(parents=True)
    rows = []
    for name, src in sorted(videos.items()):
        (droot / "videos" / src.name).symlink_to(src)
        rows.append({"video": name, "path": f"videos/{src.name}"})
    (droot / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    rows.append({"video": "broken", "path": "videos/broken.mp4"})
    rows = [dict(r, split="test", action=None, n_frames=None, fps=None, width=None, height=None) for r in rows]
    write_table(from_rows(rows, "videos"), droot / "videos.parquet", "videos")
    return droot


def _params(tmp_path: Path, droot: Path, backend: str) -> Path:
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    base["data"]["root"] = str(droot)
    base["decode"].update(stride=2, short_side=0, backend=backend)
    p = tmp_path / f"params.{backend}.yaml"
    p.write_text(yaml.safe_dump(base, sort_keys=False))
    return p


def _run_decode(tmp_path: Path, droot: Path, backend: str, env: dict | None = None):
    """``python -m stages.decode`` with ``backend``; returns (exit code, stderr, frames df, skips df)."""
    from actparse.paths import Paths
    from actparse.schemas import read_df

    out = tmp_path / backend
    out.mkdir()
    proc = subprocess.run([sys.executable, "-m", "stages.decode", "--params", str(_params(tmp_path, droot, backend)),
                           "--root", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode:
        return proc.returncode, proc.stderr, None, None
    return 0, proc.stderr, read_df(Paths(out).frames, "frames"), read_df(out / "artifacts/skips/decode.parquet",
                                                                            "skips")


def test_decode_stage_writes_the_same_frames_and_skips_with_pyav(tmp_path, videos):
    droot = _data_root(tmp_path, videos)
    rc, err, ref, ref_skips = _run_decode(tmp_path, droot, "decord")
    assert rc == 0, err
    rc, err, got, skips = _run_decode(tmp_path, droot, "pyav")
    assert rc == 0, err
    assert ref.equals(got)  # same JPEG bytes, pts, sizes, rows: downstream artifacts do not change
    assert list(skips["video"]) == list(ref_skips["video"]) == ["broken"]
    assert "broken.mp4" in skips["error"].iloc[0] and "broken.mp4" in ref_skips["error"].iloc[0]


def test_missing_backend_stops_the_stage_with_what_to_install(tmp_path, videos, monkeypatch):
    from stages import decode

    droot = _data_root(tmp_path, {"vfr": videos["vfr"]})
    monkeypatch.setitem(sys.modules, "decord", None)  # as on Linux aarch64 / macOS arm64: no decord wheel
    assert decode.main(["--params", str(_params(tmp_path, droot, "decord")), "--root", str(tmp_path)]) == 2
    with pytest.raises(V.BackendError, match="decord is not installed.*decode.backend: pyav"):
        V.open_video(videos["vfr"], backend="decord")
    assert not (tmp_path / "artifacts" / "frames.parquet").exists()


def test_unknown_backend_is_a_param_error(tmp_path, videos):
    droot = _data_root(tmp_path, {"vfr": videos["vfr"]})
    p = _params(tmp_path, droot, "pyav")
    p.write_text(p.read_text().replace("backend: pyav", "backend: opencv"))
    proc = subprocess.run([sys.executable, "-m", "stages.decode", "--params", str(p), "--root", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "decode.backend" in proc.stderr and "pyav" in proc.stderr


# ------------------------------------------------------------------------------------ torchcodec
def _torchcodec_env(tmp_path: Path) -> dict | None:
    """Environment in which torchcodec loads FFmpeg: this one when the system has FFmpeg's libraries,
    else one whose library path holds PyAV's bundled FFmpeg under the names FFmpeg installs; None when
    torchcodec is not installed or neither works."""
    pytest.importorskip("torchcodec")
    env = dict(os.environ)
    probe = [sys.executable, "-c", "from actparse.video import check_backend; check_backend('torchcodec')"]
    if subprocess.run(probe, cwd=ROOT, env=env, capture_output=True, timeout=120).returncode == 0:
        return env
    import av

    libs = Path(av.__file__).resolve().parent.parent / "av.libs"
    if not libs.is_dir():
        return None
    named = tmp_path / "ffmpeg_libs"
    named.mkdir()
    for lib in libs.glob("lib*-*.so.*"):  # libavcodec-5e6b81c2.so.62.28.102 -> libavcodec.so.62
        stem, ver = lib.name.split(".so.", 1)
        (named / f"{stem.rsplit('-', 1)[0]}.so.{ver.split('.')[0]}").symlink_to(lib)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(named), str(libs), env.get("LD_LIBRARY_PATH", "")])
    return env if subprocess.run(probe, cwd=ROOT, env=env, capture_output=True, timeout=120).returncode == 0 else None


CHILD = """
import json, sys
import numpy as np
from test_decode_backends import _read_all
for name, path in json.loads(sys.argv[1]).items():
    np.savez(sys.argv[2] + "/" + name + ".npz", **_read_all(path, "torchcodec"))
"""


def test_torchcodec_gives_decords_frames_and_times(tmp_path, videos):
    env = _torchcodec_env(tmp_path)
    if env is None:
        pytest.skip("torchcodec cannot load FFmpeg's libraries here")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps({k: str(v) for k, v in videos.items()}),
                           str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, path in videos.items():
        got = dict(np.load(tmp_path / f"{name}.npz"))
        got.update(n=int(got["n"]), fps=float(got["fps"]))
        _assert_same(_read_all(path, "decord"), got, f"{name} torchcodec")


def test_decode_stage_writes_the_same_frames_with_torchcodec(tmp_path, videos):
    env = _torchcodec_env(tmp_path)
    if env is None:
        pytest.skip("torchcodec cannot load FFmpeg's libraries here")
    droot = _data_root(tmp_path, videos)
    rc, err, ref, ref_skips = _run_decode(tmp_path, droot, "decord")
    assert rc == 0, err
    rc, err, got, skips = _run_decode(tmp_path, droot, "torchcodec", env)
    assert rc == 0, err
    assert ref.equals(got)
    assert list(skips["video"]) == ["broken"] and "broken.mp4" in skips["error"].iloc[0]


def test_torchcodec_without_ffmpeg_stops_with_what_to_install(tmp_path, videos):
    pytest.importorskip("torchcodec")
    code = "from actparse.video import check_backend; check_backend('torchcodec')"
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    if subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True).returncode == 0:
        pytest.skip("this system has FFmpeg's libraries")
    droot = _data_root(tmp_path, {"vfr": videos["vfr"]})
    rc, err, _, _ = _run_decode(tmp_path, droot, "torchcodec", env)
    assert rc == 2 and "torchcodec cannot load FFmpeg's shared libraries" in err and "decode.backend: pyav" in err
    assert len(err.strip().splitlines()) == 1


def test_infer_takes_the_backend_and_names_a_missing_one(tmp_path, videos, monkeypatch, capsys):
    from actparse.infer import build_parser, main

    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "a.mp4").symlink_to(videos["vfr"])
    assert build_parser().parse_args([str(folder), "--models", "m", "--out", "o", "--decode-backend", "pyav"]
                                     ).decode_backend == "pyav"
    monkeypatch.setitem(sys.modules, "decord", None)
    assert main([str(folder), "--models", str(tmp_path / "models"), "--out", str(tmp_path / "o"),
                 "--decode-backend", "decord"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "decord is not installed" in err[0] and "decode.backend: pyav" in err[0]
    assert not (tmp_path / "o").exists()


def test_encode_jpeg_bytes_are_those_of_the_reversed_channel_view(videos):
    """encode_jpeg converts to BGR with cvtColor (faster): the bytes stay those of the earlier
    ``cv2.imencode(".jpg", rgb[..., ::-1])``, so frames.parquet and everything downstream are unchanged."""
    import cv2

    for name in ("h264_bframes", "rot90", "mp4v"):
        frames = V.read_frames(videos[name], np.arange(6))
        for f in frames:
            for q in (90, 75):
                old = cv2.imencode(".jpg", f[..., ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), q])[1].tobytes()
                assert V.encode_jpeg(f, q) == old
        crop = frames[0][5:40, 7:61]  # a non-contiguous view
        old = cv2.imencode(".jpg", crop[..., ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), 90])[1].tobytes()
        assert V.encode_jpeg(crop, 90) == old


def test_flow_decode_task_uses_the_backend(tmp_path, videos):
    """The flow's per-video decode task (flows/mapped.py) runs the stage's function with decode.backend."""
    from actparse.params import load_params
    from actparse.schemas import read_df
    from flows.mapped import DecodeMapper
    from stages.decode import decode_video

    droot = _data_root(tmp_path, {"rot90": videos["rot90"]})
    mapper = DecodeMapper(tmp_path, load_params(_params(tmp_path, droot, "pyav")))
    assert mapper.cfg.backend == "pyav"
    work = tmp_path / "work"
    work.mkdir()
    item = mapper.items()[0]
    mapper.run_item(item, work)
    got = read_df(work / "000000.parquet", "frames")
    ref = decode_video(videos["rot90"], "rot90", 2, 0, mapper.cfg.quality, "decord").to_pandas()
    assert got.equals(ref) and set(zip(got["width"], got["height"])) == {(96, 128)}
