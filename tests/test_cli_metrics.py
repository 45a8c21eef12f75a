"""`actparse metrics`: the metrics files as one readable key / value table (what `make demo` prints)."""

from __future__ import annotations

import json

from actparse.__main__ import main


def test_prints_nested_keys_and_switched_off_systems(tmp_path, capsys):
    a = tmp_path / "metrics.json"
    a.write_text(json.dumps({"person_ap50": 0.93371, "part_group_acc": {"arm": 0.5}, "curve": [1, 2], "n": 24}))
    b = tmp_path / "stad.json"
    b.write_text(json.dumps({"enabled": False}))
    assert main(["metrics", str(a), str(b)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[1:] for ln in lines] == [["person_ap50", "0.9337"], ["part_group_acc.arm", "0.5000"],
                                               ["n", "24"], ["enabled", "false", "(switched", "off)"]]


def test_bad_or_missing_files_give_a_clear_error(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "m.json"
    bad.write_text("{not json")
    assert main(["metrics", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["metrics"]) == 2
    assert "no metrics files" in capsys.readouterr().err


def test_default_leaves_out_the_ablation_grids_unless_named(tmp_path, capsys, monkeypatch):
    """make demo prints this run's metrics; the grids' stores and tables print only when named."""
    m = tmp_path / "metrics"
    m.mkdir()
    (m / "metrics.json").write_text(json.dumps({"video_acc": 0.375}))
    (m / "ablation_004.json").write_text(json.dumps({"gym-joint-seed0": {"metrics": {"joint": {"set": 12.0}}}}))
    (m / "ablation_004_table.json").write_text(json.dumps({"system": "004", "lines": {}}))
    monkeypatch.chdir(tmp_path)
    assert main(["metrics"]) == 0
    assert [ln.split()[:2] for ln in capsys.readouterr().out.splitlines()] == [["metrics/metrics.json", "video_acc"]]
    assert main(["metrics", "metrics/ablation_004.json"]) == 0
    assert "gym-joint-seed0.metrics.joint.set" in capsys.readouterr().out
