"""MultiSports frame-mAP / video-mAP: hand-computed cases, quirks, invariances, and identity with
loop-per-box implementations written like evaluate_multisports.py and the ACT evaluate.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actparse.metrics import multisports as M
import oracles as R


def tube(frames, box):
    f = np.asarray(list(frames), np.float32)
    out = np.zeros((len(f), 5), np.float32)
    out[:, 0] = f
    out[:, 1:5] = box
    return out


def gt_dict(gttubes: dict, labels=("a", "b")) -> dict:
    vids = sorted(gttubes)
    return {"labels": list(labels), "train_videos": [[]], "test_videos": [vids],
            "nframes": {v: 100 for v in vids}, "resolution": {v: (120, 160) for v in vids}, "gttubes": gttubes}


def det(iv, frame, label, score, box):
    return [iv, frame, label, score, *box]


A = [0, 0, 10, 10]
B = [4, 0, 14, 10]


def test_frame_ap_perfect_and_empty():
    gt = gt_dict({"v0": {0: [tube(range(1, 4), A)]}, "v1": {1: [tube([5], B)]}})
    dets = np.array([det(0, f, 0, 0.9, A) for f in (1, 2, 3)] + [det(1, 5, 1, 0.5, B)], np.float32)
    for variant in M.VARIANTS:
        assert M.frame_ap(gt, dets, variant=variant).map == pytest.approx(100)
        assert M.frame_ap(gt, np.zeros((0, 8), np.float32), variant=variant).map == 0
    # a list of (8,) arrays, as the README describes the file, works too
    assert M.frame_ap(gt, list(dets)).map == pytest.approx(100)


def test_frame_ap_duplicates_voc_vs_act():
    # GT A and B on one frame; det1 = A; det2 ties between A and B (IoU 2/3 both ways, arg-max = A)
    gt = gt_dict({"v0": {0: [tube([1], A), tube([1], B)]}}, labels=("a",))
    dets = np.array([det(0, 1, 0, 0.9, A), det(0, 1, 0, 0.8, [2, 0, 12, 10])], np.float32)
    # MultiSports: det2's arg-max A is taken -> false positive: P = [1, .5], R = [.5, .5] -> AP .5
    assert M.frame_ap(gt, dets).ap["a"] == pytest.approx(50)
    # ACT deletes A first, det2 then matches B: AP 1
    assert M.frame_ap(gt, dets, variant="act").ap["a"] == pytest.approx(100)


def test_frame_ap_missed_frame():
    gt = gt_dict({"v0": {0: [tube([1, 2], A)]}}, labels=("a",))
    dets = np.array([det(0, 1, 0, 0.9, A)], np.float32)
    assert M.frame_ap(gt, dets).map == pytest.approx(50)
    assert M.frame_ap(gt, dets, variant="act").map == pytest.approx(50)


def test_frame_ap_two_classes_by_hand():
    gt = gt_dict({"v0": {0: [tube([1, 2], A)], 1: [tube([3], B)]}})
    far = [50, 50, 60, 60]
    dets = np.array([det(0, 1, 0, 0.9, A), det(0, 2, 0, 0.8, far), det(0, 2, 0, 0.7, A),
                     det(0, 3, 1, 0.95, far), det(0, 3, 1, 0.6, B)], np.float32)
    r = M.frame_ap(gt, dets)
    # a: P = [1, 1/2, 2/3], R = [.5, .5, 1] -> envelope [1, 2/3, 2/3] -> .5 * 1 + .5 * 2/3
    assert r.ap["a"] == pytest.approx(100 * (0.5 + 0.5 * 2 / 3))
    # b: P = [0, 1/2], R = [0, 1] -> .5
    assert r.ap["b"] == pytest.approx(50)
    assert r.map == pytest.approx((100 * (0.5 + 1 / 3) + 50) / 2)
    # ACT trapezoids from (1, 0): a: .5 + 0 + .5 * (1/2 + 2/3) / 2 ; b: 0 + 1 * (0 + 1/2) / 2
    ra = M.frame_ap(gt, dets, variant="act")
    assert ra.ap["a"] == pytest.approx(100 * (0.5 + 0.5 * (0.5 + 2 / 3) / 2), abs=1e-4)
    assert ra.ap["b"] == pytest.approx(25, abs=1e-4)


def test_excluded_labels_and_labels_without_gt_are_skipped():
    gt = gt_dict({"v0": {0: [tube([1], A)], 1: [tube([1], A)]}}, labels=("a", "basketball save", "c"))
    dets = np.array([det(0, 1, 0, 0.9, A)], np.float32)
    r = M.frame_ap(gt, dets)
    assert list(r.ap) == ["a"] and r.map == pytest.approx(100)  # "c" has no GT, "basketball save" is skipped
    assert set(M.frame_ap(gt, dets, excluded_labels=()).ap) == {"a", "basketball save"}


def test_video_ap_perfect_empty_and_temporal_quirk():
    gt = gt_dict({"v0": {0: [tube(range(1, 5), A)]}}, labels=("a",))
    perfect = {0: [("v0", np.float32(0.9), np.c_[tube(range(1, 5), A), np.ones(4, np.float32)])]}
    for variant in M.VARIANTS:
        assert M.video_ap(gt, perfect, [0.5], variant)[0.5].map == pytest.approx(100)
        assert M.video_ap(gt, {0: []}, [0.5], variant)[0.5].map == 0
    # frames 3..6 vs 1..4: MultiSports temporal IoU (4-3)/(6-1) = 0.2; ACT (4-3+1)/(6-1+1) = 1/3
    shifted = {0: [("v0", np.float32(0.9), np.c_[tube(range(3, 7), A), np.ones(4, np.float32)])]}
    r = M.video_ap(gt, shifted, [0.2, 0.3, 0.5])
    assert [r[t].map for t in (0.2, 0.3, 0.5)] == [pytest.approx(100), 0, 0]
    r = M.video_ap(gt, shifted, [0.2, 0.3, 0.5], "act")
    assert [r[t].map for t in (0.2, 0.3, 0.5)] == [pytest.approx(100), pytest.approx(100), 0]
    r = M.video_ap(gt, shifted, [0.2, 0.3, 0.5], temporal_plus_one=True)  # the quirk fixed, VOC AP kept
    assert [r[t].map for t in (0.2, 0.3, 0.5)] == [pytest.approx(100), pytest.approx(100), 0]
    # two one-frame tubes on the same frame: 0/0 -> nan -> never a match in the MultiSports code
    gt1 = gt_dict({"v0": {0: [tube([3], A)]}}, labels=("a",))
    one = {0: [("v0", np.float32(0.9), np.c_[tube([3], A), np.ones(1, np.float32)])]}
    with np.errstate(all="ignore"):
        assert M.video_ap(gt1, one, [0.5])[0.5].map == 0
    assert M.video_ap(gt1, one, [0.5], "act")[0.5].map == pytest.approx(100)


def test_video_ap_duplicate_tube_is_a_false_positive():
    gt = gt_dict({"v0": {0: [tube(range(1, 11), A)]}}, labels=("a",))
    t = np.c_[tube(range(1, 11), A), np.ones(10, np.float32)]
    dets = {0: [("v0", np.float32(0.9), t), ("v0", np.float32(0.8), t.copy())]}
    r = M.video_ap(gt, dets, [0.5])[0.5]
    np.testing.assert_allclose(r.pr["a"], [[1, 1], [0.5, 1]])
    assert r.map == pytest.approx(100)


def test_video_ap_rejects_tubes_that_differ_inside_their_overlap_and_missing_labels():
    gt = gt_dict({"v0": {0: [tube([1, 2, 4], A)]}}, labels=("a",))
    with pytest.raises(ValueError, match="do not hold the same frames"):  # the official slicing fails
        M.video_ap(gt, {0: [("v0", 0.5, np.c_[tube([1, 2, 3, 4], A), np.ones(4)])]})
    gt = gt_dict({"v0": {0: [tube([1, 2], A)]}}, labels=("a",))
    with pytest.raises(ValueError, match="no entry for label index 0"):
        M.video_ap(gt, {})
    assert M.video_ap(gt, {}, missing_label="empty")[0.5].map == 0


def test_video_ap_ranges_use_official_thresholds():
    gt = gt_dict({"v0": {0: [tube(range(1, 5), A)]}}, labels=("a",))
    shifted = {0: [("v0", np.float32(0.9), np.c_[tube(range(3, 7), A), np.ones(4, np.float32)])]}
    rng = M.video_ap_ranges(gt, shifted)
    # IoU 0.2: matched at 0.05..0.2 (4 of the 9 low thresholds), at 0.1, 0.2 (2 of 9), never at >= .5
    assert rng["0.05:0.45"] == pytest.approx(400 / 9)
    assert rng["0.10:0.90"] == pytest.approx(200 / 9)
    assert rng["0.50:0.95"] == 0


# ------------------------------------------------------------------------- identity with official loops
def random_case(seed, n_videos=8, n_frames=30, n_labels=3, ties=False):
    rng = np.random.default_rng(seed)
    vids = [f"s/v{i}" for i in range(n_videos)]
    gttubes = {}
    rows, vd = [], {lab: [] for lab in range(n_labels)}
    for iv, v in enumerate(vids):
        tubes = {}
        for _ in range(int(rng.integers(1, 4))):
            s = int(rng.integers(1, n_frames - 3))
            e = int(rng.integers(s + 1, n_frames + 1))
            lab = int(rng.integers(n_labels))
            x, y = rng.uniform(0, 100, 2)
            t = np.zeros((e - s + 1, 5), np.float32)
            t[:, 0] = np.arange(s, e + 1)
            t[:, 1:3] = np.c_[x, y] + np.cumsum(rng.normal(0, 1, (e - s + 1, 2)), 0)
            t[:, 3:5] = t[:, 1:3] + [30, 50]
            tubes.setdefault(lab, []).append(t)
            for r in t:
                for _ in range(int(rng.integers(0, 3))):
                    sc = round(rng.random(), 1) if ties else rng.random()
                    l2 = lab if rng.random() < 0.7 else int(rng.integers(n_labels))
                    rows.append([iv, r[0], l2, sc, *(r[1:5] + rng.normal(0, 4, 4))])
            for _ in range(int(rng.integers(0, 3))):
                a = int(rng.integers(0, len(t)))
                b = int(rng.integers(a, len(t)))
                dt = np.zeros((b - a + 1, 6), np.float32)
                dt[:, :5] = t[a:b + 1]
                dt[:, 1:5] += rng.normal(0, 3, (b - a + 1, 4))
                sc = round(rng.random(), 1) if ties else rng.random()
                vd[lab if rng.random() < 0.7 else int(rng.integers(n_labels))].append((v, np.float32(sc), dt))
        gttubes[v] = tubes
    gt = gt_dict(gttubes, labels=[f"l{i}" for i in range(n_labels)])
    return gt, np.array(rows, np.float32).reshape(-1, 8), vd


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("variant", M.VARIANTS)
def test_identical_to_official_style_loops(seed, variant):
    gt, dets, vd = random_case(seed, ties=seed % 2 == 1)
    act, moc = variant in ("act", "moc"), variant == "moc"
    if moc:  # a label without ground truth in the test videos, with detections and without
        gt = dict(gt, labels=gt["labels"] + ["l3", "l4"])
        dets = np.concatenate([dets, [[0, 1, 3, 0.5, 1, 1, 9, 9]]]).astype(np.float32)
        vd = {**vd, 3: [("s/v0", np.float32(0.5), np.c_[tube([1, 2], A), np.ones(2)])], 4: []}

    def ref(fn, *args):
        try:
            return fn(*args, act, moc)
        except ZeroDivisionError:  # ACT.py stops on label l3 (detections, no ground truth): AP 0 here
            m, ap = fn(*args, act, False)
            ap.update({"l3": 0.0, "l4": 0.0})
            return np.mean(np.array([ap[k] for k in gt["labels"]], np.float32)), ap

    with np.errstate(all="ignore"):
        ref_map, ref_ap = ref(R.ms_frame_ap, gt, dets, 0.5)
        r = M.frame_ap(gt, dets, 0.5, variant)
        assert r.map == ref_map and r.ap == ref_ap
        res = M.video_ap(gt, vd, [0.1, 0.2, 0.5, 0.7], variant)
        for thr in (0.1, 0.2, 0.5, 0.7):
            ref_map, ref_ap = ref(R.ms_video_ap, gt, vd, thr)
            assert res[thr].map == ref_map and res[thr].ap == ref_ap


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), perm=st.integers(0, 10_000))
def test_invariances_shuffle_rename_zero_score_boxes(seed, perm):
    gt, dets, vd = random_case(seed, n_videos=4, n_frames=15)
    base_f = M.frame_ap(gt, dets).map
    base_v = M.video_ap(gt, vd, [0.3])[0.3].map
    rng = np.random.default_rng(perm)
    # shuffled detections (distinct scores)
    assert M.frame_ap(gt, dets[rng.permutation(len(dets))]).map == base_f
    vd2 = {k: [v[i] for i in rng.permutation(len(v))] for k, v in vd.items()}
    assert M.video_ap(gt, vd2, [0.3])[0.3].map == base_v
    # renamed videos
    names = {v: f"other/{i:03d}" for i, v in enumerate(gt["test_videos"][0])}
    gt2 = dict(gt, test_videos=[[names[v] for v in gt["test_videos"][0]]],
               gttubes={names[v]: t for v, t in gt["gttubes"].items()})
    vd3 = {k: [(names[v], s, t) for v, s, t in lst] for k, lst in vd.items()}
    assert M.frame_ap(gt2, dets).map == base_f
    assert M.video_ap(gt2, vd3, [0.3])[0.3].map == base_v
    # zero-score boxes that match nothing ranked below every real detection
    zeros = np.array([[iv, 1, lab, 0.0, 500, 500, 520, 520] for iv in range(4) for lab in range(3)], np.float32)
    assert M.frame_ap(gt, np.concatenate([dets, zeros])).map == base_f


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_segment_sums_are_numpys_pairwise_sums_bit_for_bit(dtype):
    from actparse.metrics._exact import segment_means, segment_sums

    rng = np.random.default_rng(3)
    lengths = np.r_[0, 1, 7, 8, 9, 127, 128, 129, 255, 256, 257, 1000, 8192, 8193, rng.integers(1, 600, 300)]
    values = (rng.random(int(lengths.sum())) * 10.0 ** rng.uniform(-4, 4, int(lengths.sum()))).astype(dtype)
    values[rng.random(len(values)) < 0.02] = -0.0
    starts = np.cumsum(lengths) - lengths
    got = segment_sums(values, starts, lengths)
    want = np.array([np.add.reduce(values[s:s + n]) if n else 0 for s, n in zip(starts, lengths)], dtype)
    assert got.dtype == dtype and got.tobytes() == want.tobytes()
    nz = lengths > 0
    means = segment_means(values, starts, lengths)[nz]
    assert means.tobytes() == np.array([np.mean(values[s:s + n]) for s, n in zip(starts[nz], lengths[nz])],
                                       dtype).tobytes()


@pytest.mark.parametrize("seed", range(3))
def test_frame_ap_records_bootstrap_equals_scoring_copied_videos(seed):
    """frame_ap's per-video records give back its mAP with unit weights, and with draw weights the mAP
    of the data set in which each video is copied as often as it was drawn (scored by frame_ap itself)."""
    from actparse.metrics import bootstrap as BS

    gt, dets, _ = random_case(seed)  # continuous scores: the copies of a detection tie only with each other
    recs: dict = {}
    res = M.frame_ap(gt, dets, 0.5, records=recs)
    vids = M.test_videos(gt)
    assert set(recs["detections"].columns) == {"cls", "video", "score", "tp"}
    assert recs["detections"]["tp"].sum() > 0 and recs["ground_truth"]["n"].sum() > 0
    ones = np.ones((1, len(vids)))
    assert BS.voc_ap_replicates(recs["detections"], recs["ground_truth"], ones, vids)[0] == pytest.approx(res.map / 100)
    W = BS.draw_weights(len(vids), 3, seed=seed)
    reps = BS.voc_ap_replicates(recs["detections"], recs["ground_truth"], W, vids)
    for b in range(3):
        tubes, rows = {}, []
        for iv, v in enumerate(vids):
            for k in range(int(W[b, iv])):
                name = f"{v}#{k}"
                tubes[name] = gt["gttubes"][v]
        names = sorted(tubes)
        at = {n: i for i, n in enumerate(names)}
        for r in dets:
            v = vids[int(r[0])]
            for k in range(int(W[b, int(r[0])])):
                rows.append([at[f"{v}#{k}"], *r[1:]])
        copied = gt_dict(tubes, labels=gt["labels"])
        want = M.frame_ap(copied, np.array(rows, np.float32).reshape(-1, 8), 0.5).map / 100
        assert reps[b] == pytest.approx(want, abs=1e-9), b
    with pytest.raises(ValueError, match="multisports variant only"):
        M.frame_ap(gt, dets, 0.5, variant="act", records={})
