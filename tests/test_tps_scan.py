"""actparse.metrics.tps_scan: official part-result files scored from their bytes, always with the
result of json.loads + the dict route (or the same error)."""

from __future__ import annotations

import copy
import json
import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actparse.metrics import tps as T
from actparse.metrics import tps_scan as S

from test_metrics_tps import BOX, PARTS_OK, human, random_case

OPTS = T.TPSOptions(check_limits=False)


def write(tmp_path, obj, name, **dump):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj, **dump))
    return p


def both(tmp_path, gv, gp, pv, pp, opts=OPTS, **dump):
    """(dict route on json.loads of the written files, file route)."""
    g, p = write(tmp_path, gp, "gt_part.json", **dump), write(tmp_path, pp, "pred_part.json", **dump)
    ref = T.evaluate(gv, json.loads(g.read_text()), pv, json.loads(p.read_text()), opts)
    return ref, T.evaluate_files(gv, g, pv, p, opts)


def same(a, b):
    assert a.psc.tolist() == b.psc.tolist()
    assert a.area == b.area and a.score == b.score
    assert a.correct.tolist() == b.correct.tolist()


@pytest.mark.parametrize("seed", range(6))
def test_random_files_score_as_the_dict_route(tmp_path, seed):
    gv, gp, pv, pp = random_case(500 + seed, n_videos=10, n_frames=6, verb_list=seed % 2 == 0, dups=seed % 3 == 0)
    gp["v0"]["img_00001.json"] = {"humans": []}
    gp["v1"]["img_00006.json"] = {"humans": [human(BOX, {})]}
    pp["v1"]["img_00006.json"] = {"humans": [human(BOX, PARTS_OK)]}
    ref, got = both(tmp_path, gv, gp, pv, pp)
    assert got.route == "bytes"
    same(ref, got)
    assert 0 < ref.score < 1


@pytest.mark.parametrize("dump", [dict(indent=2), dict(separators=(",", ":")), dict(indent="\t", ensure_ascii=False)])
def test_any_json_layout_and_rounded_numbers(tmp_path, dump):
    gv, gp, pv, pp = random_case(7, n_videos=6, n_frames=5)
    rnd = lambda o: ({k: rnd(v) for k, v in o.items()} if isinstance(o, dict) else  # noqa: E731
                     [rnd(v) for v in o] if isinstance(o, list) else round(o, 2) if isinstance(o, float) else o)
    gp, pp = rnd(gp), rnd(pp)
    # extra keys of every kind, a non-ASCII state and part name, escapes in skipped strings
    gp["v0"]["img_00001.json"]["note"] = {"a": [1, 2.5e-3, None, True, "x\"y\\z\u00e9"], "b": {}}
    # (json.dumps writes non-ASCII as \\u escapes unless ensure_ascii=False; an escaped part name
    # or state is left to the dict route, tested below)
    name, state = ("t\u00eate", "pli\u00e9") if dump.get("ensure_ascii") is False else ("torso", "bent")
    h = human([1, 2, 30, 40], {name: ([1, 2, 5, 6], [state])})
    h["score"] = 0.5
    gp["v0"]["img_00001.json"]["humans"].append(h)
    pp["v0"]["img_00001.json"] = {"humans": [copy.deepcopy(h)], "extra": []}
    ref, got = both(tmp_path, gv, gp, pv, pp, **dump)
    assert got.route == "bytes"
    same(ref, got)


def test_order_repeated_keys_missing_and_extra_videos(tmp_path):
    gv, gp, pv, pp = random_case(11, n_videos=5, n_frames=4)
    # gt_vid in another order than the part file; prediction with videos and frames the GT lacks
    gv = dict(reversed(list(gv.items())))
    pp["extra"] = {"img_00001.json": {"humans": [human(BOX, PARTS_OK)]}}
    pp["v1"]["img_99999.json"] = {"humans": []}
    del pp["v2"]
    ref, got = both(tmp_path, gv, gp, pv, pp, T.TPSOptions(check_limits=False, missing_video="zero"))
    assert got.route == "bytes"
    same(ref, got)
    # repeated video and frame keys: json.loads keeps the first place and the last value
    last_v0 = dict(list(gp["v0"].items())[1:])  # "v0" again at the end, one frame fewer
    text = json.dumps(gp)[:-1] + ', "v0": ' + json.dumps(last_v0) + "}"
    pt = json.dumps(pp).replace('"img_00001.json": ', '"img_00001.json": {"humans": []}, "img_00001.json": ', 1)
    gpath, ppath = write(tmp_path, text, "g2.json"), write(tmp_path, pt, "p2.json")
    opts = T.TPSOptions(check_limits=False, missing_video="zero")
    ref = T.evaluate(gv, json.loads(text), pv, json.loads(pt), opts)
    got = T.evaluate_files(gv, gpath, pv, ppath, opts)
    assert got.route == "bytes"
    same(ref, got)


