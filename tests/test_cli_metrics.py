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
