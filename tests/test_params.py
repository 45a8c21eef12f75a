"""params.yaml is checked against the schema in actparse.param_models before any stage works."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _params import ROOT, committed, overlaid, write_params

from actparse import param_models as M
from actparse.params import (FLOW_SECTIONS, ParamError, apply_preset, get, load_params, merge_params, typed,
                             validate_params)

GPU = yaml.safe_load((ROOT / "params.gpu.yaml").read_text())
TINY = yaml.safe_load((ROOT / "tests" / "params.tiny.yaml").read_text())


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def _error(tmp_path: Path, params: dict) -> str:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(ParamError) as exc:
        load_params(p)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{p}: ")
    return msg[len(f"{p}: "):]


def _edit(fn) -> dict:
    p = committed()
    fn(p)
    return p


# ------------------------------------------------------------------------------ committed files
def test_committed_params_and_presets_validate():
    p = load_params(ROOT / "params.yaml")
    m = typed(p)
    assert isinstance(m, M.Params)
    assert m.csn.lr == p["csn"]["lr"] == 0.05 and m.csn.test_batch == 24 and m.link.min_length == 15
    assert m.csn.pretrained.key_map == "pytorchvideo" and m.parts.fliplr == 0.5
    gpu = apply_preset(committed(), GPU, "params.gpu.yaml")
    assert typed(validate_params(gpu)).csn.depth == 152
    typed(validate_params(merge_params(committed(), TINY)))  # the pipeline test's overlay


def test_every_schema_key_is_in_params_yaml_and_back():
    """No key lives only in the code: every schema key has its value in params.yaml."""
    def keys(node, prefix=""):
        for k, v in node.items():
            yield prefix + k
            if isinstance(v, dict) and M.section_model(_field(prefix + k)) is not None:
                yield from keys(v, prefix + k + ".")

    assert sorted(keys(committed())) == sorted(M.all_keys())


def _field(dotted: str):
    model, ann = M.Params, None
    for part in dotted.split("."):
        ann = model.model_fields[part].annotation
        model = M.section_model(ann)
    return ann


def test_schema_choices_match_the_code():
    from actparse import clips, csn, dataset, gym, hrnet
    from actparse.models import csn as csn_model
    from actparse.models import partattn, slowfast, slowonly
    from actparse.metrics import multisports

    assert M.HRNET_ARCHS == hrnet.ARCHS
    assert M.CSN_VARIANTS == csn_model.VARIANTS and M.CSN_DEPTHS == tuple(csn_model.DEPTHS)
    assert M.CSN_TASKS == csn_model.TASKS
    assert set(M.CSN_KEY_MAPS) == set(csn.KEY_MAPS)
    assert M.BACKGROUND_MODES == clips.BACKGROUND_MODES and M.BOX_SOURCES == dataset.BOX_SOURCES
    assert M.GYM_LEVELS == gym.LEVELS
    from actparse import video

    assert M.DECODE_BACKENDS == video.BACKENDS
    for model, key, values in ((M.Stad, "depth", tuple(slowfast.DEPTHS)), (M.Gym, "depth", tuple(slowonly.DEPTHS)),
                               (M.PartAttn, "roi_mode", partattn.ROI_MODES),
                               (M.Evaluate, "multisports_variant", multisports.VARIANTS)):
        assert model.model_fields[key].annotation.__args__ == values, (model, key)


# ------------------------------------------------------------------------------ refused files
def test_misspelt_key_names_the_nearest_key(tmp_path):
    def typo(p):
        p["csn"]["lr_stpes"] = p["csn"].pop("lr_steps")

    msg = _error(tmp_path, _edit(typo))
    assert msg == "unknown key 'csn.lr_stpes' (did you mean 'csn.lr_steps'?)"
    msg = _error(tmp_path, _edit(lambda p: p["csn"]["pretrained"].update(irr="x.pt")))
    assert "unknown key 'csn.pretrained.irr' (did you mean 'csn.pretrained.ir'?)" in msg
    assert _error(tmp_path, _edit(lambda p: p["link"].update(zzzzzz=1))) == "unknown key 'link.zzzzzz'"


def test_misspelt_section_names_the_nearest_section(tmp_path):
    msg = _error(tmp_path, _edit(lambda p: p.update(keypionts=p.pop("keypoints"))))
    assert msg == "unknown section 'keypionts' (did you mean 'keypoints'?)"
    assert _error(tmp_path, _edit(lambda p: p.update(sedd=1))).startswith("unknown key 'sedd' (did you mean 'seed'?)")


@pytest.mark.parametrize("text,word", [(".nan", "nan"), (".inf", "inf"), ("-.inf", "-inf")])
def test_nan_and_inf_are_refused(tmp_path, text, word):
    base = (ROOT / "params.yaml").read_text()
    p = _write(tmp_path, base.replace("refine_thr: 0.3 ", f"refine_thr: {text} "))
    with pytest.raises(ParamError, match=rf"parameter 'keypoints.refine_thr' is {word}; give a finite number"):
        load_params(p)
    # inside a mapping / a list too (an ensemble weight, an lr step)
    msg = _error(tmp_path, _edit(lambda q: q["csn"]["ensemble_weights"]["action"].update(ir=float(word))))
    assert msg == f"parameter 'csn.ensemble_weights.action.ir' is {word}; give a finite number"
    msg = _error(tmp_path, _edit(lambda q: q["stad"].update(lr_steps=[9, float(word)])))
    assert msg == f"parameter 'stad.lr_steps[1]' is {word}; give a finite number"


def test_get_refuses_nan_and_inf_too():
    params = {"_path": "p.yaml", "link": {"nms_iou": float("nan"), "steps": [1.0, float("inf")]}}
    with pytest.raises(ParamError, match="'link.nms_iou' is nan"):
        get(params, "link.nms_iou", float, min_value=0.0, max_value=1.0)
    with pytest.raises(ParamError, match=r"'link.steps\[1\]' is inf"):
        get(params, "link.steps", list)


def test_null_section_and_empty_file(tmp_path):
    base = (ROOT / "params.yaml").read_text()
    head, sep, tail = base.partition("\nlink:")
    rest = tail.split("\nevaluate:", 1)[1]
    p = _write(tmp_path, head + "\nlink:\nevaluate:" + rest)  # `link:` with nothing under it
    with pytest.raises(ParamError, match=r"section 'link' is empty \(null\); it must hold the section's keys$"):
        load_params(p)
    for text in ("", "# only a comment\n"):
        with pytest.raises(ParamError, match="the params file is empty"):
            load_params(_write(tmp_path, text))
    with pytest.raises(ParamError, match="top level must be a mapping of sections, got list"):
        load_params(_write(tmp_path, "- 1\n"))
    with pytest.raises(ParamError, match="not valid YAML"):
        load_params(_write(tmp_path, "csn: [1, 2\n"))


def test_missing_key_and_section(tmp_path):
    assert _error(tmp_path, _edit(lambda p: p["csn"].pop("test_batch"))) == "missing parameter 'csn.test_batch'"
    assert _error(tmp_path, _edit(lambda p: p.pop("gym"))) == "missing section 'gym'"
    assert _error(tmp_path, _edit(lambda p: p.pop("seed"))) == "missing parameter 'seed'"


@pytest.mark.parametrize("edit,expected", [
    (lambda p: p["csn"].update(lr="0.05"), "parameter 'csn.lr' must be a number, got '0.05'"),
    (lambda p: p["csn"].update(lr=None), "parameter 'csn.lr' must be a number, got None"),
    (lambda p: p["csn"].update(epochs=7.5), "parameter 'csn.epochs' must be an integer, got 7.5"),
    (lambda p: p["keypoints"].update(epochs=True), "parameter 'keypoints.epochs' must be an integer, got True"),
    (lambda p: p["keypoints"].update(refine="yes"), "parameter 'keypoints.refine' must be true or false, got 'yes'"),
    (lambda p: p["csn"].update(freeze_bn="maybe"),
     "parameter 'csn.freeze_bn' must be true or false or 'auto', got 'maybe'"),
    (lambda p: p["csn"].update(depth=34), "parameter 'csn.depth' must be one of 50, 101 or 152, got 34"),
    (lambda p: p["csn"].update(crop=[1, 2, 3]), "parameter 'csn.crop' must be an integer or a list of 2 entries"),
    (lambda p: p["csn"].update(variants=["ip", "ip"]), "parameter 'csn.variants' must list distinct variants"),
    (lambda p: p["csn"].update(variants=[]), "parameter 'csn.variants' must be a non-empty list, got []"),
    (lambda p: p["csn"].update(stage_depths=[1, 1, "a", 1]),
     "parameter 'csn.stage_depths[2]' must be an integer, got 'a'"),
    (lambda p: p["csn"]["ensemble_weights"].update(hnad={"ip": 1.0}),
     "parameter 'csn.ensemble_weights' has unknown task(s) ['hnad']"),
    (lambda p: p["person_detector"].update(weights=3), "parameter 'person_detector.weights' must be a string or null"),
    (lambda p: p["flow"].update(gpu_stages="csn"), "parameter 'flow.gpu_stages' must be a list or null, got 'csn'"),
])
def test_wrong_type(tmp_path, edit, expected):
    assert _error(tmp_path, _edit(edit)).startswith(expected)


@pytest.mark.parametrize("edit,expected", [
    (lambda p: p["link"].update(min_length=-5), "parameter 'link.min_length' must be >= 1, got -5"),
    (lambda p: p["link"].update(nms_iou=7), "parameter 'link.nms_iou' must be <= 1.0, got 7"),
    (lambda p: p["keypoints"].update(refine_thr=-0.1), "parameter 'keypoints.refine_thr' must be >= 0.0, got -0.1"),
    (lambda p: p["decode"].update(jpeg_quality=101), "parameter 'decode.jpeg_quality' must be <= 100, got 101"),
    (lambda p: p["keypoints"].update(input_size=[100, 96]), "parameter 'keypoints.input_size' must be [h, w], two"),
    (lambda p: p["gym"].update(crop=60), "gym.crop (60) must be <= gym.size (46)"),
    (lambda p: p["gym"].update(num_frames={"event": 2}), "parameter 'gym.num_frames' must map exactly the levels"),
    (lambda p: p["synth"].update(max_seconds=1.0), "synth.max_seconds (1.0) must be >= synth.min_seconds (2.0)"),
    (lambda p: p.update(device="tpu"), "parameter 'device' must be one of 'auto', 'cpu' or 'cuda', got 'tpu'"),
])
def test_out_of_bounds(tmp_path, edit, expected):
    assert _error(tmp_path, _edit(edit)).startswith(expected)


def test_several_problems_on_one_line(tmp_path):
    msg = _error(tmp_path, _edit(lambda p: (p["link"].update(min_length=-5, nms_iou=7), p["csn"].update(lr_stpes=1))))
    assert msg.startswith("unknown key 'csn.lr_stpes' (did you mean 'csn.lr_steps'?); ")
    assert "'link.nms_iou' must be <= 1.0" in msg and "'link.min_length' must be >= 1" in msg


# ------------------------------------------------------------------------------ overlays
def test_overlays_are_validated_merged(tmp_path):
    merged = overlaid({"csn": {"test_batch": 3}})
    assert typed(validate_params(merged)).csn.test_batch == 3 and merged["csn"]["lr"] == 0.05
    with pytest.raises(ParamError, match=r"params.yaml \+ bad.yaml: unknown key 'csn.tset_batch' "
                                         r"\(did you mean 'csn.test_batch'\?\)"):
        apply_preset({**committed(), "_path": "params.yaml"}, {"csn": {"tset_batch": 3}}, "bad.yaml")
    with pytest.raises(ParamError, match=r"sections \['cns'\] are not in the base params \(did you mean 'csn'"):
        apply_preset(committed(), {"cns": {"test_batch": 3}}, "bad.yaml")
    with pytest.raises(ParamError, match="'csn.test_clips' must be >= 1"):
        apply_preset(committed(), {"csn": {"test_clips": 0}}, "bad.yaml")
    # a stage given such a file refuses it before any work: one line, exit 2
    from stages import link_tubes

    bad = write_params(tmp_path / "params.yaml", {"link": {"min_lenght": 3}})
    r = subprocess.run([sys.executable, "-m", "stages.link_tubes", "--params", str(bad), "--root", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"link_tubes: error: {bad}: unknown key 'link.min_lenght' (did you mean 'link.min_length'?)"]
    assert link_tubes.main(["--params", str(bad), "--root", str(tmp_path)]) == 2


def test_flow_checks_its_own_sections(tmp_path):
    """The Prefect flow also runs other DVC projects' DAGs: it checks device / flow (each stage the
    whole file)."""
    p = _write(tmp_path, yaml.safe_dump({"a": {"n": 1}, "flow": committed()["flow"]}))
    assert load_params(p, sections=FLOW_SECTIONS)["a"] == {"n": 1}
    flow = dict(committed()["flow"], n_wrokers=2)
    p = _write(tmp_path, yaml.safe_dump({"a": {"n": 1}, "flow": flow}))
    with pytest.raises(ParamError, match="unknown key 'flow.n_wrokers' \\(did you mean 'flow.n_workers'\\?\\)"):
        load_params(p, sections=FLOW_SECTIONS)
    with pytest.raises(ParamError, match="'a.n' is nan"):
        load_params(_write(tmp_path, "a: {n: .nan}\n"), sections=FLOW_SECTIONS)


# ------------------------------------------------------------------------------ CLI
@pytest.mark.parametrize("flags,key,bound", [(["--min-length", "-5"], "link.min_length", ">= 1"),
                                             (["--nms-iou", "7"], "link.nms_iou", "<= 1.0"),
                                             (["--link-iou", "nan"], "link.link_iou", None)])
def test_link_cli_checks_its_thresholds(tmp_path, flags, key, bound):
    r = subprocess.run([sys.executable, "-m", "actparse", "link", "--dets", str(tmp_path / "d.parquet"),
                        "--out", str(tmp_path / "o.pkl"), *flags], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"actparse: error: options {flags[0]} ")
    assert f"parameter {key!r} " + (f"must be {bound}" if bound else "is nan") in lines[0]
    assert not (tmp_path / "o.pkl").exists()


def test_link_cli_reads_a_checked_params_file(tmp_path):
    bad = write_params(tmp_path / "p.yaml", {"link": {"nms_iou": 2.0}})
    r = subprocess.run([sys.executable, "-m", "actparse", "link", "--dets", str(tmp_path / "d.parquet"),
                        "--out", str(tmp_path / "o.pkl"), "--params", str(bad)], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 2 and r.stderr.strip() == f"actparse: error: {bad}: parameter 'link.nms_iou' must be <= 1.0, got 2.0"


# ------------------------------------------------------------------------------ use_preset
def _use_preset(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # this checkout's actparse, whatever is installed
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "use_preset.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env)


def test_use_preset_keeps_comments_order_and_untouched_values(tmp_path):
    base_text = (ROOT / "params.yaml").read_text()
    base = tmp_path / "params.yaml"
    base.write_text(base_text)
    r = _use_preset(ROOT / "params.gpu.yaml", "--base", base)
    assert r.returncode == 0, r.stderr
    out = base.read_text()
    assert yaml.safe_load(out) == merge_params(committed(), GPU)  # values changed as the preset says
    comments = [ln.split("#", 1)[1] for ln in base_text.splitlines() if "#" in ln]
    assert len(comments) > 200 and comments == [ln.split("#", 1)[1] for ln in out.splitlines() if "#" in ln]
    # keys the base lacks (csn.ensemble_weights.<task>) get one new line each, after their mapping's last key
    new_keys = [k for k in _mapping_keys(GPU) if not _has(committed(), k) and _has(committed(), k.rsplit(".", 1)[0])]
    assert "csn.ensemble_weights.head" in new_keys
    inserted = {"    " + yaml.safe_dump({k.rsplit(".", 1)[1]: _value(GPU, k)}, default_flow_style=True).strip()[1:-1]
                for k in new_keys}
    kept = [ln for ln in out.splitlines() if ln not in inserted]
    assert len(out.splitlines()) == len(base_text.splitlines()) + len(new_keys) == len(kept) + len(new_keys)
    changed = [(a, b) for a, b in zip(base_text.splitlines(), kept) if a != b]
    # only lines of keys the preset sets changed, each keeping its key and comment
    differ = [k for k in _leaf_keys(GPU) if _has(committed(), k) and _value(GPU, k) != _value(committed(), k)]
    # keys of a one-line flow mapping (gym.num_frames: {event: 4, set: 8, element: 8}) share their line
    lines = {k.rsplit(".", 1)[0] if k.count(".") >= 2 else k for k in differ}
    assert len(differ) > 25 and len(changed) == len(lines)  # e.g. csn.batch_size: the preset keeps 8
    assert ("  test_batch: 14           # csn: clips per forward pass (clips of test_batch // test_clips videos are batched)"
            in out.splitlines())
    assert "  stage_depths: null " in out and "  input_size: [256, 192]  # network input h, w" in out


def _value(node, dotted):
    for part in dotted.split("."):
        node = node[part]
    return node


def _has(node, dotted):
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _mapping_keys(node, prefix=""):
    """Dotted keys of the overlay down to the first key missing from the base (whole values below)."""
    for k, v in node.items():
        yield prefix + k
        if isinstance(v, dict):
            yield from _mapping_keys(v, prefix + k + ".")


def _leaf_keys(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, dict):
            yield from _leaf_keys(v, prefix + k + ".")
        else:
            yield prefix + k


def test_use_preset_round_trip_fallback_keeps_comments(tmp_path):
    base = tmp_path / "params.yaml"
    base.write_text((ROOT / "params.yaml").read_text())
    over = tmp_path / "over.yaml"  # a mapping where the base has a flow scalar: not a one-line edit
    over.write_text("gym:\n  num_frames: 6\n  loss_weights:\n    event: 2.0\n    set: 2.0\n    element: 2.0\n")
    assert _use_preset(over, "--base", base).returncode == 0
    out = base.read_text()
    assert yaml.safe_load(out)["gym"]["num_frames"] == 6
    assert yaml.safe_load(out)["gym"]["loss_weights"] == {"event": 2.0, "set": 2.0, "element": 2.0}
    assert "# seed 004 (FineGym): 3 SlowOnly pathways" in out and "  csn: clips per forward pass" not in out
    assert "  test_batch: 24           # csn: clips per forward pass" in out
    assert list(yaml.safe_load(out)) == list(committed())


def test_use_preset_refuses_a_bad_overlay_and_leaves_the_base(tmp_path):
    base = tmp_path / "params.yaml"
    base.write_text((ROOT / "params.yaml").read_text())
    for text, msg in (("csn:\n  tset_batch: 3\n", "unknown key 'csn.tset_batch' (did you mean 'csn.test_batch'?)"),
                      ("csn:\n  lr: .nan\n", "parameter 'csn.lr' is nan"),
                      ("cns:\n  lr: 1\n", "sections ['cns'] are not in the base params")):
        over = tmp_path / "over.yaml"
        over.write_text(text)
        r = _use_preset(over, "--base", base)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert base.read_text() == (ROOT / "params.yaml").read_text()


# ------------------------------------------------------------------------------ dvc.yaml
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_dvc_params_lists_name_schema_keys():
    keys = set(M.all_keys())
    for name, stage in DVC.items():
        for key in stage.get("params", []):
            assert str(key) in keys, f"dvc.yaml stage {name}: params entry {key!r} is not a params.yaml key"


def test_dvc_params_lists_cover_the_keys_each_stage_reads():
    """Each stage's `params:` list covers every key its code reads with get() (static scan of the
    stage module and of the actparse functions it calls, transitively). ``data.root`` may instead be
    covered by the data folder ``${data.root}`` among the stage's deps (its path, and so a change of
    the value, is recorded in dvc.lock)."""
    from _params_scan import keys_read

    for name, stage in DVC.items():
        listed = [str(k) for k in stage.get("params", [])]
        if "${data.root}" in stage.get("deps", []):
            listed.append("data.root")
        read = keys_read(ROOT / "stages" / f"{name}.py")
        missing = sorted(k for k in read if not any(k == lst or k.startswith(lst + ".") for lst in listed))
        assert not missing, f"dvc.yaml stage {name} reads {missing} but its params list lacks them"


def test_the_scan_sees_known_reads():
    from _params_scan import keys_read

    assert {"csn.test_batch", "csn.test_clips", "csn.variants", "csn.ensemble_weights"} <= keys_read(
        ROOT / "stages" / "csn.py")
    assert {"parts.fliplr", "parts.hsv_h", "parts.crop_size", "seed"} <= keys_read(
        ROOT / "stages" / "train_part_detector.py")
    assert {"link.top_k_classes", "link.min_person_score"} <= keys_read(ROOT / "stages" / "evaluate.py")
    assert "link.min_length" not in keys_read(ROOT / "stages" / "evaluate.py")  # it scores, links nothing
    assert {"link.min_length", "link.nms_iou", "stad.stride"} <= keys_read(ROOT / "stages" / "stad_evaluate.py")


def test_ablation_rows_set_schema_keys_to_valid_values():
    from actparse import ablation as A

    assert set(A.SWITCHES) <= set(M.all_keys()) | {k for k in A.SWITCHES if k.startswith("csn.ensemble_weights.")}
    for row in A.ROWS:
        p = committed()
        for key, value in row.settings().items():
            *path, last = key.split(".")
            node = p
            for part in path:
                node = node[part]
            assert last in node, (row.name, key)
            node[last] = value
        validate_params(p)


def _doc_keys(text: str) -> list[str]:
    """Dotted params keys (``csn.lr``, ``link.*``) named in a text; file names are skipped."""
    secs = "|".join(sorted(M.Params.model_fields, key=len, reverse=True))
    rx = re.compile(rf"(?<![\w/.-])(?:{secs})\.(?:\*|[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)?)")
    return [k for k in rx.findall(text) if k.rsplit(".", 1)[1] not in FILE_EXTS]


FILE_EXTS = {"py", "json", "parquet", "yaml", "pkl", "md", "csv", "pt", "pth"}


def test_stage_docstrings_name_schema_keys():
    keys = set(M.all_keys())
    seen = 0
    for f in sorted((ROOT / "stages").glob("*.py")):
        for k in _doc_keys(ast.get_docstring(ast.parse(f.read_text())) or ""):
            seen += 1
            assert (k[:-2] if k.endswith(".*") else k) in keys, f"{f.name} docstring names {k!r}, not a params key"
    assert seen > 100
    assert _doc_keys("Params: csn.lr_stpes, link.*; writes artifacts/parts.parquet") == ["csn.lr_stpes", "link.*"]


def test_params_errors_name_the_key(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("decode:\n  stride: 0\n  short_side: abc\n")
    with pytest.raises(ParamError, match="decode.stride' must be >= 1, got 0"):
        load_params(p)  # the loader checks the whole file; get checks again (dicts built in code)
    params = {"_path": str(p), "decode": {"stride": 0, "short_side": "abc"}}
    with pytest.raises(ParamError, match="decode.stride.*>= 1"):
        get(params, "decode.stride", int, min_value=1)
    with pytest.raises(ParamError, match="decode.short_side.*int"):
        get(params, "decode.short_side", int)
    with pytest.raises(ParamError, match="missing parameter 'decode.jpeg'"):
        get(params, "decode.jpeg", int)
    with pytest.raises(TypeError, match="default"):  # no defaults in code: values live only in the file
        get(params, "decode.jpeg", int, default=90)
    with pytest.raises(ParamError, match="not found"):
        load_params(tmp_path / "nope.yaml")


# ------------------------------------------------------------------------------ no defaults in code
def _get_calls_with_default(path: Path) -> list[int]:
    """Lines of ``path`` with a call named ``get`` (``get(...)`` or ``x.get(...)``) that passes ``default=``."""
    return [n.lineno for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == "get"
            and any(k.arg == "default" for k in n.keywords)]


def test_no_param_defaults_in_code():
    """The values live only in params.yaml: no get(..., default=...) in the library, the stages or the flow,
    and actparse.params.get takes no default."""
    import inspect

    found = [f"{f.relative_to(ROOT)}:{line}" for d in ("actparse", "stages", "flows")
             for f in sorted((ROOT / d).rglob("*.py")) for line in _get_calls_with_default(f)]
    assert not found, f"get(..., default=...) found (put the value in params.yaml instead): {found}"
    assert "default" not in inspect.signature(get).parameters
    assert _get_calls_with_default(Path(__file__))  # the scan sees one (test_params_errors_name_the_key's)


def _stage_csn(p, root):
    from stages import csn

    csn.run(p, root)


def _stage_link_tubes(p, root):
    from stages import link_tubes

    link_tubes.run(p, root)


def _synth(p, root):
    from actparse.synth import SynthConfig

    SynthConfig.from_params(p)


def _stad_settings(p, root):
    from actparse.stad import settings_from_params

    settings_from_params(p)


def _paint(p, root):
    from actparse.paint import PaintConfig

    PaintConfig.from_params(p, "parts")


def _device(p, root):
    from actparse.params import resolve_device

    resolve_device(p)


@pytest.mark.parametrize("key,read", [
    ("csn.test_batch", _stage_csn),  # the case: 24 in params.yaml, 16 as the code's old default
    ("link.min_length", _stage_link_tubes),
    ("synth.fps", _synth),
    ("stad.decoupled_lr", _stad_settings),
    ("parts.dot_radius", _paint),
    ("device", _device),
])
def test_a_key_missing_from_the_file_is_an_error_where_the_stage_reads_it(tmp_path, key, read):
    """With no default in code, a key removed from the params file is an error naming the file and the
    key in the stage's own read path too (a dict the loader has not checked), never a silent value."""
    def drop(p):
        *parents, name = key.split(".")
        node = p
        for part in parents:
            node = node[part]
        del node[name]

    path = _write(tmp_path, yaml.safe_dump(_edit(drop), sort_keys=False))
    params = {**yaml.safe_load(path.read_text()), "_path": str(path)}
    with pytest.raises(ParamError) as err:
        read(params, tmp_path)
    assert str(err.value) == f"{path}: missing parameter {key!r}"
