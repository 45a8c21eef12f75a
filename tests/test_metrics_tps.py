"""Kinetics-TPS score: hand-computed cases, official quirks and their flags, invariances, and
identity with a loop-per-box implementation written like the official eval_detection.py."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from actparse.metrics import tps as T
import oracles as R


def human(box, parts):
    return {"number": 1, "box": list(box), "parts": {n: {"number": 1, "box": list(b), "verb": v, "name": n}
                                                     for n, (b, v) in parts.items()}}


BOX = [10.0, 10.0, 50.0, 90.0]
PARTS_OK = {"head": ([20, 10, 30, 20], ["turn"]), "left_arm": ([40, 20, 50, 50], ["raise"])}


def video(frames: dict) -> dict:
    return {f"img_{5 * i + 1:05d}.json": {"humans": hs} for i, hs in frames.items()}


def perfect_case():
    gt_part = {"a": video({0: [human(BOX, PARTS_OK)], 1: [human(BOX, PARTS_OK)]}),
               "b": video({0: [human(BOX, PARTS_OK)]})}
    gt_vid = {"a": "run", "b": "jump"}
    return gt_vid, gt_part, dict(gt_vid), copy.deepcopy(gt_part)


def test_perfect_prediction_scores_one_and_official_area_skips_t0():
    gv, gp, pv, pp = perfect_case()
    res = T.evaluate(gv, gp, pv, pp)
    assert res.psc.tolist() == [1.0, 1.0] and res.correct.tolist() == [True, True]
    # cal_area adds acc(t)/10000 for t = 1..9999: a perfect submission gets 0.9999, not 1
    assert res.area == pytest.approx(0.9999, abs=1e-12) and res.score == 0.9999
    assert T.evaluate(gv, gp, pv, pp, T.TPSOptions(skip_t0=False)).area == pytest.approx(1.0, abs=1e-12)


def test_empty_prediction_scores_zero():
    gv, gp, pv, _ = perfect_case()
    res = T.evaluate(gv, gp, pv, {"a": {}, "b": {}})
    assert res.psc.tolist() == [0.0, 0.0] and res.area == 0 and res.score == 0
    with pytest.raises(ValueError, match="no part results for video 'a'"):
        T.evaluate(gv, gp, pv, {})  # the official code stops with KeyError
    assert T.evaluate(gv, gp, pv, {}, T.TPSOptions(missing_video="zero")).area == 0


def test_missed_frame_counts_zero_and_empty_frames_are_dropped():
    gv, gp, pv, pp = perfect_case()
    del pp["a"]["img_00006.json"]  # missed frame: stays in the count with 0
    gp["a"]["img_00011.json"] = {"humans": []}  # no GT human: dropped from the count
    pp["a"]["img_00011.json"] = {"humans": [human(BOX, PARTS_OK)]}
    res = T.evaluate(gv, gp, pv, pp)
    assert res.psc.tolist() == [0.5, 1.0]
    # acc(t) = 1 for t <= 0.5 (both videos), 0.5 above: 5000 steps of 1 and 4999 of 0.5
    assert res.area == pytest.approx(0.5 + 0.4999 * 0.5, abs=1e-12) and res.score == 0.74995


def test_two_classes_by_hand():
    gv, gp, pv, pp = perfect_case()
    pv["b"] = "run"  # wrong class
    pp["a"]["img_00006.json"]["humans"][0]["parts"]["head"]["verb"] = ["nod"]  # 1 of 4 parts wrong
    res = T.evaluate(gv, gp, pv, pp)
    assert res.psc.tolist() == [pytest.approx(0.75), 1.0]
    assert res.correct.tolist() == [True, False]
    # only video a is right: acc = 0.5 for t <= 0.75, 0 above
    assert res.area == pytest.approx(0.7500 * 0.5, abs=1e-12)


def test_duplicate_humans_hungarian_takes_the_best_overlap():
    gv, gp, pv, pp = perfect_case()
    wrong = {k: (b, ["none"]) for k, (b, v) in PARTS_OK.items()}
    # a duplicate with a slightly better box but wrong states wins the match; the correct one is unused
    dup_box = [10.0, 10.0, 50.0, 90.0]
    near_box = [11.0, 10.0, 50.0, 90.0]
    pp["b"]["img_00001.json"]["humans"] = [human(near_box, PARTS_OK), human(dup_box, wrong)]
    res = T.evaluate(gv, gp, pv, pp)
    assert res.psc[1] == 0.0
    pp["b"]["img_00001.json"]["humans"] = [human(dup_box, PARTS_OK), human(near_box, wrong)]
    assert T.evaluate(gv, gp, pv, pp).psc[1] == 1.0


def test_unmatched_humans_parts_count_in_the_frame_mean():
    gv, gp, pv, pp = perfect_case()
    far = [100.0, 0.0, 140.0, 80.0]
    gp["b"]["img_00001.json"]["humans"].append(human(far, PARTS_OK))  # a second GT human nobody predicts
    res = T.evaluate(gv, gp, pv, pp)
    assert res.psc[1] == 0.5  # 2 of 4 GT parts correct


def test_part_iou_is_inclusive_with_plus_one_pixels_readme_flag_makes_it_strict():
    gv, gp, pv, pp = perfect_case()
    # +1 convention: GT [0,0,9,9] area 100, pred [0,0,2,9] area 30 inside it: IoU = 30/100 = 0.3 exactly
    for g in (gp, pp):
        g["b"]["img_00001.json"]["humans"][0]["parts"] = {"head": {"box": [0, 0, 9, 9], "verb": ["turn"], "name": "head"}}
    pp["b"]["img_00001.json"]["humans"][0]["parts"]["head"]["box"] = [0, 0, 2, 9]
    assert T.evaluate(gv, gp, pv, pp).psc[1] == 1.0
    assert T.evaluate(gv, gp, pv, pp, T.TPSOptions(part_iou_inclusive=False)).psc[1] == 0.0
    # continuous IoU (no +1): 20/81 < 0.3
    assert T.evaluate(gv, gp, pv, pp, T.TPSOptions(plus_one_iou=False)).psc[1] == 0.0


def test_bbox_iou_quirk_minus_one_for_disjoint_boxes():
    gt = np.array([[0, 0, 9, 9], [0, 0, 9, 9]], np.float32)
    pr = np.array([[20, 20, 29, 29], [0, 0, 9, 9]], np.float32)
    np.testing.assert_array_equal(T.human_iou_matrix32(gt, pr), [-1.0, 1.0])
    np.testing.assert_array_equal(T.human_iou_matrix32(gt, pr, plus_one=False), [0.0, 1.0])
    assert [R.tps_bbox_iou(a, b) for a, b in zip(gt, pr)] == [-1.0, 1.0]


def test_wrapped_proposals_quirk_and_readme_proposals():
    gv, gp, pv, pp = perfect_case()
    part = pp["b"]["img_00001.json"]["humans"][0]["parts"]["head"]
    # official wrapping compares the whole verb value: a list of two proposals never equals ["turn"]
    part["verb"] = ["turn", "nod"]
    assert T.evaluate(gv, gp, pv, pp).psc[1] == 0.5
    # ... and a list of boxes cannot be used as one box (the official code raises TypeError)
    part["box"] = [[20, 10, 30, 20], [0, 0, 5, 5]]
    with pytest.raises(ValueError, match="ONE"):
        T.evaluate(gv, gp, pv, pp)
    # README semantics: 2 proposals, one right -> 1/N_p = 0.5 credit for the head
    res = T.evaluate(gv, {**gp, "b": video({0: [human(BOX, {"head": ([20, 10, 30, 20], "turn"),
                                                            "left_arm": ([40, 20, 50, 50], "raise")})]})},
                     pv, pp, T.TPSOptions(wrap_proposals=False))
    assert res.psc[1] == pytest.approx((0.5 + 1.0) / 2)


def test_video_without_any_part_scores_one_and_limits_are_checked():
    gv, gp, pv, pp = perfect_case()
    gp["b"] = video({0: []})
    assert T.evaluate(gv, gp, pv, {"a": pp["a"], "b": {}}).psc[1] == 1.0  # official: no valid frame -> 1.0
    # ... and the official loop never looks such a video up in the prediction: no KeyError
    assert T.evaluate(gv, gp, pv, {"a": pp["a"]}).psc[1] == 1.0
    assert R.tps_video("b", gp, {"a": pp["a"]}) == 1.0
    gv, gp, pv, pp = perfect_case()
    pp["a"]["img_00001.json"]["humans"] += [human([200 + i, 0, 210 + i, 10], {}) for i in range(10)]
    with pytest.raises(ValueError, match="10 human"):
        T.evaluate(gv, gp, pv, pp)
    assert T.evaluate(gv, gp, pv, pp, T.TPSOptions(check_limits=False)).psc[0] == 1.0
    gv, gp, pv, pp = perfect_case()
    pp["a"]["img_00001.json"]["humans"][0]["parts"]["head"]["verb"] = "step_on"  # len("step_on") > 5
    with pytest.raises(ValueError, match="5 proposals"):
        T.evaluate(gv, gp, pv, pp)


def test_conditioned_accuracy_curve_inclusive_vs_strict():
    t, acc = T.accuracy_curve([0.5, 0.25, 1.0], [True, True, False], steps=4)
    assert t.tolist() == [0, 0.25, 0.5, 0.75] and acc.tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 3, 0])
    _, acc = T.accuracy_curve([0.5, 0.25, 1.0], [True, True, False], steps=4, inclusive=False)
    assert acc.tolist() == pytest.approx([2 / 3, 1 / 3, 0, 0])


# ------------------------------------------------------------------- identity with the official loop
def random_case(seed: int, n_videos: int = 12, n_frames: int = 8, verb_list: bool = True, dups: bool = True):
    rng = np.random.default_rng(seed)
    states = ["none", "bend", "kick", "turn"]
    gp, pp, gv, pv = {}, {}, {}, {}
    for v in range(n_videos):
        gf, pf = {}, {}
        for f in range(n_frames):
            gh, ph = [], []
            for h in range(int(rng.integers(0, 4))):
                x, y = rng.uniform(0, 150, 2)
                box = [x, y, x + rng.uniform(15, 60), y + rng.uniform(30, 90)]
                parts = {}
                for name in ("head", "hip", "left_leg", "right_foot"):
                    if rng.random() < 0.8:
                        px, py = rng.uniform(box[0], box[2] - 4), rng.uniform(box[1], box[3] - 4)
                        s = states[int(rng.integers(4))]
                        parts[name] = ([px, py, px + rng.uniform(2, 15), py + rng.uniform(2, 15)], [s] if verb_list else s)
                gh.append(human(box, parts))
                if rng.random() < 0.85:
                    pparts = {n: ((np.asarray(b) + rng.normal(0, 2, 4)).tolist(),
                                  v_ if rng.random() < 0.7 else ([states[0]] if verb_list else states[0]))
                              for n, (b, v_) in parts.items() if rng.random() < 0.9}
                    ph.append(human((np.asarray(box) + rng.normal(0, 5, 4)).tolist(), pparts))
            for _ in range(int(rng.integers(0, 3))):
                x, y = rng.uniform(0, 150, 2)
                ph.append(human([x, y, x + 30, y + 60], {}))
            if dups and ph and rng.random() < 0.2:
                ph.append(copy.deepcopy(ph[0]))  # exact duplicate: Hungarian ties
            rng.shuffle(ph)
            name = f"img_{5 * f + 1:05d}.json"
            gf[name] = {"humans": gh}
            if rng.random() < 0.9:
                pf[name] = {"humans": ph}
        gp[f"v{v}"], pp[f"v{v}"] = gf, pf
        gv[f"v{v}"] = "abc"[int(rng.integers(3))]
        pv[f"v{v}"] = gv[f"v{v}"] if rng.random() < 0.7 else "z"
    return gv, gp, pv, pp


@pytest.mark.parametrize("seed", range(4))
def test_identical_to_official_style_loop(seed):
    gv, gp, pv, pp = random_case(seed, verb_list=seed % 2 == 0)
    area, psc = R.tps_score(gv, gp, pv, pp)
    res = T.evaluate(gv, gp, pv, pp, T.TPSOptions(check_limits=False))
    assert res.psc.tolist() == psc  # bit-identical, not approximately
    assert res.area == area


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), perm_seed=st.integers(0, 10_000))
def test_invariant_to_order_of_predicted_humans_video_names_and_far_boxes(seed, perm_seed):
    gv, gp, pv, pp = random_case(seed, n_videos=4, n_frames=4, dups=False)
    # no exact duplicates: with tied IoUs the Hungarian solution legitimately depends on order
    for frames in pp.values():
        for fr in frames.values():
            boxes = [tuple(h["box"]) for h in fr["humans"]]
            assume(len(set(boxes)) == len(boxes))
    base = T.evaluate(gv, gp, pv, pp)
    rng = np.random.default_rng(perm_seed)
    shuffled = copy.deepcopy(pp)
    for frames in shuffled.values():
        for fr in frames.values():
            rng.shuffle(fr["humans"])
            fr["humans"].append(human([900.0, 900.0, 950.0, 990.0], {}))  # overlaps nothing
    assert T.evaluate(gv, gp, pv, shuffled).psc.tolist() == base.psc.tolist()
    ren = {v: f"renamed_{i}" for i, v in enumerate(gv)}
    res = T.evaluate({ren[v]: c for v, c in gv.items()}, {ren[v]: x for v, x in gp.items()},
                     {ren[v]: c for v, c in pv.items()}, {ren[v]: x for v, x in pp.items()})
    assert res.area == base.area and res.psc.tolist() == base.psc.tolist()


def test_array_route_from_tables_equals_the_json_route(tmp_path):
    """Scoring Parquet-side tables directly gives the score of the JSON files written from them."""
    import sys
    from pathlib import Path

    import pandas as pd

    from actparse.formats import tps_ground_truth, tps_part_result
    from actparse.schemas import read_df

    sys.path.insert(0, str(Path(__file__).parent))
    from _fakes import make_ground_truth, make_predictions

    make_ground_truth(tmp_path, n_videos=6, n_frames=31)
    make_predictions(tmp_path, jitter=2.0, wrong_states=0.3, drop=0.1, extra=True)
    gt = pd.read_parquet(tmp_path / "artifacts/synth/gt_persons.parquet")
    videos = pd.read_parquet(tmp_path / "artifacts/synth/videos.parquet")
    gt_part, _ = tps_ground_truth(gt, videos, "test", verb_as_list=True)
    persons = read_df(tmp_path / "artifacts/refined_persons.parquet", "keypoints")[["video", "frame", "person", "box", "score"]]
    states = read_df(tmp_path / "artifacts/part_states.parquet", "part_states")
    pred_part = tps_part_result(persons, states)
    via_json = T.part_state_correctness(gt_part, pred_part)
    # the same from tables: GT persons/parts exploded from gt_persons, frames every 5th
    g = gt[gt["video"].isin(gt_part) & (gt["frame"] % 5 == 0)]
    from actparse.constants import PARTS

    rows = [(v, f, p, name, np.asarray(pb).reshape(-1, 4)[k], st[k])
            for v, f, p, pb, vis, st in zip(g["video"], g["frame"], g["person"], g["part_boxes"], g["part_visible"],
                                            g["part_states"])
            for k, name in enumerate(PARTS) if vis[k]]
    gparts = pd.DataFrame(rows, columns=["video", "frame", "person", "part", "box", "state"])
    frames = pd.DataFrame([(v, int(n[4:9]) - 1) for v in gt_part for n in gt_part[v]], columns=["video", "frame"])
    inp = T.inputs_from_tables(g[["video", "frame", "person", "box"]], gparts, persons, states, frames)
    via_tables = T.psc_from_inputs(inp)
    np.testing.assert_array_equal(via_tables, via_json)
    assert 0 < via_json.mean() < 1


@pytest.mark.parametrize("seed", range(6))
def test_dict_route_equals_the_flattened_array_route(seed):
    gv, gp, pv, pp = random_case(100 + seed, n_videos=10, n_frames=6, verb_list=seed % 2 == 0, dups=seed % 3 == 0)
    gp["v0"]["img_00001.json"] = {"humans": []}  # no ground-truth human: dropped from the count
    gp["v1"]["img_00006.json"] = {"humans": [human(BOX, {})]}  # humans but no part
    pp["v1"]["img_00006.json"] = {"humans": [human(BOX, PARTS_OK)]}
    opts = T.TPSOptions(check_limits=False)
    via_dicts = T.part_state_correctness(gp, pp, opts)
    via_arrays = T.psc_from_inputs(T.prepare(gp, pp), opts)
    assert via_dicts.tolist() == via_arrays.tolist()


def test_files_not_in_the_official_layout_raise_value_errors():
    gv, gp, pv, pp = perfect_case()
    bad = copy.deepcopy(pp)
    del bad["a"]["img_00001.json"]["humans"][0]["parts"]["head"]["verb"]
    with pytest.raises(ValueError, match="official layout"):
        T.evaluate(gv, gp, pv, bad)
    bad = copy.deepcopy(pp)
    bad["a"]["img_00001.json"]["humans"][0]["box"] = [1, 2, 3]
    with pytest.raises(ValueError, match="4 numbers"):
        T.evaluate(gv, gp, pv, bad)
    bad = copy.deepcopy(pp)
    del bad["a"]["img_00001.json"]["humans"]
    with pytest.raises(ValueError, match="official layout"):
        T.evaluate(gv, gp, pv, bad)
