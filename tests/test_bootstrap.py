"""actparse.metrics.bootstrap: replicates equal the metrics on copied data, closed-form intervals, the direction rule."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from actparse.metrics import bootstrap as B
from actparse.metrics import tps as TPS
from actparse.metrics.detection import detection_ap


def _scene(rng, n_videos=6, frames=4, classes=("a", "b", "c")):
    """Ground truth and noisy detections over a few videos (distinct random scores)."""
    gt, det = [], []
    for v in range(n_videos):
        for f in range(frames):
            for c in classes:
                for _ in range(rng.integers(0, 3)):
                    xy = rng.uniform(0, 80, 2)
                    box = np.r_[xy, xy + rng.uniform(10, 30, 2)]
                    gt.append((f"v{v}", f, c, box))
                    if rng.random() < 0.8:  # a detection near it
                        det.append((f"v{v}", f, c, box + rng.normal(0, 3, 4), rng.random()))
                for _ in range(rng.integers(0, 2)):  # a false positive
                    xy = rng.uniform(0, 80, 2)
                    det.append((f"v{v}", f, c, np.r_[xy, xy + 15], rng.random()))
    g = pd.DataFrame(gt, columns=["video", "frame", "cls", "box"])
    d = pd.DataFrame(det, columns=["video", "frame", "cls", "box", "score"])
    return g, d


def _img(df, videos):
    vi = {v: i for i, v in enumerate(videos)}
    return df["video"].map(vi).to_numpy() * 1000 + df["frame"].to_numpy()


def _records(g, d, videos, metric="part_ap50"):
    dets, gts = B.ap_records(metric, g["video"], _img(g, videos), g["cls"], np.stack(g["box"]), d["video"],
                             _img(d, videos), d["cls"], np.stack(d["box"]), d["score"])
    vids = pd.DataFrame({"video": videos, "action_correct": True, "tps_psc": 0.5, "tps_correct": True,
                         "state_matched": 1, "state_correct": 1})
    return B.Records(dets, gts, vids)


def _map(g, d, videos):
    return detection_ap(_img(g, videos), g["cls"], np.stack(g["box"]), _img(d, videos), d["cls"], np.stack(d["box"]),
                        d["score"].to_numpy())["map"]


def test_unit_weights_give_the_detection_ap_of_the_stage():
    g, d = _scene(np.random.default_rng(1))
    videos = sorted(set(g["video"]))
    rec = _records(g, d, videos)
    got = B.replicate(rec, np.ones((1, len(videos))), videos)["part_ap50"][0]
    assert got == pytest.approx(_map(g, d, videos), abs=1e-12)
    assert 0.2 < got < 0.95  # a real mix of hits and misses


@pytest.mark.parametrize("weights", [[2, 0, 1, 3, 0, 0], [0, 0, 0, 0, 0, 6], [1, 1, 1, 1, 1, 1], [3, 1, 0, 0, 2, 0]])
def test_weights_equal_scoring_the_copied_videos(weights):
    g, d = _scene(np.random.default_rng(2))
    videos = sorted(set(g["video"]))
    rec = _records(g, d, videos)
    got = B.replicate(rec, np.asarray([weights], float), videos)["part_ap50"][0]
    # the data set a replicate stands for: video i copied weights[i] times (copies are new videos)
    cg, cd = [], []
    for v, k in zip(videos, weights):
        for j in range(k):
            cg.append(g[g["video"] == v].assign(video=f"{v}#{j}"))
            cd.append(d[d["video"] == v].assign(video=f"{v}#{j}"))
    cg, cd = pd.concat(cg), pd.concat(cd)
    want = _map(cg, cd, sorted(set(cg["video"])))
    assert got == pytest.approx(want, abs=1e-12)


def _video_records(correct, other=None):
    n = len(correct)
    return B.Records(
        pd.DataFrame({c: [] for c in B.DET_COLUMNS}), pd.DataFrame({c: [] for c in B.GT_COLUMNS}),
        pd.DataFrame({"video": [f"v{i:03d}" for i in range(n)], "action_correct": np.asarray(correct, bool),
                      "tps_psc": np.nan if other is None else other, "tps_correct": np.asarray(correct, bool),
                      "state_matched": 2, "state_correct": np.asarray(correct, int) + 1}))


def test_video_accuracy_replicates_follow_the_binomial():
    """The bootstrap distribution of a mean of 0/1 values over n videos is Binomial(n, p) / n exactly."""
    n, k = 24, 9
    rec = _video_records([1] * k + [0] * (n - k))
    W = B.draw_weights(n, 20000, seed=3)
    acc = B.replicate(rec, W)["video_acc"]
    counts = np.round(acc * n).astype(int)
    ecdf = np.array([(counts <= x).mean() for x in range(n + 1)])
    assert np.abs(ecdf - stats.binom.cdf(np.arange(n + 1), n, k / n)).max() < 0.015
    iv = B.intervals(rec, n_boot=20000, seed=3)["video_acc"]
    lo, hi = stats.binom.ppf([0.025, 0.975], n, k / n) / n
    assert iv["value"] == pytest.approx(k / n)
    assert abs(iv["lo"] - lo) <= 1 / n + 1e-9 and abs(iv["hi"] - hi) <= 1 / n + 1e-9
    # part-state accuracy is a ratio of sums: (matched 2, correct 1 or 2 per video)
    assert B.replicate(rec, np.ones((1, n)))["part_state_acc"][0] == pytest.approx((n + k) / (2 * n))


@pytest.mark.parametrize("m,expected", [(1, "ties"), (3, "ties"), (4, "holds"), (8, "holds")])
def test_paired_direction_closed_form(m, expected):
    """A and B agree except on m videos B gets right: the paired delta is Binomial(n, m/n)/n, whose
    2.5% quantile is above zero exactly when P(X = 0) = (1 - m/n)^n < 0.025 (n = 24: m >= 4)."""
    n = 24
    a = _video_records([0] * m + [1] * 10 + [0] * (n - m - 10))
    b = _video_records([1] * m + [1] * 10 + [0] * (n - m - 10))
    assert ((1 - m / n) ** n < 0.025) == (expected == "holds")
    res = B.paired(a, b, n_boot=4000, seed=5)["video_acc"]
    assert res["delta"] == pytest.approx(m / n)
    assert res["verdict"] == expected
    back = B.paired(b, a, n_boot=4000, seed=5)["video_acc"]
    assert back["verdict"] == {"ties": "ties", "holds": "reverses"}[expected]


def test_tps_area_with_unit_weights_is_the_official_area():
    rng = np.random.default_rng(7)
    psc = np.round(rng.random(40), 4)
    psc[:3] = [0.0, 1.0, 0.5]
    correct = rng.random(40) < 0.6
    rec = _video_records(correct, other=psc)
    got = B.replicate(rec, np.ones((1, 40)))["tps_score"][0]
    want = TPS.curve_area(TPS.accuracy_curve(psc, correct)[1])
    assert got == pytest.approx(want, abs=1e-12)


def test_verdict_rule():
    assert B.verdict(0.001, 0.2) == "holds"
    assert B.verdict(-0.3, -0.01) == "reverses"
    assert B.verdict(-0.1, 0.1) == "ties"
    assert B.verdict(0.0, 0.1) == "ties"  # an interval touching zero does not exclude it
    assert B.verdict(float("nan"), 0.1) == "n/a"


def test_paired_refuses_different_test_sets():
    a = _video_records([1, 0, 1])
    b = _video_records([1, 0, 1, 1])
    with pytest.raises(ValueError, match="same test videos.*only in B"):
        B.paired(a, b, n_boot=10)


def test_records_check_their_columns():
    with pytest.raises(ValueError, match="videos.*lacks columns"):
        B.Records(pd.DataFrame({c: [] for c in B.DET_COLUMNS}), pd.DataFrame({c: [] for c in B.GT_COLUMNS}),
                  pd.DataFrame({"video": ["a"]}))


# ----------------------------------------------------------------------------- per-video count tables
def _counts(rows):
    return pd.DataFrame(rows, columns=["video", "key", "cls", "hits", "n"])


def test_count_top1_follows_the_binomial_and_paired_counts_decide_like_records():
    """One scored item per video: the bootstrap of top-1 from a count table is Binomial(n, p) / n, as
    for the per-video records; the paired delta of two count tables gets the closed-form verdict."""
    n, k = 24, 9
    videos = [f"v{i:02d}" for i in range(n)]
    c = _counts([(v, "model", "a", int(i < k), 1) for i, v in enumerate(videos)])
    W = B.draw_weights(n, 20000, seed=3)
    acc = B.count_replicates(c, "model", "top1", W, videos)
    counts = np.round(acc * n).astype(int)
    ecdf = np.array([(counts <= x).mean() for x in range(n + 1)])
    assert np.abs(ecdf - stats.binom.cdf(np.arange(n + 1), n, k / n)).max() < 0.015
    for m, expected in ((3, "ties"), (4, "holds")):  # B right on m more videos: holds iff (1 - m/n)^n < 0.025
        a = _counts([(v, "k", "x", int(10 <= i < 20), 1) for i, v in enumerate(videos)])
        b = _counts([(v, "k", "x", int(i < m or 10 <= i < 20), 1) for i, v in enumerate(videos)])
        W = B.draw_weights(n, 4000, seed=5)
        d = B.count_replicates(b, "k", "top1", W, videos) - B.count_replicates(a, "k", "top1", W, videos)
        assert B.verdict(*B.percentile_interval(d)) == expected


def test_count_mean_class_is_the_mean_of_per_class_ratios_under_weights():
    """mean-class with draw weights by hand: class ratios of weighted sums, classes with no drawn item left out."""
    c = _counts([("v0", "k", "a", 1, 2), ("v0", "k", "b", 0, 1), ("v1", "k", "a", 2, 2), ("v2", "k", "c", 1, 1),
                 ("v2", "other", "a", 0, 5)])
    videos = ["v0", "v1", "v2", "v3"]  # v3: no items (e.g. nothing scored in it)
    W = np.array([[1, 1, 1, 1], [2, 0, 0, 2], [0, 3, 1, 0]], float)
    got = B.count_replicates(c, "k", "mean_class", W, videos)
    want = [np.mean([3 / 4, 0 / 1, 1 / 1]), np.mean([2 / 4, 0 / 2]), np.mean([6 / 6, 1 / 1])]
    assert got == pytest.approx(want)
    top1 = B.count_replicates(c, "k", "top1", W, videos)
    assert top1 == pytest.approx([4 / 6, 2 / 6, 7 / 7])
    # the counts as the stages make them (one row per scored item)
    made = B.counts_of(["v0", "v0", "v0", "v1"], ["k"] * 4, ["a", "a", "b", "a"], [True, False, False, True])
    assert made.to_dict("list") == {"video": ["v0", "v0", "v1"], "key": ["k", "k", "k"], "cls": ["a", "b", "a"],
                                    "hits": [1, 0, 1], "n": [2, 1, 1]}
    with pytest.raises(ValueError, match="no rows for key 'nope'"):
        B.count_replicates(c, "nope", "top1", W, videos)
    with pytest.raises(ValueError, match="not among the drawn"):
        B.count_replicates(c, "k", "top1", W[:, :2], videos[:2])


def test_over_seeds_draws_the_runs_with_replacement():
    """Replicates of the seed mean: every replicate is a weighted mean of the runs' replicates, weights
    the multinomial seed draws (the same for any two rows with as many runs: paired); one run as is."""
    reps = [np.full(500, 1.0), np.full(500, 2.0), np.full(500, 6.0)]
    got = B.over_seeds(reps, 500)
    S = B.draw_weights(3, 500, 1)
    assert got == pytest.approx((S @ np.array([1.0, 2.0, 6.0])) / 3)
    assert got.min() >= 1.0 and got.max() <= 6.0 and abs(got.mean() - 3.0) < 0.15
    assert B.over_seeds([np.arange(4.0)], 4) == pytest.approx(np.arange(4.0))
    # identical runs: no spread added by the seeds
    assert B.over_seeds([np.arange(5.0)] * 3, 5) == pytest.approx(np.arange(5.0))


def test_bias_corrected_interval_closed_form():
    """Replicates N(estimate + b, s^2): BC gives estimate - b -+ 1.96 s (z0 = -b/s); with no shift it is
    the percentile interval."""
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(400000)
    est, b, s = 10.0, 0.5, 2.0
    lo, hi = B.bc_interval(est + b + s * noise, est)
    z = stats.norm.ppf(0.975)
    assert lo == pytest.approx(est - b - z * s, abs=0.03) and hi == pytest.approx(est - b + z * s, abs=0.03)
    x = est + s * noise
    assert B.bc_interval(x, est) == pytest.approx(B.percentile_interval(x), abs=0.02)
    assert all(np.isnan(B.bc_interval(np.array([np.nan]), 1.0)))
