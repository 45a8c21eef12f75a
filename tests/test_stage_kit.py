"""The stage kit (actparse/stage.py) and the fault handling it gives every stage.

Grouped by what each test protects: a stage whose every video fails stops (and its downstream does
not run); every skip file is a DVC output of its stage; killed writes leave no temporary files; a
failed training keeps the previous model folder; variable-frame-rate videos keep their real frame
times; the flow's Prefect server dies with the flow.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from actparse.params import load_params
from actparse.paths import Paths
from actparse.atomic import clean_stale_temps, write_json
from actparse.schemas import ParquetStreamWriter, from_rows, read_df, read_table, write_table
from actparse.stage import AllFailed, SkipLedger, clean_stale_siblings, model_folder, new_columns, seed_disabled
from _params import write_params

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "YOLO_OFFLINE": "1", "DVC_NO_ANALYTICS": "1"}


def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _video(path: Path, n: int, w: int = 64, h: int = 48, fps: int = 25) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(n):
        vw.write(np.full((h, w, 3), (i * 9) % 255, np.uint8))
    vw.release()


def _videos_table(droot: Path, names: list[str]) -> None:
    rows = [{"video": v, "path": f"videos/{v}.mp4", "split": "test", "action": None, "n_frames": None,
             "fps": None, "width": None, "height": None} for v in names]
    write_table(from_rows(rows, "videos"), droot / "videos.parquet", "videos")


def _params(path: Path, **sections) -> str:
    return str(write_params(path, sections))


def _yolo_checkpoint(path: Path) -> Path:
    """An untrained one-class ultralytics detector saved the way ultralytics saves models."""
    from actparse import yolo

    yolo.configure()
    from ultralytics import YOLO

    path.parent.mkdir(parents=True, exist_ok=True)
    m = YOLO("yolo11n.yaml", task="detect")
    m.model.names = {0: "person"}
    m.save(str(path))
    return path


def _corrupt_frames(root: Path, videos: list[str], n_frames: int = 3) -> None:
    rows = [{"video": v, "frame": f, "pts": f / 25, "width": 32, "height": 24, "scale": 1.0,
             "jpeg": b"\xff\xd8 not a jpeg"} for v in videos for f in range(n_frames)]
    write_table(from_rows(rows, "frames"), Paths(root).frames, "frames")


# ============================================================================================ all failed
def test_ledger_counts_notes_apart_and_names_the_first_errors(tmp_path):
    ledger = SkipLedger("demo", tmp_path)
    for v in ("a", "b", "c", "d", "e"):
        ledger.tried(v)
    ledger.note("a", "2 boxes on frames not decoded")  # processed with a problem: not a failure
    for v in ("b", "c", "d", "e"):
        ledger.skip(v, ValueError(f"{v}.mp4: corrupt"))
    ledger.check()  # "a" succeeded
    ledger.tried("f")
    ledger.skip("f", "f.mp4: empty file")
    ledger.check()
    ledger.write()
    rows = read_table(Paths(tmp_path).skips / "demo.parquet", "skips").to_pylist()
    assert [r["video"] for r in rows] == ["a", "b", "c", "d", "e", "f"] and {r["stage"] for r in rows} == {"demo"}

    failed = SkipLedger("demo", tmp_path)
    for v in ("b", "c", "d", "e"):
        failed.skip(v, f"{v}.mp4: corrupt")
    with pytest.raises(AllFailed) as exc:
        failed.check("/data")
    assert str(exc.value) == ("demo: none of the 4 videos under /data could be processed: b: b.mp4: corrupt; "
                              "c: c.mp4: corrupt; d: d.mp4: corrupt (and 1 more)")
    SkipLedger("demo", tmp_path).check()  # nothing tried: nothing failed


def test_decode_with_every_video_broken_exits_2_naming_the_videos(tmp_path, capsys):
    from stages import decode

    droot = tmp_path / "data"
    (droot / "videos").mkdir(parents=True)
    (droot / "videos" / "a.mp4").write_bytes(os.urandom(2048))
    (droot / "videos" / "b.mp4").write_bytes(b"")
    _videos_table(droot, ["a", "b"])
    params = _params(tmp_path / "params.yaml", data={"root": str(droot)}, decode={"stride": 2})
    assert decode.main(["--params", params, "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"decode: error: none of the 2 videos under {droot} could be processed: a: ")
    assert "b: " in err and "empty file" in err
    assert not Paths(tmp_path).frames.exists() and not (Paths(tmp_path).skips / "decode.parquet").exists()


def test_detect_persons_with_every_frame_corrupt_stops_the_dag_before_keypoints(tmp_path):
    """Through DVC, as `dvc repro` runs the DAG: detect_persons exits 2 and keypoints never runs."""
    _yolo_checkpoint(tmp_path / "artifacts" / "models" / "person_detector" / "model.pt")
    videos = [f"v{i:02d}" for i in range(12)]
    _corrupt_frames(tmp_path, videos)
    _params(tmp_path / "params.yaml", device="cpu", person_detector={
        "imgsz": 64, "conf": 0.25, "iou": 0.7, "max_det": 5, "predict_batch": 4, "threads": 1},
        keypoints={"flip_test": False, "infer_batch": 8})
    stages = {name: {"cmd": f"{sys.executable} -m stages.{name}", "deps": deps,
                     "outs": [DVC[name]["outs"][0], f"artifacts/skips/{name}.parquet"]}
              for name, deps in (("detect_persons", ["artifacts/frames.parquet", "artifacts/models/person_detector"]),
                                 ("keypoints", ["artifacts/persons.parquet"]))}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, env=ENV, check=True)
    proc = subprocess.run(["dvc", "repro", "keypoints"], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "detect_persons: error: none of the 12 videos under" in out and "corrupt JPEG for video 'v00'" in out
    assert "stages.keypoints" not in out  # DVC stopped before the downstream stage
    assert not Paths(tmp_path).persons.exists() and not Paths(tmp_path).keypoints.exists()
    assert not (tmp_path / "dvc.lock").exists() or "keypoints" not in (tmp_path / "dvc.lock").read_text()


def test_part_states_without_any_prediction_exits_2(tmp_path, capsys):
    from stages import part_states

    paths = Paths(tmp_path)
    parts = new_columns("parts")
    for v in ("a", "b"):
        for k, part in enumerate(("head", "hip")):
            for col, val in (("video", v), ("frame", 0), ("person", 0), ("part", part),
                             ("box", np.array([0, 0, 10, 10], np.float32)), ("score", 0.9)):
                parts[col].append(val)
    from actparse.schemas import from_columns

    write_table(from_columns(parts, "parts"), paths.parts, "parts")
    write_table(from_rows([{"video": "other", "task": "action", "model": "ensemble", "label": "x", "score": 1.0,
                            "probs": [1.0]}], "video_predictions"), paths.video_predictions, "video_predictions")
    params = _params(tmp_path / "params.yaml", part_labels={"mode": "video_label"})
    assert part_states.main(["--params", params, "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "part_states: error: none of the 2 videos" in err and "no ensemble prediction for this video" in err
    assert not paths.part_states.exists()


def test_train_csn_with_every_train_video_broken_exits_2(tmp_path, capsys):
    from test_csn import _tiny_csn_project

    from stages import train_csn

    params, _ = _tiny_csn_project(tmp_path)
    for i in range(6):  # the six train videos
        (tmp_path / "data" / "videos" / f"v{i}.mp4").write_bytes(os.urandom(1024))
    path = _params(tmp_path / "params.yaml", **params)
    assert train_csn.main(["--params", path, "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"train_csn: error: none of the 6 train videos under {tmp_path / 'data'} could be processed: v0: " in err
    assert not (Paths(tmp_path).models / "csn").exists() and not (Paths(tmp_path).skips / "train_csn.parquet").exists()


def test_flow_merge_stops_like_the_stage(tmp_path):
    """The flow's per-video decode merges through the same ledger: same error, nothing written."""
    from flows.mapped import DecodeMapper

    droot = tmp_path / "data"
    _videos_table(droot, ["a", "b"])
    params = load_params(_params(tmp_path / "p.yaml", data={"root": str(droot)}, decode={"stride": 2}))
    mapper = DecodeMapper(tmp_path, params)
    errors = {v: {"type": "VideoError", "message": f"{droot}/videos/{v}.mp4: no such video file"} for v in "ab"}
    with pytest.raises(AllFailed, match=rf"^decode: none of the 2 videos under {droot} could be processed: a: "):
        mapper.merge(mapper.items(), errors, tmp_path)
    assert not Paths(tmp_path).frames.exists()


