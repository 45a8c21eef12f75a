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
    produced = {_resolve(o if isinstance(o, str) else next(iter(o))) for s in DVC.values() for o in s.get("outs", [])}
    produced_dirs = tuple(p + "/" for p in produced if not Path(p).suffix)
    for dep in map(_resolve, stage.get("deps", [])):
        assert (ROOT / dep).exists() or dep in produced or dep.startswith(produced_dirs), \
            f"{name}: dependency {dep} neither exists nor is produced"
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


# Library modules every stage may use without listing them: plumbing that does not change results.
PLUMBING = {"actparse/__init__.py", "actparse/atomic.py", "actparse/cli.py", "actparse/params.py",
            "actparse/param_models.py", "actparse/paths.py", "actparse/schemas.py", "actparse/stage.py"}


def _module_file(name: str) -> str | None:
    for cand in (ROOT / (name.replace(".", "/") + ".py"), ROOT / name.replace(".", "/") / "__init__.py"):
        if cand.exists():
            return cand.relative_to(ROOT).as_posix()
    return None


def _actparse_imports(path: str) -> set[str]:
    import ast

    tree = ast.parse((ROOT / path).read_text())
    package = Path(path).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = list(package[: len(package) - node.level + 1])
                base = ".".join(parts + ([base] if base else []))
            if base.split(".")[0] != "actparse":
                continue
            for alias in node.names:
                found.add(_module_file(f"{base}.{alias.name}") or _module_file(base))
        elif isinstance(node, ast.Import):
            found |= {_module_file(a.name) for a in node.names if a.name.split(".")[0] == "actparse"}
    return {f for f in found if f}


@pytest.mark.parametrize("name", sorted(DVC))
def test_stage_deps_cover_the_library_code_it_runs(name):
    """Editing a library module a stage imports (directly or through other modules) reruns that stage."""
    seen, todo = set(), [f"stages/{name}.py"]
    while todo:
        for mod in _actparse_imports(todo.pop()):
            if mod not in seen:
                seen.add(mod)
                todo.append(mod)
    deps = [str(d).rstrip("/") for d in DVC[name].get("deps", [])]
    missing = sorted(m for m in seen - PLUMBING if m not in deps and not any(m.startswith(d + "/") for d in deps))
    assert not missing, f"dvc.yaml stage {name} runs {missing} but does not list them as deps"


# Training stages list every key of their section except the ones only inference reads, so that a
# new training param cannot be forgotten and an inference param never retrains a model.
INFERENCE_ONLY = {
    "train_person_detector": ("person_detector", {"conf", "iou", "max_det", "predict_batch"}),
    "train_part_detector": ("parts", {"conf", "iou", "predict_batch"}),
    "train_csn": ("csn", {"test_clips", "test_batch", "ensemble_weights", "ensemble_grid"}),
}


@pytest.mark.parametrize("stage", sorted(INFERENCE_ONLY))
def test_training_stage_params_exclude_only_inference_keys(stage):
    section, inference = INFERENCE_ONLY[stage]
    listed = {str(k) for k in DVC[stage]["params"]}
    assert section not in listed, f"{stage} lists all of {section}: inference-only keys would retrain it"
    expected = {f"{section}.{k}" for k in PARAMS[section] if k not in inference}
    assert expected - listed == set(), f"{stage} misses training params {sorted(expected - listed)}"
    assert not {f"{section}.{k}" for k in inference} & listed


def test_detect_parts_lists_the_parts_keys_it_reads():
    """detect_parts lists the `parts` keys it reads (not the whole section, whose training keys reach it
    through the model): every key read in its module and in the crop/paint config is listed."""
    import re

    src = (ROOT / "stages/detect_parts.py").read_text() + (ROOT / "actparse/paint.py").read_text()
    read = set(re.findall(r'f"\{(?:S|section)\}\.([a-z_0-9]+)"', src))
    listed = {str(k).split(".", 1)[1] for k in DVC["detect_parts"]["params"]}
    assert {"conf", "paint", "crop_size"} <= read
    assert read <= listed, f"detect_parts reads parts.{sorted(read - listed)} but dvc.yaml does not list them"
