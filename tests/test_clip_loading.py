"""On-demand clip reading (actparse.video.LazyVideo): the same clips as decoding whole videos, bounded
reader cache, clear errors for videos that break during training, determinism across workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from _params import overlaid
from actparse import clips as C
from actparse.csn import _ClipMaker, fit, train_settings_from_params
from actparse.models.csn import CSNConfig, MultiTaskCSN
from actparse.video import LazyVideo, ReaderCache, VideoError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_video(path, n, h=40, w=64, seed=0):
    """A small mp4 (mp4v, as the synth generator writes) whose frames all differ (decord needs w >= 64)."""
    import cv2

    rng = np.random.default_rng(seed)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (w, h))
    for i in range(n):
        img = np.clip(rng.normal(90, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        x = (3 * i) % (w - 8)
        img[h // 3:h // 3 + 8, x:x + 8] = (255, 255, 255)
        vw.write(img)
    vw.release()
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("clipvids")
    return [_write_video(d / f"v{k}.mp4", n, seed=k) for k, n in enumerate((30, 41, 23, 35, 27))]


@pytest.mark.parametrize("short_side", [0, 24, 29, 50])
def test_lazy_frames_equal_the_whole_decoded_video(videos, short_side):
    cache = ReaderCache(2)
    for path in videos[:3]:
        full = C.load_video(path, short_side)
        lazy = LazyVideo(path, short_side, cache=cache)
        assert lazy.shape == full.shape and len(lazy) == len(full)
        rng = np.random.default_rng(1)
        for _ in range(20):  # random order, repeats, reversed: the clip samplers' index patterns
            idx = rng.integers(0, len(full), size=int(rng.integers(1, 9)))
            assert np.array_equal(lazy[idx], full[idx])
            assert np.array_equal(lazy[idx[::-1]], full[idx[::-1]])
        assert np.array_equal(lazy[3], full[3]) and np.array_equal(lazy[np.int64(-1)], full[-1])
        assert np.array_equal(lazy[4:11], full[4:11]) and lazy[5:5].shape == (0,) + full.shape[1:]
        with pytest.raises(IndexError, match=str(path)):
            lazy[np.array([0, len(full)])]


def test_training_clips_and_weights_equal_the_in_memory_path(videos):
    """fit() on LazyVideo sources gives the clips and the weights of fit() on decoded videos."""
    spec = C.ClipSpec(num_frames=4, interval=2, short_side=24, crop=(20, 24), train_short_side=(24, 30), flip=True,
                      color_jitter=0.3, grayscale_prob=0.3, background="clip_mean", train_interval=(1, 3),
                      reverse_prob=0.5)
    full = [C.load_video(p, spec.cache_short_side) for p in videos]
    lazy = [LazyVideo(p, spec.cache_short_side) for p in videos]
    for seed in range(10):
        a = C.train_clip(full[seed % 5], spec, np.random.default_rng(seed))
        b = C.train_clip(lazy[seed % 5], spec, np.random.default_rng(seed))
        assert torch.equal(a, b)
    assert torch.equal(C.test_clips(full[1], spec, 3), C.test_clips(lazy[1], spec, 3))

    cfg = CSNConfig(variant="ir", depth=50, stage_depths=(1, 1, 1, 1), stem_dim=8)
    settings = train_settings_from_params(overlaid({"csn": dict(epochs=2, batch_size=2, lr=0.05, warmup_iters=1,
                                                                 lr_steps=[1.0], mixup_alpha=0.2)}))
    targets = {"action": np.array([0, 1, 0, 1]), "hand": np.array([1, 0, 2, 2])}
    states = []
    for vids in (full[:4], lazy[:4]):  # 4 videos: whole batches of 2 (batch norm needs 2 per batch)
        torch.manual_seed(0)
        model = MultiTaskCSN(cfg, {"action": 2, "hand": 3})
        hist = fit(model, vids, targets, spec, settings, seed=3)
        states.append((model.state_dict(), hist["loss"]))
    (sa, la), (sb, lb) = states
    assert la == lb and sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_reader_cache_stays_bounded(videos):
    cache = ReaderCache(2)
    lazy = [LazyVideo(p, 0, cache=cache) for p in videos]
    assert len(cache) == 2 and cache.opened == 5
    for _ in range(3):
        for v in lazy:
            v[np.array([1, 2])]
            assert len(cache) <= 2
    assert cache.opened == 5 + 3 * 5  # round robin over 5 videos with room for 2: every read reopens
    lazy[0][0], lazy[0][1]
    assert cache.opened == 21  # the most recent reader is reused
    with pytest.raises(ValueError, match="size"):
        ReaderCache(0)


def test_reader_cache_bound_comes_from_the_environment(videos, monkeypatch, capsys):
    import actparse.video as V
    from stages import stad_train

    monkeypatch.setattr(V, "_READERS", None)
    monkeypatch.setenv("ACTPARSE_READER_CACHE", "3")
    lazy = [LazyVideo(p) for p in videos]  # the process-wide cache, made on first use
    assert V.default_reader_cache().size == 3 and len(V.default_reader_cache()) == 3
    assert np.array_equal(lazy[0][np.array([2, 0])], C.load_video(videos[0])[[2, 0]])
    monkeypatch.delenv("ACTPARSE_READER_CACHE")
    assert V.reader_cache_size() == V.READER_CACHE_SIZE == 8
    for bad in ("0", "-2", "eight", "1.5"):
        monkeypatch.setenv("ACTPARSE_READER_CACHE", bad)
        assert stad_train.main(["--params", "no-such-params.yaml"]) == 2  # stops before reading anything
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"stad_train: error: ACTPARSE_READER_CACHE={bad!r}: the number of open video readers must "
                       "be an integer >= 1"]


def test_lazy_video_pickles_as_its_path(videos):
    v = LazyVideo(videos[0], 24, cache=ReaderCache(1))
    blob = pickle.dumps(v)
    assert len(blob) < 1000  # no frames, no reader
    w = pickle.loads(blob)
    assert w.shape == v.shape and np.array_equal(w[np.array([0, 7, 7, 3])], v[np.array([0, 7, 7, 3])])


def test_a_video_that_breaks_during_training_is_an_error_naming_it(tmp_path, videos):
    import shutil

    path = shutil.copy(videos[0], tmp_path / "gone.mp4")
    cache = ReaderCache(1)
    spec = C.ClipSpec(num_frames=4, interval=2, short_side=24, crop=(20, 20), train_short_side=(24, 24))
    vids = [LazyVideo(path, 24, cache=cache), LazyVideo(videos[1], 24, cache=cache)]  # evicts gone.mp4's reader
    (tmp_path / "gone.mp4").unlink()
    cfg = CSNConfig(variant="ir", depth=50, stage_depths=(1, 1, 1, 1), stem_dim=8)
    with pytest.raises(VideoError, match=r"gone\.mp4: no such video file"):
        fit(MultiTaskCSN(cfg, {"action": 2}), vids, {"action": np.array([0, 1])}, spec,
            train_settings_from_params(overlaid({"csn": dict(epochs=1, batch_size=2, lr=0.05, warmup_iters=0, lr_steps=[],
                                                              mixup_alpha=0.0)})), seed=0)
    (tmp_path / "gone.mp4").write_bytes(b"not a video")
    with pytest.raises(VideoError, match=r"gone\.mp4: cannot open video"):
        vids[0][np.array([0, 1])]
    with pytest.raises(VideoError, match=r"gone\.mp4: cannot open video"):
        LazyVideo(path)


def test_a_stage_whose_video_breaks_mid_run_exits_2_with_one_line(tmp_path, videos, capsys):
    import shutil

    from _params import write_params
    from actparse.cli import stage_main

    path = shutil.copy(videos[1], tmp_path / "late.mp4")
    write_params(tmp_path / "params.yaml")

    def run(params, root):
        v = LazyVideo(path, cache=ReaderCache(1))
        LazyVideo(videos[0], cache=v.cache)  # closes late.mp4's reader
        (tmp_path / "late.mp4").write_bytes(b"")
        v[np.array([0, 5])]

    assert stage_main("demo", "demo stage", run, ["--params", str(tmp_path / "params.yaml")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"demo: error: {path}: empty file"


def test_thread_pool_clips_from_lazy_videos_do_not_depend_on_the_threads(videos, monkeypatch):
    """The CUDA path's clip threads read frames on demand: same clips whatever the pool size."""
    import actparse.csn as csn_mod

    spec = C.ClipSpec(num_frames=4, interval=2, short_side=24, crop=(20, 20), train_short_side=(24, 30),
                      flip=True, color_jitter=0.4, reverse_prob=0.5)
    lazy = [LazyVideo(p, spec.cache_short_side, cache=ReaderCache(2)) for p in videos]
    full = [C.load_video(p, spec.cache_short_side) for p in videos]
    order = np.random.default_rng(1).permutation(5)
    made = []
    for cpus in (2, 5):  # pool of 1 thread, then of 4 threads sharing a 2-reader cache
        monkeypatch.setattr(csn_mod.os, "cpu_count", lambda: cpus)
        for vids in (lazy, full):
            maker = _ClipMaker(vids, spec, 5)
            assert maker.pool._max_workers == min(5, cpus - 1)
            maker.start_epoch(order, np.random.default_rng(7))
            made.append(maker.batch(0))
            maker.close()
    assert all(torch.equal(made[0], m) for m in made[1:])


