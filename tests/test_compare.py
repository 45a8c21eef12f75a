"""`actparse compare`: params, metrics and Parquet diffs between two branches of a repository made here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from actparse.compare import compare, diff_tables, main, render_html, render_text
from flowkit import dvc, init_repo, run

# A "detector" whose scores scale with detect.gain; detections scoring under 0.5 are dropped.
DETECT = '''
import json
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pathlib import Path

def detections(gain):
    rng = np.random.default_rng(0)
    rows = []
    for v in range(6):
        for f in range(0, 20, 5):
            for p in range(3):
                base = float(rng.uniform(0.2, 0.8)) * (1 + v / 10)
                score = min(1.0, base * gain)
                if score >= 0.5:
                    box = [10.0 * p, 5.0, 10.0 * p + 8 * gain, 30.0]
                    rows.append({"video": f"vid{v}", "frame": f, "person": p, "box": box, "score": score})
    return rows

if __name__ == "__main__":
    gain = yaml.safe_load(open("params.yaml"))["detect"]["gain"]
    rows = detections(gain)
    Path("artifacts").mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), "artifacts/persons.parquet")
    Path("metrics").mkdir(exist_ok=True)
    scores = [r["score"] for r in rows]
    Path("metrics/metrics.json").write_text(json.dumps({"n_detections": len(rows),
                                                        "mean_score": round(float(np.mean(scores)), 6)}))
'''

DVC_YAML = '''
stages:
  detect:
    cmd: python detect.py
    deps: [detect.py]
    params: [detect]
    outs: [artifacts/persons.parquet]
    metrics:
      - metrics/metrics.json:
          cache: false
'''


def _detections(gain: float) -> pd.DataFrame:
    ns: dict = {}
    exec(textwrap.dedent(DETECT).split("if __name__")[0], ns)
    return pd.DataFrame(ns["detections"](gain))


@pytest.fixture(scope="module")
def two_branches(tmp_path_factory) -> Path:
    """main: detect.gain 1.0; branch `more-gain`: 1.3. `dvc repro` + commit on each."""
    root = init_repo(tmp_path_factory.mktemp("cmp") / "repo")
    (root / "detect.py").write_text(textwrap.dedent(DETECT))
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "params.yaml").write_text("detect:\n  gain: 1.0\n  note: same on both\n")
    dvc(root, "repro")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "base"], root)
    run(["git", "checkout", "-q", "-b", "more-gain"], root)
    (root / "params.yaml").write_text("detect:\n  gain: 1.3\n  note: same on both\n")
    dvc(root, "repro")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "gain 1.3"], root)
    return root


def _expected(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    key = ["video", "frame", "person"]
    m = a.merge(b, on=key, how="outer", suffixes=("_a", "_b"), indicator=True)
    both = m[m["_merge"] == "both"]
    changed = both.apply(lambda r: not (np.isclose(r.score_a, r.score_b) and np.allclose(r.box_a, r.box_b)), axis=1)
    per_video = pd.concat([m.loc[m["_merge"] != "both", "video"], both.loc[changed, "video"]]).value_counts()
    return {"added": int((m["_merge"] == "right_only").sum()), "removed": int((m["_merge"] == "left_only").sum()),
            "changed": int(changed.sum()), "per_video": per_video}


def test_compare_two_branches(two_branches, capsys):
    a, b = _detections(1.0), _detections(1.3)
    want = _expected(a, b)
    assert want["added"] > 0 and want["changed"] > 0  # the data exercise every kind of difference

    cmp = compare(two_branches, "main", "more-gain", top=3)
    assert cmp.errors == []
    assert [(p["key"], p["old"], p["new"]) for p in cmp.params] == [("detect.gain", 1.0, 1.3)]
    metrics = {m["key"]: m for m in cmp.metrics}
    assert metrics["n_detections"]["old"] == len(a) and metrics["n_detections"]["new"] == len(b)
    assert metrics["n_detections"]["diff"] == len(b) - len(a)

    [art] = cmp.artifacts
    assert art.path == "artifacts/persons.parquet" and art.key == ["video", "frame", "person"]
    assert (art.rows_a, art.rows_b) == (len(a), len(b))
    assert (art.added, art.removed, art.changed) == (want["added"], want["removed"], want["changed"])
    score = next(c for c in art.columns if c.column == "score")
    assert score.mean_a == pytest.approx(a.score.mean()) and score.mean_b == pytest.approx(b.score.mean())
    box = next(c for c in art.columns if c.column == "box")
    assert box.kind == "list" and box.mean_abs_change > 0
    # The most changed videos, in order.
    top = want["per_video"].sort_values(ascending=False, kind="stable")
    assert cmp.top_videos[0]["changed_rows"] == top.iloc[0]
    assert [t["changed_rows"] for t in cmp.top_videos] == sorted((t["changed_rows"] for t in cmp.top_videos),
                                                                  reverse=True)

    text = render_text(cmp)
    assert "detect.gain" in text and "artifacts/persons.parquet" in text and cmp.top_videos[0]["video"] in text
    page = render_html(cmp)
    assert page.count("src='data:image/png;base64,") >= 3
    assert not re.search(r"(src|href)=['\"]https?:", page)  # self-contained


def test_compare_cli_writes_html_and_same_revision_is_empty(two_branches, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["main", "more-gain", "--root", str(two_branches), "--html", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Params changed" in printed and "detect.gain" in printed
    assert out.read_text().startswith("<!doctype html>")
    same = compare(two_branches, "main", "main")
    assert same.params == [] and same.metrics == [] and same.top_videos == []
    assert [(d.added, d.removed, d.changed) for d in same.artifacts] == [(0, 0, 0)]
    assert main(["main", "no-such-branch", "--root", str(two_branches)]) == 2
    assert "no-such-branch" in capsys.readouterr().err


def test_diff_tables_keys_duplicates_and_labels():
    a = pd.DataFrame({"video": ["x", "x", "y"], "task": ["hand", "hand", "arm"], "label": ["open", "open", "up"],
                      "probs": [[0.1, 0.9], [0.2, 0.8], [0.5, 0.5]]})
    b = pd.DataFrame({"video": ["x", "x", "z"], "task": ["hand", "hand", "arm"], "label": ["open", "fist", "up"],
                      "probs": [[0.1, 0.9], [0.7, 0.3], [0.5, 0.5]]})
    d = diff_tables(a, b, "t")
    assert d.key == ["video", "task"]  # duplicate keys are matched in order of appearance
    assert (d.added, d.removed, d.changed, d.unchanged) == (1, 1, 1, 1)
    label = next(c for c in d.columns if c.column == "label")
    assert label.kind == "label" and label.changed_share == pytest.approx(0.5)
    assert label.tv_distance == pytest.approx(1 / 3)
    assert d.per_video == {"x": 1, "y": 1, "z": 1}
    # Nulls (None at one revision, NaN after pandas merges at the other) are equal, not changes.
    na = pd.DataFrame({"video": ["x", "y"], "task": ["action", "hand"],
                       "state": pd.Series([None, "open"], dtype="str")})  # as read from Parquet
    nb = pd.DataFrame({"video": ["x", "y"], "task": ["action", "hand"], "state": [np.nan, "open"]})
    same = diff_tables(na, nb, "nulls")
    assert same.changed == 0 and next(c for c in same.columns if c.column == "state").tv_distance == 0
    empty = diff_tables(a.iloc[:0], b.iloc[:0], "empty")  # e.g. a skips table with no skips
    assert (empty.rows_a, empty.rows_b, empty.added, empty.removed, empty.changed) == (0, 0, 0, 0, 0)
    only_b = diff_tables(None, b, "new")
    assert (only_b.rows_a, only_b.added, only_b.note) == (None, 3, "only at B")
    assert json.dumps(d.per_video)


@pytest.fixture(scope="module")
def uncached_main(tmp_path_factory) -> Path:
    """As two_branches, with an output folder too, then every cache entry of main's outputs removed
    (`dvc gc -w` keeps only the workspace's): a fresh clone compared against main looks like this."""
    root = init_repo(tmp_path_factory.mktemp("cmp_uncached") / "repo")
    (root / "detect.py").write_text(textwrap.dedent(DETECT) + textwrap.dedent('''
        import shutil
        Path("artifacts/tables").mkdir(parents=True, exist_ok=True)
        shutil.copy("artifacts/persons.parquet", "artifacts/tables/copy.parquet")
    '''))
    (root / "dvc.yaml").write_text(DVC_YAML.replace("outs: [artifacts/persons.parquet]",
                                                    "outs: [artifacts/persons.parquet, artifacts/tables]"))
    (root / "params.yaml").write_text("detect:\n  gain: 1.0\n")
    dvc(root, "repro")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "base"], root)
    run(["git", "checkout", "-q", "-b", "more-gain"], root)
    (root / "params.yaml").write_text("detect:\n  gain: 1.3\n")
    dvc(root, "repro")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "gain 1.3"], root)
    dvc(root, "gc", "-w", "-f")
    return root


