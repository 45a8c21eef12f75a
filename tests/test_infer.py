"""`actparse infer` on a bare folder of real-world-like videos, and the same through `dvc repro`.

The videos are synthetic renders encoded with FFmpeg's own encoders (through PyAV): H.264, HEVC
(libx265) and VP9 (libvpx-vp9), 240p to 1080p, 6 to 60 fps, one with a 90-degree display rotation,
plus one corrupt file. The models folder is ``artifacts/models`` of a default run, trained once per
session by the DAG's own training stages at the sizes of tests/params.tiny.yaml (one epoch each, on
5 synthetic videos). The tests check the route (every output, for every decodable video, skips,
submissions, no-ground-truth metrics), not accuracy; inference uses the tiny overlay's low score
thresholds so that the one-epoch models leave work for every stage.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# (file name, encoder, width, height, fps, frames, display rotation)
VIDEOS = (("clip_h264_240p.mp4", "libx264", 426, 240, 25, 30, None),
          ("clip_hevc_1080p.mp4", "libx265", 1920, 1080, 6, 12, None),
          ("clip_vp9_360p.webm", "libvpx-vp9", 640, 360, 60, 60, None),
          ("clip_h264_rotated.mp4", "libx264", 640, 480, 30, 30, 90))
CORRUPT = "broken.mp4"
DECODABLE = sorted(Path(v[0]).stem for v in VIDEOS)
CROP = 64  # the part detector's paint crop size, recorded in its train_info.json (params say 96)
TRAINED_IMGSZ = 64  # the person detector's input size, in its train_info.json (params say 128)


# ------------------------------------------------------------------------------------ the videos
def encode(path: Path, frames: list[np.ndarray], encoder: str, fps: int, rotation: int | None) -> None:
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(encoder, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"libx264": {"preset": "ultrafast"},
                          "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
                          "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"}}[encoder]
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_videos(folder: Path) -> None:
    import cv2

    from actparse.synth import SynthConfig, plan_videos, render_video

    (folder / "sub").mkdir()
    for k, (name, encoder, w, h, fps, n, rot) in enumerate(VIDEOS):
        cfg = SynthConfig(seed=k, n_train=0, n_test=1, width=160, height=120, fps=fps,
                          min_seconds=n / fps, max_seconds=n / fps, max_people=2, occluder_prob=0.0, fourcc="mp4v",
                          long_tail=1.0, workers=0)
        spec = plan_videos(cfg)[0]
        frames = [cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f, _ in render_video(spec, cfg)][:n]
        encode(folder / ("sub" if k == 3 else ".") / name, frames, encoder, fps, rot)
    (folder / CORRUPT).write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory) -> Path:
    """The videos, encoded in a fresh process: in this one decord is already imported, and with its
    bundled FFmpeg libraries loaded first PyAV's libvpx-vp9 refuses its options (EINVAL)."""
    import av

    missing = [v[1] for v in VIDEOS if v[1] not in av.codecs_available]
    if missing:
        pytest.skip(f"FFmpeg encoder(s) {missing} not available in this PyAV build")
    folder = tmp_path_factory.mktemp("videos")
    code = "import sys; from pathlib import Path; import test_infer; test_infer.write_videos(Path(sys.argv[1]))"
    e = env()
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), e["PYTHONPATH"]])
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], env=e, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return folder


# ------------------------------------------------------------------------------------ the models
TRAIN_STAGES = ("train_person_detector", "train_pose", "train_part_detector", "train_csn")