# ============================================================================================ skip files
def _stage_source(name: str) -> str:
    return (ROOT / "stages" / f"{name}.py").read_text()


def _writes_skips(name: str) -> bool:
    src = _stage_source(name)
    return ("SkipLedger(" in src or "skips=True" in src or "paths.skips" in src
            or "run_videos(" in src)  # actparse.shards.run_videos: the per-video loop and its SkipLedger


@pytest.mark.parametrize("name", sorted(DVC))
def test_every_skip_file_is_a_dvc_output_of_its_stage(name):
    outs = [o for o in DVC[name].get("outs", []) if isinstance(o, str)]
    skip_outs = [o for o in outs if o.startswith("artifacts/skips/")]
    if _writes_skips(name):
        assert f"artifacts/skips/{name}.parquet" in outs, f"dvc.yaml: stage {name} writes a skip file it does not list"
    assert skip_outs in ([], [f"artifacts/skips/{name}.parquet"]), f"{name}: skip outs {skip_outs}"


def test_the_flow_sees_the_skip_outputs():
    from actparse.dag import load_dag

    dag = load_dag(ROOT)
    with_skips = {n for n in DVC if _writes_skips(n)}
    assert {"decode", "detect_persons", "keypoints", "detect_parts", "csn", "train_csn", "part_states"} <= with_skips
    for name in with_skips:
        assert f"artifacts/skips/{name}.parquet" in dag[name].outs


