"""actparse ablate: seed 001's ablation rows as real `dvc exp run -S` experiments, and their table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from actparse import ablation as A

ROOT = Path(__file__).resolve().parents[1]


def test_rows_set_every_switch_and_the_last_cumulative_row_is_the_default():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in A.DEFAULT.items():  # the defaults the table assumes are params.yaml's
        node = params
        for part in key.split("."):
            node = node[part]
        assert node == value, f"params.yaml {key} is {node!r}, ablation DEFAULT says {value!r}"
    for row in A.ROWS:
        assert set(row.settings()) == set(A.SWITCHES)
        assert set(row.changes) <= set(A.SWITCHES), row.name
    assert A.ROWS[5].settings() == A.DEFAULT
    # Cumulative rows: each turns on at least one more idea than the row before.
    cum = [r for r in A.ROWS if r.name[len("ablate-")].isdigit()]
    for a, b in zip(cum, cum[1:]):
        assert a.settings() != b.settings()
    cmd = A.exp_command(A.ROWS[0])
    assert cmd[:5] == ["dvc", "exp", "run", "--name", "ablate-1-baseline"]
    assert "parts.paint=false" in cmd and "keypoints.refine=false" in cmd


def _metrics(video, part, state, tps):
    return {"metrics": {"video_acc": video, "part_ap50": part, "part_state_acc": state, "tps_score": tps}}


def test_table_and_directions_worked_by_hand():
    results = {"ablate-1-baseline": _metrics(0.5, 0.30, 0.4, 0.20),
               "ablate-2-ensemble": _metrics(0.6, 0.30, 0.4, 0.25),
               "ablate-3-paint": _metrics(0.6, 0.25, 0.4, 0.22)}
    text = A.table(results)
    lines = text.splitlines()
    assert len(lines) == 2 + 3
    assert "| 50.0 | 30.0 | 40.0 | 20.0 |  | 45.11 |" in lines[2]
    assert "+5.0" in lines[3] and "-3.0" in lines[4]
    d = A.directions(results)
    assert d[0].endswith("50.0 -> 60.0: holds (no interval)")
    assert d[1].endswith("30.0 -> 25.0: does NOT hold (no interval)")
    assert len(d) == 2  # rows that did not run are not judged


def test_write_readme_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{A.START}\nold\n{A.END}\noutro\n")
    A.write_readme(readme, "| new |")
    assert readme.read_text() == f"intro\n{A.START}\n| new |\n{A.END}\noutro\n"
    (tmp_path / "R2.md").write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        A.write_readme(tmp_path / "R2.md", "x")


STAGE = """
import json, yaml
p = yaml.safe_load(open("params.yaml"))
score = 0.1 * p["parts"]["paint"] + 0.2 * p["keypoints"]["refine"] + 0.01 * p["csn"]["test_clips"]
json.dump({"video_acc": 0.5 + p["csn"]["ensemble_weights"]["action"]["ir"] / 10, "part_ap50": 0.3 + 0.1 * p["parts"]["paint"],
           "part_state_acc": 0.4, "tps_score": score}, open("metrics/metrics.json", "w"))
"""


@pytest.mark.slow
def test_rows_run_as_dvc_experiments_and_the_workspace_is_restored(tmp_path):
    env = dict(os.environ, DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    params = {"csn": {"ensemble_weights": {"default": {"ip": 1.0, "ir": 1.0}, "action": {"ip": 1.0, "ir": 1.0}},
                      "test_clips": 3, "freeze_bn": "auto"},
              "parts": {"paint": True}, "keypoints": {"refine": True}, "part_labels": {"mode": "video_label"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "stage.py").write_text(STAGE)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"score": {
        "cmd": f"{sys.executable} stage.py", "deps": ["stage.py"],
        "params": ["csn", "parts", "keypoints", "part_labels"],
        "metrics": [{"metrics/metrics.json": {"cache": False}}]}}}))

    def sh(*cmd):
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    sh("dvc", "repro")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "base")
    before = (tmp_path / "params.yaml").read_text()
    rows = [A.ROWS[0], A.ROWS[5]]
    old = os.environ.copy()
    os.environ.update(env)
    try:
        results = A.run_rows(rows, tmp_path, out=open(os.devnull, "w"))
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert results["ablate-1-baseline"]["metrics"]["tps_score"] == pytest.approx(0.03)
    assert results["ablate-6-default"]["metrics"]["tps_score"] == pytest.approx(0.33)
    assert results["ablate-1-baseline"]["metrics"]["video_acc"] == pytest.approx(0.5)
    stored = json.loads((tmp_path / "metrics" / "ablation.json").read_text())
    assert set(stored) == {"ablate-1-baseline", "ablate-6-default"}
    assert (tmp_path / "params.yaml").read_text() == before  # workspace back to the committed params
    shown = sh("dvc", "exp", "show", "--json")
    assert "ablate-1-baseline" in shown and "ablate-6-default" in shown


def test_difference_below_printed_precision_is_a_tie():
    from actparse.ablation import directions

    res = {"ablate-2-ensemble": {"metrics": {"part_ap50": 0.562044}},
           "ablate-3-paint": {"metrics": {"part_ap50": 0.56214}}}
    assert directions(res) == ["- painting raises part AP (001 Table 4): 56.2 -> 56.2: ties (no interval)"]


def _write_run(root: Path, name: str, correct) -> dict:
    """An experiment's stored per-video records (only video outcomes; no detections) and metrics."""
    import numpy as np
    import pandas as pd

    from stages.evaluate import _write_records

    n = len(correct)
    per_video = pd.DataFrame({"video": [f"v{i:02d}" for i in range(n)], "action_correct": np.asarray(correct, bool),
                              "tps_psc": np.nan, "tps_correct": None, "state_matched": 0, "state_correct": 0})
    _write_records(root / A.RECORDS / name, ({c: [] for c in ("metric", "cls", "video", "score", "tp")},
                                             {c: [] for c in ("metric", "cls", "video", "n")}), per_video)
    return {"metrics": {"video_acc": float(np.mean(correct))}, "records": (A.RECORDS / name).as_posix()}