def tiny_params() -> dict:
    from actparse.params import merge_params

    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    return merge_params(base, yaml.safe_load((ROOT / "tests" / "params.tiny.yaml").read_text()))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """``artifacts/models`` of a default run at the tiny sizes: the training stages of ``dvc.yaml``
    and their ancestors (synth ... part_labels), run as ``actparse infer`` runs stages (the same
    ``main(["--params", P, "--root", R])`` that ``dvc repro`` calls), on 5 synthetic train videos.
    The person detector is trained at 64 px and the part detector on 64 px crops, so that the
    tests can tell the sizes a model was trained with from those in the inference params."""
    from actparse.dag import load_dag
    from actparse.infer import run_stages

    run = tmp_path_factory.mktemp("run")
    params = tiny_params()
    params["synth"].update(n_train=5, n_test=1)
    params["person_detector"]["imgsz"] = TRAINED_IMGSZ
    params["parts"]["crop_size"] = CROP
    params["csn"]["train_workers"] = 1  # variants one after another in this process: no process start-up
    (run / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    names = load_dag(ROOT).plan(TRAIN_STAGES)
    run_stages(names, (run / "params.yaml").resolve(), run.resolve())
    return run / "artifacts" / "models"


def whole_params(data_root: Path, **sections: dict) -> dict:
    """The project's whole params file with ``data.root`` set and ``sections`` laid over it."""
    from actparse.params import merge_params

    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    return merge_params(base, {"data": {"root": str(data_root)}, **sections})


@pytest.fixture(scope="session")
def classes(models_dir) -> dict:
    return json.loads((models_dir / "csn" / "model.json").read_text())["classes"]


def env() -> dict:
    e = dict(os.environ)
    e["PATH"] = str(Path(sys.executable).parent) + os.pathsep + e.get("PATH", "")
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.update({"DVC_NO_ANALYTICS": "1", "YOLO_OFFLINE": "1", "OMP_NUM_THREADS": "2"})
    return e


def infer_params_file(tmp: Path) -> Path:
    """The project's params with the tiny overlay (its low score thresholds: one-epoch models score low)."""
    path = tmp / "infer_params.yaml"
    path.write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    return path


@pytest.fixture(scope="module")
def inferred(video_dir, models_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("infer")
    out = tmp / "out"
    cmd = [sys.executable, "-m", "actparse", "infer", str(video_dir), "--models", str(models_dir), "--out", str(out),
           "--device", "cpu", "--params", str(infer_params_file(tmp))]
    proc = subprocess.run(cmd, cwd=tmp, env=env(), capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    return out, proc.stdout, log


# ------------------------------------------------------------------------------------ the tests
TABLES = (("artifacts/frames.parquet", "frames"), ("artifacts/persons.parquet", "persons"),
          ("artifacts/keypoints.parquet", "keypoints"), ("artifacts/refined_persons.parquet", "keypoints"),
          ("artifacts/parts.parquet", "parts"), ("artifacts/part_states.parquet", "part_states"),
          ("artifacts/video_predictions.parquet", "video_predictions"), ("artifacts/tubes.parquet", "tubes"))


def test_every_output_has_rows_for_every_decodable_video(inferred, classes):
    from actparse.constants import GROUPS
    from actparse.schemas import read_table

    out, _, _ = inferred
    for rel, schema in TABLES:
        t = read_table(out / rel, schema)
        assert sorted(set(t.column("video").to_pylist())) == DECODABLE, rel
    preds = read_table(out / "artifacts/video_predictions.parquet", "video_predictions").to_pandas()
    # 7 tasks x (ip, ir, ensemble) per video; labels come from the model's class lists
    assert len(preds) == len(DECODABLE) * 7 * 3
    for task, labels in classes.items():
        assert set(preds.loc[preds["task"] == task, "label"]) <= set(labels), task
    states = read_table(out / "artifacts/part_states.parquet", "part_states").to_pandas()
    known = {label.split(f"_{g}_")[-1] for g in GROUPS for label in classes[g]}
    assert set(states["state"]) <= known


def test_frames_follow_each_video_size_rate_and_rotation(inferred, video_dir):
    from actparse.schemas import read_df

    out, _, _ = inferred
    frames = read_df(out / "artifacts/frames.parquet", "frames", columns=["video", "frame", "width", "height"])
    stride = yaml.safe_load((out / "params.yaml").read_text())["decode"]["stride"]
    for name, _, w, h, fps, n, rot in VIDEOS:
        f = frames[frames["video"] == Path(name).stem]
        assert sorted(f["frame"]) == list(range(0, n, stride)), name
        size = (h, w) if rot else (w, h)  # the display rotation is applied: a 640x480 clip is 480 wide
        assert {(int(a), int(b)) for a, b in zip(f["width"], f["height"])} == {size}, name


def test_corrupt_video_is_a_recorded_skip(inferred):
    from actparse.schemas import read_df

    out, stdout, _ = inferred
    skips = read_df(out / "artifacts/skips/decode.parquet", "skips")
    assert list(skips["video"]) == [Path(CORRUPT).stem] and skips["error"].iloc[0]
    summary = json.loads((out / "infer_summary.json").read_text())
    assert [(s["video"], s["stage"]) for s in summary["skipped"]] == [(Path(CORRUPT).stem, "decode")]
    assert f"skipped {Path(CORRUPT).stem}" in stdout


def test_submissions_are_written_for_every_decodable_video(inferred):
    out, _, _ = inferred
    sub = out / "artifacts/submission"
    parts = json.loads((sub / "pred_part_result.json").read_text())
    vids = json.loads((sub / "pred_vid_result.json").read_text())
    assert sorted(parts) == DECODABLE and sorted(vids) == DECODABLE
    humans = [h for v in parts.values() for fr in v.values() for h in fr["humans"]]
    assert humans and all(len(h["box"]) == 4 for h in humans)
    assert any(h["parts"] for h in humans)
    with open(sub / "video_detections.pkl", "rb") as fh:
        vdets = pickle.load(fh)
    assert sum(len(v) for v in vdets.values()) > 0  # action tubes in the MultiSports layout
    with open(sub / "frame_detections.pkl", "rb") as fh:
        fdets = np.asarray(pickle.load(fh))
    assert fdets.ndim == 2 and fdets.shape[1] == 8 and len(fdets)


def test_metrics_say_there_is_no_ground_truth(inferred):
    out, stdout, _ = inferred
    metrics = json.loads((out / "metrics/metrics.json").read_text())
    assert metrics["scored"] is False and metrics["ground_truth"] is False
    assert metrics["note"] == "no ground truth: metrics skipped"
    assert metrics["n_videos_predicted"] == len(DECODABLE)
    assert "no ground truth: metrics skipped" in stdout


def test_models_are_used_as_given_not_trained(inferred, models_dir, video_dir, classes):
    out, stdout, _ = inferred
    params = yaml.safe_load((out / "params.yaml").read_text())
    assert Path(params["data"]["root"]) == video_dir.resolve()
    assert params["keypoints"]["epochs"] == 0 and params["csn"]["model"] == str((models_dir / "csn").resolve())
    assert params["parts"]["crop_size"] == CROP  # taken from the part detector's folder, not params.yaml
    assert params["person_detector"]["imgsz"] == TRAINED_IMGSZ  # likewise
    assert tiny_params()["parts"]["crop_size"] != CROP and tiny_params()["person_detector"]["imgsz"] != TRAINED_IMGSZ
    models = out / "artifacts/models"
    assert json.loads((models / "csn/train_info.json").read_text())["trained"] is False
    assert json.loads((models / "person_detector/train_info.json").read_text())["trained"] is False
    assert (models / "csn/ip.pt").read_bytes() == (models_dir / "csn/ip.pt").read_bytes()
    assert json.loads((out / "artifacts/part_labels/classes.json").read_text()) == classes
    for step in ("train_person_detector", "train_pose", "train_part_detector", "train_csn", "evaluate"):
        assert f"] {step}" in stdout


def test_a_models_folder_missing_parts_is_named(tmp_path, video_dir, models_dir):
    from actparse.infer import main

    broken = tmp_path / "models"
    shutil.copytree(models_dir, broken)
    shutil.rmtree(broken / "pose")
    (broken / "csn" / "ir.pt").unlink()
    assert main([str(video_dir), "--models", str(broken), "--out", str(tmp_path / "o")]) == 2
    shutil.rmtree(broken / "part_detector")
    with pytest.raises(ValueError, match=r"pose/model\.pt.*part_detector/model\.pt"):
        from actparse.infer import check_models

        check_models(broken)
    shutil.copytree(models_dir / "pose", broken / "pose")
    shutil.copytree(models_dir / "part_detector", broken / "part_detector")
    with pytest.raises(ValueError, match=r"ir\.pt"):
        check_models(broken)
    assert main([str(tmp_path / "nothing"), "--models", str(models_dir), "--out", str(tmp_path / "o")]) == 2


def test_dvc_repro_on_the_folder_gives_the_same_outputs(inferred, video_dir, tmp_path_factory):
    """The same params (models by path, data.root at the folder) through `dvc repro evaluate` (the
    default DAG without the synthetic set and the switched-off seed stages) in a scratch copy of
    the project: every output again, and the same predictions."""
    from actparse.schemas import read_df

    out, _, _ = inferred
    work = tmp_path_factory.mktemp("dvc")
    for item in ("actparse", "stages", "dvc.yaml", ".dvcignore"):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, work / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, work / item)
    params = yaml.safe_load((out / "params.yaml").read_text())
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    e = env()
    e["PYTHONPATH"] = str(work)
    e.update({"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                [sys.executable, "-m", "dvc", "repro", "evaluate"]):
        proc = subprocess.run(cmd, cwd=work, env=e, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    for rel, schema in TABLES:
        a = read_df(work / rel, schema)
        assert sorted(set(a["video"])) == DECODABLE, rel
    key = ["video", "task", "model"]
    a = read_df(work / "artifacts/video_predictions.parquet", "video_predictions").sort_values(key)
    b = read_df(out / "artifacts/video_predictions.parquet", "video_predictions").sort_values(key)
    assert list(a["label"]) == list(b["label"])
    assert all(np.allclose(x, y, atol=1e-5) for x, y in zip(a["probs"], b["probs"]))
    assert json.loads((work / "metrics/metrics.json").read_text())["scored"] is False
    for sub in ("pred_part_result.json", "pred_vid_result.json", "frame_detections.pkl", "video_detections.pkl"):
        assert (work / "artifacts/submission" / sub).exists()


def test_csn_folder_loads_whole_and_old_folders_still_load(models_dir, classes, tmp_path):
    from actparse.csn import load_model_dir, read_model_manifest

    whole = load_model_dir(models_dir / "csn")
    assert whole.variants == ["ip", "ir"] and whole.classes == classes
    assert len(whole.classes) == 7 and all(set(m.tasks) == set(whole.classes) for m in whole.models.values())
    clip = tiny_params()["csn"]  # the clip settings the run trained with, read back from the folder
    assert whole.specs["ip"].num_frames == clip["num_frames"] and whole.specs["ir"].crop == tuple(clip["crop"])
    assert set(whole.baseline) == set(classes["action"]) and whole.baseline["idle"]["head"] == "none"
    assert load_model_dir(models_dir / "csn", variants=["ir"]).variants == ["ir"]

    old = tmp_path / "old"
    shutil.copytree(models_dir / "csn", old)
    (old / "model.json").unlink()  # a folder written before model.json: checkpoints only
    assert read_model_manifest(old)["version"] == 1
    legacy = load_model_dir(old)
    assert legacy.variants == ["ip", "ir"] and legacy.classes == whole.classes and legacy.baseline == {}

    manifest = json.loads((models_dir / "csn" / "model.json").read_text())
    for change, message in (({"version": 99}, "newer"), ({"files": {"ip": "../ip.pt", "ir": "ir.pt"}}, "plain names"),
                            ({"variants": ["xx"]}, "variants"), ({"format": "other"}, "not an actparse CSN")):
        (old / "model.json").write_text(json.dumps({**manifest, **change}))
        with pytest.raises(ValueError, match=message):
            load_model_dir(old)
    (old / "model.json").write_text(json.dumps(manifest))
    (old / "ir.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"ir\.pt: not a CSN checkpoint"):
        load_model_dir(old)
    with pytest.raises(FileNotFoundError, match="no CSN variant"):
        load_model_dir(models_dir / "csn", variants=["ip", "xx"])


def test_part_labels_take_the_class_lists_of_an_old_csn_folder(models_dir, classes, video_dir, tmp_path):
    """part_labels with csn.model at a CSN folder without model.json, on a folder without ground truth."""
    import stages.part_labels as stage
    from actparse.schemas import read_df

    old = tmp_path / "csn"
    shutil.copytree(models_dir / "csn", old)
    (old / "model.json").unlink()
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(whole_params(video_dir, csn={"model": str(old)})))
    assert stage.main(["--params", str(params), "--root", str(tmp_path)]) == 0
    out = tmp_path / "artifacts" / "part_labels"
    assert json.loads((out / "classes.json").read_text()) == classes and len(classes) == 7
    assert json.loads((out / "baseline.json").read_text()) == {}
    assert len(read_df(out / "labels.parquet", "part_labels")) == 0  # no ground truth: nothing to score
    params.write_text(yaml.safe_dump(whole_params(video_dir, csn={"model": str(tmp_path / "none")})))
    assert stage.main(["--params", str(params), "--root", str(tmp_path)]) == 2


def test_models_inside_the_folders_a_run_writes_are_refused(models_dir, video_dir, tmp_path, capsys):
    """A model given inside artifacts/models (what the training stage writes, and `dvc repro`
    empties before running it) is refused with one line, by `actparse infer` and by each stage."""
    import stages.train_csn
    import stages.train_part_detector
    import stages.train_person_detector
    import stages.train_pose
    from actparse.infer import main

    shutil.copytree(models_dir, tmp_path / "artifacts" / "models")
    inside = (tmp_path / "artifacts" / "models").resolve()
    assert main([str(video_dir), "--models", str(inside), "--out", str(tmp_path)]) == 2
    assert "lies inside" in capsys.readouterr().err
    for stage, key, rel in ((stages.train_person_detector, ("person_detector", "weights"), "person_detector/model.pt"),
                            (stages.train_part_detector, ("parts", "weights"), "part_detector/model.pt"),
                            (stages.train_pose, ("keypoints", "checkpoint"), "pose/model.pt"),
                            (stages.train_csn, ("csn", "model"), "csn")):
        params = tmp_path / "params.yaml"
        p = whole_params(video_dir, keypoints={"epochs": 0})
        p[key[0]][key[1]] = str(inside / rel)
        params.write_text(yaml.safe_dump(p))
        assert stage.main(["--params", str(params), "--root", str(tmp_path)]) == 2, rel
        err = capsys.readouterr().err
        assert f"{key[0]}.{key[1]} {inside / rel}: lies inside" in err and "copy the model out" in err, err
        assert (inside / rel).exists()  # nothing was touched


def test_device_cuda_without_a_visible_gpu_is_one_line(models_dir, video_dir, tmp_path, capsys):
    import torch

    from actparse.infer import main

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    assert main([str(video_dir), "--models", str(models_dir), "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA device is visible" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything is written