def test_compare_against_revision_not_in_cache(uncached_main, tmp_path, capsys):
    out = tmp_path / "report.html"
    old = os.umask(0o022)
    try:
        assert main(["main", "more-gain", "--root", str(uncached_main), "--html", str(out)]) == 0
    finally:
        os.umask(old)
    printed = capsys.readouterr().out
    # params and metrics are still compared
    assert "detect.gain" in printed and "n_detections" in printed
    problems = printed.split("== Problems ==")[1]
    assert "at main" in problems and "artifacts/tables" in problems and "artifacts/persons.parquet" in problems
    assert "dvc pull" in problems and "dvc repro" in problems
    assert "more-gain:" not in problems  # B's outputs are in the cache
    cmp = compare(uncached_main, "main", "more-gain")
    assert cmp.missing == {"main": ["artifacts/persons.parquet", "artifacts/tables"]}
    arts = {d.path: d for d in cmp.artifacts}
    # B's rows are not reported as "added": A is unknown, not empty
    assert set(arts) == {"artifacts/persons.parquet", "artifacts/tables/copy.parquet"}
    assert all(d.added == 0 and d.rows_a is None and d.rows_b > 0 and "not in the local DVC cache" in d.note
               for d in arts.values())
    assert cmp.top_videos == []
    page = out.read_text()
    assert "Problems</h2>" in page and "detect.gain" in page
    assert out.stat().st_mode & 0o777 == 0o644  # others can read the report


def test_actparse_help_lists_every_command():
    proc = subprocess.run([sys.executable, "-m", "actparse", "--help"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0
    listed = re.search(r"\{([a-z,-]+)\}", proc.stdout).group(1).split(",")
    assert set(listed) >= {"eval", "link", "import", "export-official", "compare", "metrics", "ablate", "infer"}
    for cmd in ("compare", "metrics", "ablate", "infer"):
        sub = subprocess.run([sys.executable, "-m", "actparse", cmd, "--help"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1])
        assert sub.returncode == 0 and "usage" in sub.stdout.lower(), cmd