def test_missing_prediction_video_is_the_same_error(tmp_path):
    gv, gp, pv, pp = random_case(3, n_videos=4, n_frames=3)
    del pp["v1"]
    with pytest.raises(ValueError, match="prediction has no part results for video 'v1'"):
        T.evaluate(gv, gp, pv, pp, OPTS)
    g, p = write(tmp_path, gp, "g.json"), write(tmp_path, pp, "p.json")
    with pytest.raises(ValueError, match="prediction has no part results for video 'v1'"):
        T.evaluate_files(gv, g, pv, p, OPTS)
    gv, gp, pv, pp = random_case(3, n_videos=4, n_frames=3)
    del gp["v2"]
    g, p = write(tmp_path, gp, "g.json"), write(tmp_path, pp, "p.json")
    with pytest.raises(ValueError, match="ground truth has no part annotations for video 'v2'"):
        T.evaluate_files(gv, g, pv, p, OPTS)


@pytest.mark.parametrize("old, new", [
    ('"head": {', '"h\\u0065ad": {'),  # an escape in a part name (json.loads: the same name)
    ('"number": 1', '"number": NaN'),  # NaN / Infinity: json.loads takes them, the scanner does not
    ('"number": 1', '"number": -Infinity'),
    ('"verb": ["', '"verb": [7, "'),  # a state that is not a string
    ('"box": [', '"box": [[1, 2], '),  # a box that is not 4 numbers (of a part the loop may not read)
])
def test_files_outside_the_scanner_go_the_dict_route_with_the_same_result(tmp_path, old, new):
    gv, gp, pv, pp = random_case(21, n_videos=3, n_frames=3)
    for fr in pp.values():
        for x in fr.values():
            for h in x["humans"]:
                h["parts"].setdefault("head", {"number": 1, "box": [1.0, 2.0, 3.0, 4.0], "verb": ["bend"]})
    text = json.dumps(pp).replace(old, new, 1)
    assert text != json.dumps(pp)
    assert S.scan_part_result(text.encode()) is None
    try:
        ref = T.evaluate(gv, gp, pv, json.loads(text), OPTS)
    except ValueError as exc:  # the dict route refuses it: so must the file route, the same way
        with pytest.raises(ValueError, match=str(exc)[:30].replace("(", ".").replace("[", ".")):
            T.evaluate_files(gv, write(tmp_path, gp, "g.json"), pv, write(tmp_path, text, "p.json"), OPTS)
        return
    got = T.evaluate_files(gv, write(tmp_path, gp, "g.json"), pv, write(tmp_path, text, "p.json"), OPTS)
    assert got.route == "dicts"
    same(ref, got)


def test_repeated_part_name_and_big_integer_box_take_the_dict_route(tmp_path):
    gv, gp, pv, pp = random_case(5, n_videos=3, n_frames=3)
    t = json.dumps(pp)
    k = t.index('"parts": {') + len('"parts": {')
    dup = t[:k] + '"head": {"box": [0, 0, 1, 1], "verb": ["x"]}, "head": {"box": [0, 0, 1, 1], "verb": ["y"]}, ' + t[k:]
    big = t.replace('"box": [', '"box": [9007199254740993, 1, 2, 3], "old": [', 1)
    for text in (dup, big):
        assert S.scan_part_result(text.encode()) is None
        ref = T.evaluate(gv, gp, pv, json.loads(text), OPTS)
        got = T.evaluate_files(gv, write(tmp_path, gp, "g.json"), pv, write(tmp_path, text, "p.json"), OPTS)
        assert got.route == "dicts"
        same(ref, got)