def test_directions_and_table_use_paired_intervals_over_videos_and_seeds(tmp_path):
    """1 vs 7 clips on 24 videos, two training seeds each: 7 clips right on 8 more videos (seed 0) and
    6 more (seed 1): the paired interval of the seed mean excludes zero; a 1-video gain ties."""
    n = 24
    base = [1] * 8 + [0] * 16
    results = {}
    for seed, extra in ((0, 8), (1, 6)):
        r1 = _write_run(tmp_path, f"ablate-clips-1-seed{seed}", base)
        r7 = _write_run(tmp_path, f"ablate-clips-7-seed{seed}", [1] * (8 + extra) + [0] * (n - 8 - extra))
        results[f"ablate-clips-1-seed{seed}"] = dict(r1, row="ablate-clips-1", seed=seed)
        results[f"ablate-clips-7-seed{seed}"] = dict(r7, row="ablate-clips-7", seed=seed)
    d = A.directions(results, root=tmp_path)
    assert len(d) == 1 and d[0].startswith("- 7 clips beat 1 clip in video accuracy: 33.3 -> 62.5, Δ +29.2 [")
    assert d[0].endswith(": holds")
    lo = float(d[0].split("[")[1].split(",")[0])
    assert 0 < lo < 29.2
    lines = A.table(results, root=tmp_path).splitlines()
    assert lines[3].startswith("| default with 7 test clips (001) | 62.5 ±4.2 [")  # mean ± sd over the 2 seeds
    # the same numbers for dvc metrics (metrics/ablation_001_table.json)
    summ = A.summary(results, root=tmp_path)
    cell = summ["lines"]["ablate-clips-7"]["video_acc"]
    assert cell["mean"] == pytest.approx(62.5) and cell["runs"] == 2 and cell["lo"] < 62.5 < cell["hi"]
    check = summ["directions"]["7 clips beat 1 clip in video accuracy"]
    assert check["verdict"] == "holds" and check["lo"] == pytest.approx(lo, abs=0.05) and check["delta"] == pytest.approx(29.167)
    # one video apart: ties
    results = {"ablate-clips-1": _write_run(tmp_path, "ablate-clips-1", base),
               "ablate-clips-7": _write_run(tmp_path, "ablate-clips-7", [1] * 9 + [0] * 15)}
    assert A.directions(results, root=tmp_path)[0].endswith(": ties")


def test_seeds_make_one_experiment_each():
    row = A.ROWS[6]
    assert A.exp_name(row, 2) == "ablate-clips-1-seed2"
    cmd = A.exp_command(row, 2)
    assert cmd[3:5] == ["--name", "ablate-clips-1-seed2"] and cmd[-2:] == ["-S", "seed=2"]
    assert "seed=" not in " ".join(A.exp_command(row))
    assert A.exp_command(row, None, {"synth.n_test": 200})[-2:] == ["-S", "synth.n_test=200"]


def test_cli_dry_run_lists_every_experiment_with_progress(capsys):
    assert A.main(["--dry-run", "--rows", "ablate-clips-1", "ablate-clips-7", "--seeds", "0", "1",
                   "--set", "synth.n_test=200"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" $ ")[0] for line in out] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert all(line.endswith("-S synth.n_test=200") for line in out)
    with pytest.raises(SystemExit):
        A.main(["--dry-run", "--set", "no-equals-sign"])