SEED_STAGES = ("stad_train", "stad_detect", "stad_evaluate", "gym_train", "gym_evaluate", "partattn_train",
               "partattn_predict")


@pytest.mark.parametrize("name", SEED_STAGES)
def test_a_disabled_seed_stage_writes_every_declared_output(name, tmp_path, caplog):
    """DVC fails a stage whose declared outputs are missing: the disabled guard must write all of them."""
    caplog.set_level("INFO", logger="actparse")
    mod = importlib.import_module(f"stages.{name}")
    system = name.split("_")[0]
    old = Paths(tmp_path).models / system / "stale.pt"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"an old model")
    params = _params(tmp_path / "params.yaml", **{system: {"enabled": False}})
    assert mod.main(["--params", params, "--root", str(tmp_path)]) == 0
    declared = list(DVC[name].get("outs", [])) + [next(iter(m)) for m in DVC[name].get("metrics", [])]
    for out in declared:
        assert (tmp_path / out).exists(), f"{name}: declared output {out} not written when disabled"
    if name.endswith("_train"):
        assert sorted(p.name for p in (Paths(tmp_path).models / system).iterdir()) == ["train_info.json"]
        assert json.loads((Paths(tmp_path).models / system / "train_info.json").read_text()) == {"enabled": False}
    assert any(f"{system}.enabled is false" in r.getMessage() for r in caplog.records)
    assert not [p for p in Paths(tmp_path).models.iterdir() if p.name.startswith(".")]