@pytest.mark.parametrize("text, msg", [('{"v0": {"img_00001.json": {"humans": [}}}', "not valid JSON"),
                                       ('{"v0": {"a": {"humans": [{"box": [1, 2, 3, 4], "parts": {"x": '
                                        '{"box": [1, 2, 3, 4], "verb": "\\q"}}}]}}}', "not valid JSON")])
def test_invalid_json_is_a_clear_error_naming_the_file(tmp_path, text, msg):
    gv, gp, pv, pp = random_case(1, n_videos=1, n_frames=1)
    p = write(tmp_path, text, "bad_pred.json")
    assert S.scan_part_result(text.encode()) is None
    with pytest.raises(ValueError, match=f"bad_pred.json: {msg}"):
        T.evaluate_files(gv, write(tmp_path, gp, "g.json"), pv, p, OPTS)
    bad = tmp_path / "latin1.json"
    bad.write_bytes(b'{"v0": {"\xe9": {"humans": []}}}')
    assert S.scan_part_result(bad.read_bytes()) is None
    with pytest.raises(ValueError, match="latin1.json: not UTF-8 text"):
        T.evaluate_files(gv, write(tmp_path, gp, "g.json"), pv, bad, OPTS)
    with pytest.raises(FileNotFoundError, match="nowhere.json: file not found"):
        T.evaluate_files(gv, tmp_path / "nowhere.json", pv, p, OPTS)


def _doc(numbers: list[str]) -> bytes:
    boxes = [numbers[k:k + 4] for k in range(0, len(numbers) - len(numbers) % 4, 4)]
    humans = ", ".join('{"box": [%s], "parts": {}}' % ", ".join(b) for b in boxes)
    return ('{"v": {"f": {"humans": [%s]}}}' % humans).encode()


_finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(xs=st.lists(st.one_of(
    _finite.map(repr),
    _finite.map(lambda x: f"{x:.2f}"),
    _finite.map(lambda x: f"{x:.6e}"),
    _finite.map(lambda x: f"{x:.3E}"),
    st.integers(-(2 ** 53), 2 ** 53).map(str),
    st.sampled_from(["-0", "-0.0", "0e5", "1e22", "1e23", "9007199254740992", "123456789012345678.5", "0.000001234",
                     "9007199254740993.5", "4.9e-324", "1.7976931348623157e308"]),
), min_size=4, max_size=24))
def test_numbers_convert_exactly_as_json_loads(xs):
    xs = [x for x in xs if math.isfinite(float(x))]
    if len(xs) < 4:
        return
    doc = _doc(xs)
    sc = S.scan_part_result(doc)
    assert sc is not None
    want = np.asarray([h["box"] for h in json.loads(doc)["v"]["f"]["humans"]], np.float64).reshape(-1)
    got = sc.human_box.reshape(-1)
    # bit for bit (the sign of zero too)
    assert [struct.pack("<d", v) for v in got.tolist()] == [struct.pack("<d", v) for v in want.tolist()]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), shuffle=st.integers(0, 10_000))
def test_shuffled_detections_and_renamed_videos_score_the_same(tmp_path_factory, seed, shuffle):
    tmp = tmp_path_factory.mktemp("inv")
    gv, gp, pv, pp = random_case(seed, n_videos=4, n_frames=3, dups=False)
    rng = np.random.default_rng(shuffle)
    base = T.evaluate_files(gv, write(tmp, gp, "g.json"), pv, write(tmp, pp, "p.json"), OPTS)
    ren = {v: f"clip_{k}" for k, v in enumerate(gv)}
    pp2 = {ren[v]: {f: {"humans": [x["humans"][i] for i in rng.permutation(len(x["humans"]))]}
                    for f, x in fr.items()} for v, fr in pp.items()}
    got = T.evaluate_files({ren[v]: c for v, c in gv.items()}, write(tmp, {ren[v]: f for v, f in gp.items()}, "g2.json"),
                           {ren[v]: c for v, c in pv.items()}, write(tmp, pp2, "p2.json"), OPTS)
    assert got.route == base.route == "bytes"
    assert got.psc.tolist() == base.psc.tolist() and got.score == base.score
