"""The whole DAG end to end with `dvc repro`, on a tiny params set, in a scratch copy of the repo.

Checks: every stage runs and writes schema-valid artifacts; metrics come out; a second `dvc repro`
does nothing; changing only a `link` param reruns only `link_tubes` and `evaluate`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from actparse.params import merge_params

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def tiny_params() -> dict:
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    over = yaml.safe_load((ROOT / "tests" / "params.tiny.yaml").read_text())
    return merge_params(base, over)


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-6000:]}"
    return out


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("pipeline")
    for item in ("actparse", "stages", "dvc.yaml", ".dvcignore"):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, work / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, work / item)
    (work / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(work)
    env.update({"DVC_NO_ANALYTICS": "1", "YOLO_OFFLINE": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})
    run(["git", "init", "-q"], work, env)
    run([sys.executable, "-m", "dvc", "init", "-q"], work, env)
    run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], work, env)
    out = run([sys.executable, "-m", "dvc", "repro"], work, env)
    return work, {"env": env, "first": out}


def test_every_stage_ran_and_wrote_valid_artifacts(project):
    from actparse.schemas import read_table

    work, info = project
    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    assert ran_stages(info["first"]) == set(stages)
    for name, path in [("frames", "artifacts/frames.parquet"), ("persons", "artifacts/persons.parquet"),
                       ("keypoints", "artifacts/keypoints.parquet"), ("keypoints", "artifacts/refined_persons.parquet"),
                       ("parts", "artifacts/parts.parquet"), ("video_predictions", "artifacts/video_predictions.parquet"),
                       ("part_states", "artifacts/part_states.parquet"), ("tubes", "artifacts/tubes.parquet")]:
        t = read_table(work / path, name)
        assert t.num_rows > 0, f"{path} is empty"
    metrics = json.loads((work / "metrics/metrics.json").read_text())
    flat = json.dumps(metrics)
    for key in ("person_ap50", "part_ap50", "video_acc", "tps_score"):
        assert key in flat, f"metric {key} missing from metrics.json"
    for sub in ("pred_part_result.json", "pred_vid_result.json"):
        assert (work / "artifacts/submission" / sub).exists()
    assert (work / "dvc.lock").exists()


def test_second_repro_does_nothing(project):
    work, info = project
    out = run([sys.executable, "-m", "dvc", "repro"], work, info["env"])
    assert ran_stages(out) == set(), out[-2000:]


def test_link_param_reruns_only_link_and_evaluate(project):
    """Only the stages that read `link` params rerun: link_tubes, evaluate and seed 003's stad_evaluate
    (switched off, it still lists them); nothing upstream of linking."""
    work, info = project
    params = yaml.safe_load((work / "params.yaml").read_text())
    link = params["link"]
    key = next(k for k, v in link.items() if isinstance(v, float))
    link[key] = round(link[key] * 0.5 + 0.01, 4)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run([sys.executable, "-m", "dvc", "repro"], work, info["env"])
    assert ran_stages(out) == {"link_tubes", "evaluate", "stad_evaluate"}, out[-3000:]


def test_inference_param_does_not_retrain(project):
    """csn.test_clips is read by the csn stage only: train_csn and everything upstream stay cached;
    what reads the video predictions reruns (seed 000's partattn_predict among them)."""
    work, info = project
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["csn"]["test_clips"] = int(params["csn"]["test_clips"]) + 1
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run([sys.executable, "-m", "dvc", "repro"], work, info["env"])
    assert ran_stages(out) == {"csn", "part_states", "link_tubes", "evaluate", "partattn_predict"}, out[-3000:]


def test_training_curves_and_dvc_plots(project):
    """Every trained network's per-epoch curve is a DVC plot; `dvc plots show` reads them all."""
    import pandas as pd

    work, info = project
    params = yaml.safe_load((work / "params.yaml").read_text())
    train = work / "plots" / "train"
    expect = {"person_detector": params["person_detector"]["epochs"], "pose": params["keypoints"]["epochs"],
              **{f"csn_{v}": params["csn"]["epochs"] for v in params["csn"]["variants"]}}
    for stem, epochs in expect.items():
        df = pd.read_csv(train / f"{stem}.csv")
        held_out = {"person_detector": params["person_detector"]["val_fraction"],
                    "pose": params["keypoints"]["val_fraction"]}.get(stem, params["csn"]["val_fraction"]) > 0
        cols = [c for c in df.columns if c != "epoch" and (held_out or not c.startswith("val_"))]
        assert len(df) == epochs and df[cols].notna().all().all(), stem
        assert held_out or df.filter(like="val_").isna().all().all(), stem  # nothing held out: no val numbers
    proc = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json"], cwd=work, env=info["env"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = json.loads(proc.stdout)
    assert not shown.get("errors"), shown["errors"]
    ids = [next(iter(p)) for p in yaml.safe_load((work / "dvc.yaml").read_text())["plots"]]
    assert set(shown["data"]) == set(ids)
    for pid in ("pr_curves", "tps_curve", "confusion", "train_person_detector", "train_pose", "train_csn_loss"):
        assert shown["data"][pid], f"plot {pid} has no data"