def test_gym_element_frames_equal_the_cropped_whole_video(tmp_path):
    from actparse.gym import crop_clips, load_split
    from actparse.synth import SynthConfig, generate

    cfg = SynthConfig.from_params(overlaid({"synth": dict(
        seed=11, n_train=2, n_test=1, width=64, height=48, min_seconds=1.0, max_seconds=1.2, max_people=2, occluder_prob=0.0)}))
    droot = tmp_path / "synth"
    generate(cfg, droot, progress=False)
    params = overlaid({"data": {"root": str(droot)}, "gym": {"size": 32}})
    hier, clips, frames, skips = load_split(params, tmp_path, "train")
    assert clips and not skips

    from actparse.dataset import gt_persons_path, load_videos
    from actparse.schemas import read_df

    videos = load_videos(droot).to_pandas().set_index("video")
    gt = read_df(gt_persons_path(droot), "gt_persons", columns=["video", "frame", "person", "box"])
    for c, fr in zip(clips, frames):
        row = videos.loc[c.video]
        whole = C.load_video(droot / row.path)
        want = crop_clips(whole, float(row.fps), [c], gt[gt.video == c.video], 32)[0]
        assert len(fr) == len(want)
        idx = np.array([0, len(want) - 1, len(want) // 2, 0])
        assert np.array_equal(fr[idx], want[idx])
        assert np.array_equal(fr[np.arange(len(want))], want)


def test_stad_training_and_cached_features_equal_the_in_memory_path(videos):
    """stad phase 1 and the phase-2 feature cache on LazyVideo sources give the weights and features of
    decoded arrays; the features are the model's RoI features of each batch, in sample order."""
    import pandas as pd

    from actparse.models.stad import STADModel
    from actparse.models.slowfast import SlowFastConfig
    from actparse.stad import cache_features, fit_phase1, gt_samples, settings_from_params

    rng = np.random.default_rng(0)
    pools = []
    for k in range(4):
        rows = [{"frame": f, "person": p, "box": np.array([2 + p * 20, 4, 20 + p * 20, 20.]) + rng.uniform(0, 3, 4),
                 "action": ["a", "b", "none"][(f + p + k) % 3]} for f in range(0, 20, 3) for p in range(1 + k % 2)]
        pools.append(gt_samples(pd.DataFrame(rows), k, 1.0, ["a", "b", "c"]))
    s = settings_from_params(overlaid({"stad": dict(epochs=1, samples_per_video=2, batch_size=3, num_frames=4, interval=2,
                                                     warmup_epochs=0, lr_steps=[])}))
    full = [C.load_video(p) for p in videos[:4]]
    lazy = [LazyVideo(p, cache=ReaderCache(2)) for p in videos[:4]]
    cfg = SlowFastConfig(stem_dim=4, beta_inv=4, alpha=4)
    out = []
    for vids in (full, lazy):
        torch.manual_seed(0)
        m = STADModel(cfg, 3, head="pcca", dim=16, heads=2, roi_size=3)
        hist = fit_phase1(m, vids, pools, s, seed=1)
        samples = [smp for pool in pools for smp in pool[::2]]
        out.append((m.state_dict(), hist["loss"], cache_features(m, vids, samples, s)))
    (sa, la, (fa, ta, lab_a)), (sb, lb, (fb, tb, lab_b)) = out
    assert la == lb and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(fa, fb) and torch.equal(ta, tb) and lab_a == lab_b
    from actparse.stad import _batch

    with torch.no_grad():  # the preallocated cache holds exactly the per-batch features and targets
        want = [(m.roi_features(clip, rois), tg)
                for clip, rois, tg in (_batch(full, samples[i:i + 3], s, None) for i in range(0, len(samples), 3))]
    assert torch.equal(fa, torch.cat([w[0] for w in want])) and torch.equal(ta, torch.cat([w[1] for w in want]))
    assert lab_a == [lab for smp in samples for lab in smp.labels] and len(fa) == sum(len(x.boxes) for x in samples)


def test_partattn_samples_from_lazy_videos_equal_the_in_memory_ones(videos):
    from actparse.partattn import make_sample

    full, lazy = C.load_video(videos[3]), LazyVideo(videos[3], cache=ReaderCache(1))
    pb = np.tile(np.array([[10.0, 8.0, 20.0, 20.0]]), (10, 1))
    valid = np.ones(10, bool)
    tg = np.zeros((10, 3), np.float32)
    for frame in (0, 17, len(full) - 1):  # window clamped at both ends, and inside
        a = make_sample(full, frame, np.array([4.0, 2.0, 40.0, 38.0]), pb, valid, (48, 32), 4, 3,
                        rng=np.random.default_rng(frame), augment=True, targets=tg)
        b = make_sample(lazy, frame, np.array([4.0, 2.0, 40.0, 38.0]), pb, valid, (48, 32), 4, 3,
                        rng=np.random.default_rng(frame), augment=True, targets=tg)
        assert torch.equal(a[0], b[0]) and all(np.array_equal(x, y) for x, y in zip(a[1:], b[1:]))


def test_train_csn_holds_small_sets_in_memory_and_reads_large_ones_on_demand(videos, monkeypatch, capsys):
    """ACTPARSE_DECODE_BUDGET_MB picks the route by the decoded size videos.parquet implies; both routes
    give the same frames; a bad value stops a stage at start."""
    from actparse.stage import SkipLedger
    from actparse.video import decoded_bytes, hold_in_memory
    from stages import train_csn

    records = [{"video": p.stem, "path": str(p), "n_frames": n, "width": 64, "height": 40}
               for p, n in zip(videos, (30, 41, 23, 35, 27))]
    assert decoded_bytes(records) == 156 * 64 * 40 * 3
    assert decoded_bytes(records, 20) == 156 * 32 * 20 * 3  # short side 40 -> 20
    assert decoded_bytes(records[:1] + [dict(records[1], n_frames=float("nan"))]) is None  # size unknown
    monkeypatch.delenv("ACTPARSE_DECODE_BUDGET_MB", raising=False)
    assert hold_in_memory(records) == (True, 156 * 64 * 40 * 3)  # default budget 1 GiB
    ledger = SkipLedger("train_csn", ".")
    eager = train_csn.decode_videos(videos[0].parent, records, 20, ledger, "load")
    monkeypatch.setenv("ACTPARSE_DECODE_BUDGET_MB", "0")
    assert hold_in_memory(records)[0] is False
    lazy = train_csn.decode_videos(videos[0].parent, records, 20, ledger, "load")
    for name in eager:
        assert isinstance(eager[name], np.ndarray) and isinstance(lazy[name], LazyVideo)
        assert np.array_equal(eager[name], lazy[name][np.arange(len(lazy[name]))])
    for bad in ("-1", "lots", "0.5"):
        monkeypatch.setenv("ACTPARSE_DECODE_BUDGET_MB", bad)
        assert train_csn.main(["--params", "no-such-params.yaml"]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
            f"train_csn: error: ACTPARSE_DECODE_BUDGET_MB={bad!r}: the memory budget")
