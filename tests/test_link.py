"""MOC tube linking: hand-made cases, the official thresholds, identity with a loop implementation
written like MOC's BuildTubes, invariances, the link_tubes stage and the `actparse link` command."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _params import overlaid
from actparse import __main__ as cli
from actparse.link import (LinkParams, _nms_official, _soft_nms_sets, action_detections, link, link_moc_layout,
                           link_table)
from actparse.schemas import from_columns, read_df, write_table
import oracles as R

sys.path.insert(0, str(Path(__file__).parent))
from _fakes import make_ground_truth, make_predictions  # noqa: E402


def walker(n, x0=0.0, dx=1.0, y=0.0, w=30, h=60):
    return np.array([[x0 + dx * i, y, x0 + dx * i + w, y + h] for i in range(n)], np.float32)


def test_two_people_two_tubes_and_a_gap():
    n = 20
    a, b = walker(n, 0), walker(n, 100)
    group = np.zeros(2 * n, int)
    step = np.r_[np.arange(n), np.arange(n)]
    boxes = np.r_[a, b]
    scores = np.r_[np.full(n, 0.9), np.full(n, 0.6)].astype(np.float32)
    grids = [np.arange(1, n + 1)]
    t = link(group, step, boxes, scores, grids, LinkParams(tube_nms_iou=0))
    assert len(t) == 2 and sorted(t.length.tolist()) == [20, 20]
    assert sorted(t.score.tolist()) == pytest.approx([0.6, 0.9], abs=1e-6)
    # person b missing on step 10: with K = 1 its tube ends there; the pieces (10 and 9 frames) are < 15
    keep = ~((step == 10) & (np.arange(2 * n) >= n))
    t = link(group[keep], step[keep], boxes[keep], scores[keep], grids, LinkParams(tube_nms_iou=0))
    assert sorted(t.length.tolist()) == [20]
    t = link(group[keep], step[keep], boxes[keep], scores[keep], grids, LinkParams(tube_nms_iou=0, min_length=5))
    assert sorted(t.length.tolist()) == [9, 10, 20]
    # K = 2 tolerates one missing step; the box on the gap frame is interpolated
    t = link(group[keep], step[keep], boxes[keep], scores[keep], grids, LinkParams(tube_nms_iou=0, k=2))
    assert sorted(t.length.tolist()) == [20, 20]
    tb = t.rows(int(np.argmin(t.score)))
    np.testing.assert_allclose(tb[10, 1:5], b[10], atol=1e-4)


def test_stride_grid_interpolates_between_decoded_frames():
    n = 8  # decoded frames 1, 6, 11, ... (stride 5)
    boxes = walker(n, 0, dx=5)
    t = link(np.zeros(n, int), np.arange(n), boxes, np.full(n, 0.8, np.float32), [np.arange(n) * 5 + 1],
             LinkParams(tube_nms_iou=0))
    assert len(t) == 1 and t.length[0] == 36
    rows = t.rows(0)
    np.testing.assert_array_equal(rows[:, 0], np.arange(1, 37))
    np.testing.assert_allclose(rows[:, 1], np.arange(36), atol=1e-4)  # x moves 1 px per frame


def test_soft_nms_downweights_overlaps_like_moc():
    boxes = np.array([[0, 0, 9, 9], [0, 0, 9, 7], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    # +1 convention: IoU(0, 1) = 80 / 100 = 0.8 > 0.6 -> 0.8 * (1 - 0.8)
    keep, new = _nms_official(boxes, scores.copy(), 0.6, 10)
    assert keep.tolist() == [0, 2, 1]
    np.testing.assert_allclose(new, [0.9, 0.7, 0.8 * 0.2], rtol=1e-6)
    kidx, knew = _soft_nms_sets(boxes, scores, np.array([[0, 1, 2]]), 0.6, 10)
    assert kidx[0].tolist() == keep.tolist() and knew[0].tolist() == new.tolist()
    kidx, _ = _soft_nms_sets(boxes, scores, np.array([[0, 1, 2]]), 0.6, 2)
    assert kidx[0].tolist() == [0, 2]


def test_min_score_and_tube_nms():
    n = 20
    a = walker(n)
    g = np.zeros(2 * n, int)
    s = np.r_[np.arange(n), np.arange(n)]
    boxes = np.r_[a, a + [0, 0, 0, 1]]  # two overlapping tracks
    # no frame-level NMS: both tracks survive as two tubes; nms3dt then keeps the better one
    sc = np.r_[np.full(n, 0.9), np.full(n, 0.5)].astype(np.float32)
    p = LinkParams(nms_iou=1.0, tube_nms_iou=0)
    assert len(link(g, s, boxes, sc, [np.arange(1, n + 1)], p)) == 2
    t = link(g, s, boxes, sc, [np.arange(1, n + 1)], LinkParams(nms_iou=1.0, tube_nms_iou=0.3))
    assert len(t) == 1 and t.score[0] == pytest.approx(0.9, abs=1e-6)
    low = np.full(n, 0.004, np.float32)
    assert len(link(np.zeros(n, int), np.arange(n), a, low, [np.arange(1, n + 1)])) == 0


def moc_case(seed, n_videos=4, n_frames=30, n_labels=2, n_people=4, ties=False, gaps=0.1):
    rng = np.random.default_rng(seed)
    vdets = {}
    for v in range(n_videos):
        tracks = [(rng.uniform(0, 100, 2), rng.normal(0, 2, 2)) for _ in range(n_people)]
        per = {}
        for f in range(1, n_frames + 1):
            per[f] = {}
            for lab in range(n_labels):
                rows = []
                for p0, vel in tracks:
                    if rng.random() < gaps:
                        continue
                    c = p0 + vel * f + rng.normal(0, 1.5, 2)
                    sc = round(rng.random() * 4) / 4 if ties else rng.random()
                    rows.append([c[0], c[1], c[0] + 30, c[1] + 50, sc])
                    if rng.random() < 0.15:
                        rows.append([c[0] + 1, c[1], c[0] + 31, c[1] + 50, sc if ties else rng.random()])
                per[f][lab] = np.array(rows, np.float32).reshape(-1, 5)
        vdets[f"v{v}"] = per
    return vdets


def reference_tubes(vdets, n_labels, p: LinkParams):
    out = {}
    for v, per in vdets.items():
        frames = sorted(per)
        res = R.moc_build_tubes({f: {lab: a.copy() for lab, a in per[f].items()} for f in frames}, frames, n_labels,
                                p.nms_iou, p.top_k, p.link_iou, p.min_score, p.min_length, p.k)
        for lab, tubes in res.items():
            if p.tube_nms_iou:
                tubes = [tubes[i] for i in R.moc_nms3dt(tubes, p.tube_nms_iou)]
            out.setdefault(lab, []).extend((v, s, o) for o, s in tubes)
    return out


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, False)])
def test_identical_to_moc_build_tubes(seed, ties):
    vdets = moc_case(seed, ties=ties)
    for p in (LinkParams(), LinkParams(tube_nms_iou=0), LinkParams(top_k=2, min_length=5, link_iou=0.3)):
        with np.errstate(all="ignore"):
            ref = reference_tubes(vdets, 2, p)
            mine = link_moc_layout(vdets, 2, p)
        for lab in range(2):
            assert len(mine[lab]) == len(ref.get(lab, []))
            for (v1, s1, o1), (v2, s2, o2) in zip(ref.get(lab, []), mine[lab]):
                assert v1 == v2 and s1 == s2  # same tube score, bit for bit
                np.testing.assert_array_equal(o1, o2)


def test_identical_to_moc_with_gap_tolerance_on_detection_frames():
    vdets = moc_case(5, gaps=0.3)
    p = LinkParams(k=3, min_length=5, tube_nms_iou=0)
    ref = reference_tubes(vdets, 2, p)
    mine = link_moc_layout(vdets, 2, p)
    for lab in range(2):
        assert len(mine[lab]) == len(ref[lab])
        for (v1, s1, o1), (v2, s2, o2) in zip(ref[lab], mine[lab]):
            assert v1 == v2 and s1 == s2
            np.testing.assert_array_equal(o1, o2[np.isin(o2[:, 0], o1[:, 0])])


def _dets_table(vdets):
    rows = []
    for v, per in vdets.items():
        for f, labs in per.items():
            for lab, arr in labs.items():
                for i, r in enumerate(arr):
                    rows.append({"video": v, "frame": (f - 1) * 5, "person": i, "label": f"c{lab}",
                                 "box": r[:4], "score": float(r[4])})
    return from_columns({k: [r[k] for r in rows] for k in rows[0]}, "action_detections")


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), perm=st.integers(0, 1000))
def test_invariances_shuffle_rename_and_low_score_persons(seed, perm):
    vdets = moc_case(seed, n_videos=2, n_frames=12, n_people=3)
    table = _dets_table(vdets).to_pandas()
    p = LinkParams(min_length=10)
    base = link_table(table, p)
    shuffled = table.sample(frac=1.0, random_state=perm)
    pd.testing.assert_frame_equal(link_table(shuffled, p).to_pandas(), base.to_pandas())
    renamed = table.assign(video=table["video"].map({"v0": "x_first", "v1": "y_second"}))
    r = link_table(renamed, p).to_pandas()
    np.testing.assert_array_equal(np.stack(r["box"]), np.stack(base.to_pandas()["box"]))
    # person boxes below min_person_score never reach the linker
    persons = table.drop_duplicates(["video", "frame", "person"])[["video", "frame", "person", "box", "score"]]
    probs = pd.DataFrame({"video": ["v0", "v1"], "task": "action", "model": "ensemble", "label": "c0",
                          "score": 1.0, "probs": [[1.0, 0.0], [1.0, 0.0]]})
    d1 = action_detections(persons, probs, ["c0", "c1"], 1, 0.05).to_pandas()
    extra = persons.assign(score=0.01, person=persons["person"] + 100, box=[np.array([1, 1, 9, 9], np.float32)] * len(persons))
    d2 = action_detections(pd.concat([persons, extra]), probs, ["c0", "c1"], 1, 0.05).to_pandas()
    pd.testing.assert_frame_equal(link_table(d1, p).to_pandas(), link_table(d2, p).to_pandas())


def test_action_detections_scores_are_person_times_class_probability():
    persons = pd.DataFrame({"video": ["v", "v"], "frame": [0, 0], "person": [0, 1],
                            "box": [np.array([0, 0, 10, 10], np.float32)] * 2, "score": [0.8, 0.02]})
    probs = pd.DataFrame({"video": ["v"], "task": ["action"], "model": ["ensemble"], "label": ["b"], "score": [0.7],
                          "probs": [[0.1, 0.7, 0.2]]})
    d = action_detections(persons, probs, ["a", "b", "c"], top_k_classes=2, min_person_score=0.05).to_pandas()
    assert d["label"].tolist() == ["b", "c"]
    np.testing.assert_allclose(d["score"], [0.8 * 0.7, 0.8 * 0.2], rtol=1e-6)
    with pytest.raises(ValueError, match="3 probabilities for 2 classes"):
        action_detections(persons, probs, ["a", "b"])


def test_link_tubes_stage_on_fake_artifacts(tmp_path):
    from stages import link_tubes

    make_ground_truth(tmp_path, n_videos=4, n_frames=40)
    make_predictions(tmp_path)
    params = overlaid({"link": {"min_length": 15, "nms_iou": 0.6}, "_path": "params.yaml"})
    link_tubes.run(params, tmp_path)
    t = read_df(tmp_path / "artifacts" / "tubes.parquet", "tubes")
    assert len(t) and t.groupby(["video", "tube"])["frame"].apply(lambda f: bool((np.diff(f) == 1).all())).all()
    gt = pd.read_parquet(tmp_path / "artifacts" / "synth" / "gt_persons.parquet")
    # every person track of the fake GT (a static action per video) becomes one tube
    assert t.groupby("video")["tube"].nunique().to_dict() == gt.groupby("video")["person"].nunique().to_dict()
    with pytest.raises(Exception, match="link.nms_iou"):
        link_tubes.run(overlaid({"link": {"nms_iou": "high"}, "_path": "params.yaml"}), tmp_path)


def test_cli_link_moc_layout_and_parquet(tmp_path, capsys):
    vdets = moc_case(3, n_videos=2, n_frames=20)
    src = tmp_path / "moc.pkl"
    src.write_bytes(pickle.dumps(vdets))
    out = tmp_path / "video_detections.pkl"
    assert cli.main(["link", "--dets", str(src), "--out", str(out), "--min-length", "10"]) == 0
    info = json.loads(capsys.readouterr().out)
    got = pickle.loads(out.read_bytes())
    assert info["tubes"] == sum(len(v) for v in got.values()) > 0
    ref = link_moc_layout(vdets, 2, LinkParams(min_length=10))
    assert [s for _, s, _ in got[0]] == [s for _, s, _ in ref[0]]
    pq_path = tmp_path / "dets.parquet"
    write_table(_dets_table(vdets), pq_path, "action_detections")
    assert cli.main(["link", "--dets", str(pq_path), "--out", str(out), "--labels", "c0,c1"]) == 0
    assert set(pickle.loads(out.read_bytes())) == {0, 1}
    assert cli.main(["link", "--dets", str(tmp_path / "missing.pkl"), "--out", str(out)]) == 2
