"""Decode backends and the decode stage's overhead, side by side in one run.

    python -m benchmarks.decode_backends              # writes benchmarks/results/decode_backends.json
    python -m benchmarks.decode_backends --videos 4 --rounds 3 --json out.json

Three video sets: the default synthetic videos (params.yaml's ``synth`` section: 160x120, 25 fps,
MPEG-4 part 2 written by OpenCV as the synth stage writes them) and H.264 at 640x360 and 1280x720
(libx264 through PyAV, preset medium: B-frames, a keyframe every 250 frames), 2-3 s each. On every
set, in turns within each round (so load from other work hits them alike), it times:

* ``decord_bare``: decord's own decode of the frames the decode stage keeps (every
  ``decode.stride``-th frame: ``VideoReader(num_threads=1).get_batch(indices)`` and their times);
* ``reader_<backend>``: the same frames through :func:`actparse.video.open_video` /
  :func:`actparse.video.read_frames` with each backend (decord, pyav, torchcodec), one thread each;
* ``stage_<backend>``: :func:`stages.decode.decode_video`, the whole per-video work of the decode
  stage (decode, resize, JPEG encode, Arrow table) with each backend;
* the stage's breakdown on decord: decoding, ``encode_jpeg`` (OpenCV, quality from params.yaml),
  building the table, and other JPEG encoders on the same frames (OpenCV fed the reversed-channel
  view, as ``encode_jpeg`` did before, or a contiguous BGR copy, or the ``cvtColor`` copy it makes
  now; Pillow), each with whether its bytes equal ``encode_jpeg``'s.

Times are seconds per video set by the wall clock and in process CPU time (all threads), medians
over rounds; ratios are frames per second relative to ``decord_bare`` (> 1: faster), from the
medians and from each job's fastest round (on a machine shared with other work, the fastest round is
the least disturbed one). torchcodec needs FFmpeg's
shared libraries: without system ones, the run re-executes itself with PyAV's bundled FFmpeg on the
library path (the report says which).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "decode_backends.json"
BACKENDS = ("decord", "pyav", "torchcodec")
LENT_FFMPEG = "ACTPARSE_BENCH_LENT_FFMPEG"


# ------------------------------------------------------------------------------------- videos
def make_videos(folder: Path, n: int) -> dict[str, list[Path]]:
    import av
    import cv2

    from actparse.synth import SynthConfig, plan_videos, render_video, write_video

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = SynthConfig.from_params({"synth": dict(params["synth"], n_train=n, n_test=0)})
    specs = plan_videos(cfg)[:n]
    sets: dict[str, list[Path]] = {"synthetic_160x120_mp4v": [], "h264_640x360": [], "h264_1280x720": []}
    for k, spec in enumerate(specs):
        rendered = list(render_video(spec, cfg))
        frames = [f for f, _ in rendered]
        p = folder / f"synth_{k}.mp4"
        write_video(iter(rendered), p, cfg.fps, cfg.width, cfg.height, cfg.fourcc)
        sets["synthetic_160x120_mp4v"].append(p)
        for (w, h), name in (((640, 360), "h264_640x360"), ((1280, 720), "h264_1280x720")):
            p = folder / f"{name}_{k}.mp4"
            with av.open(str(p), "w") as out:
                st = out.add_stream("libx264", rate=cfg.fps)
                st.width, st.height, st.pix_fmt = w, h, "yuv420p"
                st.options = {"preset": "medium"}
                for f in frames:
                    img = cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR)
                    for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        out.mux(pkt)
                for pkt in st.encode():
                    out.mux(pkt)
            sets[name].append(p)
    return sets


# ------------------------------------------------------------------------------------- timed work
def _clock(fn) -> tuple[float, float, object]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def decord_bare(paths, stride):
    import decord

    n = 0
    for p in paths:
        vr = decord.VideoReader(str(p), ctx=decord.cpu(0), num_threads=1)
        idx = list(range(0, len(vr), stride))
        for s in range(0, len(idx), 32):  # the stage's chunks
            n += len(vr.get_batch(idx[s:s + 32]).asnumpy())
        vr.get_frame_timestamp(idx)
    return n


def reader(paths, stride, backend):
    from actparse.video import open_video, read_frames

    n = 0
    for p in paths:
        vr = open_video(p, backend=backend)
        idx = np.arange(0, len(vr), stride)
        for s in range(0, len(idx), 32):
            n += len(read_frames(p, idx[s:s + 32], vr=vr))
            vr.timestamps(idx[s:s + 32])
    return n


def stage(paths, stride, backend, quality):
    from stages.decode import decode_video

    return sum(decode_video(p, p.stem, stride, 0, quality, backend).num_rows for p in paths)


def breakdown(paths, stride, quality) -> dict:
    """The decode stage's per-video work on decord, step by step, and other JPEG encoders."""
    import cv2
    from PIL import Image

    from actparse.schemas import from_rows
    from actparse.video import encode_jpeg, open_video, read_frames

    t: dict[str, float] = {}

    def add(key, fn):
        w, c, out = _clock(fn)
        t[key + "_wall"] = t.get(key + "_wall", 0.0) + w
        t[key + "_cpu"] = t.get(key + "_cpu", 0.0) + c
        return out

    def pil(x):
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, "JPEG", quality=quality)
        return buf.getvalue()

    others = {"jpeg_cv2_reversed_view_previous": lambda x: cv2.imencode(".jpg", x[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY,
                                                                                   quality])[1].tobytes(),
              "jpeg_cv2_contiguous": lambda x: cv2.imencode(".jpg", np.ascontiguousarray(x[..., ::-1]),
                                                           [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes(),
              "jpeg_cv2_cvtcolor": lambda x: cv2.imencode(".jpg", cv2.cvtColor(x, cv2.COLOR_RGB2BGR),
                                                          [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes(),
              "jpeg_pillow": pil}
    identical = {k: True for k in others}
    for p in paths:
        vr = add("open", lambda: open_video(p, backend="decord"))
        idx = np.arange(0, len(vr), stride)
        frames = np.concatenate([add("decode", lambda s=s: read_frames(p, idx[s:s + 32], vr=vr))
                                 for s in range(0, len(idx), 32)])
        times = add("timestamps", lambda: vr.timestamps(idx))
        jpegs = add("jpeg_encode_jpeg", lambda: [encode_jpeg(f, quality) for f in frames])
        add("table", lambda: from_rows([{"video": p.stem, "frame": int(i), "pts": float(s), "width": f.shape[1],
                                         "height": f.shape[0], "scale": 1.0, "jpeg": j}
                                        for i, s, f, j in zip(idx, times, frames, jpegs)], "frames"))
        for k, fn in others.items():
            got = add(k, lambda fn=fn: [fn(f) for f in frames])
            identical[k] = identical[k] and got == jpegs
    return {"seconds": t, "bytes_identical_to_encode_jpeg": identical}


# ------------------------------------------------------------------------------------- run
def torchcodec_state() -> str:
    from actparse.video import BackendError, check_backend

    try:
        check_backend("torchcodec")
        return "system FFmpeg" if not os.environ.get(LENT_FFMPEG) else "FFmpeg bundled in PyAV's wheel"
    except BackendError as exc:
        return f"unavailable: {exc}"


def lent_ffmpeg_env() -> dict | None:
    """This environment with PyAV's bundled FFmpeg on the library path under the names FFmpeg installs."""
    import av

    libs = Path(av.__file__).resolve().parent.parent / "av.libs"
    if not libs.is_dir():
        return None
    named = Path(tempfile.mkdtemp(prefix="ffmpeg_libs_"))
    for lib in libs.glob("lib*-*.so.*"):
        stem, ver = lib.name.split(".so.", 1)
        (named / f"{stem.rsplit('-', 1)[0]}.so.{ver.split('.')[0]}").symlink_to(lib)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(named), str(libs), env.get("LD_LIBRARY_PATH", "")])
    env[LENT_FFMPEG] = "1"
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=6, help="videos per set (default 6)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default=str(RESULT))
    args = ap.parse_args(argv)
    try:
        import torchcodec  # noqa: F401

        if torchcodec_state().startswith("unavailable") and not os.environ.get(LENT_FFMPEG):
            env = lent_ffmpeg_env()
            if env is not None:
                rest = sys.argv[1:] if argv is None else list(argv)
                return subprocess.call([sys.executable, "-m", "benchmarks.decode_backends", *rest], cwd=ROOT, env=env)
    except ImportError:
        pass
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stride, quality = int(params["decode"]["stride"]), int(params["decode"]["jpeg_quality"])
    tc = torchcodec_state() if _importable("torchcodec") else "not installed"
    backends = [b for b in BACKENDS if b != "torchcodec" or not tc.startswith(("unavailable", "not"))]
    report: dict = {"what": "decode backends and the decode stage vs decord's bare decode; seconds per video set "
                            "(median over rounds), ratios = throughput / decord_bare's (>1 faster)",
                    "stride": stride, "jpeg_quality": quality, "threads": 1, "rounds": args.rounds,
                    "videos_per_set": args.videos, "torchcodec": tc, "machine": platform.machine(),
                    "cpus": os.cpu_count(), "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        sets = make_videos(Path(tmp), args.videos)
        for name, paths in sets.items():
            jobs = {"decord_bare": lambda p=paths: decord_bare(p, stride)}
            for b in backends:
                jobs[f"reader_{b}"] = lambda p=paths, b=b: reader(p, stride, b)
            for b in backends:
                jobs[f"stage_{b}"] = lambda p=paths, b=b: stage(p, stride, b, quality)
            for fn in jobs.values():  # warm-up: imports, file cache
                fn()
            wall = {k: [] for k in jobs}
            cpu = {k: [] for k in jobs}
            frames = {}
            parts = []
            for _ in range(args.rounds):
                for k, fn in jobs.items():
                    w, c, n = _clock(fn)
                    wall[k].append(w)
                    cpu[k].append(c)
                    frames[k] = n
                parts.append(breakdown(paths, stride, quality))
            med_w = {k: statistics.median(v) for k, v in wall.items()}
            med_c = {k: statistics.median(v) for k, v in cpu.items()}
            min_w = {k: min(v) for k, v in wall.items()}
            min_c = {k: min(v) for k, v in cpu.items()}
            secs = {k: statistics.median(p["seconds"][k] for p in parts) for k in parts[0]["seconds"]}
            entry = {
                "videos": len(paths), "frames_kept": frames["decord_bare"],
                "seconds_wall": {k: round(v, 4) for k, v in med_w.items()},
                "seconds_cpu": {k: round(v, 4) for k, v in med_c.items()},
                "vs_decord_bare_wall": {k: round(med_w["decord_bare"] / v, 3) for k, v in med_w.items()},
                "vs_decord_bare_cpu": {k: round(med_c["decord_bare"] / v, 3) for k, v in med_c.items()},
                "vs_decord_bare_wall_fastest_rounds": {k: round(min_w["decord_bare"] / v, 3) for k, v in min_w.items()},
                "vs_decord_bare_cpu_fastest_rounds": {k: round(min_c["decord_bare"] / v, 3) for k, v in min_c.items()},
                "stage_breakdown_decord_cpu_seconds": {k[:-4]: round(v, 4) for k, v in secs.items()
                                                        if k.endswith("_cpu")},
                "jpeg_bytes_identical_to_encode_jpeg": {k: all(p["bytes_identical_to_encode_jpeg"][k] for p in parts)
                                                        for k in parts[0]["bytes_identical_to_encode_jpeg"]},
                "all_rounds_wall": {k: [round(x, 4) for x in v] for k, v in wall.items()},
            }
            report["sets"][name] = entry
            print(name, json.dumps({k: entry[k] for k in ("vs_decord_bare_wall", "vs_decord_bare_cpu",
                                                          "stage_breakdown_decord_cpu_seconds")}), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    sys.exit(main())