# ============================================================================================ temp files
def test_a_killed_writer_leaves_a_temp_file_the_next_write_removes(tmp_path):
    target = tmp_path / "artifacts" / "skips" / "demo.parquet"
    code = textwrap.dedent(f"""
        import os, signal
        from actparse.schemas import ParquetStreamWriter, from_rows
        w = ParquetStreamWriter({str(target)!r}, "skips")
        w.write(from_rows([{{"video": "x", "stage": "demo", "error": "e"}}], "skips"))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL
    left = [p.name for p in target.parent.iterdir()]
    assert len(left) == 1 and left[0].startswith(".demo.parquet.") and left[0].endswith(".tmp")

    live = target.parent / f".demo.parquet.{os.getppid()}.abcd1234.tmp"  # a writer that still runs
    other = target.parent / f".other.parquet.{_dead_pid()}.abcd1234.tmp"  # another artifact's temp file
    lookalike = target.parent / ".demo.parquet.notes.txt"
    for p in (live, other, lookalike):
        p.write_bytes(b"keep")
    write_table(from_rows([{"video": "y", "stage": "demo", "error": "ok"}], "skips"), target, "skips")
    assert sorted(p.name for p in target.parent.iterdir()) == sorted(
        ["demo.parquet", live.name, other.name, lookalike.name])
    assert read_table(target, "skips").column("video").to_pylist() == ["y"]
    assert clean_stale_temps(tmp_path / "artifacts" / "skips" / "other.parquet") == [other]


def test_stale_temp_files_of_every_writer_are_cleaned(tmp_path):
    dead = _dead_pid()
    for name, write in (("m.json", lambda p: write_json({"a": 1}, p)),
                        ("t.parquet", lambda p: write_table(from_rows([], "skips"), p, "skips")),
                        ("s.parquet", lambda p: ParquetStreamWriter(p, "skips").close())):
        path = tmp_path / name
        stale = [tmp_path / f".{name}.{dead}.x1y2z3w4.tmp", tmp_path / f".{name}.q9w8e7r6.tmp"]  # new, old style
        for s in stale:
            s.write_bytes(b"half written")
        write(path)
        assert path.exists() and not any(s.exists() for s in stale)


# ============================================================================================ model folders
def test_model_folder_keeps_the_old_model_when_training_fails(tmp_path):
    final = tmp_path / "models" / "csn"
    final.mkdir(parents=True)
    (final / "ip.pt").write_bytes(b"old ip")
    (final / "ir.pt").write_bytes(b"old ir")
    with pytest.raises(RuntimeError, match="out of memory"):
        with model_folder(final) as out:
            (out / "ip.pt").write_bytes(b"new ip")  # one variant done, the second fails
            raise RuntimeError("out of memory")
    assert sorted(p.name for p in final.parent.iterdir()) == ["csn"]
    assert (final / "ip.pt").read_bytes() == b"old ip" and (final / "ir.pt").read_bytes() == b"old ir"
    with model_folder(final) as out:
        (out / "ip.pt").write_bytes(b"new ip")
    assert sorted(p.name for p in final.parent.iterdir()) == ["csn"]
    assert sorted(p.name for p in final.iterdir()) == ["ip.pt"]  # no old ir.pt mixed in


def test_train_csn_failing_on_its_second_variant_keeps_the_old_folder(tmp_path, monkeypatch):
    """The issue's case: ip-CSN trained, ir-CSN fails; before, models/csn held the new ip.pt beside the old ir.pt."""
    from test_csn import _tiny_csn_project

    from stages import train_csn

    params, _ = _tiny_csn_project(tmp_path)
    params["csn"].update(epochs=1, train_workers=1)
    folder = Paths(tmp_path).models / "csn"
    folder.mkdir(parents=True)
    for name in ("ip.pt", "ir.pt", "train_info.json"):
        (folder / name).write_bytes(b"old " + name.encode())
    real = train_csn.train_variant

    def second_fails(job):
        if job["variant"] == "ir":
            raise RuntimeError("CUDA out of memory")
        return real(job)

    monkeypatch.setattr(train_csn, "train_variant", second_fails)
    with pytest.raises(RuntimeError, match="out of memory"):
        train_csn.run(params, tmp_path)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {
        n: b"old " + n.encode() for n in ("ip.pt", "ir.pt", "train_info.json")}
    assert [p.name for p in folder.parent.iterdir()] == ["csn"]  # no temporary folder left


def test_model_folder_after_a_kill(tmp_path):
    final = tmp_path / "models" / "pose"
    final.mkdir(parents=True)
    (final / "model.pt").write_bytes(b"old")
    code = textwrap.dedent(f"""
        import os, signal
        from actparse.stage import model_folder
        with model_folder({str(final)!r}) as out:
            (out / "model.pt").write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", code], env=ENV, cwd=ROOT).returncode == -signal.SIGKILL
    assert len(list(final.parent.iterdir())) == 2 and (final / "model.pt").read_bytes() == b"old"
    with model_folder(final) as out:
        (out / "model.pt").write_bytes(b"new")
    assert [p.name for p in final.parent.iterdir()] == ["pose"] and (final / "model.pt").read_bytes() == b"new"
    # killed between setting the old folder aside and renaming the new one in: the old one comes back
    os.replace(final, final.parent / f".pose.{_dead_pid()}.0a1b2c3d.old")
    assert clean_stale_siblings(final) and (final / "model.pt").read_bytes() == b"new"


def test_a_training_stage_that_fails_keeps_its_previous_model(tmp_path, monkeypatch):
    """train_person_detector with user weights: the copy fails after model.pt is written."""
    from actparse import yolo
    from stages import train_person_detector

    weights = _yolo_checkpoint(tmp_path / "user.pt")
    folder = Paths(tmp_path).models / "person_detector"
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"previous model")
    (folder / "train_info.json").write_text("{}")
    params = load_params(_params(tmp_path / "params.yaml", seed=0, person_detector={"weights": str(weights)}))
    real = yolo.finish_model_dir

    def failing(model_dir, *args, **kw):
        yolo.save_final(weights, Path(model_dir) / "model.pt")
        raise OSError("disk full")

    monkeypatch.setattr(yolo, "finish_model_dir", failing)
    with pytest.raises(OSError, match="disk full"):
        train_person_detector.run(params, tmp_path)
    assert (folder / "model.pt").read_bytes() == b"previous model"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["person_detector"]
    monkeypatch.setattr(yolo, "finish_model_dir", real)
    train_person_detector.run(params, tmp_path)
    assert (folder / "model.pt").read_bytes() == weights.read_bytes()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["person_detector"]


@pytest.mark.parametrize("name", sorted(n for n in DVC if any(str(o).startswith("artifacts/models/")
                                                               for o in DVC[n].get("outs", []))))
def test_every_training_stage_writes_its_model_folder_atomically(name):
    src = _stage_source(name)
    assert "model_folder(" in src or "model_dir=" in src, f"stages/{name}.py writes its model folder in place"
    assert "shutil.rmtree(out" not in src


# ============================================================================================ VFR video
def _vfr_video(path: Path) -> list[float]:
    """20 frames 40 ms apart, then 20 frames 100 ms apart (H.264 in MP4, timestamps in ms); returns them."""
    import av

    times = [0.04 * i for i in range(20)] + [0.8 + 0.1 * i for i in range(20)]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 6, np.uint8), format="rgb24")
            f.pts, f.time_base = round(t * 1000), Fraction(1, 1000)
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return times


def _container_times(path: Path) -> list[float]:
    """Presentation times of the frames as the container stores them (libav, the library ffprobe uses)."""
    import av

    with av.open(str(path)) as c:
        st = c.streams.video[0]
        return sorted(float(f.pts * st.time_base) for f in c.decode(st))


def test_decode_stores_the_real_timestamps_of_a_vfr_video(tmp_path):
    from flows.mapped import DecodeMapper
    from stages import decode

    droot = tmp_path / "data"
    (droot / "videos").mkdir(parents=True)
    made = _vfr_video(droot / "videos" / "vfr.mp4")
    truth = _container_times(droot / "videos" / "vfr.mp4")
    assert np.allclose(truth, made, atol=1e-3)
    _videos_table(droot, ["vfr"])
    params = _params(tmp_path / "params.yaml", data={"root": str(droot)}, decode={"stride": 1})
    assert decode.main(["--params", params, "--root", str(tmp_path)]) == 0
    frames = read_df(Paths(tmp_path).frames, "frames")
    assert frames["frame"].tolist() == list(range(40))
    assert np.abs(frames["pts"].to_numpy() - np.asarray(truth)).max() < 1e-3
    import decord

    avg = decord.VideoReader(str(droot / "videos" / "vfr.mp4")).get_avg_fps()
    assert np.abs(np.arange(40) / avg - np.asarray(truth)).max() > 0.3  # index / average fps is far off: real VFR
    # the flow's per-video task runs the stage's own function: same timestamps
    mapper = DecodeMapper(tmp_path, load_params(params))
    work = tmp_path / "work"
    work.mkdir()
    mapper.run_item(mapper.items()[0], work)
    assert read_df(work / "000000.parquet", "frames")["pts"].tolist() == frames["pts"].tolist()


# ============================================================================================ Prefect server
SERVER_SCRIPT = textwrap.dedent("""
    import sys, time
    from flows.server import running_server
    with running_server(home=sys.argv[1], ui=False) as url:
        print(url, flush=True)
        time.sleep(600)
""")


def test_the_flows_prefect_server_stops_when_the_flow_is_killed(tmp_path):
    """Two flow-like parents start servers through the flow's helper (at once, to save time); one gets
    SIGTERM (a plain `kill`), the other SIGKILL (no cleanup can run): both servers must go."""
    import psutil

    from flows.server import is_healthy

    parents = {sig: subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(tmp_path / sig.name)], cwd=ROOT,
                                     env=ENV, stdout=subprocess.PIPE, text=True)
               for sig in (signal.SIGTERM, signal.SIGKILL)}
    try:
        urls, servers = {}, {}
        for sig, parent in parents.items():
            urls[sig] = parent.stdout.readline().strip()
            assert urls[sig].endswith("/api") and is_healthy(urls[sig]), "the helper did not bring its server up"
            servers[sig] = psutil.Process(parent.pid).children(recursive=True)
            assert servers[sig], "no server process under the helper"
        for sig, parent in parents.items():
            parent.send_signal(sig)
        for sig, parent in parents.items():
            parent.wait(60)
            gone, alive = psutil.wait_procs(servers[sig], timeout=60)
            assert not alive, f"server processes still running after the parent got {sig.name}: {alive}"
            assert not is_healthy(urls[sig], timeout=1.0)
    finally:
        for parent in parents.values():
            if parent.poll() is None:
                parent.kill()
                parent.wait()
