"""dvc.yaml, the stage modules, Paths and dvc.lock agree with each other."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from actparse.paths import Paths

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def _resolve(entry: str) -> str:
    return entry.replace("${data.root}", PARAMS["data"]["root"])


@pytest.mark.parametrize("name", sorted(DVC))
def test_stage_module_matches_dvc_yaml(name, capsys):
    stage = DVC[name]
    assert stage["cmd"] == f"python -m stages.{name}"
    mod = importlib.import_module(f"stages.{name}")
    assert callable(mod.run) and callable(mod.main)
    assert mod.__doc__ and len(mod.__doc__.strip()) > 80, f"stages/{name}.py needs a --help docstring"
    with pytest.raises(SystemExit) as exc:
        mod.main(["--help"])
    assert exc.value.code == 0
    assert mod.__doc__.strip().splitlines()[0] in capsys.readouterr().out
    # Every dependency exists (or is produced by an earlier stage), and the code deps include the module.
    produced = {_resolve(o) for s in DVC.values() for o in s.get("outs", [])}
    for dep in map(_resolve, stage.get("deps", [])):
        assert (ROOT / dep).exists() or dep in produced, f"{name}: dependency {dep} neither exists nor is produced"
    assert f"stages/{name}.py" in stage["deps"]
    # Every param key it lists exists in params.yaml.
    for key in stage.get("params", []):
        node = PARAMS
        for part in str(key).split("."):
            assert isinstance(node, dict) and part in node, f"{name}: param {key} not in params.yaml"
            node = node[part]


def test_outputs_are_the_library_paths():
    p = Paths(Path("."))
    lib = {str(getattr(p, a)).lstrip("./") for a in dir(Paths) if isinstance(getattr(Paths, a, None), property)}
    outs = {o for s in DVC.values() for o in s.get("outs", []) if isinstance(o, str)}
    for out in outs:
        assert out in lib or any(out.startswith(x + "/") for x in lib), f"dvc.yaml out {out} not in actparse.paths"


def test_dvc_lock_names_only_dag_stages():
    """dvc.lock (committed once a full default run has been made) never names a stage dvc.yaml lacks."""
    lock = ROOT / "dvc.lock"
    if not lock.exists():
        pytest.skip("no dvc.lock committed yet: the default `dvc repro` has not been recorded")
    stages = yaml.safe_load(lock.read_text())["stages"]
    assert set(stages) <= set(DVC)
